"""Carry out a :class:`~daemonstore.boot.plan.StartupPlan` on a Host and report what happened (the
one
startup module that changes anything; it calls only the Host it is given).

Failure policy (written where it applies, docs/architecture.md §11): chromeos_startup ignores the
return values of both ``mount()`` calls and only logs mkdir/chmod failures (docs/chromeos.md
§1), so a store can silently end up unmounted or private, and then every sign-in fails or no
daemon sees its users (§7 items 3 and 12). Here every step's ``OSError`` is caught and kept:

* a failing step stops *that target* (its remaining steps are not tried) and is reported with
  the step, the path and the errno;
* the other targets still go ahead (one broken template must not cost every other daemon its
  store); a store whose base (``/run/daemon-store``) failed is not attempted;
* with ``verify=True`` (CLI ``--verify``), one fresh mountinfo read after the steps checks that
  each store we touched really is a single shared self-bind (belt and braces against a backend
  whose mount "succeeded" onto the wrong thing). It is off by default because the errnos
  already say it and the read costs more than all the mounts together (KernelHost re-renders
  the whole table); the next run's plan re-checks every store anyway.

Nothing here raises for an operation failure; exceptions other than ``OSError`` (bugs) propagate.
Exit codes are the CLI's business (docs/architecture.md §9); :attr:`StartupReport.complete` is
what it maps.
"""

from __future__ import annotations

import errno
import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from daemonstore.boot.plan import (
    BLOCKED,
    READY,
    ROOT_GID,
    ROOT_UID,
    STORE_MODE,
    MissingStores,
    MountView,
    Orphan,
    Skipped,
    StartupPlan,
    Target,
    plan_startup,
    show_path,
)
from daemonstore.errors import errname
from daemonstore.host import Host
from daemonstore.ops import Op, flatten
from daemonstore.records import fast_init

__all__ = ["FAILED", "PLANNED", "StartupReport", "StepFailure", "StoresResult", "TargetResult",
           "apply_plan", "dry_run_report", "run_startup"]

#: outcomes of a target (besides plan.READY and plan.BLOCKED)
FAILED = "failed"
PLANNED = "planned"  # dry run: steps would run

#: errnos whose strerror misleads here (bubblewrap's mount_strerror idea)
_HINTS = {
    errno.ELOOP: "a symlink is in the path; refused without following it",
    errno.ENOSPC: "for a mount this means the mount limit was hit (see /proc/sys/fs/mount-max)",
    errno.EPERM: "needs root (CAP_SYS_ADMIN) in this mount namespace",
    errno.EACCES: "needs root",
}

Log = Callable[[str], None]


@dataclass(frozen=True)
class StepFailure:
    """One failed step: the step as a line, the path the kernel named, the errno."""

    step: str
    path: str
    errno: int
    strerror: str

    @property
    def errname(self) -> str:
        return errname(self.errno)

    def text(self) -> str:
        hint = _HINTS.get(self.errno)
        if self.step.startswith("mkdir ") and self.errno == errno.EEXIST:
            hint = "it appeared after the plan was made; run again"
        out = f"`{self.step}` failed on {show_path(self.path)}: {self.errname} ({self.strerror})"
        return out + (f"; {hint}" if hint else "")

    @classmethod
    def from_oserror(cls, step: str, exc: OSError, path: str) -> StepFailure:
        code = exc.errno or 0
        return cls(step, str(exc.filename) if exc.filename else path, code,
                   exc.strerror or errname(code))


