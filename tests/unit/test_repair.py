"""``daemonstore repair`` on the model: a crash at every call of startup, sign-in and sign-out
converges to a clean state (signed in or signed out), a second run has nothing to do, leaked
binds go, empty leftovers go, files written before mount stay, odd names are left alone; and the
CLI's output and exit codes (CliRunner, the backend swapped for a ModelHost).

The same on the real kernel, with SIGKILL instead of the model's simulated crash:
tests/hardening/test_faults.py."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner

from daemonstore import command, mountinfo, paths, session
from daemonstore.boot import run_startup
from daemonstore.cli import main
from daemonstore.host import Host
from daemonstore.kernel import SandboxRefused
from daemonstore.report import status
from daemonstore.session.activity import activity_path
from daemonstore.session.repair import CLEAN_UP, FINISH, TEAR_DOWN, plan_repair, repair
from daemonstore.testing.faults import FaultHost
from daemonstore.world import World
from tests.sign_out_story import one_target_missing

DAEMONS = (("foo", 20100, 20100, 0o700), ("bar", 20101, 20102, 0o2750))


def build(*, boot: bool = False) -> World:
    """Two daemons, foo's running; alice signed in once with data, signed out."""
    world = World.model()
    for spec in DAEMONS:
        world.install_daemon(*spec, startup=False)
    if boot:
        return world
    run_startup(world.host)
    view = world.daemon("foo")
    world.login("alice")
    view.write("alice", "state", b"precious")
    world.logout("alice")
    return world


def state(world: World) -> tuple[Any, ...]:
    """Mounts of every namespace (canonical, plus per-mount options) and every file."""
    texts = {ns: world.host.mountinfo(ns) for ns in world.host.namespaces()}
    options = {ns: sorted((e.mount_point, e.root, e.options) for e in mountinfo.parse(t))
               for ns, t in texts.items()}
    with world.in_namespace(world.namespace):
        files = world.snapshot(skip=[activity_path(world.hash_of("alice"))])
    return mountinfo.canonical(texts), options, files


def _sign_in(host: Host, world: World) -> None:
    session.sign_in(host, world.hash_of("alice"))


def _sign_out(host: Host, world: World) -> None:
    session.sign_out(host, world.hash_of("alice"))


def _startup(host: Host, world: World) -> None:
    run_startup(host)


PHASES: dict[str, tuple[Callable[[Host, World], None], bool, bool]] = {
    # name: (operation, boot world, signed in first)
    "startup": (_startup, True, False),
    "sign-in": (_sign_in, False, False),
    "sign-out": (_sign_out, False, True),
}


def _fresh(phase: str) -> World:
    _op, boot, signed_in = PHASES[phase]
    world = build(boot=boot)
    if signed_in:
        world.login("alice")
    return world


def _calls(phase: str) -> tuple[int, list[Any]]:
    op = PHASES[phase][0]
    world = _fresh(phase)
    before = state(world)
    probe = FaultHost(world.host)
    op(probe, world)
    return probe.count, [before, state(world)]


CASES = [(phase, at) for phase in PHASES for at in range(_calls(phase)[0] + 1)]
CLEAN = {phase: _calls(phase)[1] for phase in PHASES}


def converged(phase: str, got: tuple[Any, ...]) -> bool:
    """The state is one of the clean ones -- or, for a crash between the rmdir and the mkdir of
    a sign-out's target renewal (session/sign_out.py), the signed-out one but for that one
    target, which sign-in makes again: nothing else differs and nothing of the user is left."""
    if got in CLEAN[phase]:
        return True
    *mounts, files = got
    *clean_mounts, clean_files = CLEAN[phase][-1]
    return (phase == "sign-out" and mounts == clean_mounts
            and one_target_missing(files, clean_files, _hash_of_alice()))


def _hash_of_alice() -> str:
    return World.model().hash_of("alice")  # the same seed as build()'s


@pytest.mark.parametrize(("phase", "at"), CASES, ids=[f"{p}-{a}" for p, a in CASES])
def test_a_crash_at_every_call_converges(phase: str, at: int) -> None:
    world = _fresh(phase)
    try:
        PHASES[phase][0](FaultHost(world.host, at=at, action="crash"), world)
    except session.SignInError:
        pass  # its rollback could not run: the host "crashed"
    _plan, report = repair(world.host)
    assert report.ok, report.lines()
    assert converged(phase, state(world))
    assert plan_repair(world.host).empty  # a second run has nothing to do
    if phase != "startup":
        assert world.read_vault("alice", "foo", "state") == b"precious"


def test_the_cases_cover_every_call() -> None:
    assert len(CASES) > 80


def _crash_sign_in(world: World, at: int) -> None:
    try:
        session.sign_in(FaultHost(world.host, at=at, action="crash"), world.hash_of("alice"))
    except session.SignInError:
        pass  # the rollback could not run


def test_a_crash_in_the_store_phase_is_finished_not_torn_down() -> None:
    calls = _log_of(build())
    last_store_bind = max(i for i, (_n, method, path) in enumerate(calls)
                          if method == "bind" and path.endswith("/root/.cache/bar"))
    world = build()
    _crash_sign_in(world, last_store_bind)
    plan = plan_repair(world.host)
    assert [u.kind for u in plan.users] == [FINISH]
    plan.apply(world.host)
    assert state(world) == CLEAN["sign-in"][1]


def _log_of(world: World) -> list[tuple[int, str, str]]:
    probe = FaultHost(world.host)
    session.sign_in(probe, world.hash_of("alice"))
    return probe.log


