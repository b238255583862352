"""The low-disk cleanup on the model: the acceptance story, hostile caches (symlinks, mount
points, things that are not what they should be), a tree changing underneath (a Host wrapper
plays the concurrent process), the LRU records of sign-in/sign-out, the model's statvfs, the
``daemonstore cleanup`` command and the watch loop."""

from __future__ import annotations

import errno
import json
from typing import Any

import pytest
from click.testing import CliRunner

from daemonstore import command, paths
from daemonstore.cleanup import Thresholds, run_cleanup, watch
from daemonstore.cleanup.plan import MiB
from daemonstore.cli import main
from daemonstore.host import Host
from daemonstore.model import ModelHost
from daemonstore.session.activity import activity_path, read_activity, record_activity
from daemonstore.world import World
from tests.cleanup_story import DAEMONS, THRESHOLDS, story

#: with the ``world`` fixture: 40 MiB free (less a few pages) when every cache is empty
T = Thresholds(target=36 * MiB, normal=32 * MiB, aggressive=24 * MiB, critical=8 * MiB)


def make_world(size: str = "64M") -> World:
    world = World.model()
    world.host.mkdir("/home", 0o755)
    world.host.mount_tmpfs("small", "/home", data=f"size={size}")
    for spec in DAEMONS:
        world.install_daemon(*spec)
    return world


def fill(world: World, user: str, daemon: str, rel: str, mib: int, *, cache: bool = True) -> str:
    path = world.vault_path(user, daemon, rel, cache=cache)
    world.host.mkdir(path.rsplit("/", 1)[0], 0o700, parents=True, safe=True)
    world.host.write_file(path, b"c" * (mib * MiB), safe=True)
    return path


# ---- the acceptance story (also run on the kernel) ----------------------------------------------


def test_story_frees_in_order_until_the_target_and_keeps_everything_else() -> None:
    world = World.model()
    for spec in DAEMONS:
        world.install_daemon(*spec)
    out = story(world)
    a, b = out["hashes"]["alice"], out["hashes"]["bob"]
    report = out["report"]
    assert [(s["user"], s["daemon"], s["phase"]) for s in report["steps"]] == [
        (b, "bar", "signed-out"), (b, "foo", "signed-out"),
        (a, "bar", "signed-in"), (a, "baz", "signed-in")]
    assert report["freed"] == {b: {"bar": 8 * MiB, "foo": 12 * MiB},
                               a: {"bar": 8 * MiB, "baz": 4 * MiB}}
    assert (report["state_before"], report["state_after"], report["target_met"]) == (
        "critical", "above-target", True)
    assert report["free_after"] >= THRESHOLDS.target and out["ok"]
    assert out["persistent_files"] == 5 and out["persistent_intact"] and out["etc_intact"]
    assert out["planted_mount"] == b"on another mount"
    assert out["bound_still_there"] == ["state"]
    assert out["cache_left"][("alice", "foo")] == ["blob"]  # the target came first
    assert out["cache_left"][("bob", "foo")] == []
    assert out["cache_left"][("bob", "bar")] == ["mnt"] and out["cache_left"][("alice", "bar")] == [
        "bound"]


# ---- hostile trees -----------------------------------------------------------------------------


@pytest.fixture
def world() -> World:
    """alice signed in; bob (older) and carol (newer) signed out; 24 MiB of persistent data on
    the 64 MiB /home, no cache data."""
    w = make_world()
    for user in ("alice", "bob", "carol"):
        w.login(user)
        fill(w, user, "foo", "state", 12 if user == "alice" else 6, cache=False)
    w.logout("bob")
    w.logout("carol")
    record_activity(w.host, w.hash_of("bob"), 100)
    record_activity(w.host, w.hash_of("carol"), 200)
    return w


