"""Benchmark of the boot step on the real kernel: ``daemonstore-startup``'s library path against
the bare syscall floor and a naive shell-out baseline, all measured in the same run.

Usage (root; every trial runs in a fresh sandbox child: private mount namespace, tmpfs root)::

    .venv/bin/python -m bench.boot [--quick] [--templates N] [--repeat K] [--check-floor]

Each trial builds the same tree in a fresh sandbox: N valid templates (root, 0700) in
``/etc/daemon-store``, ``/etc/passwd``, and ``/run``, ``/run/daemon-store`` and
``/run/daemon-store-cache`` as tmpfiles.d leaves them (docs/chromeos.md §1.2). It then times,
from a fresh state, one of:

* **ours**: ``daemonstore.boot.apply.run_startup(KernelHost)`` -- plan (read passwd, list and lstat
  the templates (one Host.lstat_many call), lstat and list the bases; no mountinfo read: every
  store is missing, so no mount needs judging), apply (mkdir, chown, bind, make-shared per store,
  each resolved with openat2(RESOLVE_IN_ROOT|RESOLVE_NO_SYMLINKS) and done on the fd; the
  missing stores of a base in one Host.make_stores call); the check (a mountinfo read) is
  outside the timed region.
* **floor**: the same syscalls ours issues for this tree, issued bare: every Host call of ours
  (recorded once with bench/floor.py's ``Recorder`` in a separate sandbox) replayed as exactly
  the system calls KernelHost makes for it (bench/floor.py ``SEQUENCES``: openat2 with
  RESOLVE_IN_ROOT|RESOLVE_NO_SYMLINKS, statx, getdents, mkdirat, fchownat/fchmodat2 on the fd,
  mount on ``/proc/self/fd/N``, close...) from a tight ctypes/os loop with prebuilt arguments:
  what ours would cost with zero Python overhead. ``--check-floor`` proves under strace that
  both issue the same syscalls.
* **path floor** (extra figure): the least any implementation needs, one path-based call per
  operation (lstat, mkdir, chown, two mount(2)), i.e. without the fd-based symlink safety the
  issue requires.
* **shell**: what a naive script does: one process per operation (``mkdir -m 0755 P``,
  ``mount --bind P P``, ``mount --make-shared P``), spawned with subprocess.

Each variant runs K times (interleaved, so drift hits all alike); the figure is the median. As
timeit does, the garbage collector is off inside every timed region (in a forked child its first
full collection touches the whole inherited heap and takes copy-on-write faults, noise that has
nothing to do with startup). For the same reason each variant first runs its read-only part once
in its child, untimed: ours a dry ``plan_startup`` (changes nothing), the floor its lstat /
listdir / read / mountinfo calls. Without it the first touches of the parent's objects after the
fork (copy-on-write faults, with transparent huge pages each a 2 MB copy: ~65 of them, ~0.7 ms)
land in ours' timed planning, a cost a real startup process, which is not forked from a big
parent, does not pay.
Every trial's result is checked (2N shared self-binds) outside the timed region.

The last line of output is ONE JSON object with these keys:

``templates``, ``stores`` (2N), ``repeat`` (K), ``ours_ms``, ``floor_ms``, ``path_floor_ms``,
``shell_ms`` (medians, milliseconds), ``ours_plan_ms`` (median of the planning part of ours),
``ratio_floor`` (ours/floor, wall clock), ``ours_cpu_ms`` / ``floor_cpu_ms`` /
``ratio_floor_cpu`` (the same in CPU time of the measuring thread, ``time.thread_time``: robust
on a busy machine, as it leaves out the time other processes take), ``ratio_path_floor``
(ours/path floor), ``ratio_shell`` (ours/shell), ``target_ratio_floor`` (1.3), ``within_target``
(ratio_floor_cpu <= target: the target is judged in CPU time, the measure that does not count
other processes' time; the wall ratio is reported beside it), ``kernel`` (uname -r),
``load_before`` (the load average when the run started).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from bench import floor, harness
from daemonstore.boot import seed
from daemonstore.boot.apply import apply_plan
from daemonstore.boot.plan import plan_startup
from daemonstore.kernel import KernelHost, run_in_sandbox
from daemonstore.kernel.syscalls import OpenHow
from daemonstore.kernel.uapi import O_CLOEXEC, O_DIRECTORY, O_PATH
from daemonstore.mountinfo import parse

#: the issue "Deployable": startup is on the boot path; at most 1.3x its syscall floor
TARGET_RATIO_FLOOR = 1.3
BASES = ("/run/daemon-store", "/run/daemon-store-cache")
MS_BIND = 4096
MS_SHARED = 1 << 20


def _prepare(h: KernelHost, templates: int) -> list[str]:
    seed.install(h, seed.many(templates), (("root", 0),))
    h.mkdir("/run", 0o755)
    for base in BASES:
        h.mkdir(base, 0o755)
    return [f"{base}/{e.name}" for base in BASES for e in seed.many(templates)]


def _check(h: KernelHost, stores: list[str]) -> None:
    shared = {e.mount_point for e in parse(h.mountinfo())
              if e.shared is not None and e.root == e.mount_point}
    missing = set(stores) - shared
    if missing:
        raise RuntimeError(f"{len(missing)} stores not shared self-binds, e.g. {min(missing)}")


def trial_ours(h: KernelHost, templates: int) -> tuple[float, float, float]:
    stores = _prepare(h, templates)
    plan_startup(h)  # warm-up, changes nothing (module docstring: copy-on-write after fork)
    gc.collect()
    gc.disable()
    floor.mark("ours:run")
    t0, c0 = time.perf_counter(), time.thread_time()
    plan = plan_startup(h)
    t1 = time.perf_counter()
    report = apply_plan(h, plan)
    t2, c2 = time.perf_counter(), time.thread_time()
    floor.mark("ours:end")
    gc.enable()
    if not report.complete:
        raise RuntimeError("ours: " + "; ".join(report.problem_lines()))
    _check(h, stores)
    return (t2 - t0) * 1e3, (t1 - t0) * 1e3, (c2 - c0) * 1e3


def _libc() -> tuple[Any, Any]:
    libc = ctypes.CDLL(None, use_errno=True)
    mount = libc.mount
    mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                      ctypes.c_char_p]
    openat2 = libc["syscall"]
    openat2.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(OpenHow),
                        ctypes.c_size_t]
    openat2.restype = ctypes.c_long
    return mount, openat2


def _fail(what: str, path: bytes) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"{what}: {os.strerror(err)}", os.fsdecode(path))


def record_calls(h: KernelHost, templates: int) -> list[floor.Call]:
    """Every Host call ours makes on a fresh tree (plan and apply), for the floor to replay."""
    _prepare(h, templates)
    rec: Any = floor.Recorder(h)
    apply_plan(rec, plan_startup(rec))
    return rec.take()


def trial_floor(h: KernelHost, templates: int,
                calls: list[floor.Call]) -> tuple[float, float]:
    """Ours' Host calls, each replayed as the bare syscalls KernelHost makes for it."""
    stores = _prepare(h, templates)
    root_fd = os.open(h.root, O_PATH | O_DIRECTORY | O_CLOEXEC)
    ops = floor.Floor(root_fd).compile(calls)
    floor.run([op for op in ops if op[0].__name__ in floor.READ_ONLY])  # warm-up, as for ours
    gc.collect()
    gc.disable()
    floor.mark("floor:run")
    t0, c0 = time.perf_counter(), time.thread_time()
    floor.run(ops)
    t1, c1 = time.perf_counter(), time.thread_time()
    floor.mark("floor:end")
    gc.enable()
    os.close(root_fd)
    _check(h, stores)
    return (t1 - t0) * 1e3, (c1 - c0) * 1e3


