"""The ``main`` skeleton the kernel benchmarks share (bench helper; :mod:`bench.signin`,
:mod:`bench.boot`): their common options, the root check, and ``--check-floor``.

``--check-floor`` re-runs the benchmark as ``python -m bench.NAME --trace-child`` under
``strace -f``: the child runs ours and the floor once each with their phases marked, and
:func:`bench.floor.compare` checks per phase that both made the same system calls.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence

from bench import floor


def parser(doc: str | None, *, quick: str, repeat: str) -> argparse.ArgumentParser:
    """The options every kernel benchmark takes; ``quick`` and ``repeat`` are their help."""
    ap = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help=quick)
    ap.add_argument("--repeat", type=int, default=None, help=repeat)
    ap.add_argument("--check-floor", action="store_true",
                    help="compare ours' and the floor's syscalls under strace, then exit")
    ap.add_argument("--trace-child", action="store_true", help=argparse.SUPPRESS)
    return ap


def kernel_main(module: str, args: argparse.Namespace, *, measure: Callable[[], int],
                trace: Callable[[], None], phases: Sequence[str],
                trace_args: Sequence[str] = ()) -> int:
    """Refuse without root (exit 2); ``--trace-child``: ``trace()``; ``--check-floor``: the
    traced child under strace, exit 1 if a phase differs; else ``measure()``."""
    if os.geteuid() != 0:
        print(f"python -m {module}: needs root (a private mount namespace and mount(2))",
              file=sys.stderr)
        return 2
    if args.trace_child:
        trace()
        return 0
    if args.check_floor:
        counts = floor.strace_counts([sys.executable, "-m", module, "--trace-child",
                                      *trace_args])
        return 0 if floor.compare(counts, list(phases)) else 1
    return measure()


def stop_child(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM our own child (by pid), SIGKILL it after 10 s, and close its pipes."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
