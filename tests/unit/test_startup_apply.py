"""daemonstore.boot.apply on the model: the end state, idempotency, convergence from every half-done
state, the failure policy (one store fails, the others go on; errors are never ignored), the
symlink guards, dry runs, and propagation into a daemon's slave namespace."""

from __future__ import annotations

import errno

import pytest

from daemonstore import mountinfo
from daemonstore.boot import seed as demo
from daemonstore.boot.apply import FAILED, PLANNED, StartupReport, run_startup
from daemonstore.boot.plan import BLOCKED, READY, plan_startup
from daemonstore.host import Propagation
from daemonstore.model import ModelHost

S = "/run/daemon-store"
C = "/run/daemon-store-cache"
HASH = "0123456789abcdef0123456789abcdef01234567"


def world(*entries: demo.Entry, run: bool = True) -> ModelHost:
    h = ModelHost()
    demo.install(h, entries or [demo.Entry("a")], (("root", 0),))
    if run:
        h.mkdir("/run", 0o755)
    return h


def entries(h: ModelHost, ns: str | None = None) -> dict[str, list[mountinfo.MountInfoEntry]]:
    out: dict[str, list[mountinfo.MountInfoEntry]] = {}
    for e in mountinfo.parse(h.mountinfo(ns)):
        out.setdefault(e.mount_point, []).append(e)
    return out


def store_mounts(h: ModelHost) -> dict[str, mountinfo.MountInfoEntry]:
    """Mounts below /run, asserting there is exactly one per mount point."""
    out = {}
    for mp, es in entries(h).items():
        if mp.startswith("/run/"):
            assert len(es) == 1, f"stacked at {mp}: {es}"
            out[mp] = es[0]
    return out


def run(h: ModelHost, **kw: object) -> StartupReport:
    return run_startup(h, **kw)[1]  # type: ignore[arg-type]


# ---- end state --------------------------------------------------------------------------------


def test_sample_tree_mounts_exactly_the_valid_stores_shared() -> None:
    h = ModelHost()
    demo.install(h)
    report = run(h)
    want = {f"{base}/{d}" for base in (S, C) for d in demo.SAMPLE_VALID}
    mounts = store_mounts(h)
    assert set(mounts) == want
    for mp, e in mounts.items():
        assert e.shared is not None and e.master is None
        assert e.root == mp  # a self-bind on the sandbox tmpfs
    assert len({e.shared for e in mounts.values()}) == len(want)  # each its own peer group
    for d in demo.SAMPLE_VALID:
        for base in (S, C):
            st = h.lstat(f"{base}/{d}")
            assert (st.perm, st.uid, st.gid, st.is_dir) == (0o755, 0, 0, True)
    assert (h.stat(S).perm, h.stat(C).perm) == (0o755, 0o755)
    assert not report.complete  # templates were skipped
    assert {s.path.rsplit("/", 1)[1] for s in report.skipped} == set(demo.SAMPLE_SKIPPED)
    assert all(r.outcome == READY for r in report.results)


def test_all_valid_tree_is_complete() -> None:
    report = run(world(demo.Entry("a"), demo.Entry("b", mode=0o755)))
    assert report.complete and not report.problem_lines()
    assert report.summary() == ("startup: 4 stores, 4 ready, changed 4, 0 not ready, "
                                "0 templates skipped, 0 orphans")


# ---- idempotency and convergence --------------------------------------------------------------


def test_second_run_changes_nothing() -> None:
    h = ModelHost()
    demo.install(h)
    run(h)
    before = h.mountinfo()
    listing = {b: h.listdir(b) for b in (S, C)}
    plan, report = run_startup(h)
    assert plan.steps == []
    assert h.mountinfo() == before  # byte for byte: nothing stacked, nothing remade
    assert {b: h.listdir(b) for b in (S, C)} == listing
    assert not report.changed


