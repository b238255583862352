"""Host.watch_mounts on the model: a watcher hears every mount operation, in any namespace,
after it is over, and nothing else (the model's stand-in for POLLPRI on mountinfo)."""

from __future__ import annotations

import pytest

from daemonstore.host import NamespaceView
from daemonstore.model import ModelHost


def _host() -> ModelHost:
    h = ModelHost()
    h.mkdir("/s/a", parents=True)
    for d in ("/t", "/u", "/v"):
        h.mkdir(d)
    h.bind("/s", "/s")
    h.make("/s", "shared")
    return h


def test_each_mount_operation_calls_the_watcher_once_after_it() -> None:
    h = _host()
    seen: list[str] = []
    # what the watcher sees is the table after the operation, never half of it
    stop = h.watch_mounts(lambda: seen.append(h.mountinfo()))
    h.mount_tmpfs("x", "/t")
    assert len(seen) == 1 and " /t " in seen[0]
    h.bind("/t", "/u")
    h.make("/u", "shared")
    h.remount_bind("/u", frozenset({"ro"}))
    h.move("/u", "/v")
    h.umount("/v")
    assert len(seen) == 6 and " /v " in seen[-2] and " /v " not in seen[-1]
    stop()
    stop()  # twice is harmless
    h.umount("/t")
    assert len(seen) == 6


def test_file_operations_do_not_call_it_and_a_failed_mount_may() -> None:
    h = _host()
    calls: list[int] = []
    h.watch_mounts(lambda: calls.append(1))
    h.mkdir("/w")
    h.write_file("/w/f", b"x")
    h.stat("/w/f")
    assert calls == []
    with pytest.raises(OSError):
        h.umount("/w")  # not a mount: EINVAL; a spurious call is allowed, a missed one is not
    assert calls == [1]  # the watchers run after a failed operation too


def test_a_change_in_another_namespace_wakes_a_watcher_of_a_view() -> None:
    """A daemon's view is watched; the sign-in's bind happens in init and propagates in."""
    h = _host()
    h.new_namespace("daemon", "slave")
    h.use_namespace("init")
    view = NamespaceView(h, "daemon")
    calls: list[int] = []
    view.watch_mounts(lambda: calls.append(1))
    h.bind("/t", "/s/a")
    assert calls == [1]
    assert " /s/a " in view.mountinfo()


def test_detached_trees_and_pinned_namespaces_count_as_mount_operations() -> None:
    h = _host()
    h.write_file("/pin", b"")
    calls: list[int] = []
    h.watch_mounts(lambda: calls.append(1))
    handle = h.clone_detached("/s")
    h.attach_detached(handle, "/t")
    h.new_namespace("other")
    h.use_namespace("init")
    h.pin_namespace("other", "/pin")
    assert calls == [1, 1]
