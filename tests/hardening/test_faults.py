"""Faults on the real kernel: a failure (EIO) injected before every system call of startup,
sign-in and sign-out, and a SIGKILL of the process doing them at every one of those points.

Each case gets a fresh world of its own: a tmpfs mounted at ``/cases/N`` inside the sandbox with
a KernelHost on it (so the cases cannot disturb each other), built the same way every time (a
fixed salt, so the same user hash), with two daemons running in their namespaces and a returning
user with data. Then:

* EIO (``FaultHost(action="raise")``): the failing command reports it; the *normal* command run
  again (startup; sign-out; nothing for sign-in, whose rollback must already leave the signed-out
  state) converges, and ``repair`` then finds nothing to do;
* SIGKILL (``FaultHost(action="kill")`` in a forked child: the kill point is exact, the N-th
  call): ``repair`` converges; a second ``repair`` finds nothing to do.

"Converges" means: every namespace's mounts (tree, peer groups, per-mount options) and every file
of the sandbox (type, mode, owner, content) equal those of a clean run -- signed out, or signed
in (a sign-in killed after its last call, a sign-out killed before its first) -- so no mount is
leaked anywhere and no byte of user data is lost. Busy mounts at sign-out (a daemon holding a
file open, or sitting in the store as its cwd) are detached lazily, reported, and leak nothing.
"""

from __future__ import annotations

import os
import random
import signal
from collections.abc import Callable
from typing import Any

import pytest

from daemonstore import paths, session
from daemonstore.boot import run_startup
from daemonstore.host import Host
from daemonstore.kernel import KernelHost
from daemonstore.session.repair import plan_repair, repair
from daemonstore.testing.faults import FaultHost
from daemonstore.world import World, kernel_world
from tests.hardening.conftest import Figures
from tests.hardening.util import files_state, guarded, mount_state
from tests.sign_out_story import one_target_missing

pytestmark = pytest.mark.kernel

#: three daemons, one with a setgid template (mkdirat drops setgid: the chmod step must run)
DAEMONS = (("foo", 20100, 20100, 0o700), ("bar", 20101, 20102, 0o750),
           ("baz", 20103, 20104, 0o2750))
DATA = {(d, cache): f"{d}'s {'cache' if cache else 'state'}".encode()
        for d, *_ in DAEMONS for cache in (False, True)}


# ---- one fresh world per case -------------------------------------------------------------------


class Cases:
    """Fresh tmpfs sandboxes below the outer one (``/cases/N``), each with its own KernelHost."""

    def __init__(self, outer: World) -> None:
        self.outer = outer
        self.n = 0
        outer.host.mkdir("/cases", 0o755, safe=True)

    def world(self, *, boot: bool) -> tuple[World, KernelHost]:
        """A world as built by :func:`_build`; ``boot``: stop before startup."""
        self.n += 1
        point = f"/cases/{self.n}"
        self.outer.host.mkdir(point, 0o755, safe=True)
        self.outer.host.mount_tmpfs("case", point)
        host = KernelHost(self.outer.host.root + point)  # type: ignore[attr-defined]
        world = World(host, random_bytes=random.Random(0).randbytes)
        _build(world, boot=boot)
        return world, host

    def done(self, world: World, host: KernelHost) -> None:
        if host.current_namespace() != "init":
            host.use_namespace("init")
        host.close()
        point = f"/cases/{self.n}"
        self.outer.host.umount(point, detach=True)
        self.outer.host.rmdir(point, safe=True)


def _build(world: World, *, boot: bool) -> None:
    for name, uid, gid, mode in DAEMONS:
        world.install_daemon(name, uid, gid, mode, startup=False)
    if boot:
        return
    run_startup(world.host)
    views = [world.daemon(name) for name, *_ in DAEMONS]
    world.login("alice")
    for view in views:
        for cache in (False, True):
            view.write("alice", "state", DATA[(view.daemon, cache)], cache=cache)
    world.logout("alice")


def _state(world: World, user: str = "alice") -> dict[str, Any]:
    """Mounts of every namespace and every file. For a brand-new user ("bob") the files in his
    own shadow directory are left out: a failed first sign-in keeps the vault it created
    (cryptohome creates the vault on first mount), empty."""
    h = world.hash_of(user)
    files = files_state(world, world.hash_of("alice"))  # less alice's activity timestamp
    if user != "alice":
        files = {p: v for p, v in files.items() if not p.startswith(paths.shadow(h))}
    return {"mounts": mount_state(world.host), "files": files}


def _data_intact(world: World) -> bool:
    return all(world.read_vault("alice", d, "state", cache=c) == data
               for (d, c), data in DATA.items())


# ---- the operations under test ------------------------------------------------------------------


def _op_startup(host: Host, world: World) -> None:
    run_startup(host)


def _op_sign_in(host: Host, world: World) -> None:
    session.sign_in(host, world.hash_of("alice"))


def _op_sign_in_new(host: Host, world: World) -> None:
    session.sign_in(host, world.hash_of("bob"))