@fast_init  # one per store (records.py)
@dataclass(frozen=True)
class TargetResult:
    """What happened to one target: ``outcome`` is ready, failed, blocked or planned;
    ``applied`` are the steps that succeeded (in order; a composite op that succeeded stands
    for all its parts, ops/base.py ``flatten``)."""

    target: Target
    outcome: str
    applied: tuple[Op, ...] = ()
    failure: StepFailure | None = None
    reason: str | None = None

    @property
    def path(self) -> str:
        return self.target.path

    def line(self) -> str:
        head = f"{show_path(self.path)}: "
        if self.failure is not None:
            return head + self.failure.text()
        if self.outcome == BLOCKED:
            return head + f"blocked: {self.target.problem}"
        if self.reason:
            return head + f"{self.outcome}: {self.reason}"
        if self.outcome == PLANNED:
            return head + (f"{self.target.state}, {len(flatten(self.target.steps))} step(s) "
                           "planned")
        return head + (f"{self.outcome} ({self.target.state} before)"
                       if self.applied else self.outcome)

    def to_json(self) -> dict[str, Any]:
        failure = None
        if self.failure is not None:
            f = self.failure
            failure = {"step": f.step, "path": f.path, "errno": f.errname, "message": f.text()}
        return {
            "path": self.path, "daemon": self.target.daemon, "state": self.target.state,
            "outcome": self.outcome,
            "steps": [op.to_line() for op in flatten(self.target.steps)],
            "applied": [op.to_line() for op in flatten(self.applied)],
            "problem": self.target.problem,
            "reason": self.reason, "failure": failure,
        }


@dataclass(frozen=True)
class StoresResult:
    """What happened to a :class:`~daemonstore.boot.plan.MissingStores` run applied with one
    Host.make_stores call: its ``failures`` by index (the rest are ready); :meth:`results` are
    its stores' TargetResults, made only when asked for."""

    stores: MissingStores
    failures: dict[int, OSError]

    def results(self) -> list[TargetResult]:
        failures = self.failures
        return [TargetResult(t, READY, t.steps) if i not in failures
                else _failed(t, t.steps, 0, failures[i])
                for i, t in enumerate(self.stores.targets())]


@dataclass(frozen=True)
class StartupReport:
    """The run's result: one TargetResult per target (``results``; ``entries`` as made, with a
    StoresResult standing for a run of missing stores), plus the plan's skipped and orphans."""

    entries: tuple[TargetResult | StoresResult, ...]
    skipped: tuple[Skipped, ...]
    orphans: tuple[Orphan, ...]
    dry_run: bool = False

    @functools.cached_property
    def results(self) -> tuple[TargetResult, ...]:
        return tuple(r for e in self.entries
                     for r in (e.results() if isinstance(e, StoresResult) else (e,)))

    @property
    def stores(self) -> list[TargetResult]:
        return [r for r in self.results if r.target.is_store]

    @property
    def problems(self) -> list[TargetResult]:
        """Targets that are not ready (failed or blocked; in a dry run, blocked only). A run of
        missing stores that all went well adds nothing and is not expanded."""
        return [r for e in self.entries
                for r in ((e,) if isinstance(e, TargetResult)
                          else e.results() if e.failures else ())
                if r.outcome in (FAILED, BLOCKED)]

    @property
    def complete(self) -> bool:
        """Every template valid and every store ready (or, dry run, about to be). Orphans do not
        count: they are left alone on purpose."""
        return not self.skipped and not self.problems

    @property
    def changed(self) -> list[TargetResult]:
        return [r for r in self.results if r.applied]

    def problem_lines(self) -> list[str]:
        """One line per skipped template and per target that is not ready."""
        return ([f"skipped {s.line()}" for s in self.skipped]
                + [r.line() for r in self.problems])

    def summary(self) -> str:
        stores = self.stores
        ready = sum(1 for r in stores if r.outcome == READY)
        verb = "would change" if self.dry_run else "changed"
        changed = sum(1 for r in stores if (r.outcome == PLANNED if self.dry_run else r.applied))
        return (f"startup: {len(stores)} stores, {ready} ready, {verb} {changed}, "
                f"{len(self.problems)} not ready, {len(self.skipped)} templates skipped, "
                f"{len(self.orphans)} orphans")

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "complete": self.complete,
            "targets": [r.to_json() for r in self.results],
            "skipped": [{"path": s.path, "reason": s.reason} for s in self.skipped],
            "orphans": [{"path": o.path, "mounted": o.mounted, "reason": o.reason}
                        for o in self.orphans],
            "summary": self.summary(),
        }


