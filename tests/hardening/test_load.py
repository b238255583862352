"""Load on the real kernel: 64 daemons (128 stores), 50 of them running in their own mount
namespaces, and several users signed in at once, signing in and out cycle after cycle.

After every cycle the mount count of the root namespace and of every daemon namespace is back at
its baseline (nothing leaked by propagation into any namespace), and at the end so is the number
of open file descriptors of the process doing it all; no sign-in or sign-out reports an error or
a warning; the data each user's daemons wrote in one cycle is there in the next (read through the
daemon's own namespace).

Size: the default is the issue's 200 cycles (about 50 s on 2 cores, so the whole hardening
suite stays under 3 minutes); ``DAEMONSTORE_HARDENING_FULL=1`` runs 1000, and
``DAEMONSTORE_LOAD_CYCLES=N`` any number. The figures are printed in the ``hardening figures``
section of the pytest summary.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

from daemonstore import paths
from daemonstore.world import World, kernel_world
from tests.hardening.conftest import FULL, Figures
from tests.hardening.util import guarded

pytestmark = pytest.mark.kernel

CYCLES = int(os.environ.get("DAEMONSTORE_LOAD_CYCLES", "1000" if FULL else "200"))
DAEMON_COUNT = 64
NAMESPACES = 50
USERS = ("ann", "ben", "cat")


def _count_mounts(world: World, namespace: str) -> int:
    """Lines of the namespace's /proc/self/mountinfo (the host's mounts included: they do not
    change, so a difference is ours). Read raw after a setns: rebasing 50 namespaces' tables to
    the sandbox every cycle would cost more than the cycle itself."""
    with world.in_namespace(namespace), open("/proc/self/mountinfo", "rb") as f:
        return f.read().count(b"\n")


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _load_body(world: World, cycles: int) -> dict[str, Any]:
    t0 = time.monotonic()
    for i in range(DAEMON_COUNT):
        world.install_daemon(f"d{i:02d}", 20200 + i, 20200 + i, 0o700, startup=False)
    world.run_startup()
    views = [world.daemon(f"d{i:02d}") for i in range(NAMESPACES)]
    namespaces = [world.namespace] + [v.namespace for v in views]
    for user in USERS:  # first sign-ins create the vaults: not part of the steady state
        world.login(user)
    for user in USERS:
        world.logout(user)
    baseline = {ns: _count_mounts(world, ns) for ns in namespaces}
    fds = _fds()
    setup = time.monotonic() - t0
    out: dict[str, Any] = {"errors": [], "leaks": [], "baseline": baseline, "fds": fds,
                           "setup_s": setup, "cycles": 0, "signed_in_mounts": 0}
    t1 = time.monotonic()
    for c in range(cycles):
        order = USERS[c % len(USERS):] + USERS[:c % len(USERS)]  # vary who goes first
        for user in order:
            try:
                world.login(user)
            except OSError as exc:
                out["errors"].append(f"cycle {c}: sign-in of {user}: {exc}")
            warnings = world.sessions.get(user)
            if warnings is not None and warnings.warnings:
                out["errors"].append(f"cycle {c}: sign-in of {user} warned {warnings.warnings}")
        if c == 0:
            out["signed_in_mounts"] = sum(_count_mounts(world, ns) for ns in namespaces)
        for k, user in enumerate(USERS):
            steady, rotating = views[0], views[(c + k) % NAMESPACES]
            if c > 0 and steady.read(user, "last") != str(c - 1).encode():
                out["errors"].append(f"cycle {c}: {user}'s data from cycle {c - 1} is not there")
            steady.write(user, "last", str(c).encode())
            rotating.write(user, f"cycle-{c}", user.encode(), cache=bool(c % 2))
            if world.read_vault(user, rotating.daemon, f"cycle-{c}",
                                cache=bool(c % 2)) != user.encode():
                out["errors"].append(f"cycle {c}: {user}'s write through "
                                     f"{rotating.daemon} did not reach the vault")
        for user in reversed(order):
            result = world.logout(user)
            if not result.ok or result.lazily_detached or result.warnings:
                out["errors"].append(f"cycle {c}: sign-out of {user}: {result.warnings}")
        now = {ns: _count_mounts(world, ns) for ns in namespaces}
        if now != baseline:
            diff = {ns: (baseline[ns], now[ns]) for ns in namespaces if now[ns] != baseline[ns]}
            out["leaks"].append(f"cycle {c}: mounts (baseline, now) {diff}")
        out["cycles"] = c + 1
        if len(out["errors"]) + len(out["leaks"]) > 20:
            break
    out["cycles_s"] = time.monotonic() - t1
    out["end_mounts"] = {ns: _count_mounts(world, ns) for ns in namespaces}
    out["end_fds"] = _fds()
    out["stores"] = len(world.host.listdir(paths.RUN_DAEMON_STORE, safe=True)) * 2
    return out


def test_sign_in_and_out_under_load(figures: Figures) -> None:
    t0 = time.monotonic()
    out = kernel_world(guarded(_load_body), CYCLES)
    took = time.monotonic() - t0
    base = sum(out["baseline"].values())
    end = sum(out["end_mounts"].values())
    leaks = len(out["leaks"]) + (out["end_fds"] != out["fds"]) + (end != base)
    figures.add(load_cycles=out["cycles"])
    figures.note("load", f"{out['cycles']} cycles x {len(USERS)} users signed in at once x "
                 f"{out['stores'] // 2} daemons ({out['stores']} stores) x {NAMESPACES} daemon "
                 f"namespaces: errors {len(out['errors'])}, leaks {leaks} (mounts {base} -> "
                 f"{end} over {NAMESPACES + 1} namespaces, {out['signed_in_mounts']} with all "
                 f"signed in; fds {out['fds']} -> {out['end_fds']}), {took:.0f}s "
                 f"({out['cycles_s'] / max(out['cycles'], 1):.2f}s a cycle)")
    assert out["errors"] == []
    assert out["leaks"] == []
    assert out["cycles"] == CYCLES
    assert end == base and out["end_fds"] == out["fds"]
    assert out["stores"] == 2 * DAEMON_COUNT
