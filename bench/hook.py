"""Latency of the session hook (``daemonstore hook``) on the real kernel, against sign-in's apply
measured in the same run.

Usage (root, dbus-daemon; runs in a sandbox child: private mount namespace, tmpfs root)::

    .venv/bin/python -m bench.hook [--quick] [--repeat R] [--stores S] [--namespaces N]

**Set-up** (bench/signin.py ``setup``, not timed): S templates, their 2S shared stores, N daemon
namespaces cloned from the root namespace with slave propagation; a private dbus-daemon, a
``cryptohome-sim --root`` (the session manager that emits the signal) and ``daemonstore hook
--root --no-watch-mounts`` (signals only) as child processes in the sandbox's namespace.

**Rounds** (a fresh user each, interleaved, the figure is the median):

* **apply** -- the baseline: ``session.plan_sign_in`` then, timed, ``SignInPlan.apply`` (vault,
  homes and the 2S store binds; from the first step to the last mount(2) returning, when every
  daemon namespace has the propagated mounts); then a sign-out.
* **hook** -- a user signed in by the library whose 2S store binds are then unmounted (what a
  cryptohome without daemon-store support leaves; not timed); then, timed, ``StartSession`` on
  the bus until the hook's log line for that user arrives: the session manager's
  ``SessionStateChanged("started")``, the hook's ``RetrieveActiveSessions``, its plan and its
  apply of the 2S binds (propagation is synchronous: when the line is written, every daemon
  namespace has them). Checked afterwards (not timed): the last daemon namespace shows all 2S
  binds. Then ``daemonstore logout``'s calls sign the user out.

Target (issue "Deployable"): hook latency <= 1.5x apply at S=64, N=100. The last line of output
is ONE JSON object: ``stores``, ``namespaces``, ``binds``, ``rounds``, ``apply_ms``,
``hook_ms`` (medians), ``ratio`` (hook/apply medians), ``ratio_paired`` (median of the per-round
ratios), ``target_ratio``, ``within_target``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import select
import statistics
import subprocess
import sys
import time
from typing import Any

from bench.harness import stop_child
from bench.signin import _private_bus, _store_mounts, _wait_ready, check, setup
from daemonstore import paths, session
from daemonstore.kernel import KernelHost, kernel_unavailable_reason, run_in_sandbox

TARGET_RATIO = 1.5


def _start_hook(h: KernelHost, address: str) -> subprocess.Popen[bytes]:
    exe = os.path.join(os.path.dirname(sys.executable), "daemonstore")
    proc = subprocess.Popen([exe, "hook", "--root", h.root, "--address", address,
                             "--no-watch-mounts"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    _read_until(proc, b"listening on", 30)
    return proc


def _read_until(proc: subprocess.Popen[bytes], marker: bytes, timeout: float) -> float:
    """Read the process's output until a line holding ``marker``; the time it arrived."""
    assert proc.stdout is not None
    deadline, buf = time.monotonic() + timeout, b""
    while marker not in buf:
        ready, _, _ = select.select([proc.stdout], [], [], max(deadline - time.monotonic(), 0))
        chunk = os.read(proc.stdout.fileno(), 65536) if ready else b""
        if not chunk:
            raise RuntimeError(f"no {marker!r} from the hook: {buf.decode()[-500:]}")
        buf += chunk
    return time.perf_counter()


def _unbind_stores(h: KernelHost, user_hash: str) -> None:
    """Undo the user's store binds (a cryptohome without daemon-store support)."""
    for base in paths.STORE_BASES:
        for name in h.listdir(base):
            target = f"{base}/{name}/{user_hash}"
            h.umount(target)


