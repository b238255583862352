"""The hook's mount-table watch on the real kernel (Host.watch_mounts, kernel/local.py): one
wake-up per change of this namespace's mount table, none while it is quiet (no busy loop:
/proc/self/mountinfo is always readable, only POLLPRI says it changed)."""

from __future__ import annotations

import asyncio

import pytest

from daemonstore.kernel import KernelHost, run_in_sandbox

pytestmark = pytest.mark.kernel


def _count_wakeups(h: KernelHost) -> tuple[int, int, int]:
    async def go() -> tuple[int, int, int]:
        seen = [0]

        def changed() -> None:
            seen[0] += 1

        stop = h.watch_mounts(changed)
        try:
            await asyncio.sleep(0.1)
            idle = seen[0]
            h.mkdir("/a")
            h.mount_tmpfs("x", "/a")
            await asyncio.sleep(0.1)
            mounted = seen[0]
            h.umount("/a")
            await asyncio.sleep(0.1)
            return idle, mounted, seen[0]
        finally:
            stop()

    return asyncio.run(go())


def test_one_wakeup_per_mount_table_change_and_none_while_quiet() -> None:
    assert run_in_sandbox(_count_wakeups) == (0, 1, 2)