def test_cache_contents_go_directories_stay_and_nothing_outside_is_touched(world: World) -> None:
    fill(world, "bob", "foo", "a/b/c/data", 20)
    fill(world, "bob", "bar", "x", 1)
    host = world.host
    shadow = paths.shadow(world.hash_of("bob"))
    caches = [world.vault_path(u, d, cache=True) for u in ("alice", "bob", "carol")
              for d in ("bar", "baz", "foo")]
    before = world.snapshot(skip=caches)
    modes = {c: host.lstat(c).mode for c in caches}
    report = run_cleanup(host, T)
    assert [(r.step.user_hash, r.step.daemon) for r in report.steps] == [
        (world.hash_of("bob"), "bar"), (world.hash_of("bob"), "foo")]
    assert world.snapshot(skip=caches) == before
    assert {c: host.lstat(c).mode for c in caches} == modes
    assert host.listdir(f"{shadow}/vault/root/.cache/foo") == []
    assert report.steps[1].removed_dirs == 3 and report.steps[1].removed_files == 1


def test_symlinks_are_unlinked_never_followed(world: World) -> None:
    host = world.host
    cache = world.vault_path("bob", "foo", cache=True)
    fill(world, "bob", "foo", "blob", 20)
    alice_state = world.vault_path("alice", "foo", "state")
    host.symlink("/etc", f"{cache}/etc")
    host.symlink("/etc/passwd", f"{cache}/passwd")
    host.symlink(alice_state, f"{cache}/alice")
    host.symlink("../../../../..", f"{cache}/up")
    host.mkdir(f"{cache}/d")
    host.symlink(world.vault_path("carol", "foo"), f"{cache}/d/carol")
    etc = world.snapshot("/etc")
    report = run_cleanup(host, T)
    assert host.listdir(cache) == []
    assert world.snapshot("/etc") == etc
    assert len(host.read_file(alice_state)) == 12 * MiB
    assert host.listdir(world.vault_path("carol", "foo")) == ["state"]
    bob = report.steps[0]
    assert (bob.removed_files, bob.removed_dirs, bob.skipped) == (6, 1, [])


def test_mount_points_in_a_cache_are_not_crossed(world: World) -> None:
    host = world.host
    fill(world, "bob", "foo", "blob", 20)
    cache = world.vault_path("bob", "foo", cache=True)
    host.mkdir(f"{cache}/sub/tmp", parents=True)
    host.mount_tmpfs("planted", f"{cache}/sub/tmp")
    host.write_file(f"{cache}/sub/tmp/keep", b"k")
    host.write_file(f"{cache}/file-target", b"")
    host.bind(world.vault_path("carol", "foo", "state"), f"{cache}/file-target")
    report = run_cleanup(host, T)
    bob = report.steps[0]
    assert sorted(bob.skipped) == [f"{cache}/file-target: mount point (another mount), not "
                                   "crossed",
                                   f"{cache}/sub/tmp: mount point (another mount), not crossed"]
    assert bob.kept_dirs == 1
    assert host.listdir(cache) == ["file-target", "sub"]
    assert host.read_file(f"{cache}/sub/tmp/keep") == b"k"
    assert len(host.read_file(world.vault_path("carol", "foo", "state"))) == 6 * MiB


def test_caches_that_are_not_real_directories_are_left_alone(world: World) -> None:
    host = world.host
    h = world.hash_of("bob")
    base = f"{paths.vault(h)}/root/.cache"
    fill(world, "carol", "foo", "blob", 30)
    host.mkdir("/elsewhere")
    host.write_file("/elsewhere/precious", b"p")
    host.rmdir(f"{base}/foo")
    host.symlink("/elsewhere", f"{base}/foo")           # a symlink where a daemon's cache is
    host.mount_tmpfs("planted", f"{base}/bar")          # a mount point as a daemon's cache
    host.write_file(f"{base}/bar/keep", b"k")
    host.write_file(f"{base}/loose", b"l")              # a file loose in .cache
    host.mkdir(f"{base}/bad..name")                     # a name no daemon can have
    host.write_file(f"{base}/bad..name/x", b"x")
    report = run_cleanup(host, T)
    assert [r.step.user_hash for r in report.steps] == [world.hash_of("carol")]
    assert host.read_file("/elsewhere/precious") == b"p"
    assert host.read_file(f"{base}/bar/keep") == b"k"
    assert host.read_file(f"{base}/loose") == b"l"
    assert host.read_file(f"{base}/bad..name/x") == b"x"
    assert sorted(report.warnings) == [
        f"{base}/bad..name left alone: daemon name 'bad..name' contains '..'",
        f"{base}/bar is a mount point: not crossed, left alone",
        f"{base}/foo is not a directory: left alone",
        f"{base}/loose is not a directory: left alone"]