def test_a_newly_installed_template_adds_just_that_store() -> None:
    h = world(demo.Entry("a"))
    run(h)
    before = entries(h)
    demo.install(h, [demo.Entry("b")], None)
    plan, report = run_startup(h)
    touched = {op.to_line().split()[-1] for op in plan.steps}
    assert touched == {f"{S}/b", f"{C}/b"}
    after = entries(h)
    assert set(after) - set(before) == {f"{S}/b", f"{C}/b"}
    assert all(after[mp] == es for mp, es in before.items())
    assert report.complete


def test_removed_template_leaves_an_orphan_in_place() -> None:
    h = world(demo.Entry("a"), demo.Entry("old"))
    run(h)
    h.rmdir("/etc/daemon-store/old")
    before = h.mountinfo()
    report = run(h)
    assert h.mountinfo() == before  # not torn down: users may be signed in
    assert {(o.path, o.mounted) for o in report.orphans} == {(f"{S}/old", True),
                                                             (f"{C}/old", True)}
    assert report.complete  # orphans are reported, they are not failures


@pytest.mark.parametrize("half_done", [
    "nothing", "bases only", "dirs only", "bound not shared", "bound private",
    "made slave", "wrong modes", "one of two kinds",
])
def test_converges_from_half_done_states(half_done: str) -> None:
    h = world(demo.Entry("a"))
    stores = (f"{S}/a", f"{C}/a")
    if half_done != "nothing":
        h.mkdir(S, 0o755)
        h.mkdir(C, 0o755)
    if half_done not in ("nothing", "bases only"):
        for p in stores:
            h.mkdir(p, 0o755)
    if half_done in ("bound not shared", "bound private", "made slave", "wrong modes"):
        for p in stores:
            h.bind(p, p)
    if half_done == "bound private":
        h.make(f"{S}/a", "private")
    if half_done == "made slave":
        h.make(f"{S}/a", "shared")
        h.mkdir("/peer")
        h.bind(f"{S}/a", "/peer")
        h.make(f"{S}/a", "slave")
    if half_done == "wrong modes":
        for p in stores:
            h.make(p, "shared")
            h.chmod(p, 0o700)
            h.chown(p, 1000, 1000)
        h.chmod(S, 0o777)
    if half_done == "one of two kinds":
        h.bind(f"{S}/a", f"{S}/a")
        h.make(f"{S}/a", "shared")
    report = run(h)
    assert report.complete, report.problem_lines()
    mounts = store_mounts(h)
    assert set(mounts) >= set(stores)
    for p in stores:
        assert mounts[p].shared is not None and mounts[p].root == p
        st = h.stat(p)
        assert (st.perm, st.uid, st.gid) == (0o755, 0, 0)
    assert h.stat(S).perm == 0o755
    again = h.mountinfo()
    assert plan_startup(h).steps == [] and run(h).complete and h.mountinfo() == again


# ---- failure policy ---------------------------------------------------------------------------


class FailingHost(ModelHost):
    """A model whose bind fails (like the kernel would) for chosen targets."""

    def __init__(self, fail: dict[str, int]) -> None:
        super().__init__()
        self.fail = fail

    def bind(self, source: str, target: str, *, recursive: bool = False,
             safe: bool = False) -> None:
        if target in self.fail:
            raise OSError(self.fail[target], errno.errorcode[self.fail[target]], target)
        super().bind(source, target, recursive=recursive, safe=safe)