def _run_target(host: Host, target: Target, log: Log | None) -> TargetResult:
    steps = target.steps
    if log is not None:
        # each step is logged before it runs (systemd mount_verbose), so a composite runs as
        # its parts, one Host call each: Host.make_store is defined as exactly those calls
        steps = tuple(flatten(steps))
    done = 0
    try:
        for op in steps:
            if log is not None:
                log(op.to_line())
            op.apply(host)
            done += 1
    except OSError as exc:
        return _failed(target, steps, done, exc)
    return TargetResult(target, READY, steps)


def _failed(target: Target, steps: tuple[Op, ...], done: int, exc: OSError) -> TargetResult:
    """The result of a target whose step ``done`` raised ``exc``: a composite reports the part
    that failed and the parts done before it (``steps_done``, Host.make_store)."""
    parts = steps[done].parts()
    within = getattr(exc, "steps_done", 0) if len(parts) > 1 else 0
    return TargetResult(target, FAILED, (*flatten(steps[:done]), *parts[:within]),
                        StepFailure.from_oserror(parts[within].to_line(), exc, target.path))


def _verify(host: Host, report: StartupReport) -> StartupReport:
    """Re-read mountinfo once; a store we changed that is not a shared self-bind now fails."""
    results = report.results
    touched = [i for i, r in enumerate(results)
               if r.outcome == READY and r.applied and r.target.is_store]
    if not touched:
        return report
    mounts = MountView.from_host(host)
    out = list(results)
    for i in touched:
        problem = mounts.store_problem(out[i].path)
        if problem is not None:
            out[i] = TargetResult(out[i].target, FAILED, out[i].applied,
                                  reason=f"after its steps: {problem}")
    return StartupReport(tuple(out), report.skipped, report.orphans)


def apply_plan(host: Host, plan: StartupPlan, *, log: Log | None = None,
               verify: bool = False) -> StartupReport:
    """Run every target's steps in plan order (see the module docstring for the failure policy).
    ``log`` receives each step's line before it runs."""
    results: list[TargetResult | StoresResult] = []
    failed: set[str] = set()
    for entry in plan.entries:
        if isinstance(entry, MissingStores):
            if log is None and entry.base not in failed:
                # the usual case at boot: one Host call for the run, each store's failure kept
                # (a failing store stops only itself, as a target's step does)
                failures = host.make_stores(entry.paths(), STORE_MODE, ROOT_UID, ROOT_GID,
                                            safe=True)
                results.append(StoresResult(entry, failures))
                continue
            targets: Iterable[Target] = entry.targets()  # logged step by step, or not tried
        else:
            targets = (entry,)
        for target in targets:
            result = _apply_target(host, target, failed, log)
            if result.outcome in (FAILED, BLOCKED):
                failed.add(target.path)
            results.append(result)
    if verify:
        return _verify(host, StartupReport(tuple(results), plan.skipped, plan.orphans))
    return StartupReport(tuple(results), plan.skipped, plan.orphans)


def _apply_target(host: Host, target: Target, failed: set[str], log: Log | None) -> TargetResult:
    if target.state == BLOCKED:
        return TargetResult(target, BLOCKED)
    if target.needs in failed:
        return TargetResult(target, FAILED,
                            reason=f"not attempted: {show_path(target.needs)} is not usable")
    return _run_target(host, target, log)


def dry_run_report(plan: StartupPlan) -> StartupReport:
    """The report a dry run gives: what would be done, nothing applied."""
    results = tuple(TargetResult(t, t.state if t.state in (READY, BLOCKED) else PLANNED)
                    for t in plan.targets)
    return StartupReport(results, plan.skipped, plan.orphans, dry_run=True)


def run_startup(host: Host, *, dry_run: bool = False, log: Log | None = None,
                verify: bool = False) -> tuple[StartupPlan, StartupReport]:
    """Plan from the host's current state, then apply (unless ``dry_run``). The same code runs
    on ModelHost and KernelHost."""
    plan = plan_startup(host)
    if dry_run:
        return plan, dry_run_report(plan)
    return plan, apply_plan(host, plan, log=log, verify=verify)