def test_a_symlinked_cache_root_is_not_followed(world: World) -> None:
    host = world.host
    h = world.hash_of("bob")
    root = f"{paths.vault(h)}/root"
    fill(world, "carol", "foo", "blob", 30)
    host.mkdir("/elsewhere/.cache/foo", parents=True)
    host.write_file("/elsewhere/.cache/foo/precious", b"p")
    host.unlink(activity_path(h))
    host.rmdir(f"{root}/.cache/bar")
    host.rmdir(f"{root}/.cache/baz")
    host.rmdir(f"{root}/.cache/foo")
    host.rmdir(f"{root}/.cache")
    host.symlink("/elsewhere/.cache", f"{root}/.cache")
    report = run_cleanup(host, T)
    assert host.read_file("/elsewhere/.cache/foo/precious") == b"p"
    assert [r.step.user_hash for r in report.steps] == [world.hash_of("carol")]
    assert report.warnings == [f"{root}/.cache is not a directory on its vault's mount: left "
                               "alone"]


class Racing:
    """A Host whose files change behind the cleanup's back at chosen moments (another process
    racing it): ``vanish`` files are deleted just before the cleanup unlinks them, ``ghost``
    entries right after their directory is listed, ``grow`` directories gain a file after being
    listed, ``swap`` directories become symlinks to /etc and ``gone`` ones vanish right after
    their lstat. Only once
    ``armed`` (the first step starts): measuring the caches walks them too."""

    def __init__(self, inner: Host) -> None:
        self.inner = inner
        self.armed = False

    def arm(self, line: str) -> None:
        self.armed = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def unlink(self, path: str, *, safe: bool = False) -> None:
        if self.armed and path.endswith("/vanish"):
            self.inner.unlink(path)
        self.inner.unlink(path, safe=safe)

    def listdir(self, path: str, *, safe: bool = False) -> list[str]:
        names = self.inner.listdir(path, safe=safe)
        if self.armed and path.endswith("/grow"):
            self.inner.write_file(f"{path}/appeared", b"new")
        for name in names:
            if self.armed and name == "ghost":
                self.inner.unlink(f"{path}/ghost")
        return names

    def lstat(self, path: str, *, safe: bool = False) -> Any:
        st = self.inner.lstat(path, safe=safe)
        if self.armed and path.endswith("/gone") and st.is_dir:
            self.inner.rmdir(path)
        if self.armed and path.endswith("/swap") and st.is_dir:
            self.inner.rmdir(path)
            self.inner.symlink("/etc", path)
        return st


def test_a_tree_changing_underneath_is_survived(world: World) -> None:
    host = world.host
    fill(world, "bob", "foo", "blob", 20)
    cache = world.vault_path("bob", "foo", cache=True)
    for rel in ("vanish", "ghost", "d/vanish", "grow/old"):
        fill(world, "bob", "foo", rel, 0)
    host.mkdir(f"{cache}/swap")
    host.mkdir(f"{cache}/gone")
    etc = world.snapshot("/etc")
    racing = Racing(host)
    report = run_cleanup(racing, T, log=racing.arm)  # type: ignore[arg-type]
    bob = report.steps[0]
    assert bob.errors == [] and bob.vanished == 4  # vanish, d/vanish, ghost, gone
    assert bob.kept_dirs == 1  # grow: it gained a file after it was listed
    assert bob.skipped == [f"{cache}/swap: ELOOP (replaced or unreadable meanwhile), not "
                           "entered"]
    assert host.listdir(cache) == ["grow", "swap"]
    assert host.listdir(f"{cache}/grow") == ["appeared"]
    assert host.readlink(f"{cache}/swap") == "/etc" and world.snapshot("/etc") == etc
    assert report.ok


