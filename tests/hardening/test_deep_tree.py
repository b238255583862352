"""The low-disk cleanup frees a cache whatever its depth (SECURITY.md, "Cleanup by fd"): a user
can make a directory chain far deeper than PATH_MAX in their own cache; a walk by full path
could not name anything below 4096 bytes, so that space could never be freed.

On the kernel: a chain of 3000 directories (about 6000 bytes of path) with data at the bottom,
a symlink to the canary at depth 2500 and a mount (a bind of the canary) near the top. The
cleanup removes the whole chain with a bounded number of open fds, unlinks the symlink (never
its target), never crosses the mount, and leaves the cache directory itself in place.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from daemonstore import paths
from daemonstore.cleanup.apply import clear_cache
from daemonstore.cleanup.plan import ClearCache
from daemonstore.world import World, kernel_world
from tests.hardening.conftest import Figures
from tests.hardening.util import CANARY, guarded, real, setup_victims, victims

pytestmark = pytest.mark.kernel

DEPTH = 3000
DATA = b"x" * 65536


def _deep_body(world: World) -> dict[str, Any]:
    setup_victims(world)
    host = world.host
    h = world.login("alice")
    cache = paths.user_store("foo", h, cache=True)
    host.mkdir(f"{cache}/top", 0o700, safe=True)
    host.bind(CANARY, f"{cache}/top", safe=True)  # someone's mount inside the cache
    outside = victims(world)
    fd = os.open(real(world, cache), os.O_RDONLY | os.O_DIRECTORY)
    for level in range(DEPTH):  # by fd: the chain is too deep for any path
        os.mkdir("d", 0o700, dir_fd=fd)
        nxt = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nxt
        if level == 2500:
            os.symlink(f"../../../../../..{CANARY}", "link", dir_fd=fd)
    with open(os.open("data", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd), "wb") as f:
        f.write(DATA)
    os.close(fd)
    fds = len(os.listdir("/proc/self/fd"))
    st = host.lstat(cache, safe=True)
    step = ClearCache(h, "foo", cache, "signed-in", st.mnt_id, len(DATA), DEPTH + 2)
    result = clear_cache(host, step)
    left = sorted(host.listdir(cache, safe=True))
    mounted = host.stat(f"{cache}/top", safe=True).mnt_id != st.mnt_id
    host.umount(f"{cache}/top")
    world.logout("alice")
    return {"dirs": result.removed_dirs, "files": result.removed_files,
            "bytes": result.removed_bytes, "errors": result.errors, "skipped": result.skipped,
            "left": left, "mounted": mounted, "fds": (fds, len(os.listdir("/proc/self/fd"))),
            "victims": victims(world) == outside}


def test_cleanup_frees_a_tree_deeper_than_path_max(figures: Figures) -> None:
    out = kernel_world(guarded(_deep_body), daemons=[("foo", 20100, 20100, 0o700)])
    assert out["errors"] == []
    assert out["dirs"] == DEPTH  # the whole chain
    assert out["files"] == 2 and out["bytes"] == len(DATA)  # the data and the symlink itself
    assert out["left"] == ["top"]  # the mount point, not crossed
    assert len(out["skipped"]) == 1 and "mount point" in out["skipped"][0]
    assert out["mounted"]  # the mount is still there, with the canary intact below
    assert out["victims"]
    assert out["fds"][0] == out["fds"][1]  # no fd left open
    figures.add(attacks=1, attacks_refused=1)