def _op_sign_out(host: Host, world: World) -> None:
    session.sign_out(host, world.hash_of("alice"))


def _normal_again(phase: str, world: World) -> None:
    """What an operator would do after the command reported a failure."""
    if phase == "startup":
        run_startup(world.host)
    elif phase == "sign-out":
        world.logout("alice")
    # sign-in: nothing -- the rollback must have restored the signed-out state already


OPS: dict[str, Callable[[Host, World], None]] = {
    "startup": _op_startup, "sign-in": _op_sign_in, "sign-in-new": _op_sign_in_new,
    "sign-out": _op_sign_out}
#: whose state a phase compares (bob: a brand-new user, signing in for the first time)
USER = {"sign-in-new": "bob"}


def _run_killed(op: Callable[[Host, World], None], world: World, at: int) -> int:
    """Run ``op`` in a forked child that SIGKILLs itself before call ``at``; its exit status."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into the sandbox machinery
        code = 3
        try:
            op(FaultHost(world.host, at=at, action="kill"), world)
            code = 0
        except BaseException:  # noqa: BLE001 - a failure here is reported by the status
            code = 4
        finally:
            os._exit(code)
    return os.waitpid(pid, 0)[1]


def _renewal_cut_short(phase: str, state: dict[str, Any], clean: dict[str, Any],
                       world: World) -> bool:
    """Signed out but for one store target: the sign-out was cut short between the rmdir and
    the mkdir of its renewal (session/sign_out.py); the next sign-in makes it again."""
    return (phase == "sign-out" and state["mounts"] == clean["mounts"]
            and one_target_missing(state["files"], clean["files"], world.hash_of("alice")))


def _faults_body(outer: World, phase: str) -> dict[str, Any]:
    cases = Cases(outer)
    boot = phase == "startup"
    user = USER.get(phase, "alice")
    # reference states from clean runs (the same build, the same salt: comparable)
    world, host = cases.world(boot=boot)
    before = _state(world, user)
    probe = FaultHost(host)
    if phase == "sign-out":
        world.login("alice")
        before = _state(world, user)
    OPS[phase](probe, world)
    calls = probe.count
    after = _state(world, user)
    cases.done(world, host)
    # the two clean states a run may end in: as before the command, or as after it
    clean = [before, after]
    out: dict[str, Any] = {"calls": calls, "eio": 0, "kill": 0, "converged": 0, "leaks": 0,
                           "lost": 0, "problems": [], "repairs": {}}
    for action in ("raise", "kill"):
        for at in range(calls + 1):
            world, host = cases.world(boot=boot)
            if phase == "sign-out":
                world.login("alice")
            label = f"{phase} {action} at call {at}"
            refused = False
            if action == "raise":
                try:
                    OPS[phase](FaultHost(host, at=at), world)
                except session.SignInError:
                    refused = True  # sign-in reports the injected EIO after its rollback
                _normal_again(phase, world)
                out["eio"] += at < calls
            else:
                status = _run_killed(OPS[phase], world, at)
                killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
                if killed != (at < calls) or (not killed and os.waitstatus_to_exitcode(status)):
                    out["problems"].append(f"{label}: child status {status}")
                out["kill"] += at < calls
                _plan, report = repair(host)
                for u, _notes, _ok in report.users:
                    out["repairs"][u.kind] = out["repairs"].get(u.kind, 0) + 1
                if not report.ok:
                    out["problems"].append(f"{label}: repair not ok: {report.lines()}")
            state = _state(world, user)
            again = plan_repair(host)
            # a sign-in that reported the injected EIO: its rollback alone restored the state
            # before (the last call is the best-effort activity record: no failure there)
            ok = (state == clean[0] if refused else state in clean
                  or _renewal_cut_short(phase, state, clean[1], world)) and again.empty
            if not ok:
                out["leaks"] += 1
                mounts = [state["mounts"] == c["mounts"] for c in clean]
                files = [state["files"] == c["files"] for c in clean]
                out["problems"].append(f"{label}: not converged (mounts match {mounts}, files "
                                       f"match {files}, repair again: {again.to_lines()[-3:]})")
            elif not boot and not _data_intact(world):
                out["lost"] += 1
                out["problems"].append(f"{label}: user data lost")
            else:
                out["converged"] += at < calls
            cases.done(world, host)
    return out


@pytest.mark.parametrize("phase", ["startup", "sign-in", "sign-in-new", "sign-out"])
def test_failure_and_sigkill_at_every_call_converge(phase: str, figures: Figures) -> None:
    out = kernel_world(guarded(_faults_body), phase)
    figures.note(f"repairs {phase}", str(out["repairs"]))
    figures.add(faults=out["eio"] + out["kill"], faults_eio=out["eio"],
                faults_kill=out["kill"], faults_converged=out["converged"],
                fault_leaks=out["leaks"], fault_data_lost=out["lost"])
    assert out["problems"] == []
    # 3 daemons, 6 stores (a returning user's targets exist already: sign-out leaves them)
    assert out["calls"] > {"sign-in": 40, "sign-in-new": 50}.get(phase, 20)
    assert out["converged"] == out["eio"] + out["kill"] == 2 * out["calls"]


# ---- busy at sign-out ---------------------------------------------------------------------------


def _hold(world: World, namespace: str, path: str, how: str,
          lifeline: tuple[int, int]) -> int:
    """Fork a "daemon" that enters ``namespace`` and holds ``path`` busy (an open file, or its
    cwd) until the ``lifeline`` pipe reads EOF -- that is, until this process closes its write
    end or dies: a holder can never outlive the test, whatever happens to it. (The child closes
    its own copy of the write end first, or it would wait for itself.)"""
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into the sandbox machinery
        code = 1
        try:
            os.close(lifeline[1])
            os.close(ready_r)
            world.host.use_namespace(namespace)
            real_path = world.host.root + path  # type: ignore[attr-defined]
            if how == "cwd":
                os.chdir(real_path)
            else:
                os.open(f"{real_path}/state", os.O_RDONLY)
            os.write(ready_w, b"r")
            os.close(ready_w)
            os.read(lifeline[0], 1)  # blocks until the test lets go (or is gone)
            code = 0
        finally:
            os._exit(code)
    os.close(ready_w)
    try:
        if os.read(ready_r, 1) != b"r":
            os.waitpid(pid, 0)
            raise RuntimeError(f"holder {pid} ({how}) failed to start")
    finally:
        os.close(ready_r)
    return pid


def _busy_body(world: World) -> dict[str, Any]:
    """A daemon (a real process in its namespace) holds a file open in its store, another sits
    there as its cwd, while the user signs out."""
    views = [world.daemon(name) for name, *_ in DAEMONS]
    h = world.login("alice")
    for view in views:
        view.write("alice", "state", b"kept")
    lifeline_r, lifeline_w = os.pipe()
    holders: list[int] = []
    try:
        for view, how in (views[0], "open file"), (views[1], "cwd"):
            holders.append(_hold(world, view.namespace, view.path("alice"), how,
                                 (lifeline_r, lifeline_w)))
        result = world.logout("alice")
        signed_out = _state(world)
        plan = plan_repair(world.host)
    finally:
        os.close(lifeline_w)
        os.close(lifeline_r)
        for pid in holders:
            os.kill(pid, signal.SIGKILL)  # the daemons this body forked, by pid
            os.waitpid(pid, 0)
    world.login("alice")
    data = [view.read("alice", "state") for view in views]
    world.logout("alice")
    return {"lazy": result.lazily_detached, "warnings": result.warnings, "ok": result.ok,
            "failed": result.failed, "repair_empty": plan.empty, "hash": h,
            "leaked": signed_out != _state(world), "data": data}


def test_busy_mounts_at_sign_out_are_detached_and_reported(figures: Figures) -> None:
    out = kernel_world(guarded(_busy_body), daemons=DAEMONS)
    figures.add(faults_busy=2)
    h = out["hash"]
    assert out["ok"] and out["failed"] == []
    # the two busy store binds: detached lazily (a plain umount is EBUSY), each reported
    assert sorted(out["lazy"]) == sorted([paths.user_store("foo", h), paths.user_store("bar", h)])
    for target in out["lazy"]:
        assert any(target in w and "lazily detached" in w for w in out["warnings"])
    assert out["repair_empty"] and not out["leaked"]
    assert out["data"] == [b"kept"] * len(DAEMONS)


# ---- the command itself -------------------------------------------------------------------------


def _cli_body(world: World) -> dict[str, Any]:
    from click.testing import CliRunner

    from daemonstore.cli import main

    _build(world, boot=False)
    world.daemon("foo")
    probe = FaultHost(world.host)
    _op_sign_in(probe, world)
    _op_sign_out(world.host, world)
    last_bind = max(i for i, method, _path in probe.log if method == "bind")
    status = _run_killed(_op_sign_in, world, last_bind)  # in the store phase: to be finished
    root = world.host.root  # type: ignore[attr-defined]
    runs = [CliRunner().invoke(main, ["repair", "--root", root, *extra])
            for extra in (["--dry-run"], [], [])]
    return {"killed": os.WIFSIGNALED(status), "runs": [(r.exit_code, r.output) for r in runs],
            "signed_in": session.mounted_users(world.host), "hash": world.hash_of("alice"),
            "data": _data_intact(world)}


def test_daemonstore_repair_command_after_a_killed_sign_in() -> None:
    out = kernel_world(guarded(_cli_body))
    (dry_code, dry), (code, text), (again_code, again) = out["runs"]
    assert out["killed"]
    assert dry_code == 0 and "would change 1 things" in dry
    assert code == 0 and "1 finished" in text, text
    assert again_code == 0 and "changed 0 things" in again
    assert out["signed_in"] == [out["hash"]] and out["data"]
