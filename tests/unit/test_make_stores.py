"""Runs of missing stores as one entry: ``MissingStores`` in the plan (boot/plan.py),
``Host.make_stores`` on the model (host.py), ``StoresResult`` in the report (boot/apply.py).

* The plan keeps a run of missing stores of a base as one entry, split around a store that is
  there; ``targets`` still lists every store's Target, with the same steps and lines as before.
* ``ModelHost.make_stores`` is its definition: make_store per path, going on after a failure,
  the failures by index with ``steps_done``.
* A quiet startup applies a run with one make_stores call and reports every store exactly as
  the verbose run (step by step, one Target at a time) does, failures in the middle included;
  a report whose runs all went well answers ``complete`` without making a TargetResult per store.

The kernel's loop is checked against the definition in tests/kernel/test_make_store.py.
"""

from __future__ import annotations

import errno
from typing import Any

import pytest

from daemonstore import mountinfo
from daemonstore.boot import seed
from daemonstore.boot.apply import FAILED, READY, StoresResult, run_startup
from daemonstore.boot.plan import MISSING, UNMOUNTED, MissingStores, Target, plan_startup
from daemonstore.host import make_store_by_steps, make_stores_by_calls
from daemonstore.model import ModelHost
from daemonstore.ops import MakeStore
from daemonstore.testing.faults import FaultHost, count_calls

S = "/run/daemon-store"
C = "/run/daemon-store-cache"


def _templates(h: ModelHost, *names: str) -> None:
    seed.install(h, [seed.Entry(n) for n in names], (("root", 0),))
    h.mkdir("/run", 0o755)


class StepFails(ModelHost):
    """A model whose ``step`` (mkdir, bind or make) fails with EIO for ``path``."""

    def __init__(self, step: str, path: str) -> None:
        super().__init__()
        self.step, self.path = step, path

    def _check(self, step: str, path: str) -> None:
        if (step, path) == (self.step, self.path):
            raise OSError(errno.EIO, "injected", path)

    def mkdir(self, path: str, mode: int = 0o755, *, parents: bool = False,
              safe: bool = False) -> None:
        self._check("mkdir", path)
        super().mkdir(path, mode, parents=parents, safe=safe)

    def bind(self, source: str, target: str, **kw: Any) -> None:
        self._check("bind", target)
        super().bind(source, target, **kw)

    def make(self, target: str, propagation: Any, **kw: Any) -> None:
        self._check("make", target)
        super().make(target, propagation, **kw)


# ---- the plan -----------------------------------------------------------------------------------


def test_a_fresh_plan_holds_one_run_per_base_and_lists_every_store() -> None:
    h = ModelHost()
    _templates(h, "a", "b", "c")
    plan = plan_startup(h)
    runs = [e for e in plan.entries if isinstance(e, MissingStores)]
    assert runs == [MissingStores(S, ("a", "b", "c")), MissingStores(C, ("a", "b", "c"))]
    stores = [t for t in plan.targets if t.is_store]
    assert stores == [Target(f"{b}/{d}", d, MISSING, (MakeStore(f"{b}/{d}", 0o755, 0, 0),), None,
                             b) for b in (S, C) for d in "abc"]
    assert [t.path for t in plan.targets] == [S, f"{S}/a", f"{S}/b", f"{S}/c",
                                              C, f"{C}/a", f"{C}/b", f"{C}/c"]


def test_a_store_that_is_there_splits_the_run_in_plan_order() -> None:
    h = ModelHost()
    _templates(h, "a", "b", "c", "d")
    for base in (S, C):
        h.mkdir(base, 0o755)
    h.mkdir(f"{S}/b", 0o755)  # half done: made, not mounted
    plan = plan_startup(h)
    s_entries = [e for e in plan.entries
                 if (e.base if isinstance(e, MissingStores) else e.needs) == S]
    assert [e if isinstance(e, MissingStores) else (e.path, e.state) for e in s_entries] == [
        MissingStores(S, ("a",)), (f"{S}/b", UNMOUNTED), MissingStores(S, ("c", "d"))]
    assert MissingStores(C, ("a", "b", "c", "d")) in plan.entries
    assert [t.path for t in plan.targets if t.needs == S] == [f"{S}/{d}" for d in "abcd"]
    _, report = run_startup(h)
    assert report.complete and [r.outcome for r in report.stores] == [READY] * 8


# ---- Host.make_stores on the model --------------------------------------------------------------


def _after(h: ModelHost) -> Any:
    made = {}
    for d in "abc":
        try:
            st = h.lstat(f"{S}/{d}")
            made[d] = (st.mode, st.uid, st.gid)
        except OSError as exc:
            made[d] = exc.errno
    return made, mountinfo.canonical({"init": h.mountinfo()})


@pytest.mark.parametrize("step", ["mkdir", "bind", "make"])
def test_model_make_stores_is_make_store_per_path_going_on_after_a_failure(step: str) -> None:
    hosts = [StepFails(step, f"{S}/b") for _ in range(2)]
    for h in hosts:
        h.mkdir("/run", 0o755)
        h.mkdir(S, 0o755)
    paths = [f"{S}/{d}" for d in "abc"]
    failures = hosts[0].make_stores(paths, 0o755, 0, 0, safe=True)
    by_steps: dict[int, OSError] = {}
    for i, path in enumerate(paths):
        try:
            make_store_by_steps(hosts[1], path, 0o755, 0, 0, safe=True)
        except OSError as exc:
            by_steps[i] = exc
    assert list(failures) == list(by_steps) == [1]
    done = {"mkdir": 0, "bind": 2, "make": 3}[step]
    assert failures[1].steps_done == by_steps[1].steps_done == done  # type: ignore[attr-defined]
    assert _after(hosts[0]) == _after(hosts[1])
    assert _after(hosts[0])[0]["c"][0] & 0o7777 == 0o755  # c made after b failed


