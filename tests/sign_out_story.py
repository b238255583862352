"""ChromeOS-faithful sign-out, written once against a World so it runs on the model and (in
run_in_sandbox's child) on the kernel: sign-out leaves the empty per-user targets
``/run/daemon-store{,-cache}/<d>/<H>`` (docs/chromeos.md §7 item 1), so a daemon that writes
wherever the directory exists writes into /run's tmpfs after sign-out -- here as on a device --
and a daemon that asks ``store_check`` never does.

Two stand-in daemons, each acting from its own namespace (``world.daemon(...)``, jailed by the
documented recipe):

* :func:`naive_tick`: "if the directory exists, write ``state.json``";
* :func:`careful_tick`: ``store_check.require_store`` first (the client's check), else nothing.

The stories return plain data (it crosses the sandbox's pipe); the tests assert on it.
"""

from __future__ import annotations

from typing import Any

from daemonstore import mountinfo, paths
from daemonstore.daemon.store_check import StoreNotMounted, require_store, store_status
from daemonstore.session.plan import ROOT_ID, TARGET_MODE
from daemonstore.session.queries import store_user
from daemonstore.world import DaemonView, World

FOO = ("foo", 20100, 20100, 0o700)
BAR = ("bar", 20101, 20102, 0o750)
DAEMONS = [FOO, BAR]
STATE = "state.json"


# ---- the two daemons ---------------------------------------------------------------------------


def naive_tick(view: DaemonView, user: str, data: bytes) -> bool:
    """The classic bug: write ``state.json`` whenever ``view.path(user)`` is a directory.
    True if it wrote."""
    world = view.world
    with world.in_namespace(view.namespace):
        try:
            if not world.host.stat(view.path(user), safe=True).is_dir:
                return False
        except FileNotFoundError:
            return False
        world.host.write_file(view.path(user, STATE), data, safe=True)
    return True


def careful_tick(view: DaemonView, user: str, data: bytes) -> bool:
    """Write ``state.json`` only where ``store_check.require_store`` hands the path out (a
    bind of the user's vault is what this namespace reaches there). True if it wrote."""
    world = view.world
    with world.in_namespace(view.namespace):
        try:
            path = require_store(world.host, view.daemon, world.hash_of(user))
        except StoreNotMounted:
            return False
        world.host.write_file(f"{path}/{STATE}", data, safe=True)
    return True


# ---- what stays after sign-out -----------------------------------------------------------------


def _read(world: World, namespace: str, path: str) -> bytes | None:
    with world.in_namespace(namespace):
        try:
            return world.host.read_file(path, safe=True)
        except FileNotFoundError:
            return None


def _vault(world: World, user: str, daemon: str) -> bytes | str:
    try:
        return world.read_vault(user, daemon, STATE)
    except FileNotFoundError:
        return "FileNotFoundError"


def left_targets(world: World, user: str,
                 daemons: list[tuple[Any, ...]] = DAEMONS) -> dict[str, Any]:
    """Every target of ``user`` as each namespace sees it: ``(is dir, perm, uid, gid,
    entries)`` or None where the namespace cannot reach the path, and the mounts at it (every
    namespace). After a faithful sign-out: a dir, root 0700, empty, nothing mounted."""
    user_hash = world.hash_of(user)
    seen: dict[str, Any] = {}
    mounted: dict[str, list[str]] = {}
    for ns in world.host.namespaces():
        with world.in_namespace(ns):
            entries = mountinfo.parse(world.host.mountinfo())
            for spec in daemons:
                for cache in (False, True):
                    target = paths.user_store(spec[0], user_hash, cache)
                    mounted[f"{ns}:{target}"] = [e.source for e in entries
                                                 if e.mount_point == target]
                    try:
                        st = world.host.lstat(target, safe=True)
                    except FileNotFoundError:
                        seen[f"{ns}:{target}"] = None
                        continue
                    seen[f"{ns}:{target}"] = (st.is_dir, st.perm, st.uid, st.gid,
                                              world.host.listdir(target, safe=True))
    return {"hash": user_hash, "seen": seen, "mounted": mounted, "root": world.namespace}


def check_left_empty(out: dict[str, Any], daemons: list[tuple[Any, ...]] = DAEMONS) -> None:
    """Assert what :func:`left_targets` found: the root namespace keeps every target as an
    empty directory with sign-in's owner and mode; nowhere is anything mounted on one; where
    another namespace reaches a target it sees the same empty directory."""
    h, root = out["hash"], out["root"]
    empty = (True, TARGET_MODE, ROOT_ID, ROOT_ID, [])
    for spec in daemons:
        for cache in (False, True):
            target = paths.user_store(spec[0], h, cache)
            assert out["seen"][f"{root}:{target}"] == empty, target
    assert {k: v for k, v in out["mounted"].items() if v} == {}
    assert {k: v for k, v in out["seen"].items() if v is not None and v != empty} == {}


def one_target_missing(files: dict[str, Any], clean: dict[str, Any], user_hash: str) -> bool:
    """``files`` (a :func:`~daemonstore.world.snapshot`) is ``clean`` but for exactly one store
    target of ``user_hash``: what a sign-out cut short (SIGKILL, EIO) between the rmdir and
    the mkdir of a target's renewal leaves. Harmless: nothing of the user is reachable there,
    and the next sign-in makes it again (the tests of faults and repair accept it)."""
    missing = set(clean) - set(files)
    return (len(missing) == 1 and store_user(next(iter(missing))) == user_hash
            and files == {k: v for k, v in clean.items() if k not in missing})


