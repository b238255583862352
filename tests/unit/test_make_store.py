"""Startup's composite step for a missing store on the model: ``MakeStore`` (ops/mounts.py) and
``Host.make_store`` (host.py).

* The plan stays the same data as text: a missing store prints and reports as the four steps it
  printed before (mkdir, chown, bind, make-shared).
* ``ModelHost.make_store`` is its definition, the four calls, and a failure at each step leaves
  what the four calls leave, with ``steps_done`` saying how far it got.
* startup reports a failure inside the composite as the step that failed, with the steps done
  before it, the same with and without ``-v`` (which runs the parts one by one).
* FaultHost still counts (and can fail) each of the four steps.

The kernel's fused call is checked against the four calls in tests/kernel/test_make_store.py.
"""

from __future__ import annotations

import errno
from typing import Any

import pytest

from daemonstore import mountinfo
from daemonstore.boot import seed
from daemonstore.boot.apply import FAILED, run_startup
from daemonstore.boot.plan import plan_startup
from daemonstore.host import MAKE_STORE_STEPS, Propagation, make_store_by_steps
from daemonstore.model import ModelHost
from daemonstore.ops import Chown, MakeDir, MakeStore, SafeBind, SafeMake, flatten, to_text
from daemonstore.testing.faults import FaultHost, count_calls

S = "/run/daemon-store"
C = "/run/daemon-store-cache"


def _lines(path: str) -> list[str]:
    return [f"mkdir -m 0755 {path}", f"chown 0:0 {path}", f"mount --bind {path} {path}",
            f"mount --make-shared {path}"]


class StepFails(ModelHost):
    """A model whose step ``step`` (a MAKE_STORE_STEPS name) fails with ``err`` for ``path``."""

    def __init__(self, step: str, path: str, err: int = errno.EIO) -> None:
        super().__init__()
        self.step, self.path, self.err = step, path, err

    def _check(self, step: str, path: str) -> None:
        if step == self.step and path == self.path:
            raise OSError(self.err, "injected", path)

    def mkdir(self, path: str, mode: int = 0o755, *, parents: bool = False,
              safe: bool = False) -> None:
        self._check("mkdir", path)
        super().mkdir(path, mode, parents=parents, safe=safe)

    def chown(self, path: str, uid: int, gid: int, *, follow_symlinks: bool = True,
              safe: bool = False) -> None:
        self._check("chown", path)
        super().chown(path, uid, gid, follow_symlinks=follow_symlinks, safe=safe)

    def bind(self, source: str, target: str, *, recursive: bool = False,
             safe: bool = False) -> None:
        self._check("bind", target)
        super().bind(source, target, recursive=recursive, safe=safe)

    def make(self, target: str, propagation: Propagation | str, *, recursive: bool = False,
             safe: bool = False) -> None:
        self._check("make", target)
        super().make(target, propagation, recursive=recursive, safe=safe)


def _templates(h: ModelHost, *names: str) -> None:
    seed.install(h, [seed.Entry(n) for n in names], (("root", 0),))
    h.mkdir("/run", 0o755)


# ---- the plan as data ---------------------------------------------------------------------------


def test_a_missing_store_is_one_op_that_prints_as_its_four_steps() -> None:
    op = MakeStore(f"{S}/a", 0o755, 0, 0)
    assert op.parts() == (MakeDir(f"{S}/a", 0o755), Chown(f"{S}/a", 0, 0),
                          SafeBind(f"{S}/a", f"{S}/a"), SafeMake(f"{S}/a", Propagation.SHARED))
    assert [p.to_line() for p in op.parts()] == _lines(f"{S}/a")
    assert op.to_line().splitlines() == _lines(f"{S}/a")
    assert to_text([op, Chown("/x", 1, 2)]) == "\n".join([*_lines(f"{S}/a"), "chown 1:2 /x"]) + "\n"
    assert flatten([Chown("/x", 1, 2)]) == [Chown("/x", 1, 2)]  # a plain op is its own part


def test_the_dry_run_and_the_report_list_the_same_lines_as_four_ops_did() -> None:
    h = ModelHost()
    _templates(h, "a", "b")
    plan = plan_startup(h)
    store = next(t for t in plan.targets if t.path == f"{S}/a")
    assert store.steps == (MakeStore(f"{S}/a", 0o755, 0, 0),)
    base = [f"mkdir -m 0755 {S}", f"chown 0:0 {S}"]
    cache = [f"mkdir -m 0755 {C}", f"chown 0:0 {C}"]
    assert [op.to_line() for op in plan.steps] == [
        *base, *_lines(f"{S}/a"), *_lines(f"{S}/b"), *cache, *_lines(f"{C}/a"),
        *_lines(f"{C}/b")]
    assert plan.to_lines() == [
        f"# missing {S}", *base, f"# missing {S}/a", *_lines(f"{S}/a"),
        f"# missing {S}/b", *_lines(f"{S}/b"), f"# missing {C}", *cache,
        f"# missing {C}/a", *_lines(f"{C}/a"), f"# missing {C}/b", *_lines(f"{C}/b")]
    _, report = run_startup(h, dry_run=True)
    target = next(r for r in report.to_json()["targets"] if r["path"] == f"{S}/a")
    assert target["steps"] == _lines(f"{S}/a") and target["applied"] == []
    assert "missing, 4 step(s) planned" in next(r.line() for r in report.results
                                                if r.path == f"{S}/a")
    _, report = run_startup(h)
    target = next(r for r in report.to_json()["targets"] if r["path"] == f"{S}/a")
    assert target["applied"] == _lines(f"{S}/a") and target["outcome"] == "ready"


