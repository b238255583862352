"""The low-disk cleanup measures a cache by fd (cleanup/fdwalk.py ``measure_by_fd``), not by
path: a cache deeper than PATH_MAX is measured whole (by path it could not be, so it was never
planned for clearing), and a directory renamed out of the cache while it is measured -- into
the canary, outside every vault -- stops the measurement instead of leading it there.

On the kernel, for a signed-out user (the cache is walked through ``vault/root/.cache/<d>``);
the rename is injected at the worst moment: while the walk is inside the moved directory.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from daemonstore import paths
from daemonstore.cleanup import fdwalk
from daemonstore.cleanup.apply import gather
from daemonstore.world import World, kernel_world
from tests.hardening.conftest import Figures
from tests.hardening.util import CANARY, guarded, real, setup_victims

pytestmark = pytest.mark.kernel

FOO = ("foo", 20100, 20100, 0o700)
DEPTH = 2500  # about 5000 bytes of path: more than PATH_MAX
DATA = b"x" * 4096


def _cache(world: World, h: str) -> str:
    return f"{paths.vault(h)}/root/{paths.CACHE_DIR}/foo"


def _deep_body(world: World) -> dict[str, Any]:
    h = world.login("alice")
    world.logout("alice")
    fd = os.open(real(world, _cache(world, h)), os.O_RDONLY | os.O_DIRECTORY)
    for _level in range(DEPTH):  # by fd: no path reaches the bottom
        os.mkdir("d", 0o700, dir_fd=fd)
        nxt = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nxt
    with open(os.open("data", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd), "wb") as f:
        f.write(DATA)
    os.close(fd)
    fds = len(os.listdir("/proc/self/fd"))
    users, warnings = gather(world.host)
    caches = {c.daemon: c for u in users for c in u.caches}
    foo = caches.get("foo")
    return {"warnings": warnings, "found": foo is not None,
            "data": foo.data_bytes if foo else None, "entries": foo.entries if foo else None,
            "fds": (fds, len(os.listdir("/proc/self/fd")))}


def test_a_cache_deeper_than_path_max_is_measured_whole(figures: Figures) -> None:
    out = kernel_world(guarded(_deep_body), daemons=[FOO])
    assert out["warnings"] == []
    assert out["found"]
    assert (out["data"], out["entries"]) == (len(DATA), DEPTH + 1)
    assert out["fds"][0] == out["fds"][1]  # two fds at most during, none left
    figures.add(attacks=1, attacks_refused=1, measure_runs=1)


def _rename_body(world: World) -> dict[str, Any]:
    setup_victims(world)
    h = world.login("alice")
    world.logout("alice")
    cache = _cache(world, h)
    os.makedirs(real(world, f"{cache}/a/b"))
    with open(real(world, f"{cache}/a/b/mine"), "wb") as f:
        f.write(b"12345")
    for i in range(50):  # the canary directory gets big: counting it would show
        with open(real(world, f"{CANARY}/big{i}"), "wb") as f:
            f.write(b"y" * 1000)
    b_ino = os.stat(real(world, f"{cache}/a/b")).st_ino
    real_list = fdwalk._list
    fired = []

    def listing(fd: int) -> list[str]:
        names = real_list(fd)
        if os.fstat(fd).st_ino == b_ino and not fired:
            # the attacker: a moves into the canary directory (same filesystem) while the
            # walk is inside a/b, and a symlink to the canary takes its place
            os.rename(real(world, f"{cache}/a"), real(world, f"{CANARY}/a"))
            os.symlink(CANARY, real(world, f"{cache}/a"))
            fired.append(True)
        return names

    fdwalk._list = listing  # type: ignore[assignment]
    try:
        users, warnings = gather(world.host)
    finally:
        fdwalk._list = real_list  # type: ignore[assignment]
    caches = {c.daemon: c for u in users for c in u.caches}
    return {"fired": bool(fired), "warnings": warnings, "measured": "foo" in caches,
            "data": caches["foo"].data_bytes if "foo" in caches else None}


def test_a_directory_moved_out_while_measured_stops_the_measurement(figures: Figures) -> None:
    out = kernel_world(guarded(_rename_body), daemons=[FOO])
    assert out["fired"]
    # the walk came up from a/b, found a's parent was no longer the cache: it stopped and
    # the cache was left alone (not planned) -- never counting the canary's 50 kB
    assert not out["measured"], out
    assert any("cannot measure" in w and "ESTALE" in w for w in out["warnings"]), out
    figures.add(attacks=1, attacks_refused=1, measure_runs=1,
                measure_escapes=int(out["measured"] and (out["data"] or 0) >= 50000))