def measure(h: KernelHost, address: str, stores: int, namespaces: int,
            rounds: int) -> list[dict[str, float]]:
    names = setup(h, stores, namespaces)
    crypto = subprocess.Popen([sys.executable, "-m", "cryptohome_sim", "--root", h.root,
                               "--address", address], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    hook = None
    try:
        _wait_ready(crypto)
        hook = _start_hook(h, address)
        return asyncio.run(_rounds(h, hook, address, 2 * stores, names, rounds))
    finally:
        for proc in (hook, crypto):
            if proc is not None:
                stop_child(proc)
        if crypto.stderr is not None:
            crypto.stderr.close()


async def _rounds(h: KernelHost, hook: subprocess.Popen[bytes], address: str, binds: int,
                  names: list[str], rounds: int) -> list[dict[str, float]]:
    from daemonstore.dbus.client import Client

    out = []
    async with await Client.connect(address) as client:
        for k in range(rounds + 1):  # round 0 warms both paths up
            # apply, the baseline
            a_hash = await client.sanitized_username(f"a{k}@example.com")
            plan = session.plan_sign_in(h, a_hash)
            gc.collect()
            t0 = time.perf_counter()
            plan.apply(h)
            apply_ms = (time.perf_counter() - t0) * 1e3
            check(h, a_hash, binds, names, full=k == 1)
            session.sign_out(h, a_hash)
            # the hook
            username = f"b{k}@example.com"
            b_hash = await client.sanitized_username(username)
            session.sign_in(h, b_hash)
            _unbind_stores(h, b_hash)
            if _store_mounts(h, names[-1], b_hash):
                raise RuntimeError("store binds left before StartSession")
            gc.collect()
            t0 = time.perf_counter()
            await client.start_session(username)
            # a blocking read in this thread: setns(CLONE_NEWNS) (the checks) refuses a process
            # with a second thread, so no to_thread; the hook works in its own process meanwhile
            t_line = _read_until(hook, f"bound {binds} stores of {b_hash}".encode(), 30)
            hook_ms = (t_line - t0) * 1e3
            check(h, b_hash, binds, names, full=k == 1)
            await client.logout()  # StopSession (every session), then Unmount{} (everyone)
            check(h, b_hash, 0, names, full=False)
            if k:
                out.append({"apply": apply_ms, "hook": hook_ms})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.hook", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds")
    ap.add_argument("--repeat", type=int, default=None, help="rounds (default 9, quick 3)")
    ap.add_argument("--stores", type=int, default=64)
    ap.add_argument("--namespaces", type=int, default=100)
    args = ap.parse_args(argv)
    rounds = args.repeat or (3 if args.quick else 9)
    if (why := kernel_unavailable_reason()) is not None:
        print(f"bench.hook: cannot run here: {why}", file=sys.stderr)
        return 2
    bus = _private_bus()
    if bus is None:
        return 2
    try:
        rows = run_in_sandbox(measure, bus.address, args.stores, args.namespaces, rounds)
    finally:
        bus.stop()
    apply_ms = statistics.median(r["apply"] for r in rows)
    hook_ms = statistics.median(r["hook"] for r in rows)
    fig: dict[str, Any] = {
        "stores": args.stores, "namespaces": args.namespaces, "binds": 2 * args.stores,
        "rounds": len(rows), "apply_ms": round(apply_ms, 2), "hook_ms": round(hook_ms, 2),
        "ratio": round(hook_ms / apply_ms, 3),
        "ratio_paired": round(statistics.median(r["hook"] / r["apply"] for r in rows), 3),
        "target_ratio": TARGET_RATIO}
    fig["within_target"] = fig["ratio_paired"] <= TARGET_RATIO
    print(f"hook latency, S={args.stores} N={args.namespaces}, median of {len(rows)}: "
          f"sign-in apply {fig['apply_ms']} ms, hook (StartSession -> binds in every "
          f"namespace) {fig['hook_ms']} ms = {fig['ratio_paired']}x apply (paired; target <= "
          f"{TARGET_RATIO}x)")
    print(json.dumps(fig))
    return 0


if __name__ == "__main__":
    sys.exit(main())
