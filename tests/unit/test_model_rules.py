"""Table-driven tests of the model: one row per rule of docs/propagation.md, asserting the
resulting propagation state read back from the model's own mountinfo."""

from __future__ import annotations

import errno

import pytest

from daemonstore import mountinfo
from daemonstore.model import ModelHost


def state(host: ModelHost, path: str, ns: str | None = None) -> mountinfo.MountInfoEntry:
    """The topmost mountinfo entry at ``path`` (last created wins for stacks)."""
    entries = [e for e in mountinfo.parse(host.mountinfo(ns)) if e.mount_point == path]
    assert entries, f"nothing mounted at {path}"
    by_id = {e.mount_id: e for e in entries}
    top = [e for e in entries if not any(o.parent_id == e.mount_id for o in entries)]
    assert len(top) == 1, by_id
    return top[0]


def paths(host: ModelHost, ns: str | None = None) -> list[str]:
    return sorted(e.mount_point for e in mountinfo.parse(host.mountinfo(ns)))


def errno_of(fn, *args, **kwargs) -> int:
    with pytest.raises(OSError) as info:
        fn(*args, **kwargs)
    return info.value.errno


# ---- setups for each starting state of a mount at /X ------------------------------------------

def _shared_with_peer(h: ModelHost) -> None:
    h.mount_tmpfs("x", "/X")
    h.make("/X", "shared")
    h.bind("/X", "/P")


def _shared_alone(h: ModelHost) -> None:
    h.mount_tmpfs("x", "/X")
    h.make("/X", "shared")


def _slave(h: ModelHost) -> None:
    h.mount_tmpfs("x", "/M")
    h.make("/M", "shared")
    h.bind("/M", "/X")
    h.make("/X", "slave")


def _shared_slave(h: ModelHost) -> None:
    _slave(h)
    h.make("/X", "shared")


def _private(h: ModelHost) -> None:
    h.mount_tmpfs("x", "/X")


def _unbindable(h: ModelHost) -> None:
    h.mount_tmpfs("x", "/X")
    h.make("/X", "unbindable")


SETUPS = {
    "shared-with-peer": _shared_with_peer,
    "shared-alone": _shared_alone,
    "slave": _slave,
    "shared+slave": _shared_slave,
    "private": _private,
    "unbindable": _unbindable,
}

# docs/propagation.md §2.2 state table: rows = current state, columns = operation
STATE_TABLE = {
    ("shared-with-peer", "shared"): "shared",
    ("shared-with-peer", "slave"): "slave",
    ("shared-with-peer", "private"): "private",
    ("shared-with-peer", "unbindable"): "unbindable",
    ("shared-alone", "shared"): "shared",
    ("shared-alone", "slave"): "private",
    ("shared-alone", "private"): "private",
    ("shared-alone", "unbindable"): "unbindable",
    ("slave", "shared"): "shared+slave",
    ("slave", "slave"): "slave",
    ("slave", "private"): "private",
    ("slave", "unbindable"): "unbindable",
    ("shared+slave", "shared"): "shared+slave",
    ("shared+slave", "slave"): "slave",
    ("shared+slave", "private"): "private",
    ("shared+slave", "unbindable"): "unbindable",
    ("private", "shared"): "shared",
    ("private", "slave"): "private",
    ("private", "private"): "private",
    ("private", "unbindable"): "unbindable",
    ("unbindable", "shared"): "shared",
    ("unbindable", "slave"): "unbindable",
    ("unbindable", "private"): "private",
    ("unbindable", "unbindable"): "unbindable",
}


def _world(setup: str) -> ModelHost:
    h = ModelHost()
    h.mkdir("/X")
    h.mkdir("/P")
    h.mkdir("/M")
    SETUPS[setup](h)
    return h


@pytest.mark.parametrize(("start", "op"), sorted(STATE_TABLE))
def test_change_type_state_table(start: str, op: str) -> None:
    h = _world(start)
    before = state(h, "/X")
    h.make("/X", op)
    after = state(h, "/X")
    assert after.propagation == STATE_TABLE[(start, op)]
    if (start, op) == ("shared-with-peer", "slave"):
        assert after.master == before.shared  # slave of its old group
    if (start, op) == ("slave", "shared"):
        assert after.master == before.master and after.shared != before.master  # new group
    if (start, op) == ("shared+slave", "slave"):
        assert after.master == before.master  # no peers: keeps its existing master