def test_make_stores_by_calls_reports_nothing_when_all_are_made() -> None:
    h = ModelHost()
    h.mkdir("/run", 0o755)
    h.mkdir(S, 0o755)
    assert make_stores_by_calls(h, [f"{S}/a", f"{S}/b"], 0o755, 0, 0, safe=True) == {}
    shared = {e.mount_point for e in mountinfo.parse(h.mountinfo()) if e.shared is not None}
    assert {f"{S}/a", f"{S}/b"} <= shared


# ---- the report ---------------------------------------------------------------------------------


@pytest.mark.parametrize("step", ["mkdir", "bind", "make"])
def test_a_failure_inside_a_run_is_reported_as_the_verbose_run_reports_it(step: str) -> None:
    quiet, loud = StepFails(step, f"{S}/b"), StepFails(step, f"{S}/b")
    for h in (quiet, loud):
        _templates(h, "a", "b", "c")
    _, r1 = run_startup(quiet)
    _, r2 = run_startup(loud, log=lambda line: None)
    assert any(isinstance(e, StoresResult) for e in r1.entries)
    assert not any(isinstance(e, StoresResult) for e in r2.entries)  # the log runs step by step
    assert r1.to_json() == r2.to_json()
    assert [r.line() for r in r1.problems] == [r.line() for r in r2.problems]
    assert r1.summary() == r2.summary()
    assert quiet.mountinfo() == loud.mountinfo()
    bad = {r.path: r for r in r1.results}[f"{S}/b"]
    assert bad.outcome == FAILED and bad.failure is not None and bad.failure.errname == "EIO"
    assert {r.path: r.outcome for r in r1.results}[f"{S}/c"] == READY


def test_a_clean_run_answers_complete_without_a_result_per_store() -> None:
    h = ModelHost()
    _templates(h, "a", "b")
    _, report = run_startup(h)
    assert report.complete and report.problems == []
    assert "results" not in report.__dict__  # not expanded (functools.cached_property)
    assert [r.path for r in report.stores] == [f"{S}/a", f"{S}/b", f"{C}/a", f"{C}/b"]
    assert all(r.applied == (MakeStore(r.path, 0o755, 0, 0),) for r in report.stores)


def test_fault_host_counts_each_step_of_each_store_in_a_run() -> None:
    def fresh() -> ModelHost:
        h = ModelHost()
        _templates(h, "a", "b")
        return h

    n, _ = count_calls(fresh(), lambda host: run_startup(host))
    assert n == 2 * 2 + 4 * 4  # the bases' mkdir + chown; each store's four steps
    h = fresh()
    # calls: S mkdir, chown (0, 1); S/a 2-5; S/b 6-9: a fault at S/b's make-shared
    _, report = run_startup(FaultHost(h, at=9))
    by = {r.path: r for r in report.results}
    assert by[f"{S}/b"].failure is not None
    assert by[f"{S}/b"].failure.step == f"mount --make-shared {S}/b"
    assert len(by[f"{S}/b"].applied) == 3 and by[f"{S}/a"].outcome == READY


# ---- Host.lstat_many on the model (startup's templates) -----------------------------------------


def test_model_lstat_many_is_lstat_per_path_and_the_plan_reports_its_errors() -> None:
    class Unreadable(ModelHost):
        def lstat(self, path: str, *, safe: bool = False) -> Any:
            if path.endswith("/b"):
                raise OSError(errno.EACCES, "Permission denied", path)
            return super().lstat(path, safe=safe)

    h = Unreadable()
    _templates(h, "a", "b", "c")
    h.symlink("/etc", "/etc/daemon-store/d")
    paths = [f"/etc/daemon-store/{d}" for d in "abcde"]
    got = h.lstat_many(paths, safe=True)
    assert [type(x).__name__ for x in got] == ["Stat", "PermissionError", "Stat", "Stat",
                                              "FileNotFoundError"]
    assert got[0] == h.lstat(paths[0], safe=True) and got[3].is_symlink  # type: ignore[union-attr]
    plan = plan_startup(h)
    assert plan.templates == ("a", "c")
    assert [s.line() for s in plan.skipped] == [
        "/etc/daemon-store/b: cannot inspect: EACCES (Permission denied)",
        "/etc/daemon-store/d: is a symlink; templates must be real directories"]


# ---- the mount table, read only when a question needs it ----------------------------------------


class CountingReads(ModelHost):
    reads = 0

    def mountinfo(self) -> str:
        self.reads += 1
        return super().mountinfo()


def test_a_boot_with_every_store_missing_reads_no_mount_table() -> None:
    h = CountingReads()
    _templates(h, "a", "b")
    plan = plan_startup(h)
    assert h.reads == 0 and len(plan.stores) == 4


@pytest.mark.parametrize("there", ["store", "orphan"])
def test_a_store_or_orphan_that_is_there_reads_it_once(there: str) -> None:
    h = CountingReads()
    _templates(h, "a", "b")
    run_startup(h)  # every store made, mounted and shared
    if there == "orphan":
        h.mkdir(f"{S}/gone", 0o755)
    h.reads = 0
    plan = plan_startup(h)
    assert h.reads == 1
    assert [t.state for t in plan.stores] == ["ready"] * 4
    assert [o.mounted for o in plan.orphans] == ([False] if there == "orphan" else [])
