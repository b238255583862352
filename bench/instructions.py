"""Scaling by instruction counts: how the work of our code grows with scale, counted exactly
(callgrind) instead of timed, so that the figures repeat whatever else the machine is doing.

Usage (``valgrind`` on PATH; the kernel part needs root and runs in sandbox children)::

    .venv/bin/python -m bench.instructions [--quick] [--jobs J] [--no-kernel]

Why: on this shared 2-CPU machine one doubling of a timed benchmark swings between 1.8x and
2.7x, for the kernel's own syscall floor as much as for our code, so "linear in scale" cannot be
read off single timed doublings. ``valgrind --tool=callgrind`` counts every user-space
instruction the Python process executes; with the hash seed fixed (``PYTHONHASHSEED=0``) the
count of a workload repeats exactly (checked below: ``repeatable``). Address-space randomisation
is turned off for the counted process (``setarch -R``), and every workload runs once natively
first, so that no count includes compiling a changed module to bytecode.

**Method.** Each workload runs in a child process under callgrind, once per cumulative phase
count k (k = 0 is the set-up alone); the instructions of phase k are count(k) - count(k-1), so
start-up, imports and set-up drop out exactly. Set-up objects are collected and frozen before
the phases (``gc.freeze``), as in the timed benchmarks.

* ``propagation`` -- the model on bench/propagation.py's workload: a shared store received by
  N slave namespaces, 64 binds into it then 64 umounts (128*N propagated mounts made and
  removed), N in 100/200/400/800.
* ``signin_stores`` / ``signin_namespaces`` -- a sign-in and sign-out on the **model**, the
  set-up of bench/signin.py (S templates, startup, N daemon namespaces with slave
  propagation, a warm-up user): S in 16/32/64/128 at N = 100, N in 25/50/100/200 at S = 64.
  Phases: sign-in planning, sign-in apply, sign-out (plan + apply). The planner and the apply
  are the code the kernel runs; the model's propagation is included.
* ``kernel_calls`` -- on the **real kernel** (root; callgrind cannot run KernelHost: valgrind
  3.19 does not know openat2, syscall 437, and our kernel backend refuses to run without it):
  the Host calls of one sign-in apply and sign-out apply at the same sizes, recorded with
  bench/floor.py's Recorder. Each Host call is a fixed short syscall sequence
  (bench/floor.py ``SEQUENCES``, proven by ``python -m bench.signin --check-floor``), so this is the
  syscall work our code asks of the kernel, counted exactly; the kernel's time for it is the
  floor of bench/signin.py.

**Linearity.** For each series: ``per_unit`` (count / size), ``marginal`` (the count added per
unit of size between neighbouring sizes: constant for a + b*size, growing for anything
superlinear), ``exponent`` (least-squares k of count ~ size^k over all sizes; below 1 when a
fixed part dominates) and ``linear``: the largest marginal cost is at most 1.15x the smallest,
i.e. one more unit costs the same (within 15%) at 8x the size. A quadratic term that made
up even 10% of the count at the smallest size would push that spread past 1.6. A count that
moves less than 1% over all sizes is constant (spread 1.0).

``--only propagation`` runs the first series alone (the CI smoke test: about 20 s).

The last line of output is ONE JSON object: ``propagation``, ``signin_stores``,
``signin_namespaces`` (each: ``sizes``, ``phases`` and per phase ``instructions`` (list),
``per_unit``, ``marginal``, ``exponent``, ``spread`` (max/min marginal), ``linear``),
``kernel_calls`` (``stores`` / ``namespaces``: sizes and Host calls per phase, the same
figures per series, or null without root), ``repeat_counts`` (the first propagation workload
counted twice: at the start and at the end of the run) and ``repeatable`` (they are equal),
``linear`` (all series), ``valgrind`` (version).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench import fits

ROOT = Path(__file__).resolve().parent.parent
#: how a child runs this module (from the repository root: ``bench`` is not installed)
CHILD = [sys.executable, "-m", "bench.instructions", "--child"]

#: one more unit of scale may cost at most this much more at the largest size than at the
#: smallest (marginal instructions per unit): the definition of "linear" judged here
SPREAD = 1.15
#: a count that moves less than this share across all sizes is constant in that size (the sign-in
#: plan against namespaces moves by a few hundred instructions in ten million: dict layouts)
CONSTANT = 0.01
PROPAGATION = (100, 200, 400, 800)
STORES, NAMESPACES, TARGET = (16, 32, 64, 128), (25, 50, 100, 200), (64, 100)
SIGNIN_PHASES = ("sign-in plan", "sign-in apply", "sign-out")
COLLECTED = re.compile(r"Collected : (\d+)")


# ---- the children: one workload, the first k phases --------------------------------------------


def _signin_world(stores: int, namespaces: int) -> tuple[Any, Any]:
    from bench import signin
    from daemonstore import session
    from daemonstore.model import ModelHost

    h = ModelHost()
    signin.setup(h, stores, namespaces)
    warm = signin.user_hash("warm", 0)
    session.plan_sign_in(h, warm).apply(h)
    session.plan_sign_out(h, warm).apply(h)
    return h, session


def child(kind: str, a: int, b: int, phases: int) -> None:
    """The workload ``kind`` at size (a, b), set-up then its first ``phases`` phases."""
    if kind == "propagation":
        from bench import propagation
        from daemonstore.model import ModelHost

        h = ModelHost()
        propagation.setup(h, a)
        gc.collect()
        gc.freeze()
        if phases >= 1:
            for k in range(propagation.BINDS):
                h.bind(f"/src/u{k}", f"/store/u{k}")
            for k in range(propagation.BINDS):
                h.umount(f"/store/u{k}")
        return
    h, session = _signin_world(a, b)
    user = "0123456789abcdef0123456789abcdef01234567"
    gc.collect()
    gc.freeze()
    plan = session.plan_sign_in(h, user) if phases >= 1 else None
    if phases >= 2 and plan is not None:
        plan.apply(h)
    if phases >= 3:
        session.plan_sign_out(h, user).apply(h)


# ---- the parent: callgrind runs, series, figures -----------------------------------------------


#: address-space randomisation off for the counted process (util-linux setarch -R): a different
#: stack or heap placement changes a few instructions (alignment paths, hash probes of id()s)
_NO_ASLR = [shutil.which("setarch") or "setarch", os.uname().machine, "-R"] \
    if shutil.which("setarch") else []


def warm_bytecode() -> None:
    """Run each workload once, natively and tiny, before counting: the first process to import
    a changed module compiles it and writes its .pyc, work that must not land in one count."""
    for kind in ("propagation", "signin"):
        subprocess.run([*CHILD, kind, "2", "2", "3"], check=True, cwd=ROOT)


def count(kind: str, a: int, b: int, phases: int, tmp: str) -> int:
    """User-space instructions of a child process running the workload under callgrind."""
    argv = [*_NO_ASLR, "valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.%p",
            *CHILD, kind, str(a), str(b), str(phases)]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT)
    found = COLLECTED.findall(proc.stderr)
    if proc.returncode != 0 or not found:
        raise RuntimeError(f"callgrind {kind} {a} {b} {phases} failed (exit "
                           f"{proc.returncode}): {proc.stderr[-2000:]}")
    return int(found[-1])


def series_figures(sizes: list[int], values: list[float]) -> dict[str, Any]:
    """per_unit, marginal, exponent, spread, linear of one count against its sizes."""
    marginal = [(v1 - v0) / (s1 - s0) for s0, s1, v0, v1
                in zip(sizes, sizes[1:], values, values[1:], strict=False)]
    if max(values) - min(values) <= CONSTANT * max(values):
        spread: float | None = 1.0  # the same count at every size (within 1%): constant
    elif all(m > 0 for m in marginal):
        spread = max(marginal) / min(marginal)
    else:  # the count fell somewhere as the size grew: no meaningful spread
        spread = None
    return {"per_unit": [round(v / s, 1) for v, s in zip(values, sizes, strict=True)],
            "marginal": [round(m, 1) for m in marginal],
            "exponent": round(fits.exponent(sizes, values), 3),
            "spread": None if spread is None else round(spread, 3),
            "linear": spread is not None and spread <= SPREAD}


def counted_series(kind: str, sizes: list[tuple[int, int]], axis: int, phases: list[str],
                   pool: ThreadPoolExecutor, tmp: str) -> dict[str, Any]:
    """Instructions per phase at each size: count(k) - count(k-1) of cumulative runs."""
    jobs = {(size, k): pool.submit(count, kind, size[0], size[1], k, tmp)
            for size in sizes for k in range(len(phases) + 1)}
    return make_series(sizes, axis, "instructions", {
        phase: [jobs[(size, k)].result() - jobs[(size, k - 1)].result() for size in sizes]
        for k, phase in enumerate(phases, start=1)})


def make_series(sizes: list[tuple[int, int]], axis: int, key: str,
                values: dict[str, list[int]]) -> dict[str, Any]:
    """One series: its sizes along ``axis`` and, per phase, the counts under ``key`` with
    :func:`series_figures`."""
    xs = [size[axis] for size in sizes]
    return {"sizes": xs, "phases": {phase: {key: vals, **series_figures(xs, vals)}
                                    for phase, vals in values.items()}}


def kernel_calls(sizes: list[tuple[int, int]]) -> list[dict[str, int]]:
    """Host calls of one sign-in apply / sign-out apply per size, on the real kernel."""
    from bench import signin
    from daemonstore.kernel import run_in_sandbox

    def one(h: Any, stores: int, namespaces: int) -> dict[str, int]:
        signin.setup(h, stores, namespaces)
        signin.cycle_ours(h, signin.user_hash("warm", 0), lambda: None)
        calls = signin.record(h, signin.user_hash("rec", 0))
        return {"sign-in apply": len(calls["apply"]),
                "sign-out": len(calls["out_plan"]) + len(calls["out_apply"])}

    return [run_in_sandbox(one, s, n) for s, n in sizes]


def calls_series(sizes: list[tuple[int, int]], axis: int,
                 rows: list[dict[str, int]]) -> dict[str, Any]:
    return make_series(sizes, axis, "calls", {phase: [row[phase] for row in rows]
                                              for phase in rows[0]})


def _print_series(title: str, ser: dict[str, Any], unit: str, key: str = "instructions") -> None:
    print(f"{title}:")
    for phase, fig in ser["phases"].items():
        cells = "  ".join(f"{x}: {v:,}" for x, v in zip(ser["sizes"], fig[key], strict=True))
        print(f"  {phase:14s} {cells}")
        print(f"  {'':14s} marginal per {unit}: {fig['marginal']}  spread {fig['spread']}  "
              f"exponent {fig['exponent']}  linear: {fig['linear']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                    help="callgrind runs at a time (counts do not depend on load)")
    ap.add_argument("--no-kernel", action="store_true", help="skip the kernel's Host calls")
    ap.add_argument("--only", choices=["propagation"], help="run this series alone")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        kind, a, b, k = args.child
        child(kind, int(a), int(b), int(k))
        return 0
    if shutil.which("valgrind") is None:
        print("python -m bench.instructions: needs valgrind on PATH", file=sys.stderr)
        return 2
    version = subprocess.run(["valgrind", "--version"], capture_output=True,
                             text=True).stdout.strip()
    prop = [10, 20, 40, 80] if args.quick else list(PROPAGATION)
    stores = [4, 8, 16, 32] if args.quick else list(STORES)
    spaces = [3, 6, 12, 24] if args.quick else list(NAMESPACES)
    target = (16, 12) if args.quick else TARGET
    by_stores = [(s, target[1]) for s in stores]
    by_spaces = [(target[0], n) for n in spaces]
    fig: dict[str, Any] = {"valgrind": version}
    with tempfile.TemporaryDirectory(prefix="bench-cg-") as tmp, \
            ThreadPoolExecutor(max(args.jobs, 1)) as pool:
        warm_bytecode()
        again = pool.submit(count, "propagation", prop[0], 0, 1, tmp)
        fig["propagation"] = counted_series("propagation", [(n, 0) for n in prop], 0,
                                            ["binds + umounts"], pool, tmp)
        if not args.only:
            fig["signin_stores"] = counted_series("signin", by_stores, 0,
                                                  list(SIGNIN_PHASES), pool, tmp)
            fig["signin_namespaces"] = counted_series("signin", by_spaces, 1,
                                                      list(SIGNIN_PHASES), pool, tmp)
        first = count("propagation", prop[0], 0, 1, tmp)
        fig["repeat_counts"] = [again.result(), first]
        fig["repeatable"] = again.result() == first
    _print_series("model propagation (instructions)", fig["propagation"], "namespace")
    if not args.only:
        _print_series("model sign-in, stores (instructions)", fig["signin_stores"], "store")
        _print_series("model sign-in, namespaces (instructions)", fig["signin_namespaces"],
                      "namespace")
    fig["kernel_calls"] = None
    if not args.no_kernel and not args.only:
        from daemonstore.kernel import kernel_unavailable_reason

        if kernel_unavailable_reason() is None:
            fig["kernel_calls"] = {
                "stores": calls_series(by_stores, 0, kernel_calls(by_stores)),
                "namespaces": calls_series(by_spaces, 1, kernel_calls(by_spaces))}
            _print_series("kernel: Host calls, stores", fig["kernel_calls"]["stores"], "store",
                          "calls")
            _print_series("kernel: Host calls, namespaces", fig["kernel_calls"]["namespaces"],
                          "namespace", "calls")
        else:
            print("kernel part skipped: needs root and unshare(CLONE_NEWNS)")
    series = [fig["propagation"], *(fig[k] for k in ("signin_stores", "signin_namespaces")
                                    if k in fig), *(fig["kernel_calls"] or {}).values()]
    verdicts = [p["linear"] for s in series for p in s["phases"].values()]
    fig["linear"] = all(verdicts)
    print(f"the same workload counted twice: {'equal' if fig['repeatable'] else 'DIFFERENT'}; "
          f"every series linear (marginal spread <= {SPREAD}): {fig['linear']}")
    print(json.dumps(fig))
    return 0


if __name__ == "__main__":
    sys.exit(main())