def test_make_private_hands_slaves_to_surviving_peer() -> None:
    """§2.2: leaving a group hands the slaves to another member (SC06)."""
    h = ModelHost()
    for p in ("/A", "/B", "/S"):
        h.mkdir(p)
    h.mount_tmpfs("a", "/A")
    h.make("/A", "shared")
    h.bind("/A", "/B")
    h.bind("/A", "/S")
    h.make("/S", "slave")
    group = state(h, "/A").shared
    h.make("/A", "private")
    assert state(h, "/S").master == group == state(h, "/B").shared
    h.make("/B", "private")  # last member gone: the slave loses its master
    assert state(h, "/S").propagation == "private"


# ---- bind table (§2.4): dest shared / not shared x source type ---------------------------------

BIND_TABLE = {
    ("shared-with-peer", False): "shared",
    ("private", False): "private",
    ("slave", False): "slave",
    ("shared-with-peer", True): "shared",
    ("private", True): "shared",
    ("slave", True): "shared+slave",
}


@pytest.mark.parametrize(("source", "dest_shared"), sorted(BIND_TABLE))
def test_bind_table(source: str, dest_shared: bool) -> None:
    h = _world(source)
    h.mkdir("/D")
    h.mount_tmpfs("d", "/D")
    h.mkdir("/D/in")
    if dest_shared:
        h.make("/D", "shared")
        h.mkdir("/D2")
        h.bind("/D", "/D2")
    src = state(h, "/X")
    h.bind("/X", "/D/in")
    got = state(h, "/D/in")
    assert got.propagation == BIND_TABLE[(source, dest_shared)]
    if source == "shared-with-peer":
        assert got.shared == src.shared  # joins the source's group
    if source == "slave":
        assert got.master == src.master
    if dest_shared:
        # the copy in the destination's peer is a peer of the new mount
        assert state(h, "/D2/in").shared == got.shared


def test_bind_of_unbindable_is_einval_and_rbind_prunes() -> None:
    h = _world("unbindable")
    h.mkdir("/D")
    assert errno_of(h.bind, "/X", "/D") == errno.EINVAL
    assert errno_of(h.bind, "/X", "/D", recursive=True) == errno.EINVAL
    # an unbindable submount is pruned with its subtree (SC12)
    h.mkdir("/T")
    h.mount_tmpfs("t", "/T")
    h.mkdir("/T/u")
    h.mkdir("/T/k")
    h.mount_tmpfs("u", "/T/u")
    h.mkdir("/T/u/deep")
    h.mount_tmpfs("deep", "/T/u/deep")
    h.make("/T/u", "unbindable")
    h.mount_tmpfs("k", "/T/k")
    h.mkdir("/R")
    h.bind("/T", "/R", recursive=True)
    assert [p for p in paths(h) if p.startswith("/R")] == ["/R", "/R/k"]


def test_plain_bind_copies_one_mount_and_rbind_only_below_the_dentry() -> None:
    h = ModelHost()
    for p in ("/T", "/B", "/R"):
        h.mkdir(p)
    h.mount_tmpfs("t", "/T")
    h.mkdir("/T/sub/x", parents=True)
    h.mkdir("/T/y")
    h.mount_tmpfs("x", "/T/sub/x")
    h.mount_tmpfs("y", "/T/y")
    h.bind("/T", "/B")
    assert [p for p in paths(h) if p.startswith("/B")] == ["/B"]
    h.bind("/T/sub", "/R", recursive=True)  # SC14: only submounts below /sub come along
    assert [p for p in paths(h) if p.startswith("/R")] == ["/R", "/R/x"]
    assert state(h, "/R").root == "/sub"


# ---- move (§2.6) -------------------------------------------------------------------------------

