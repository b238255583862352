"""startup on the real kernel: the library and the ``daemonstore-startup`` command, each run in a
sandbox child (private mount namespace, tmpfs root), never in the pytest process.

The same checks as tests/unit/test_startup_apply.py, now against the kernel: exactly the valid
stores become shared self-binds (``shared:N`` in mountinfo), skipped entries are reported, a
second run leaves mountinfo byte-for-byte the same, half-done states converge, planted symlinks
never lead a mount or chmod outside, and a slave namespace receives later binds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from daemonstore.boot import seed as demo
from daemonstore.boot.apply import apply_plan, run_startup
from daemonstore.boot.plan import BLOCKED, READY, plan_startup
from daemonstore.kernel import KernelHost, run_in_sandbox
from daemonstore.mountinfo import parse
from tests.kernel.util import mounts_at

pytestmark = pytest.mark.kernel

S = "/run/daemon-store"
C = "/run/daemon-store-cache"
HASH = "0123456789abcdef0123456789abcdef01234567"
CLI = str(Path(sys.executable).with_name("daemonstore-startup"))


def _proc_mountinfo() -> str:
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        return f.read()


def _stores(h: KernelHost) -> dict[str, Any]:
    """(root, shared?, master?) per mount below /run, asserting nothing is stacked."""
    out: dict[str, Any] = {}
    for e in parse(h.mountinfo()):
        if e.mount_point.startswith("/run/"):
            assert e.mount_point not in out, f"stacked at {e.mount_point}"
            out[e.mount_point] = (e.root, e.shared is not None, e.master is not None)
    return out


def test_library_run_on_the_sample_tree_then_again_changes_nothing() -> None:
    def body(h: KernelHost) -> Any:
        demo.install(h)
        h.mkdir("/run", 0o755)
        _, first = run_startup(h, verify=True)
        after_first = (h.mountinfo(), _proc_mountinfo())
        plan, second = run_startup(h)
        after_second = (h.mountinfo(), _proc_mountinfo())
        modes = {p: (h.stat(p).perm, h.stat(p).uid, h.stat(p).gid)
                 for p in (S, C, f"{S}/shill", f"{C}/crosvm")}
        return (first.to_json(), second.to_json(), [op.to_line() for op in plan.steps],
                after_first, after_second, _stores(h), modes)

    first, second, steps, after_first, after_second, stores, modes = run_in_sandbox(body)
    want = {f"{b}/{d}" for b in (S, C) for d in demo.SAMPLE_VALID}
    assert set(stores) == want
    assert all(stores[p] == (p, True, False) for p in want)  # shared self-binds
    assert {s["path"].rsplit("/", 1)[1] for s in first["skipped"]} == set(demo.SAMPLE_SKIPPED)
    assert all(t["outcome"] == "ready" for t in first["targets"])
    assert steps == [] and after_second == after_first  # byte for byte
    assert all(not t["applied"] for t in second["targets"])
    assert set(modes.values()) == {(0o755, 0, 0)}


def test_cli_on_a_mixed_tree_twice_leaves_mountinfo_byte_for_byte_the_same() -> None:
    def body(h: KernelHost) -> Any:
        demo.install(h)
        initial = _proc_mountinfo()
        runs = []
        snapshots = []
        for args in (["--dry-run"], [], [], ["--json"]):
            proc = subprocess.run([CLI, "--root", h.root, *args], capture_output=True,
                                  text=True, timeout=60)
            runs.append((proc.returncode, proc.stdout, proc.stderr))
            snapshots.append(_proc_mountinfo())
            if args == ["--dry-run"]:
                dry_left_run_alone = not h.exists("/run")
        return runs, [initial, *snapshots], _stores(h), dry_left_run_alone

    runs, (initial, *snapshots), stores, dry_left_run_alone = run_in_sandbox(body)
    (dry_rc, dry_out, _), (rc1, out1, err1), (rc2, out2, err2), (rc3, out3, _) = runs
    # --dry-run: the plan as lines, nothing changed
    assert dry_rc == 1 and "mount --make-shared /run/daemon-store/shill" in dry_out
    assert snapshots[0] == initial and dry_left_run_alone
    # first real run: exactly the valid stores, skipped entries one line each, exit 1
    assert rc1 == 1, err1
    for name in demo.SAMPLE_SKIPPED:
        assert f"skipped /etc/daemon-store/{name}: " in err1
    assert set(stores) == {f"{b}/{d}" for b in (S, C) for d in demo.SAMPLE_VALID}
    assert all(shared and not master for _, shared, master in stores.values())
    assert f"changed {2 * len(demo.SAMPLE_VALID)}" in out1
    # second run: same exit code, nothing changed, mountinfo identical byte for byte
    assert rc2 == 1 and "changed 0" in out2 and err2 == err1
    assert snapshots[2] == snapshots[1]
    assert snapshots[3] == snapshots[1]
    data = json.loads(out3)
    assert data["backend"] == "kernel" and data["exit_code"] == 1
    assert all(t["outcome"] == "ready" and not t["applied"] for t in data["targets"])


def test_cli_all_valid_exits_0_and_shows_shared_in_proc_mountinfo() -> None:
    def body(h: KernelHost) -> Any:
        demo.install(h, demo.many(3), None)
        proc = subprocess.run([CLI, "--root", h.root], capture_output=True, text=True,
                              timeout=60)
        lines = [ln for ln in _proc_mountinfo().splitlines() if "/run/daemon-store" in ln]
        return proc.returncode, proc.stderr, lines

    rc, err, lines = run_in_sandbox(body)
    assert rc == 0 and err == ""
    assert len(lines) == 6 and all(" shared:" in ln for ln in lines)


def test_new_template_adds_just_its_store_and_a_removed_one_is_left_as_orphan() -> None:
    def body(h: KernelHost) -> Any:
        demo.install(h, [demo.Entry("a"), demo.Entry("old")], None)
        run_startup(h)
        before = {e.mount_point: e for e in parse(h.mountinfo())}
        h.rmdir("/etc/daemon-store/old")
        demo.install(h, [demo.Entry("b")], None)
        plan, report = run_startup(h)
        after = {e.mount_point: e for e in parse(h.mountinfo())}
        return (before, after, [op.to_line() for op in plan.steps],
                [(o.path, o.mounted) for o in report.orphans], report.complete)

    before, after, steps, orphans, complete = run_in_sandbox(body)
    assert set(after) - set(before) == {f"{S}/b", f"{C}/b"}
    assert all(after[mp] == e for mp, e in before.items())  # old stores untouched, same ids
    assert {s.split()[-1] for s in steps} == {f"{S}/b", f"{C}/b"}
    assert orphans == [(f"{S}/old", True), (f"{C}/old", True)]
    assert complete


@pytest.mark.parametrize("half_done", ["dirs only", "bound not shared", "bound private",
                                       "wrong modes"])
def test_converges_from_half_done_states_on_the_kernel(half_done: str) -> None:
    def body(h: KernelHost) -> Any:
        demo.install(h, [demo.Entry("a")], None)
        for p in (S, C, f"{S}/a", f"{C}/a"):
            h.mkdir(p, 0o755, parents=True)
        if half_done != "dirs only":
            for p in (f"{S}/a", f"{C}/a"):
                h.bind(p, p)
        if half_done == "bound private":
            h.make(f"{S}/a", "private")
        if half_done == "wrong modes":
            for p in (f"{S}/a", f"{C}/a"):
                h.make(p, "shared")
                h.chmod(p, 0o700)
                h.chown(p, 1000, 1000)
        plan, report = run_startup(h)
        again = h.mountinfo()
        plan2 = plan_startup(h)
        return ([op.to_line() for op in plan.steps], report.complete, _stores(h),
                again == h.mountinfo(), plan2.steps,
                [(h.stat(p).perm, h.stat(p).uid) for p in (f"{S}/a", f"{C}/a")])

    steps, complete, stores, same, steps2, attrs = run_in_sandbox(body)
    assert complete and steps2 == [] and same
    assert stores == {f"{S}/a": (f"{S}/a", True, False), f"{C}/a": (f"{C}/a", True, False)}
    assert attrs == [(0o755, 0), (0o755, 0)]
    if half_done == "dirs only":
        assert steps == [f"mount --bind {S}/a {S}/a", f"mount --make-shared {S}/a",
                         f"mount --bind {C}/a {C}/a", f"mount --make-shared {C}/a"]
    elif half_done == "wrong modes":
        assert steps == [f"chmod 0755 {S}/a", f"chown 0:0 {S}/a",
                         f"chmod 0755 {C}/a", f"chown 0:0 {C}/a"]
    else:
        assert all(s.startswith("mount --make-shared ") for s in steps)
        assert not any("--bind" in s for s in steps)  # never stacked


def test_symlink_planted_at_a_store_never_leads_a_mount_or_chmod_outside() -> None:
    def body(h: KernelHost) -> Any:
        demo.install(h, [demo.Entry("a")], None)
        h.mkdir(S, 0o755, parents=True)
        h.symlink("/etc", f"{S}/a")
        etc = (h.stat("/etc").perm, h.stat("/etc").uid)
        _, report = run_startup(h)
        by = {r.path: r.outcome for r in report.results}
        mounts = [e.mount_point for e in parse(h.mountinfo())]
        # the race: a real directory at plan time, a symlink at apply time
        h.mkdir(C, 0o755, parents=True)
        demo.install(h, [demo.Entry("b")], None)
        h.mkdir(f"{C}/b", 0o700)
        plan = plan_startup(h)
        h.rmdir(f"{C}/b")
        h.symlink("/etc", f"{C}/b")
        raced = {r.path: r for r in apply_plan(h, plan).results}[f"{C}/b"]
        return (by, mounts, etc, (h.stat("/etc").perm, h.stat("/etc").uid),
                raced.failure.errname if raced.failure else None,
                raced.failure.step if raced.failure else None,
                [e.mount_point for e in parse(h.mountinfo())])

    by, mounts, etc_before, etc_after, errname, step, mounts_after = run_in_sandbox(body)
    assert by[f"{S}/a"] == BLOCKED and by[f"{C}/a"] == READY
    assert etc_after == etc_before == (0o755, 0)
    assert not any(mp.startswith("/etc") for mp in mounts + mounts_after)
    assert (errname, step) == ("ELOOP", f"chmod 0755 {C}/b")


@pytest.mark.parametrize("base", [S, C])
def test_slave_namespace_cloned_after_startup_receives_a_later_bind(base: str) -> None:
    def body(h: KernelHost) -> Any:
        demo.install(h, [demo.Entry("a")], None)
        assert run_startup(h)[1].complete
        h.new_namespace("daemon", "slave")  # what minijail -v / -Kslave gives a daemon
        h.use_namespace("init")
        user = f"{base}/a/{HASH}"
        h.mkdir("/vault")
        h.mkdir(user, 0o700)
        h.bind("/vault", user)  # sign-in, after the daemon's namespace exists
        seen = mounts_at(h, user, "daemon")
        h.use_namespace("daemon")
        h.mkdir(f"{base}/a/local")
        h.mount_tmpfs("local", f"{base}/a/local")
        leaked = mounts_at(h, f"{base}/a/local", "init")
        h.use_namespace("init")
        h.umount(user)
        gone = mounts_at(h, user, "daemon")
        return seen, leaked, gone

    seen, leaked, gone = run_in_sandbox(body)
    assert len(seen) == 1 and seen[0].root == "/vault" and seen[0].master is not None
    assert leaked == [] and gone == []