def test_a_failing_mount_stops_only_that_store_and_is_reported_with_path_and_errno() -> None:
    h = FailingHost({f"{S}/b": errno.ENOSPC})
    demo.install(h, [demo.Entry("a"), demo.Entry("b"), demo.Entry("c")], None)
    report = run(h)
    by = {r.path: r for r in report.results}
    bad = by[f"{S}/b"]
    assert bad.outcome == FAILED and bad.failure is not None
    assert (bad.failure.errname, bad.failure.path) == ("ENOSPC", f"{S}/b")
    assert bad.failure.step == f"mount --bind {S}/b {S}/b"
    assert "mount-max" in bad.line()  # the hint for a misleading errno
    assert [op.to_line() for op in bad.applied] == [f"mkdir -m 0755 {S}/b",
                                                     f"chown 0:0 {S}/b"]  # stopped there
    assert set(store_mounts(h)) == {f"{S}/a", f"{S}/c", f"{C}/a", f"{C}/b", f"{C}/c"}
    assert not report.complete and report.problem_lines() == [bad.line()]
    # the next run (the fault gone) finishes just that store
    h.fail.clear()
    plan, report = run_startup(h)
    assert [op.to_line() for op in plan.steps] == [f"mount --bind {S}/b {S}/b",
                                                   f"mount --make-shared {S}/b"]
    assert report.complete


def test_a_failing_base_skips_its_stores_without_trying() -> None:
    class NoMkdir(ModelHost):
        def mkdir(self, path: str, mode: int = 0o755, *, parents: bool = False,
                  safe: bool = False) -> None:
            if path == S:
                raise OSError(errno.EROFS, "Read-only file system", path)
            super().mkdir(path, mode, parents=parents, safe=safe)

    h = NoMkdir()
    demo.install(h, [demo.Entry("a")], None)
    h.mkdir("/run")
    report = run(h)
    by = {r.path: r for r in report.results}
    assert by[S].outcome == FAILED and by[S].failure and by[S].failure.errname == "EROFS"
    assert by[f"{S}/a"].outcome == FAILED and by[f"{S}/a"].applied == ()
    assert "not attempted" in by[f"{S}/a"].line()
    assert by[f"{C}/a"].outcome == READY


def test_a_mount_that_silently_did_nothing_is_caught_by_verify() -> None:
    class LazyMake(ModelHost):
        def make(self, target: str, propagation: Propagation | str, *,
                 recursive: bool = False, safe: bool = False) -> None:
            return None  # "succeeds" without making anything shared

    h = LazyMake()
    demo.install(h, [demo.Entry("a")], None)
    assert run(h).complete  # without --verify only the errnos count, and there were none
    assert plan_startup(h).stores[0].state != READY  # ...but the next plan sees it
    h = LazyMake()
    demo.install(h, [demo.Entry("a")], None)
    report = run(h, verify=True)
    stores = list(report.stores)
    assert all(r.outcome == FAILED for r in stores)
    assert all("private, not shared" in r.line() for r in stores)
    assert not report.complete


# ---- symlinks never lead a mount or chmod outside --------------------------------------------


@pytest.mark.parametrize("target", ["/etc", "/etc/daemon-store/a", "../../etc"])
def test_symlink_planted_at_the_store_is_never_mounted_on_or_chmodded(target: str) -> None:
    h = world(demo.Entry("a"))
    h.mkdir(S, 0o755)
    h.symlink(target, f"{S}/a")
    etc_before = {p: h.stat(p) for p in ("/etc", "/etc/daemon-store", "/etc/daemon-store/a")}
    report = run(h)
    by = {r.path: r for r in report.results}
    assert by[f"{S}/a"].outcome == BLOCKED and "symlink" in by[f"{S}/a"].line()
    assert by[f"{C}/a"].outcome == READY  # the other kind still goes ahead
    assert not any(mp.startswith("/etc") for mp in entries(h))
    assert {p: h.stat(p) for p in etc_before} == etc_before
    assert h.readlink(f"{S}/a") == target  # reported, left for an admin
    assert not report.complete