def test_a_cache_that_vanished_before_its_turn(world: World) -> None:
    host = world.host
    fill(world, "bob", "foo", "blob", 20)
    fill(world, "carol", "foo", "blob", 10)

    def log(line: str) -> None:  # bob's turn comes first; carol's cache is gone by hers
        if world.hash_of("bob") in line:
            cache = world.vault_path("carol", "foo", cache=True)
            host.unlink(f"{cache}/blob")
            host.rmdir(cache)

    t = Thresholds(target=45 * MiB, normal=42 * MiB, aggressive=24 * MiB, critical=8 * MiB)
    report = run_cleanup(host, t, log=log)
    assert [(r.vanished, r.removed_files) for r in report.steps] == [(0, 1), (1, 0)]


# ---- LRU records -------------------------------------------------------------------------------


def test_sign_in_and_sign_out_record_activity() -> None:
    w = make_world()
    h = w.login("alice")
    first = read_activity(w.host, h)
    assert first is not None
    w.logout("alice")
    second = read_activity(w.host, h)
    assert second is not None and second >= first
    w.logout("alice")  # not signed in: no new record
    assert read_activity(w.host, h) == second
    assert w.host.lstat(activity_path(h)).perm == 0o600


def test_signed_out_users_go_least_recently_active_first() -> None:
    w = make_world()
    for user in ("u1", "u2", "u3"):
        w.login(user)
        fill(w, user, "foo", "blob", 12)
    for user in ("u2", "u3", "u1"):  # sign-out order is the activity order
        w.logout(user)
    w.host.unlink(activity_path(w.hash_of("u3")))  # no record: counts as the oldest
    t = Thresholds(target=50 * MiB, normal=45 * MiB, aggressive=24 * MiB, critical=8 * MiB)
    report = run_cleanup(w.host, t)  # 28 MiB free -> 40 -> 52
    assert [r.step.user_hash for r in report.steps] == [w.hash_of(u) for u in ("u3", "u2")]


@pytest.mark.parametrize("content", [b"", b"soon\n", b"-5\n", b"9" * 100])
def test_bad_records_read_as_unknown(content: bytes) -> None:
    host = make_world().host
    h = "e" * 40
    host.mkdir(paths.shadow(h), parents=True)
    host.write_file(activity_path(h), content)
    assert read_activity(host, h) is None


def test_a_planted_symlink_record_is_not_followed() -> None:
    host = make_world().host
    h = "e" * 40
    host.mkdir(paths.shadow(h), parents=True)
    host.symlink("/etc/passwd", activity_path(h))
    assert "could not record" in (record_activity(host, h) or "")
    assert read_activity(host, h) is None


# ---- thresholds and namespaces -------------------------------------------------------------


def test_above_the_normal_threshold_nothing_is_even_gathered(world: World) -> None:
    class Counting(Racing):
        calls = 0

        def listdir(self, path: str, *, safe: bool = False) -> list[str]:
            Counting.calls += 1
            return self.inner.listdir(path, safe=safe)

    t = Thresholds(target=60 * MiB, normal=39 * MiB, aggressive=24 * MiB, critical=8 * MiB)
    report = run_cleanup(Counting(world.host), t)  # type: ignore[arg-type]
    assert report.steps == [] and report.ok and Counting.calls == 0
    assert "nothing to do" in report.stopped


def test_signed_in_caches_are_kept_unless_aggressive(world: World) -> None:
    fill(world, "alice", "foo", "blob", 10)
    fill(world, "bob", "foo", "blob", 20)
    # 10 MiB free: critical; bob's cache brings it to 30, not below aggressive: alice's stay
    t = Thresholds(target=36 * MiB, normal=32 * MiB, aggressive=28 * MiB, critical=16 * MiB)
    report = run_cleanup(world.host, t)
    assert [r.step.phase for r in report.steps] == ["signed-out"]
    assert "signed-in users' caches kept" in report.stopped and not report.ok
    assert world.host.listdir(world.vault_path("alice", "foo", cache=True)) == ["blob"]