def trial_path_floor(h: KernelHost, templates: int) -> float:
    """The least a (symlink-unsafe) implementation needs: one path-based call per operation."""
    stores = _prepare(h, templates)
    mount, _ = _libc()
    root = h.root
    etc = f"{root}/etc/daemon-store"
    paths = [os.fsencode(root + p) for p in stores]
    gc.collect()
    gc.disable()
    t0 = time.perf_counter()
    with open(f"{root}/etc/passwd", "rb") as f:
        f.read()
    for name in os.listdir(etc):
        os.lstat(f"{etc}/{name}")
    with open("/proc/self/mountinfo", "rb") as f:
        f.read()
    for base in BASES:
        os.listdir(root + base)
    for p in paths:
        os.mkdir(p, 0o755)
        os.chown(p, 0, 0)
        if mount(p, p, None, MS_BIND, None) or mount(None, p, None, MS_SHARED, None):
            raise _fail("mount", p)
    t1 = time.perf_counter()
    gc.enable()
    _check(h, stores)
    return (t1 - t0) * 1e3


def trial_shell(h: KernelHost, templates: int) -> float:
    stores = _prepare(h, templates)
    root = h.root
    gc.collect()
    gc.disable()
    t0 = time.perf_counter()
    for p in stores:
        path = root + p
        for argv in (["mkdir", "-m", "0755", path], ["mount", "--bind", path, path],
                     ["mount", "--make-shared", path]):
            subprocess.run(argv, check=True)
    t1 = time.perf_counter()
    gc.enable()
    _check(h, stores)
    return (t1 - t0) * 1e3