def test_move_errors() -> None:
    h = ModelHost()
    for p in ("/S", "/D", "/plain"):
        h.mkdir(p)
    h.mount_tmpfs("s", "/S")
    h.mkdir("/S/c")
    h.mount_tmpfs("c", "/S/c")
    h.make("/S", "shared")
    # the parent of the mount being moved is shared
    assert errno_of(h.move, "/S/c", "/D") == errno.EINVAL
    # not a mount root
    assert errno_of(h.move, "/plain", "/D") == errno.EINVAL
    # into its own subtree
    h.make("/S", "private")
    assert errno_of(h.move, "/S", "/S/c") == errno.ELOOP
    # a tree holding an unbindable mount cannot go under a shared mount
    h.make("/S/c", "unbindable")
    h.mount_tmpfs("d", "/D")
    h.make("/D", "shared")
    h.mkdir("/D/in")
    assert errno_of(h.move, "/S", "/D/in") == errno.EINVAL
    h.make("/S/c", "private")
    h.move("/S", "/D/in")
    assert state(h, "/D/in").propagation == "shared"  # private source -> new group
    assert "/S" not in paths(h)


def test_move_allowed_under_slave_parent_but_not_shared_slave() -> None:
    """SC19: a slave-only parent is fine, a shared+slave parent is not."""
    h = ModelHost()
    for p in ("/M", "/S", "/D"):
        h.mkdir(p)
    h.mount_tmpfs("m", "/M")
    h.mkdir("/M/c")
    h.make("/M", "shared")
    h.bind("/M", "/S")
    h.make("/S", "slave")
    h.mount_tmpfs("c", "/S/c")
    h.move("/S/c", "/D")
    h.make("/S", "shared")
    h.mount_tmpfs("c2", "/S/c")
    assert errno_of(h.move, "/S/c", "/D") == errno.EINVAL


# ---- umount (§2.7, §3.4) -----------------------------------------------------------------------

def test_umount_errors_and_lazy_detach() -> None:
    h = ModelHost()
    h.mkdir("/A")
    assert errno_of(h.umount, "/A") == errno.EINVAL  # not a mount root (SC46)
    assert errno_of(h.make, "/A", "shared") == errno.EINVAL
    h.mount_tmpfs("a", "/A")
    h.mkdir("/A/b")
    h.mount_tmpfs("b", "/A/b")
    assert errno_of(h.umount, "/A") == errno.EBUSY  # has a submount (SC24)
    h.umount("/A", detach=True)  # MNT_DETACH takes the subtree
    assert paths(h) == ["/"]
    assert errno_of(h.umount, "/nope") == errno.ENOENT


def test_umount_propagates_through_parent_receivers_only() -> None:
    """SC25/SC26: a slave's umount stays local; the master's reaches the slave."""
    h = ModelHost()
    for p in ("/M", "/S"):
        h.mkdir(p)
    h.mount_tmpfs("m", "/M")
    h.mkdir("/M/x")
    h.mkdir("/M/y")
    h.make("/M", "shared")
    h.bind("/M", "/S")
    h.make("/S", "slave")
    h.mount_tmpfs("x", "/M/x")
    h.mount_tmpfs("y", "/M/y")
    h.umount("/S/x")
    assert "/M/x" in paths(h) and "/S/x" not in paths(h)
    h.umount("/M/y")
    assert "/M/y" not in paths(h) and "/S/y" not in paths(h)


def test_tucked_copy_and_slide_down() -> None:
    """SC29/SC30: a propagated copy goes beneath an existing mount; on umount the top slides."""
    h = ModelHost()
    for p in ("/M", "/S"):
        h.mkdir(p)
    h.mount_tmpfs("m", "/M")
    h.mkdir("/M/x")
    h.make("/M", "shared")
    h.bind("/M", "/S")
    h.make("/S", "slave")
    h.mount_tmpfs("old", "/S/x")
    h.mount_tmpfs("new", "/M/x")
    at_sx = [e for e in mountinfo.parse(h.mountinfo()) if e.mount_point == "/S/x"]
    assert [e.source for e in at_sx] == ["old", "new"]  # creation order
    assert state(h, "/S/x").source == "old"  # the old one stays on top
    h.write_file("/S/x/file", b"visible")
    h.umount("/M/x")
    at_sx = [e for e in mountinfo.parse(h.mountinfo()) if e.mount_point == "/S/x"]
    assert [e.source for e in at_sx] == ["old"]
    assert h.read_file("/S/x/file") == b"visible"


