"""KernelHost.lstat_many (kernel/files.py) against its definition, one lstat per path
(host.lstat_many_by_calls), on the real kernel, each way in a fresh sandbox: the same Stat or
the same error (type, errno, strerror, path) for every path, and the same bound system calls
with the same arguments, including where statx fails (an error; ENOSYS, then fstat from there
on) or is known to be missing.
"""

from __future__ import annotations

import ctypes
import errno
from typing import Any

import pytest

from daemonstore.host import Stat, lstat_many_by_calls
from daemonstore.kernel import KernelHost, run_in_sandbox

pytestmark = pytest.mark.kernel

CALLS = ("openat2", "statx")
PATHS = ["/etc/daemon-store", "/etc/daemon-store/shill", "/etc/daemon-store/README",
         "/etc/daemon-store/link", "/etc/daemon-store/link/x", "/etc/daemon-store/fifo",
         "/etc/daemon-store/none", "etc/daemon-store", "/", "/etc/daemon-store/shill/"]
#: (call, n-th, errno) made to fail, or None
FAULTS: dict[str, tuple[str, int, int] | None] = {
    "none": None, "statx fails": ("statx", 2, errno.EIO),
    "statx missing": ("statx", 1, errno.ENOSYS), "openat2 fails": ("openat2", 3, errno.EACCES),
    "openat2 EAGAIN, retried": ("openat2", 0, errno.EAGAIN),
}


def _tree(h: KernelHost) -> None:
    h.mkdir("/etc/daemon-store", 0o755, parents=True)
    h.mkdir("/etc/daemon-store/shill", 0o700)
    h.write_file("/etc/daemon-store/README", b"x")
    h.symlink("/etc", "/etc/daemon-store/link")
    h.mkfifo("/etc/daemon-store/fifo")


def _run(h: KernelHost, fault_name: str, batched: bool, safe: bool) -> dict[str, Any]:
    _tree(h)
    fault = FAULTS[fault_name]
    log: list[tuple[Any, ...]] = []
    counts = dict.fromkeys(CALLS, 0)
    for name in CALLS:
        real = getattr(h._calls, name)

        def call(*args: Any, _name: str = name, _real: Any = real) -> int:
            n = counts[_name]
            counts[_name] += 1
            how = args[3] if _name == "openat2" else None
            log.append((_name, args[2], (how.flags, how.resolve) if how is not None else None))
            if fault is not None and fault[0] == _name and fault[1] == n:
                ctypes.set_errno(fault[2])
                return -1
            return int(_real(*args))

        setattr(h._calls, name, call)
    got = (h.lstat_many(PATHS, safe=safe) if batched
           else lstat_many_by_calls(h, PATHS, safe=safe))
    out = [st if isinstance(st, Stat) else (type(st).__name__, st.errno, st.strerror,
                                             st.filename) for st in got]
    return {"out": out, "calls": log, "have_statx": h._calls.have_statx}


@pytest.mark.parametrize("safe", [True, False])
@pytest.mark.parametrize("fault", list(FAULTS))
def test_lstat_many_is_lstat_of_each_path(fault: str, safe: bool) -> None:
    batched = run_in_sandbox(_run, fault, True, safe)
    one_by_one = run_in_sandbox(_run, fault, False, safe)
    assert batched == one_by_one
    out = batched["out"]
    assert isinstance(out[1], Stat) and out[1].is_dir and out[1].perm == 0o700
    if fault != "openat2 fails":  # that fault lands on the symlink's openat2 (checked below)
        assert isinstance(out[3], Stat) and out[3].is_symlink  # a final symlink: itself
    assert out[6][1] == errno.ENOENT and out[6][3] == "/etc/daemon-store/none"
    assert out[4][1] == (errno.ELOOP if safe else errno.ENOENT)  # /etc/x: not there either
    if fault == "statx fails":
        assert out[2][:2] == ("OSError", errno.EIO)
    if fault == "statx missing":
        assert batched["have_statx"] is False and isinstance(out[2], Stat) and out[2].is_file
    if fault == "openat2 fails":
        assert out[3][:2] == ("PermissionError", errno.EACCES)
