"""The jail plan on the model: the documented daemon-store recipe receives sign-ins, and leaks
nothing out; the traps of the original visibly fail to receive them."""

from __future__ import annotations

import errno

import pytest

from daemonstore import mountinfo
from daemonstore.jail.plan import JailError, apply_jail, plan_jail
from daemonstore.jail.spec import parse_jail_args
from daemonstore.model import ModelHost
from daemonstore.ops import AttachTree, Mkdir, PinTree, Unshare

STORE = "/run/daemon-store/foo"
USER = STORE + "/" + "a" * 40
DOC = ["-v", "-Kslave", "-k", "tmpfs,/run,tmpfs,MS_NOSUID|MS_NODEV|MS_NOEXEC",
       "-k", f"{STORE},{STORE},none,MS_BIND|MS_REC", "--", "daemon"]


def booted() -> ModelHost:
    """What startup leaves: the store bound onto itself and shared."""
    h = ModelHost()
    h.mkdir(STORE, parents=True)
    h.bind(STORE, STORE)
    h.make(STORE, "shared")
    h.mkdir("/home/vault/foo", parents=True)
    return h


def sign_in(h: ModelHost) -> None:
    h.use_namespace("init")
    h.mkdir(USER, 0o700)
    h.bind("/home/vault/foo", USER)


def visible(h: ModelHost, ns: str, path: str) -> bool:
    """Is the user's store mounted *visibly* at path in ns (on top, not hidden under /run)?"""
    h.use_namespace(ns)
    try:
        return h.listdir(path) is not None and h.stat(path).ino == h.stat("/home/vault/foo").ino
    except OSError:
        return False


def jail(h: ModelHost, argv: list[str], name: str = "d") -> None:
    apply_jail(h, plan_jail(parse_jail_args(argv), name))
    h.use_namespace("init")


def test_plan_pins_sources_before_the_tmpfs_covers_them() -> None:
    steps = plan_jail(parse_jail_args(DOC), "d")
    kinds = [type(s).__name__ for s in steps]
    assert kinds == ["Unshare", "RemountWholeTree", "PinTree", "Mkdir", "MountTmpfs", "Mkdir",
                     "AttachTree"]
    assert steps[0] == Unshare("d", "slave")
    assert steps[2] == PinTree("tree1", STORE, True) and steps[-1] == AttachTree("tree1", STORE)
    assert [s.to_line() for s in steps][4].startswith("mount -t tmpfs -o ")


def test_documented_jail_receives_sign_in_and_loses_it_at_sign_out() -> None:
    h = booted()
    jail(h, DOC)
    sign_in(h)
    assert visible(h, "d", USER)
    h.use_namespace("d")
    h.write_file(USER + "/state", b"written by the daemon")
    assert h.read_file("/home/vault/foo/state") == b"written by the daemon"
    h.use_namespace("init")
    h.umount(USER)
    assert not visible(h, "d", USER)
    assert not any(e.mount_point == USER for e in mountinfo.parse(h.mountinfo("d")))


def test_already_signed_in_users_are_there_and_nothing_leaks_out() -> None:
    h = booted()
    sign_in(h)
    jail(h, DOC)
    assert visible(h, "d", USER)  # MS_REC copies the existing per-user mount
    h.use_namespace("d")
    h.mkdir("/run/private")
    h.mount_tmpfs("leak", "/run/private")
    h.mkdir(STORE + "/leak2")
    h.mount_tmpfs("leak2", STORE + "/leak2")
    outside = mountinfo.parse(h.mountinfo("init"))
    assert not any(e.source in ("leak", "leak2", "tmpfs") for e in outside)


def test_traps_never_see_sign_ins() -> None:
    h = booted()
    store_k = f"{STORE},{STORE},none,MS_BIND|MS_REC"
    jail(h, ["-v", "-Kprivate", "-k", store_k, "x"], "private")
    jail(h, ["--profile", "minimalistic-mountns", "-k", store_k, "x"], "profile")
    jail(h, ["-v", "-k", store_k, "x"], "slave")
    sign_in(h)
    assert not visible(h, "private", USER)
    assert not visible(h, "profile", USER)
    assert visible(h, "slave", USER)


def test_a_failed_step_is_named_and_its_pinned_tree_dropped(monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    h = booted()
    h.write_file("/file", b"not a directory")
    dropped: list[str] = []
    drop = h.drop_detached
    monkeypatch.setattr(h, "drop_detached", lambda handle: dropped.append(handle) or drop(handle))
    steps = plan_jail(parse_jail_args(["-v", "-k", f"{STORE},/file/x,none,MS_BIND|MS_REC", "x"]))
    with pytest.raises(JailError) as exc:
        apply_jail(h, steps)
    assert exc.value.step == Mkdir(("/file/x",)) and exc.value.errno == errno.EEXIST
    assert str(exc.value) == "[Errno 17] mkdir /file/x: File exists: '/file'"
    assert len(dropped) == 1  # the store's tree was pinned, never attached: closed