# ---- namespaces (§2.8) -------------------------------------------------------------------------

def test_namespace_copy_keeps_types_and_drops_unbindable() -> None:
    h = ModelHost()
    for p in ("/sh", "/pr", "/un"):
        h.mkdir(p)
    h.mount_tmpfs("sh", "/sh")
    h.make("/sh", "shared")
    h.mount_tmpfs("pr", "/pr")
    h.mount_tmpfs("un", "/un")
    h.make("/un", "unbindable")
    h.new_namespace("two")
    assert state(h, "/sh", "two").shared == state(h, "/sh", "init").shared
    assert state(h, "/pr", "two").propagation == "private"
    assert state(h, "/un", "two").propagation == "private"  # 6.17+ (SC34)
    assert errno_of(h.new_namespace, "two") == errno.EEXIST
    assert errno_of(h.use_namespace, "nope") == errno.ENOENT


def test_slave_namespace_receives_but_never_sends() -> None:
    h = ModelHost()
    h.mkdir("/store")
    h.bind("/store", "/store")
    h.make("/store", "shared")
    h.new_namespace("daemon", "slave")
    h.mkdir("/store/fromdaemon")
    h.mount_tmpfs("d", "/store/fromdaemon")
    h.use_namespace("init")
    h.mkdir("/store/user")
    h.mount_tmpfs("u", "/store/user")
    assert "/store/user" in paths(h, "daemon")
    assert "/store/fromdaemon" not in paths(h, "init")
    assert state(h, "/store/user", "daemon").master == state(h, "/store/user", "init").shared


def test_receiver_that_cannot_see_the_mountpoint_is_skipped() -> None:
    """§3.2 / SC15: visibility is is_subdir(mountpoint, receiver root); SC43 covers its slaves."""
    h = ModelHost()
    h.mkdir("/A/sub/deeper", parents=True)
    h.mkdir("/A/other")
    h.mkdir("/V")
    h.mkdir("/W")
    h.mount_tmpfs("a", "/A")
    h.mkdir("/A/sub/deeper", parents=True)
    h.mkdir("/A/other")
    h.make("/A", "shared")
    h.bind("/A/other", "/V")  # receiver rooted at /other: cannot see /sub
    h.make("/V", "slave")
    h.make("/V", "shared")
    h.bind("/A", "/W")
    h.make("/W", "slave")
    h.mount_tmpfs("n", "/A/sub/deeper")
    assert "/W/sub/deeper" in paths(h)
    assert not any(p.startswith("/V/") for p in paths(h))


# ---- files through mounts --------------------------------------------------------------------

def test_file_written_through_bind_shows_at_source_and_symlinks_stay_in_sandbox() -> None:
    h = ModelHost()
    h.mkdir("/src/d", parents=True)
    h.mkdir("/dst")
    h.bind("/src", "/dst")
    h.write_file("/dst/d/f", b"data", mode=0o600)
    assert h.read_file("/src/d/f") == b"data"
    assert h.stat("/src/d/f").perm == 0o600
    h.mkdir("/etc")
    h.symlink("/etc", "/src/link")
    h.write_file("/dst/link/planted", b"x")
    assert h.read_file("/etc/planted") == b"x"  # absolute targets resolve in the sandbox
    assert errno_of(h.write_file, "/dst/link/planted", b"y", safe=True) == errno.ELOOP
    assert errno_of(h.stat, "/dst/link", safe=True) == errno.ELOOP
    assert h.lstat("/dst/link", safe=True).is_symlink
    h.symlink("loop", "/loop")
    assert errno_of(h.stat, "/loop") == errno.ELOOP