# ---- the stories -------------------------------------------------------------------------------


def naive_story(world: World) -> dict[str, Any]:
    """A naive daemon through a sign-in/sign-out cycle of alice, a sign-in/out of bob it never
    wrote for, then alice's second sign-in and sign-out."""
    view = world.daemon("foo")  # started at boot, as ChromeOS starts daemons
    out: dict[str, Any] = {}
    world.login("alice")
    out["in_session"] = naive_tick(view, "alice", b"in session")
    world.logout("alice")
    out["left"] = left_targets(world, "alice")
    out["after"] = naive_tick(view, "alice", b"after sign-out")  # the bug: it still writes
    target = view.path("alice", STATE)
    out["in_daemon"] = _read(world, view.namespace, target)
    out["in_root"] = _read(world, world.namespace, target)  # the same tmpfs, /run's
    out["vault"] = _vault(world, "alice", "foo")
    out["status"] = _status_reason(world, view, "alice")
    world.login("bob")
    world.logout("bob")
    out["bob_after"] = naive_tick(view, "bob", b"bob, after sign-out")
    out["bob_in_daemon"] = _read(world, view.namespace, view.path("bob", STATE))
    out["bob_vault"] = _vault(world, "bob", "foo")
    # alice again: the tmpfs file is hidden under her store, reported, never deleted
    world.login("alice")
    out["again_warnings"] = world.sessions["alice"].warnings
    out["again_seen"] = view.read("alice", STATE)
    out["again_signout_warnings"] = world.logout("alice").warnings
    out["again_after"] = _read(world, view.namespace, target)
    return out


def careful_story(world: World) -> dict[str, Any]:
    """A daemon that asks store_check through a sign-in/sign-out cycle and a second sign-in."""
    view = world.daemon("foo")
    out: dict[str, Any] = {}
    world.login("alice")
    out["in_session"] = careful_tick(view, "alice", b"in session")
    world.logout("alice")
    out["after"] = careful_tick(view, "alice", b"after sign-out")
    out["status"] = _status_reason(world, view, "alice")
    out["in_daemon"] = view.listdir("alice")
    out["vault"] = _vault(world, "alice", "foo")
    out["left"] = left_targets(world, "alice")
    world.login("alice")
    out["again"] = careful_tick(view, "alice", b"second session")
    out["again_vault"] = _vault(world, "alice", "foo")
    return out


def _status_reason(world: World, view: DaemonView, user: str) -> tuple[bool, str]:
    with world.in_namespace(view.namespace):
        st = store_status(world.host, view.daemon, world.hash_of(user))
    return st.mounted, st.reason


def second_sign_in_story(world: World) -> dict[str, Any]:
    """The second sign-in of a user after a faithful sign-out reuses the targets (their owner
    and mode re-applied even when they drifted); the daemon's slave keeps nothing of the user
    after either sign-out."""
    view = world.daemon("bar")
    out: dict[str, Any] = {}
    h = world.login("alice")
    view.write("alice", STATE, b"first")
    world.logout("alice")
    target = paths.user_store("bar", h)
    out["left_first"] = left_targets(world, "alice")
    out["daemon_after_first"] = (view.sees_store("alice"), view.listdir("alice"),
                                 view.sees_store("alice", cache=True))
    with world.in_namespace(world.namespace):
        world.host.chmod(target, 0o755, safe=True)  # drifted (a root daemon chmodded it)
        world.host.chown(target, 20101, 20102, safe=True)
    h2 = world.login("alice")
    out["same_hash"] = h2 == h
    out["second_warnings"] = world.sessions["alice"].warnings
    out["mounted_second"] = [e.mount_point for e in mountinfo.parse(world.mountinfo())
                             if e.mount_point == target]
    out["seen_second"] = view.sees_store("alice")
    st = view.stat("alice")
    out["attrs_second"] = (st.uid, st.gid, st.perm)  # the bind's root: the template's
    out["read_second"] = view.read("alice", STATE)
    view.write("alice", STATE, b"second")
    world.logout("alice")
    out["left_second"] = left_targets(world, "alice")
    out["daemon_after_second"] = (view.sees_store("alice"), view.listdir("alice"))
    out["vault"] = _vault(world, "alice", "bar")
    return out


def private_copy_story(world: World) -> dict[str, Any]:
    """A namespace made mid-session with *private* propagation (a root daemon's own
    sub-namespace) holds copies of the store binds that no umount reaches: the sign-out's
    renewal of the targets (rmdir, mkdir) detaches them; the targets still stay."""
    world.daemon("foo")
    h = world.login("alice")
    with world.in_namespace(world.namespace):
        world.host.new_namespace("private-late", "private")
    with world.in_namespace("private-late"):
        before = [e.mount_point for e in mountinfo.parse(world.host.mountinfo())
                  if e.mount_point.endswith(h) and e.mount_point.startswith("/run/")]
    world.logout("alice")
    return {"before": before, "left": left_targets(world, "alice")}


def tidy_story(world: World) -> dict[str, Any]:
    """``remove_store_targets=True``: the targets go, with the home mount points."""
    view = world.daemon("foo")
    h = world.login("alice")
    result = world.logout("alice", remove_store_targets=True)
    targets = [paths.user_store(d[0], h, c) for d in DAEMONS for c in (False, True)]
    with world.in_namespace(world.namespace):
        exists = [world.host.exists(t) for t in targets]
    return {"removed": result.removed_dirs, "targets": targets, "exists": exists,
            "daemon_sees": view.listdir(), "naive": naive_tick(view, "alice", b"x")}
