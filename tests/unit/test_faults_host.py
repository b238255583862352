"""daemonstore.testing.faults.FaultHost: counts only the calls that change something, fails exactly
the
N-th ("raise"), or that one and every later one ("crash": the host as a crash would leave it)."""

from __future__ import annotations

import errno

import pytest

from daemonstore.model import ModelHost
from daemonstore.testing.faults import FaultHost, count_calls


def test_reads_pass_uncounted_and_the_nth_change_fails() -> None:
    host = FaultHost(ModelHost(), at=1)
    host.mkdir("/a")
    assert host.exists("/a") and host.listdir("/") == ["a"] and host.count == 1
    with pytest.raises(OSError) as info:
        host.mkdir("/b")
    assert info.value.errno == errno.EIO and "call 1 (mkdir)" in str(info.value)
    assert info.value.filename == "/b" and host.fired
    host.mkdir("/c")  # "raise": later calls work again, so a caller's rollback can run
    assert host.listdir("/") == ["a", "c"]
    assert [entry[1] for entry in host.log] == ["mkdir", "mkdir", "mkdir"]


def test_crash_fails_every_later_call_too() -> None:
    host = FaultHost(ModelHost(), at=0, action="crash", err=errno.ENOSPC)
    for path in ("/a", "/b"):
        with pytest.raises(OSError) as info:
            host.mkdir(path)
        assert info.value.errno == errno.ENOSPC
    assert host.inner.listdir("/") == []


def test_count_calls_and_validation() -> None:
    n, result = count_calls(ModelHost(), lambda h: (h.mkdir("/a"), h.mkdir("/a/b"), "done")[2])
    assert (n, result) == (2, "done")
    with pytest.raises(ValueError):
        FaultHost(ModelHost(), action="explode")
    with pytest.raises(ValueError):
        FaultHost(ModelHost(), at=-1)