def test_file_errnos() -> None:
    h = ModelHost()
    h.mkdir("/d")
    h.write_file("/d/f", b"1")
    cases = [
        (h.mkdir, ("/d",), {}, errno.EEXIST),
        (h.mkdir, ("/d/f/x",), {}, errno.ENOTDIR),
        (h.mkdir, ("/none/x",), {}, errno.ENOENT),
        (h.rmdir, ("/d",), {}, errno.ENOTEMPTY),
        (h.rmdir, ("/d/f",), {}, errno.ENOTDIR),
        (h.unlink, ("/d",), {}, errno.EISDIR),
        (h.read_file, ("/d",), {}, errno.EISDIR),
        (h.readlink, ("/d",), {}, errno.EINVAL),
        (h.listdir, ("/d/f",), {}, errno.ENOTDIR),
    ]
    for fn, args, kwargs, code in cases:
        assert errno_of(fn, *args, **kwargs) == code, (fn.__name__, args)
    h.mkdir("/m")
    h.mount_tmpfs("m", "/m")
    assert errno_of(h.rmdir, "/m") == errno.EBUSY  # a mountpoint in this namespace
    h.remount_bind("/m", frozenset({"ro", "nosuid"}))
    assert errno_of(h.write_file, "/m/x", b"") == errno.EROFS
    assert state(h, "/m").options == ("ro", "nosuid", "relatime")


def test_rmdir_of_a_mountpoint_in_another_namespace_detaches_it_there() -> None:
    """§6 item 19: the mounts on it are detached in the other namespace, without propagation."""
    h = ModelHost()
    h.mkdir("/m")
    h.new_namespace("other")
    h.mount_tmpfs("o", "/m")
    h.use_namespace("init")
    h.rmdir("/m")
    assert paths(h, "other") == ["/"]


# ---- detached trees and namespace files (§2.9) -------------------------------------------------

def test_detached_clone_is_pinned_before_a_tmpfs_covers_its_source() -> None:
    """The jail's recipe: pin the store, cover /run with a tmpfs, attach the pinned store."""
    h = ModelHost()
    h.mkdir("/run/store", parents=True)
    h.bind("/run/store", "/run/store")
    h.make("/run/store", "shared")
    h.new_namespace("jail", "slave")
    handle = h.clone_detached("/run/store", recursive=True)
    h.mount_tmpfs("run", "/run")
    h.mkdir("/run/store")
    h.use_namespace("init")
    h.mkdir("/run/store/early")
    h.mount_tmpfs("early", "/run/store/early")  # detached trees receive nothing (§2.9)
    h.use_namespace("jail")
    h.attach_detached(handle, "/run/store")
    # only the jail's hidden copy of the store (under the tmpfs) received "early"
    assert paths(h, "jail").count("/run/store/early") == 1
    h.use_namespace("init")
    h.mkdir("/run/store/late")
    h.mount_tmpfs("late", "/run/store/late")
    # the attached tree is a slave of the store too: sign-ins flow in
    assert paths(h, "jail").count("/run/store/late") == 2
    h.use_namespace("jail")
    assert h.listdir("/run/store/late") == []  # visible through the attached tree
    assert errno_of(h.attach_detached, handle, "/run") == errno.EBADF


def test_pinned_namespace_file() -> None:
    h = ModelHost()
    h.mkdir("/run/namespaces", parents=True)
    h.write_file("/run/namespaces/mnt_chrome", b"")
    h.new_namespace("chrome")
    h.use_namespace("init")
    h.pin_namespace("chrome", "/run/namespaces/mnt_chrome")
    (pin,) = [e for e in mountinfo.parse(h.mountinfo()) if e.fstype == "nsfs"]
    assert pin.mount_point == "/run/namespaces/mnt_chrome" and pin.root.startswith("mnt:[")
    assert "/run/namespaces/mnt_chrome" not in paths(h, "chrome")  # ns files are not copied
    h.open_pinned_namespace("/run/namespaces/mnt_chrome", "again")
    h.use_namespace("again")
    assert h.current_namespace() == "again"
    h.use_namespace("chrome")
    assert errno_of(h.pin_namespace, "init", "/run/namespaces/mnt_chrome") == errno.EINVAL
    assert errno_of(h.open_pinned_namespace, "/run", "x") == errno.EINVAL
