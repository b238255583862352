"""The cleanup's thresholds and order on pyfakefs, through the real ``os``/``shutil`` code path of
:class:`~daemonstore.cleanup.osdisk.OsDisk` (``shutil.disk_usage`` is statvfs; pyfakefs fakes the
disk size with ``fs.set_disk_usage`` and frees what is deleted). Signed-in users are emulated with
OsDisk's bind aliases, which also feed ``mountinfo()``."""

from __future__ import annotations

import os
from typing import Any

import pytest

from daemonstore import paths
from daemonstore.cleanup import OsDisk, Thresholds, run_cleanup
from daemonstore.cleanup.plan import MiB

ROOT = "/sim"
T = Thresholds(target=60 * MiB, normal=50 * MiB, aggressive=40 * MiB, critical=20 * MiB)
SLACK = 4096  # the activity records take a few bytes of the faked disk
ALICE, BOB, CAROL, DAVE = ("a" * 40, "b" * 40, "c" * 40, "d" * 40)


def real(path: str) -> str:
    return ROOT + path


def home(fs: Any, h: str, *, activity: int | None, caches: dict[str, int],
         persistent: int = 5 * MiB) -> None:
    fs.create_dir(real(f"{paths.vault(h)}/root/.cache"))
    fs.create_file(real(f"{paths.vault(h)}/root/foo/state"), st_size=persistent)
    for daemon, size in caches.items():
        fs.create_file(real(f"{paths.vault(h)}/root/.cache/{daemon}/data"), st_size=size)
    if activity is not None:
        fs.create_file(real(f"{paths.shadow(h)}/last_activity"), contents=f"{activity}\n")


def signed_in_binds(h: str, daemons: list[str]) -> dict[str, str]:
    """What sign-in mounts, as OsDisk aliases: the vault on ``mount``, the caches on the store."""
    binds = {paths.vault_mount(h): paths.vault(h)}
    for d in daemons:
        binds[paths.user_store(d, h, cache=True)] = paths.vault_store(h, d, cache=True)
    return binds


@pytest.fixture
def world(fs: Any) -> OsDisk:
    """Persistent data 20 MiB; signed-out caches 30 MiB (carol oldest, then bob, then dave);
    alice, signed in, 30 MiB of caches: 80 MiB in use."""
    home(fs, CAROL, activity=100, caches={"foo": 10 * MiB})
    home(fs, BOB, activity=200, caches={"foo": 10 * MiB, "bar": 5 * MiB})
    home(fs, DAVE, activity=300, caches={"foo": 5 * MiB})
    home(fs, ALICE, activity=50, caches={"bar": 20 * MiB, "baz": 5 * MiB, "foo": 5 * MiB})
    return OsDisk(ROOT, binds=signed_in_binds(ALICE, ["bar", "baz", "foo"]))


def disk_of(fs: Any, world: OsDisk, total_mib: int) -> OsDisk:
    fs.set_disk_usage(total_mib * MiB + SLACK)
    return world


def steps(report: Any) -> list[tuple[str, str, str]]:
    return [(r.step.user_hash[0], r.step.daemon, str(r.step.phase)) for r in report.steps]


CO, CI = "signed-out", "signed-in"
CASES = {
    # total MiB: (steps, state before, state after, target met, ok)
    150: ([], "above-target", "above-target", True, True),
    135: ([], "above-threshold", "above-threshold", False, True),
    # normal: oldest signed-out users first, until the target
    125: ([("c", "foo", CO), ("b", "bar", CO)], "normal", "above-target", True, True),
    # aggressive, but the signed-out users are enough
    110: ([("c", "foo", CO), ("b", "bar", CO), ("b", "foo", CO), ("d", "foo", CO)],
          "aggressive", "above-target", True, True),
    # aggressive; after the signed-out users the state is no longer aggressive: alice is kept
    100: ([("c", "foo", CO), ("b", "bar", CO), ("b", "foo", CO), ("d", "foo", CO)],
          "aggressive", "above-threshold", False, True),
    # critical: signed-in alice too, daemon by daemon, until the target (foo is kept)
    85: ([("c", "foo", CO), ("b", "bar", CO), ("b", "foo", CO), ("d", "foo", CO),
          ("a", "bar", CI), ("a", "baz", CI)], "critical", "above-target", True, True),
}