def test_symlink_swapped_in_after_planning_fails_with_eloop() -> None:
    h = world(demo.Entry("a"))
    h.mkdir(S, 0o755)
    h.mkdir(f"{S}/a", 0o700)  # plan: chmod, then bind + make-shared
    plan = plan_startup(h)
    h.rmdir(f"{S}/a")
    h.symlink("/etc", f"{S}/a")  # the race: planted between plan and apply
    from daemonstore.boot.apply import apply_plan

    report = apply_plan(h, plan)
    bad = {r.path: r for r in report.results}[f"{S}/a"]
    assert bad.outcome == FAILED and bad.failure and bad.failure.errname == "ELOOP"
    assert bad.failure.step == f"chmod 0755 {S}/a"
    assert h.stat("/etc").perm == 0o755 and not any(mp.startswith("/etc") for mp in entries(h))


def test_symlinked_run_directory_blocks_everything_under_it() -> None:
    h = world(demo.Entry("a"), run=False)
    h.mkdir("/elsewhere")
    h.symlink("/elsewhere", "/run")
    report = run(h)
    assert {r.outcome for r in report.results} == {BLOCKED}
    assert h.listdir("/elsewhere") == [] and list(entries(h)) == ["/"]


# ---- dry run ------------------------------------------------------------------------------------


def test_dry_run_changes_nothing_and_lists_every_step() -> None:
    h = ModelHost()
    demo.install(h)
    before = (h.mountinfo(), h.listdir("/"))
    plan, report = run_startup(h, dry_run=True)
    assert (h.mountinfo(), h.listdir("/")) == before
    assert report.dry_run and not report.changed
    assert {r.outcome for r in report.stores} == {PLANNED}
    text = "\n".join(plan.to_lines())
    assert all(op.to_line() in text for op in plan.steps)
    assert f"would change {2 * len(demo.SAMPLE_VALID)}" in report.summary()


def test_verbose_log_gets_each_step_before_it_runs() -> None:
    h = world(demo.Entry("a"))
    seen: list[str] = []
    plan, _ = run_startup(h, log=seen.append)
    assert seen == [op.to_line() for op in plan.steps]


def test_json_report_shape() -> None:
    h = ModelHost()
    demo.install(h)
    data = run(h).to_json()
    assert set(data) == {"dry_run", "complete", "targets", "skipped", "orphans", "summary"}
    t = data["targets"][1]
    assert set(t) == {"path", "daemon", "state", "outcome", "steps", "applied", "problem",
                      "reason", "failure"}
    assert t["steps"] == t["applied"] and t["outcome"] == "ready"


# ---- propagation into a daemon's namespace ------------------------------------------------------


@pytest.mark.parametrize("base", [S, C])
def test_slave_namespace_cloned_after_startup_receives_later_binds(base: str) -> None:
    h = world(demo.Entry("a"))
    assert run(h).complete
    h.new_namespace("daemon", "slave")  # minijail -v / -Kslave (docs/chromeos.md §5)
    h.use_namespace("init")
    # sign-in, later: the user's directory is bound under the store (cryptohome's side)
    user = f"{base}/a/{HASH}"
    h.mkdir("/vault")
    h.mkdir(user, 0o700)
    h.bind("/vault", user)
    got = entries(h, "daemon").get(user)
    assert got and got[0].master is not None and got[0].root == "/vault"
    # and a mount made inside the daemon's namespace never flows back (slave)
    h.use_namespace("daemon")
    h.mkdir(f"{base}/a/local")
    h.mount_tmpfs("local", f"{base}/a/local")
    assert f"{base}/a/local" not in entries(h, "init")
    # sign-out in init reaches the daemon too
    h.use_namespace("init")
    h.umount(user)
    assert user not in entries(h, "daemon")


def test_without_startup_nothing_propagates() -> None:
    # the control: the same sign-in on a store that is a plain directory stays invisible
    h = world(demo.Entry("a"))
    h.mkdir(f"{S}/a", 0o755, parents=True)
    h.new_namespace("daemon", "slave")
    h.use_namespace("init")
    h.mkdir("/vault")
    h.mkdir(f"{S}/a/{HASH}")
    h.bind("/vault", f"{S}/a/{HASH}")
    assert f"{S}/a/{HASH}" not in entries(h, "daemon")
