"""A user's mounts are found by identity, not by path (SECURITY.md, "mounts by identity").

Three ways an attacker moves one of a user's mounts away from the path sign-in, sign-out and
repair used to select it by, each on the real kernel (the behaviour is the kernel's):

* chronos swaps ``/home/chronos/u-<H>`` with a decoy directory (``renameat2(RENAME_EXCHANGE)``;
  /home/chronos is chronos-owned) between sign-in's resolution of the target and mount(2): the
  bind lands on the decoy. Once deterministically (the swap injected exactly there), then
  against a real swapper process in a bounded loop;
* a mount point renamed from another mount namespace (the kernel refuses the rename only in
  the caller's namespace): ``/home/chronos/user`` -> ``stash``, before sign-out and before
  repair;
* a root daemon renames its ``/run/daemon-store/<d>/<H>`` to ``<H>.keep`` from a private
  sub-namespace of its jail.

Every case must end with nothing of the user mounted in any namespace the test made, and the
mount table exactly as before the sign-in.
"""

from __future__ import annotations

import errno
import mmap
import os
import random
import signal
from typing import Any

import pytest

from daemonstore import mountinfo, paths, session
from daemonstore.ops import RemoveDir
from daemonstore.session.repair import repair
from daemonstore.world import World, kernel_world
from tests.hardening.conftest import FULL, Figures
from tests.hardening.util import exchange_at, guarded, mount_state, real

pytestmark = pytest.mark.kernel

FOO = ("foo", 20100, 20100, 0o700)
ROUNDS = 300 if FULL else 60


def _alices(host: Any, h: str, namespace: str | None = None) -> list[str]:
    """Mount points of everything of alice's in a namespace: the test's own oracle (her vault
    is a directory of the sandbox's filesystem, so every mount of hers shows a root under
    /home/.shadow/<H>/), not the product's ``user_mounts``."""
    return [e.mount_point for e in mountinfo.parse(host.mountinfo(namespace))
            if e.root.startswith(paths.shadow(h) + "/")]


def _everywhere(host: Any, h: str) -> dict[str, list[str]]:
    return {ns: found for ns in host.namespaces() if (found := _alices(host, h, ns))}


# ---- finding 1: the swap lands between resolution and mount(2) --------------------------------


def _swap_in_bind(world: World, h: str, target: str, decoy: str) -> dict[str, bool]:
    """Make the next bind onto ``target`` resolve it, then have the name exchanged with
    ``decoy`` before mount(2): the worst moment, every time."""
    host = world.host
    parent = os.open(real(world, "/home/chronos"), os.O_PATH | os.O_DIRECTORY)
    state = {"armed": False, "fired": False}
    real_bind, real_open = host.bind, host._open  # type: ignore[attr-defined]

    def bind(source: str, dest: str, **kwargs: Any) -> None:
        state["armed"] = dest == target and not state["fired"]
        try:
            real_bind(source, dest, **kwargs)
        finally:
            state["armed"] = False

    def _open(path: str, flags: int, **kwargs: Any) -> int:
        fd = real_open(path, flags, **kwargs)
        if state["armed"] and path == target:
            state["armed"], state["fired"] = False, True
            exchange_at(parent, target.rsplit("/", 1)[1], decoy)
        return fd

    host.bind = bind  # type: ignore[method-assign]
    host._open = _open  # type: ignore[attr-defined]
    return state


def _decoy_body(world: World) -> dict[str, Any]:
    host = world.host
    h = world.login("alice")
    world.logout("alice")
    out: dict[str, Any] = {}
    for label, target in (("u-<H>", paths.home_chronos(h)),
                          ("/home/chronos/user", paths.HOME_CHRONOS_USER)):
        host.mkdir("/home/chronos/decoy", 0o755, safe=True)
        host.mkdir(target, 0o755, safe=True)
        before = mount_state(host)
        state = _swap_in_bind(world, h, target, "decoy")
        try:
            world.login("alice", first_user=True)
        except session.SignInError as exc:
            out[label] = {"errno": exc.errno, "rollback": exc.rollback}
        else:
            out[label] = {"errno": None}
            world.logout("alice")
        finally:
            del host.bind, host._open  # type: ignore[attr-defined]
        out[label].update(fired=state["fired"], left=_everywhere(host, h),
                          same=mount_state(host) == before)
        for name in ("decoy", target.rsplit("/", 1)[1]):
            if os.path.isdir(real(world, f"/home/chronos/{name}")):
                # the swapped-away mount point keeps the guard sign-in put in it (ops/guard.py)
                # under its new name: RemoveDir takes a lone guard away, as sign-out does
                RemoveDir(f"/home/chronos/{name}").apply(host)
    world.login("alice")
    out["after"] = sorted(_alices(host, h))
    world.logout("alice")
    return out