def test_runs_in_the_namespace_given(world: World) -> None:
    fill(world, "alice", "foo", "blob", 30)
    view = world.daemon("foo")  # makes the daemon's namespace current while it is built
    world.host.use_namespace(view.namespace)
    report = run_cleanup(world.host, T, namespace=world.namespace)
    assert world.host.current_namespace() == view.namespace
    assert [(r.step.phase, r.step.daemon) for r in report.steps] == [("signed-in", "foo")]
    assert report.steps[0].step.path == paths.user_store("foo", world.hash_of("alice"),
                                                         cache=True)


def test_no_shadow_directory_cannot_be_measured() -> None:
    with pytest.raises(OSError) as info:
        run_cleanup(ModelHost(), T)
    assert info.value.errno == errno.ENOENT


# ---- the model's statvfs ---------------------------------------------------------------------


@pytest.mark.parametrize(("data", "total"), [
    ("size=64M", 64 * MiB), ("size=64m", 64 * MiB), ("size=1g", 1 << 30), ("size=100k", 4096 * 25),
    ("size=5000", 8192), ("size=0x100000", MiB), ("nr_blocks=10", 40960),
    ("size=25%", 2 << 30), ("", 4 << 30), ("size=1M,size=2M", 2 * MiB), ("mode=700", 4 << 30),
    ("size=0", 0),
])
def test_model_tmpfs_capacity(data: str, total: int) -> None:
    host = ModelHost()  # 8 GiB of pretend RAM: half of it by default
    host.mkdir("/t")
    host.mount_tmpfs("t", "/t", data=data)
    assert host.statvfs("/t") == (total, total)


def test_model_usage_is_pages_of_file_data() -> None:
    host = ModelHost()
    host.mkdir("/t")
    host.mount_tmpfs("t", "/t", data="size=1M")
    host.write_file("/t/a", b"x")
    host.write_file("/t/b", b"x" * 4097)
    host.mkdir("/t/d")
    host.symlink("short", "/t/d/s")
    host.symlink("l" * 200, "/t/d/long")
    host.mkfifo("/t/f")
    assert host.statvfs("/t/d") == (MiB, MiB - 4 * 4096)
    host.write_file("/t/big", b"x" * (2 * MiB))  # the model does not refuse (no ENOSPC)
    assert host.statvfs("/t") == (MiB, 0)
    assert host.statvfs("/") == (4 << 30, 4 << 30)  # another filesystem


# ---- the command -------------------------------------------------------------------------------


@pytest.fixture
def cli_world(monkeypatch: pytest.MonkeyPatch, world: World) -> World:
    monkeypatch.setattr(command, "open_host", lambda root, **_: world.host)
    fill(world, "bob", "foo", "blob", 20)
    fill(world, "carol", "foo", "blob", 10)
    return world


SIZES = ["--target", "36M", "--normal", "32M", "--aggressive", "24M", "--critical", "8M"]


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, ["cleanup", "--root", "/r", *args], catch_exceptions=False)


def test_cli_text(cli_world: World) -> None:
    res = invoke(*SIZES)
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].startswith("cleanup: 10.0 MiB free of 64.0 MiB: aggressive (target 36.0")
    assert lines[1].startswith(f"freed 20.0 MiB: signed-out user {cli_world.hash_of('bob')} "
                               "daemon foo (1 files, 0 dirs, 20.0 MiB of data) ")
    assert lines[2].startswith(f"freed 10.0 MiB: signed-out user {cli_world.hash_of('carol')}")
    assert lines[-1].startswith("cleanup: aggressive -> above-target, freed 30.0 MiB in 2 "
                                "caches, 40.0 MiB free of 64.0 MiB; stopped: every cache")