def _core_call() -> int:
    """The sign-in call that makes user/ shared: a crash there is after the vault bind."""
    return next(i for i, (_n, method, path) in enumerate(_log_of(build()))
                if method == "make" and path.endswith("/mount/user"))


def test_a_crash_in_the_core_is_torn_down() -> None:
    world = build()
    _crash_sign_in(world, _core_call())  # after the vault bind, before user/ is made shared
    plan = plan_repair(world.host)
    assert [u.kind for u in plan.users] == [TEAR_DOWN]
    assert "incomplete session" in plan.users[0].reasons[0]


def test_a_store_installed_after_sign_in_is_finished() -> None:
    world = build()
    world.login("alice")
    world.install_daemon("late", 20200, 20200, 0o700)
    view = world.daemon("late")
    assert not view.sees_store("alice")
    plan, report = repair(world.host)
    assert [u.kind for u in plan.users] == [FINISH] and report.ok
    assert view.sees_store("alice") and view.sees_store("alice", cache=True)
    assert plan_repair(world.host).empty


def test_leaked_binds_of_a_user_who_is_not_signed_in_go_and_data_stays() -> None:
    world = build()
    h = world.hash_of("alice")
    target = paths.user_store("foo", h)  # left by the sign-out, as ChromeOS leaves it
    world.host.bind(f"{paths.vault(h)}/root/foo", target)  # as a crashed sign-out leaves it
    world.host.mkdir(paths.home_user(h), 0o750)  # an empty leftover mount point
    plan, report = repair(world.host)
    assert [(u.kind, u.user_hash) for u in plan.users] == [(CLEAN_UP, h)]
    assert report.ok and not world.host.exists(paths.home_user(h))
    # the bind went; the empty target stays, as every sign-out leaves it
    assert world.host.listdir(target) == []
    assert [e for e in mountinfo.parse(world.mountinfo()) if e.mount_point == target] == []
    assert world.read_vault("alice", "foo", "state") == b"precious"
    assert plan_repair(world.host).empty


def test_writes_before_mount_are_kept_and_left_to_sign_in_and_status() -> None:
    """A file in a target left by sign-out is no crash leftover: repair leaves it alone;
    ``status`` lists it as a problem and the next sign-in reports it (never deleted)."""
    world = build()
    h = world.hash_of("alice")
    target = paths.user_store("foo", h)
    world.host.write_file(f"{target}/early", b"before mount")
    plan, _report = repair(world.host)
    assert plan.empty and world.host.read_file(f"{target}/early") == b"before mount"
    assert [p for p in status.status_of(world.host).problems if p.startswith(target)]
    world.login("alice")
    assert any(target in w and "never deleted" in w for w in world.sessions["alice"].warnings)
    out = world.logout("alice")
    assert any(target in w and "never deleted" in w for w in out.warnings)
    assert world.host.read_file(f"{target}/early") == b"before mount"


def test_names_that_are_not_hashes_are_left_alone() -> None:
    world = build()
    for odd in ("...", "ZZZ", "0" * 39):
        world.host.mkdir(f"{paths.store('foo')}/{odd}", 0o700)
    plan = plan_repair(world.host)
    assert plan.empty and len(plan.kept) == 3
    repair(world.host)
    assert sorted(world.host.listdir(paths.store("foo"))) == sorted(
        ["...", "0" * 39, "ZZZ", world.hash_of("alice")])  # alice's: left by her sign-out


# ---- the CLI ------------------------------------------------------------------------------------


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> World:
    world = build()
    monkeypatch.setattr(command, "open_host", lambda root, **_: world.host)
    return world


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, ["repair", *args], catch_exceptions=False)


def test_cli_consistent_host_exits_0(host: World) -> None:
    res = invoke("--root", "/r")
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines()[-1].startswith("repair: changed 0 things")


def test_cli_dry_run_prints_the_plan_and_changes_nothing(host: World) -> None:
    _crash_sign_in(host, _core_call())
    before = state(host)
    res = invoke("--root", "/r", "--dry-run")
    assert res.exit_code == 0, res.output
    assert f"# {TEAR_DOWN} {host.hash_of('alice')}" in res.stdout
    assert "would change 1 things" in res.stdout and state(host) == before
    res = invoke("--root", "/r", "--json")
    out = json.loads(res.stdout)
    assert out["ok"] and [u["action"] for u in out["users"]] == [TEAR_DOWN]
    assert plan_repair(host.host).empty


def test_cli_exit_1_when_something_cannot_be_repaired(host: World) -> None:
    store = paths.store("late")
    host.install_daemon("late", 20200, 20200, 0o700, startup=False)
    host.host.symlink("/etc", store)  # a symlink where a store must be: blocked, never followed
    res = invoke("--root", "/r")
    assert res.exit_code == 1
    assert "is a symlink" in res.stderr


def test_cli_exit_2_when_it_cannot_run(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(root: str, **_: object) -> Host:
        raise SandboxRefused("refusing to run in the machine's initial mount namespace")

    monkeypatch.setattr(command, "open_host", refuse)
    res = CliRunner().invoke(main, ["repair", "--root", "/"])
    assert res.exit_code == 2 and "initial mount namespace" in res.output


def test_the_model_world_is_deterministic() -> None:
    """The reference states above compare two separately built worlds: same salt, same hash."""
    assert World.model().hash_of("alice") == World.model().hash_of("alice")
    assert random.Random(0).randbytes(4) == random.Random(0).randbytes(4)
