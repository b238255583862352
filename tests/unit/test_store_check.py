"""A store is ready only when the user's vault directory is what is mounted there."""

from __future__ import annotations

import pytest

from daemonstore.daemon.store_check import StoreNotMounted, require_store, store_status
from daemonstore.model import ModelHost

H = "b" * 40
OTHER = "c" * 40
STORE = f"/run/daemon-store/foo/{H}"


def world() -> ModelHost:
    h = ModelHost()
    h.mkdir("/run/daemon-store/foo", parents=True)
    h.bind("/run/daemon-store/foo", "/run/daemon-store/foo")
    h.make("/run/daemon-store/foo", "shared")
    for user in (H, OTHER):
        h.mkdir(f"/home/.shadow/{user}/mount/root/foo", parents=True)
        h.mkdir(f"/home/.shadow/{user}/mount/root/.cache/foo", parents=True)
    return h


def test_directory_without_mount_is_not_ready() -> None:
    """The race the docs warn about: the target exists before (and after) the bind."""
    h = world()
    assert not store_status(h, "foo", H).mounted  # not even there
    h.mkdir(STORE, 0o700)
    status = store_status(h, "foo", H)
    assert not status.mounted and "nothing is mounted" in status.reason
    with pytest.raises(StoreNotMounted):
        require_store(h, "foo", H)
    h.bind(f"/home/.shadow/{H}/mount/root/foo", STORE)
    assert require_store(h, "foo", H) == STORE
    assert not store_status(h, "foo", H, cache=True).mounted


def test_wrong_source_is_refused() -> None:
    h = world()
    h.mkdir(STORE, 0o700)
    h.bind(f"/home/.shadow/{H}/mount/root/.cache/foo", STORE)  # the cache bound as the store
    assert "not the user's vault directory" in store_status(h, "foo", H).reason
    h.umount(STORE)
    h.bind(f"/home/.shadow/{OTHER}/mount/root/foo", STORE)  # another user's store
    assert "another user's vault" in store_status(h, "foo", H).reason
    h.umount(STORE)
    h.mount_tmpfs("impostor", STORE)
    assert not store_status(h, "foo", H).mounted


def test_a_daemon_namespace_sees_its_own_view() -> None:
    h = world()
    h.mkdir(STORE, 0o700)
    h.new_namespace("daemon", "slave")
    h.use_namespace("init")
    h.bind(f"/home/.shadow/{H}/mount/root/foo", STORE)
    h.use_namespace("daemon")
    assert store_status(h, "foo", H).mounted  # it propagated in
    h.umount(STORE)  # a local umount in the daemon's namespace
    assert not store_status(h, "foo", H).mounted
    h.use_namespace("init")
    assert store_status(h, "foo", H).mounted