def test_cli_json_and_exit_1_when_the_target_is_missed(cli_world: World) -> None:
    res = invoke("--target", "50M", "--normal", "45M", *SIZES[4:], "--json")
    assert res.exit_code == 1, res.output
    out = json.loads(res.output)
    assert out["backend"] == "model" and out["exit_code"] == 1
    assert out["freed"] == {cli_world.hash_of("bob"): {"foo": 20 * MiB},
                            cli_world.hash_of("carol"): {"foo": 10 * MiB}}
    assert out["target_met"] is False and out["state_after"] == "normal"
    assert out["stopped"] == "every cache that may be cleared was cleared"


def test_cli_dry_run_changes_nothing(cli_world: World) -> None:
    before = cli_world.snapshot()
    res = invoke(*SIZES, "--dry-run")
    assert res.exit_code == 0, res.output
    assert cli_world.snapshot() == before
    assert [ln[:2] for ln in res.output.splitlines()] == ["# ", "+ ", "+ "]


def test_cli_watch_counts_passes(cli_world: World) -> None:
    res = invoke(*SIZES, "--watch", "0.001", "--count", "3", "--json")
    assert res.exit_code == 0, res.output
    passes = [json.loads(ln) for ln in res.stdout.splitlines()]
    assert [len(p["steps"]) for p in passes] == [2, 0, 0]
    assert [p["state_before"] for p in passes] == ["aggressive", "above-target", "above-target"]


@pytest.mark.parametrize(("args", "message"), [
    (["--target", "lots"], "K/M/G/T"),
    (["--critical", "2G"], "critical <= aggressive <= normal <= target"),
    (["--count", "2"], "--count needs --watch"),
    (["--watch", "0"], "Invalid value for '--watch'"),
])
def test_cli_bad_input_exits_2(cli_world: World, args: list[str], message: str) -> None:
    res = CliRunner().invoke(main, ["cleanup", *args])
    assert res.exit_code == 2 and message in res.output


def test_cli_cannot_measure_exits_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(command, "open_host", lambda root, **_: ModelHost())
    res = CliRunner().invoke(main, ["cleanup", "--root", "/r"])
    assert res.exit_code == 2
    assert "cannot measure the free space of /home/.shadow" in res.output


def test_cli_refused_root_exits_2(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(root: str, **_: object) -> Host:
        raise PermissionError(errno.EPERM, "refusing to run in the initial mount namespace")

    monkeypatch.setattr(command, "open_host", refuse)
    res = CliRunner().invoke(main, ["cleanup", "--root", "/r"])
    assert res.exit_code == 2 and "initial mount namespace" in res.output


def test_watch_loop(world: World) -> None:
    sleeps: list[float] = []
    reports: list[Any] = []
    n = watch(world.host, T, interval=5, count=3, sleep=sleeps.append, on_report=reports.append)
    assert n == 3 and sleeps == [5, 5] and len(reports) == 3
    with pytest.raises(ValueError, match="interval"):
        watch(world.host, T, interval=0, count=1)


def test_callable_from_cryptohome_sim() -> None:
    import random

    from cryptohome_sim.core import Cryptohome

    host = ModelHost()
    host.mkdir("/home")
    host.mount_tmpfs("small", "/home", data="size=64M")
    core = Cryptohome(host, random_bytes=random.Random(1).randbytes)
    core.install_daemon("foo", 20100, 20100, 0o700)
    core.add_user("alice@example.com")
    sid, _exists = core.start_auth_session("alice@example.com", ephemeral=False)
    core.authenticate_auth_factor(sid)
    h = core.prepare_persistent_vault(sid)
    host.write_file(f"{paths.user_store('foo', h, cache=True)}/blob", b"c" * (60 * MiB))
    host.new_namespace("elsewhere")  # whatever namespace a test left current
    report = run_cleanup(core.host, T, namespace=core.namespace)
    assert report.freed() == {h: {"foo": 60 * MiB}}
    assert host.current_namespace() == "elsewhere"