def test_a_bind_that_lands_on_a_swapped_in_decoy_is_taken_off(figures: Figures) -> None:
    out = kernel_world(guarded(_decoy_body), daemons=[FOO])
    records = 0
    for label in ("u-<H>", "/home/chronos/user"):
        got = out[label]
        assert got["fired"], label  # the swap really happened between resolution and mount
        assert got["errno"] == errno.ESTALE, (label, got)  # the re-check saw it
        assert got["rollback"] == [], (label, got)
        assert got["left"] == {}, (label, got)  # nothing of alice's at the decoy
        assert got["same"], (label, got)
        records += 1
    assert paths.HOME_CHRONOS_USER in out["after"]  # and the next sign-in is whole
    figures.add(attacks=records, attacks_refused=records)


def _swapper(pairs: list[tuple[int, str, str]], counter: mmap.mmap, seed: int) -> None:
    """The attacker (a forked child): exchange each mount point with its decoy, forever."""
    rng = random.Random(seed)
    n = 0
    parent = os.getppid()
    try:
        while os.getppid() == parent:
            dirfd, a, b = rng.choice(pairs)
            try:
                exchange_at(dirfd, a, b)
                n += 1
            except OSError:
                pass  # EBUSY once it is a mount point here, ENOENT while sign-out removed it
            if n % 16 == 0:
                counter[:8] = n.to_bytes(8, "little")
    finally:
        os._exit(0)


def _race_body(world: World, rounds: int, seed: int) -> dict[str, Any]:
    host = world.host
    h = world.login("alice")
    world.logout("alice")
    names = (f"u-{h}", "user")
    chronos = os.open(real(world, "/home/chronos"), os.O_PATH | os.O_DIRECTORY)
    pairs = [(chronos, name, f"decoy{k}") for k, name in enumerate(names)]
    baseline = mount_state(host)
    out: dict[str, Any] = {"ok": 0, "refused": 0, "escapes": [], "errnos": {}, "left": 0}
    counter = mmap.mmap(-1, 8)

    def dirs() -> None:  # sign-out removes the mount points; the decoys must stay around
        for name in (*names, "decoy0", "decoy1"):
            if not os.path.lexists(real(world, f"/home/chronos/{name}")):
                host.mkdir(f"/home/chronos/{name}", 0o755, safe=True)

    dirs()
    pid = os.fork()
    if pid == 0:
        _swapper(pairs, counter, seed)
    try:
        for i in range(rounds):
            try:
                world.login("alice", first_user=True)
                signed_in = True
            except session.SignInError as exc:
                signed_in = False
                name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
                out["errnos"][name] = out["errnos"].get(name, 0) + 1
                if exc.rollback:
                    out["escapes"].append(f"round {i}: rollback problems {exc.rollback}")
            os.kill(pid, signal.SIGSTOP)
            os.waitpid(pid, os.WUNTRACED)
            if signed_in:
                result = world.logout("alice")
                if not result.ok:
                    out["escapes"].append(f"round {i}: sign-out {result.warnings}")
            left = _everywhere(host, h)
            if left or mount_state(host) != baseline:
                out["escapes"].append(f"round {i}: left mounted {left}")
                out["left"] += sum(len(v) for v in left.values())
                for mp in reversed(left.get(host.current_namespace(), [])):
                    host.umount(mp, detach=True)  # so later rounds still say something
            else:
                out["ok" if signed_in else "refused"] += 1
            dirs()
            os.kill(pid, signal.SIGCONT)
    finally:
        os.kill(pid, signal.SIGKILL)  # the swapper this body forked, by its pid
        os.waitpid(pid, 0)
        os.close(chronos)
    out["swaps"] = int.from_bytes(counter[:8], "little")
    return out