# ---- Host.make_store on the model: the four calls -----------------------------------------------


def _end(h: ModelHost, fused: bool, path: str) -> dict[str, Any]:
    error = None
    try:
        if fused:
            h.make_store(path, 0o750, 20104, 20104, safe=True)
        else:
            make_store_by_steps(h, path, 0o750, 20104, 20104, safe=True)
    except OSError as exc:
        error = (exc.errno, exc.filename, getattr(exc, "steps_done", None))
    try:
        st = h.lstat(path)
        left: Any = (st.mode, st.uid, st.gid)
    except OSError as exc:
        left = exc.errno
    return {"error": error, "left": left,
            "mounts": mountinfo.canonical({"init": h.mountinfo()})}


@pytest.mark.parametrize("step", [None, *MAKE_STORE_STEPS])
def test_model_make_store_fails_at_each_step_as_the_four_calls_do(step: str | None) -> None:
    def host() -> ModelHost:
        h = StepFails(step or "", f"{S}/a")
        h.mkdir("/run", 0o755)
        h.mkdir(S, 0o755)
        return h

    fused, steps = _end(host(), True, f"{S}/a"), _end(host(), False, f"{S}/a")
    assert fused == steps
    rows = {row[0]: row for row in fused["mounts"]["namespaces"]["init"]}
    if step is None:
        assert fused["error"] is None and fused["left"][1:] == (20104, 20104)
        assert rows[f"{S}/a"][-2] is not None  # a shared self-bind
    else:
        assert fused["error"] == (errno.EIO, f"{S}/a", MAKE_STORE_STEPS.index(step))
        assert (f"{S}/a" in rows) == (step == "make")  # bound only if it got past the bind
        assert (fused["left"] == errno.ENOENT) == (step == "mkdir")


def test_model_make_store_real_errors_stop_at_mkdir() -> None:
    h = ModelHost()
    h.mkdir("/run", 0o755)
    h.symlink("/etc", "/run/link")
    for path, err in (("/run/nothere/a", errno.ENOENT), ("/run", errno.EEXIST),
                      ("/run/link/a", errno.ELOOP)):
        with pytest.raises(OSError) as info:
            h.make_store(path, 0o755, 0, 0, safe=True)
        assert (info.value.errno, getattr(info.value, "steps_done", None)) == (err, 0)


# ---- startup's report of a failure inside the composite -----------------------------------------


@pytest.mark.parametrize("step", MAKE_STORE_STEPS)
@pytest.mark.parametrize("verbose", [False, True])
def test_startup_reports_the_failed_part_and_the_parts_done(step: str, verbose: bool) -> None:
    h = StepFails(step, f"{S}/b", errno.ENOSPC)
    _templates(h, "a", "b", "c")
    seen: list[str] = []
    _, report = run_startup(h, log=seen.append if verbose else None)
    bad = next(r for r in report.results if r.path == f"{S}/b")
    k = MAKE_STORE_STEPS.index(step)
    assert bad.outcome == FAILED and bad.failure is not None
    assert (bad.failure.step, bad.failure.errname) == (_lines(f"{S}/b")[k], "ENOSPC")
    assert [op.to_line() for op in bad.applied] == _lines(f"{S}/b")[:k]
    assert bad.to_json()["applied"] == _lines(f"{S}/b")[:k]
    others = [r for r in report.stores if r.path != f"{S}/b"]
    assert all(r.outcome == "ready" for r in others)  # one store failing stops only that one
    if verbose:  # each part logged before it runs, the failing one included, nothing after
        i = seen.index(_lines(f"{S}/b")[0])
        assert seen[i:i + k + 1] == _lines(f"{S}/b")[:k + 1]
        assert seen[i + k + 1] == _lines(f"{S}/c")[0]


def test_verbose_and_quiet_runs_report_alike() -> None:
    quiet, loud = StepFails("bind", f"{C}/a"), StepFails("bind", f"{C}/a")
    for h in (quiet, loud):
        _templates(h, "a", "b")
    _, r1 = run_startup(quiet)
    _, r2 = run_startup(loud, log=lambda line: None)
    assert r1.to_json() == r2.to_json()
    assert quiet.mountinfo() == loud.mountinfo()


# ---- FaultHost still reaches every step ---------------------------------------------------------


def test_fault_host_counts_and_fails_each_of_the_four_steps() -> None:
    def fresh() -> ModelHost:
        h = ModelHost()
        _templates(h, "a")
        return h

    n, _ = count_calls(fresh(), lambda host: run_startup(host))
    # /run/daemon-store and -cache: mkdir + chown each; each store: its four steps
    assert n == 2 * 2 + 2 * 4
    probe = FaultHost(fresh())
    run_startup(probe)
    assert [name for _, name, first in probe.log if first == f"{S}/a"] == list(MAKE_STORE_STEPS)
    # a fault at the store's bind (call 2 + 2): made and chowned, not mounted
    h = fresh()
    _, report = run_startup(FaultHost(h, at=4))
    bad = next(r for r in report.results if r.path == f"{S}/a")
    assert bad.failure is not None and bad.failure.step == f"mount --bind {S}/a {S}/a"
    assert h.lstat(f"{S}/a").is_dir
    assert f"{S}/a" not in {e.mount_point for e in mountinfo.parse(h.mountinfo())}