@pytest.mark.parametrize("total", list(CASES))
def test_thresholds_and_order(fs: Any, world: OsDisk, total: int) -> None:
    want, before, after, met, ok = CASES[total]
    report = run_cleanup(disk_of(fs, world, total), T)
    assert steps(report) == want
    assert (str(report.state_before), str(report.state_after)) == (before, after)
    assert (report.target_met, report.ok) == (met, ok)
    for r in report.steps:  # statvfs saw exactly the data go
        assert r.freed_bytes == r.removed_bytes == r.step.data_bytes and not r.errors
    assert report.freed_bytes == sum(r.freed_bytes for r in report.steps)
    # the cache directories stay, empty; persistent data and untouched caches stay
    for h in (ALICE, BOB, CAROL, DAVE):
        assert os.path.getsize(real(f"{paths.vault(h)}/root/foo/state")) == 5 * MiB
        for daemon in os.listdir(real(f"{paths.vault(h)}/root/.cache")):
            cleared = (h[0], daemon) in {(u, d) for u, d, _ in want}
            left = os.listdir(real(f"{paths.vault(h)}/root/.cache/{daemon}"))
            assert left == ([] if cleared else ["data"])


def test_alice_is_cleared_through_her_store(fs: Any, world: OsDisk) -> None:
    report = run_cleanup(disk_of(fs, world, 85), T)
    assert [r.step.path for r in report.steps if r.step.user_hash == ALICE] == [
        paths.user_store("bar", ALICE, cache=True), paths.user_store("baz", ALICE, cache=True)]
    assert report.freed()[ALICE] == {"bar": 20 * MiB, "baz": 5 * MiB}
    assert report.freed()[CAROL] == {"foo": 10 * MiB}


def test_dry_run_predicts_and_deletes_nothing(fs: Any, world: OsDisk) -> None:
    disk = disk_of(fs, world, 85)
    free = disk.statvfs("/home/.shadow")[1]
    dry = run_cleanup(disk, T, dry_run=True)
    assert dry.steps == [] and dry.ok and disk.statvfs("/home/.shadow")[1] == free
    assert dry.free_after == free
    lines = dry.lines()
    assert lines[0].startswith("# cleanup: 5.0 MiB free of 85.0 MiB: critical")
    assert [ln[0] for ln in lines[1:]] == ["+"] * 6 + ["-"]
    real_run = run_cleanup(disk, T)
    assert [r.step for r in real_run.steps] == dry.plan.predict()


def test_unreadable_activity_counts_as_oldest(fs: Any, world: OsDisk) -> None:
    with open(real(f"{paths.shadow(DAVE)}/last_activity"), "w") as f:
        f.write("yesterday\n")
    report = run_cleanup(disk_of(fs, world, 125), T)
    assert steps(report) == [("d", "foo", CO), ("c", "foo", CO)]


def test_symlinks_and_other_filesystems_in_a_cache(fs: Any, world: OsDisk) -> None:
    cache = real(f"{paths.vault(CAROL)}/root/.cache/foo")
    bob_state = real(f"{paths.vault(BOB)}/root/foo/state")
    fs.create_file(real("/etc/passwd"), contents="root:x:0:0::/root:/bin/sh\n")
    os.symlink(bob_state, f"{cache}/to-bob")
    os.symlink(real("/etc"), f"{cache}/etc")
    os.makedirs(f"{cache}/sub/deeper")
    os.symlink(real(f"{paths.vault(BOB)}/root"), f"{cache}/sub/deeper/root")
    fs.add_mount_point(f"{cache}/sub/other", total_size=MiB)
    fs.create_file(f"{cache}/sub/other/keep", st_size=1000)
    report = run_cleanup(disk_of(fs, world, 125), T)
    carol = report.steps[0]
    assert carol.step.user_hash == CAROL
    assert carol.skipped == [f"{paths.vault(CAROL)}/root/.cache/foo/sub/other: mount point "
                             "(another mount), not crossed"]
    assert carol.kept_dirs == 1  # sub still holds the mount point
    assert sorted(os.listdir(cache)) == ["sub"]
    assert os.listdir(f"{cache}/sub") == ["other"]
    assert os.listdir(f"{cache}/sub/other") == ["keep"]
    assert os.path.getsize(bob_state) == 5 * MiB and os.path.exists(real("/etc/passwd"))


def test_a_symlinked_cache_directory_is_left_alone(fs: Any, world: OsDisk) -> None:
    cache = real(f"{paths.vault(CAROL)}/root/.cache")
    os.rename(f"{cache}/foo", real("/elsewhere"))
    os.symlink(real("/elsewhere"), f"{cache}/foo")
    report = run_cleanup(disk_of(fs, world, 125), T)
    assert CAROL not in report.freed()
    assert os.listdir(real("/elsewhere")) == ["data"]
    assert any("foo is not a directory" in w for w in report.warnings)