def trace(templates: int) -> None:
    """Under strace (``--check-floor``): ours and the floor once each, marked."""
    calls = run_in_sandbox(record_calls, templates)
    floor.start_marking()
    run_in_sandbox(trial_ours, templates)
    run_in_sandbox(trial_floor, templates, calls)


def trials(n: int, repeat: int) -> dict[str, list[float]]:
    """Every variant ``repeat`` times, interleaved (so drift hits every variant alike), after
    one warm-up run each (imports, caches); each trial in a fresh sandbox."""
    calls = run_in_sandbox(record_calls, n)
    times: dict[str, list[float]] = {"ours": [], "plan": [], "floor": [], "path_floor": [],
                                     "shell": [], "ours_cpu": [], "floor_cpu": []}
    for trial, extra in ((trial_ours, ()), (trial_floor, (calls,)), (trial_path_floor, ())):
        run_in_sandbox(trial, n, *extra)
    for _ in range(repeat):
        total, planning, cpu = run_in_sandbox(trial_ours, n)
        times["ours"].append(total)
        times["plan"].append(planning)
        times["ours_cpu"].append(cpu)
        wall, cpu = run_in_sandbox(trial_floor, n, calls)
        times["floor"].append(wall)
        times["floor_cpu"].append(cpu)
        times["path_floor"].append(run_in_sandbox(trial_path_floor, n))
        times["shell"].append(run_in_sandbox(trial_shell, n))
    return times


def figures(n: int, repeat: int, med: dict[str, float]) -> dict[str, Any]:
    """The JSON object of the module docstring, from the medians."""
    fig: dict[str, Any] = {
        "templates": n, "stores": 2 * n, "repeat": repeat,
        "ours_ms": med["ours"], "floor_ms": med["floor"], "path_floor_ms": med["path_floor"],
        "shell_ms": med["shell"], "ours_plan_ms": med["plan"],
        "ratio_floor": round(med["ours"] / med["floor"], 3),
        "ours_cpu_ms": med["ours_cpu"], "floor_cpu_ms": med["floor_cpu"],
        "ratio_floor_cpu": round(med["ours_cpu"] / med["floor_cpu"], 3),
        "ratio_path_floor": round(med["ours"] / med["path_floor"], 3),
        "ratio_shell": round(med["ours"] / med["shell"], 4),
        "target_ratio_floor": TARGET_RATIO_FLOOR,
    }
    # judged in CPU time (module docstring); README's row shows the same figure as its headline
    fig["within_target"] = fig["ratio_floor_cpu"] <= TARGET_RATIO_FLOOR
    fig["kernel"] = os.uname().release
    return fig


def measure(args: argparse.Namespace) -> int:
    repeat = args.repeat or (3 if args.quick else 15)
    n = args.templates
    load = os.getloadavg()[0]
    med = {k: round(statistics.median(v), 3) for k, v in trials(n, repeat).items()}
    fig = figures(n, repeat, med)
    fig["load_before"] = round(load, 2)
    print(f"startup, {n} templates = {2 * n} stores, median of {repeat} "
          "(fresh sandbox each, same run):")
    print(f"  ours        {med['ours']:9.2f} ms  (planning {med['plan']:.2f} ms; "
          f"CPU time {med['ours_cpu']:.2f} ms)")
    print(f"  floor       {med['floor']:9.2f} ms  (CPU time {med['floor_cpu']:.2f} ms)  ours/floor "
          f"in CPU time = {fig['ratio_floor_cpu']:.2f}x (target <= {TARGET_RATIO_FLOOR}x); "
          f"wall clock {fig['ratio_floor']:.2f}x")
    print(f"  path floor  {med['path_floor']:9.2f} ms  ours/path floor = "
          f"{fig['ratio_path_floor']:.2f}x (no fd-based safety)")
    print(f"  shell       {med['shell']:9.2f} ms  ours/shell = {fig['ratio_shell']:.3f}x")
    print(json.dumps(fig))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = harness.parser(__doc__, quick="fewer repetitions (CI smoke run)",
                        repeat="trials per variant")
    ap.add_argument("--templates", type=int, default=64)
    args = ap.parse_args(argv)
    return harness.kernel_main("bench.boot", args, measure=lambda: measure(args),
                               trace=lambda: trace(args.templates), phases=["run"],
                               trace_args=["--templates", "4"])


if __name__ == "__main__":
    sys.exit(main())