def test_sign_in_against_a_mount_point_swapper(figures: Figures) -> None:
    out = kernel_world(guarded(_race_body), ROUNDS, 4321, daemons=[FOO])
    figures.add(identity_race=ROUNDS, identity_swaps=out["swaps"], identity_ok=out["ok"],
                identity_refused=out["refused"], identity_escapes=len(out["escapes"]),
                identity_left=out["left"])
    figures.note("identity", ", ".join(f"{k} {v}" for k, v in sorted(out["errnos"].items())))
    assert out["escapes"] == []
    assert out["ok"] + out["refused"] == ROUNDS
    assert out["swaps"] > ROUNDS  # the attacker really ran alongside


# ---- finding 2: a mount point renamed from another namespace ------------------------------


def _renamed_body(world: World, use_repair: bool) -> dict[str, Any]:
    host = world.host
    with world.in_namespace(world.namespace):
        host.new_namespace("mover", "private")  # made before sign-in: no copy of the homes
    h = world.login("alice", first_user=True)
    before = {"user": host.stat(paths.HOME_CHRONOS_USER, safe=True).ino}
    with world.in_namespace("mover"):
        os.rename(real(world, paths.HOME_CHRONOS_USER), real(world, "/home/chronos/stash"))
        os.rename(real(world, paths.home_chronos(h)), real(world, "/home/chronos/stash2"))
    moved = sorted(e.mount_point for e in mountinfo.parse(host.mountinfo())
                   if "stash" in e.mount_point and e.root.startswith(paths.shadow(h) + "/"))
    if use_repair:
        _plan, report = repair(host)
        done = report.ok
    else:
        done = world.logout("alice").ok
    return {"moved": moved, "done": done, "left": _everywhere(host, h),
            "stash": os.path.lexists(real(world, "/home/chronos/stash")),
            "user_ino": before["user"]}


@pytest.mark.parametrize("how", ["sign-out", "repair"])
def test_mount_points_renamed_from_another_namespace_are_found(how: str,
                                                               figures: Figures) -> None:
    out = kernel_world(guarded(_renamed_body), how == "repair", daemons=[FOO])
    # the attack worked: both homes now show at the stash names in the root namespace
    assert out["moved"] == ["/home/chronos/stash", "/home/chronos/stash2"]
    assert out["done"]
    assert out["left"] == {}  # nothing of alice's in any namespace
    assert not out["stash"]  # the renamed mount point went with the mount
    figures.add(attacks=1, attacks_refused=1)


# ---- finding 5: a root daemon keeps its store by renaming <H> ------------------------------


def _keep_body(world: World) -> dict[str, Any]:
    host = world.host
    view = world.daemon("foo")
    h = world.login("alice")
    view.write("alice", "data", b"alice's")
    store = paths.user_store("foo", h)
    with world.in_namespace(view.namespace):
        host.new_namespace("sub", "private")  # the daemon's private sub-namespace
        # every copy on that dentry in this namespace, so the name is no mount point here: the
        # jail's, and the one under the jail's /run tmpfs (the root's store, a slave copy)
        host.umount(store)
        host.umount("/run", detach=True)
        host.umount(store)
        os.rename(real(world, store), real(world, store + ".keep"))
    kept = sorted(e.mount_point for e in mountinfo.parse(host.mountinfo(view.namespace))
                  if e.mount_point.startswith(store) and e.root.startswith(paths.shadow(h)))
    result = world.logout("alice")
    return {"kept": kept, "ok": result.ok, "left": _everywhere(host, h),
            "keep": os.path.lexists(real(world, store + ".keep")),
            "sees": view.sees_store("alice")}


def test_a_daemon_renaming_its_store_keeps_nothing(figures: Figures) -> None:
    out = kernel_world(guarded(_keep_body), daemons=[FOO])
    h_keep = [p for p in out["kept"] if p.endswith(".keep")]
    assert h_keep, out  # the attack worked: the daemon's namespace shows <H>.keep
    assert out["ok"]
    assert out["left"] == {}
    assert not out["keep"]
    assert not out["sees"]
    figures.add(attacks=1, attacks_refused=1)
