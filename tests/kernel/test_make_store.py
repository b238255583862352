"""KernelHost.make_store (kernel/store.py) against its definition, the four separate calls
(host.make_store_by_steps: mkdir, chown, bind, make shared), on the real kernel.

Each case runs twice, each time in a fresh sandbox: once the fused call, once the four calls.
Both must end alike in everything observable: the exception (type, errno, strerror, the path
it names, ``steps_done``), what is left at the path (type, mode, owner), the mount table in
canonical form, and the sequence of bound system calls KernelHost made (with their arguments:
flags, ``open_how``, paths, fds). Failures come at every step: real ones (a missing parent, a
name that exists, a symlink in the path with and without ``safe``) and injected ones (the N-th
openat2, mount, fchownat or fchmodat2 of the call fails with an errno, the way a kernel
refusal would: -1 and errno set).
"""

from __future__ import annotations

import ctypes
import errno
from typing import Any

import pytest

from daemonstore.host import make_store_by_steps
from daemonstore.kernel import KernelHost, run_in_sandbox
from daemonstore.mountinfo import canonical

pytestmark = pytest.mark.kernel

S = "/run/daemon-store"
#: the bound system calls KernelHost makes through ``self._calls`` (syscalls.BoundCalls)
CALLS = ("openat2", "mount", "fchownat", "fchmodat2", "statx")


def _base(h: KernelHost) -> None:
    h.mkdir("/run", 0o755)
    h.mkdir(S, 0o755)


def _exists(h: KernelHost) -> None:
    _base(h)
    h.mkdir(f"{S}/a", 0o700)


def _symlinked_parent(h: KernelHost) -> None:
    _base(h)
    h.symlink(S, "/run/link")


def _symlink_at_path(h: KernelHost) -> None:
    _base(h)
    h.mkdir("/etc", 0o755)
    h.symlink("/etc", f"{S}/a")


SETUPS = {"base": _base, "exists": _exists, "symlinked-parent": _symlinked_parent,
          "symlink-at-path": _symlink_at_path}

#: (setup, path, mode, uid, gid, safe, injected fault: (call, n-th, errno) or None)
CASES: dict[str, tuple[str, str, int, int, int, bool, tuple[str, int, int] | None]] = {
    "made": ("base", f"{S}/a", 0o755, 0, 0, True, None),
    "made, other owner and mode": ("base", f"{S}/a", 0o2750, 20104, 20125, True, None),
    "made, not safe": ("base", f"{S}/a", 0o755, 0, 0, False, None),
    "made in the root": ("base", "/a", 0o755, 0, 0, True, None),
    "parent missing": ("base", "/run/nothere/a", 0o755, 0, 0, True, None),
    "name exists": ("exists", f"{S}/a", 0o755, 0, 0, True, None),
    "symlink in the parent, safe": ("symlinked-parent", "/run/link/a", 0o755, 0, 0, True, None),
    "symlink in the parent, not safe": ("symlinked-parent", "/run/link/a", 0o755, 0, 0, False,
                                        None),
    "symlink at the path": ("symlink-at-path", f"{S}/a", 0o755, 0, 0, True, None),
    "relative path": ("base", "run/daemon-store/a", 0o755, 0, 0, True, None),
    "trailing slash": ("base", f"{S}/a/", 0o755, 0, 0, True, None),
    "mode fails after mkdir": ("base", f"{S}/a", 0o755, 0, 0, True, ("fchmodat2", 0, errno.EIO)),
    "chown refused": ("base", f"{S}/a", 0o755, 0, 0, True, ("fchownat", 0, errno.EPERM)),
    "bind refused": ("base", f"{S}/a", 0o755, 0, 0, True, ("mount", 0, errno.ENOSPC)),
    "make-shared refused": ("base", f"{S}/a", 0o755, 0, 0, True, ("mount", 1, errno.EINVAL)),
    "openat2 EAGAIN, retried": ("base", f"{S}/a", 0o755, 0, 0, True,
                                ("openat2", 1, errno.EAGAIN)),
    **{f"openat2 number {n} fails": ("base", f"{S}/a", 0o755, 0, 0, True,
                                     ("openat2", n, errno.ENOENT)) for n in range(5)},
}


#: the cases that make the store (a retried EAGAIN and a symlink followed without safe too)
SUCCEED = {"made", "made, other owner and mode", "made, not safe", "made in the root",
           "symlink in the parent, not safe", "trailing slash", "openat2 EAGAIN, retried"}


def _how(value: Any) -> Any:
    how = value.contents if hasattr(value, "contents") else value
    return (how.flags, how.mode, how.resolve) if hasattr(how, "resolve") else value


def _instrument(h: KernelHost, fault: tuple[str, int, int] | None) -> list[tuple[Any, ...]]:
    """Wrap the host's bound calls: record each call, and fail the faulted one (-1, errno)."""
    log: list[tuple[Any, ...]] = []
    counts = dict.fromkeys(CALLS, 0)
    for name in CALLS:
        real = getattr(h._calls, name)

        def call(*args: Any, _name: str = name, _real: Any = real) -> int:
            n = counts[_name]
            counts[_name] += 1
            log.append((_name, *(_how(a) for a in args)))
            if fault is not None and fault[0] == _name and fault[1] == n:
                ctypes.set_errno(fault[2])
                return -1
            return int(_real(*args))

        setattr(h._calls, name, call)
    return log


def _run(h: KernelHost, case: str, fused: bool) -> dict[str, Any]:
    setup, path, mode, uid, gid, safe, fault = CASES[case]
    SETUPS[setup](h)
    log = _instrument(h, fault)
    error = None
    try:
        if fused:
            h.make_store(path, mode, uid, gid, safe=safe)
        else:
            make_store_by_steps(h, path, mode, uid, gid, safe=safe)
    except OSError as exc:
        error = (type(exc).__name__, exc.errno, exc.strerror, exc.filename,
                 getattr(exc, "steps_done", None))
    h._calls = type(h._calls)()  # the real calls again, to look at the result
    try:
        st = h.lstat(path.rstrip("/") if path.startswith("/") else "/" + path)
        left: Any = (st.mode, st.uid, st.gid)
    except OSError as exc:
        left = exc.errno
    return {"error": error, "left": left, "calls": log,
            "mounts": canonical({"init": h.mountinfo()})}


@pytest.mark.parametrize("case", list(CASES))
def test_make_store_ends_as_the_four_calls_do(case: str) -> None:
    fused = run_in_sandbox(_run, case, True)
    steps = run_in_sandbox(_run, case, False)
    assert fused == steps
    assert (fused["error"] is None) == (case in SUCCEED)
    if fused["error"] is None:
        assert fused["left"][0] & 0o7777 == CASES[case][2]
        assert fused["left"][1:] == CASES[case][3:5]


def test_each_step_fails_where_the_definition_says() -> None:
    """The faulted cases stop at the step that makes the faulted call, and ``steps_done``
    counts the steps before it (the fused call has no other way to report how far it got)."""
    want = {"parent missing": 0, "name exists": 0, "symlink in the parent, safe": 0,
            "symlink at the path": 0, "mode fails after mkdir": 0, "chown refused": 1,
            "bind refused": 2, "make-shared refused": 3, "openat2 number 0 fails": 0,
            "openat2 number 1 fails": 1, "openat2 number 2 fails": 2,
            "openat2 number 3 fails": 2, "openat2 number 4 fails": 3}
    got = {case: run_in_sandbox(_run, case, True)["error"] for case in want}
    assert {case: e and e[4] for case, e in got.items()} == want
    assert got["parent missing"][1:4] == (errno.ENOENT, "No such file or directory", "/run/nothere")
    assert got["symlink in the parent, safe"][1] == errno.ELOOP
    assert got["bind refused"][1:4] == (errno.ENOSPC, "No space left on device", f"{S}/a")


# ---- make_stores: a run of stores in one call ---------------------------------------------------

#: a run with stores that fail for real (a name that exists, a missing parent) among ones made,
#: and paths the fused loop hands to the four calls (a trailing slash, a relative path)
RUN = [f"{S}/x", f"{S}/a", f"{S}/y", "/run/nothere/z", f"{S}/b/", "run/daemon-store/c", f"{S}/d"]
#: injected faults landing on later stores of the run: y's make-shared (mount 3), y's chown
#: (fchownat 1: a's mkdir failed before its chown), an openat2 in the middle of the run
RUN_FAULTS = {"none": None, "make-shared of y": ("mount", 3, errno.EINVAL),
              "chown of y": ("fchownat", 1, errno.EPERM),
              "openat2 number 9": ("openat2", 9, errno.ENOENT)}


def _by_steps(h: KernelHost, paths: list[str], safe: bool) -> dict[int, OSError]:
    """Host.make_stores' definition with make_store's own definition inside (no fused code)."""
    failures: dict[int, OSError] = {}
    for i, path in enumerate(paths):
        try:
            make_store_by_steps(h, path, 0o755, 0, 0, safe=safe)
        except OSError as exc:
            failures[i] = exc
    return failures


def _run_many(h: KernelHost, fault_name: str, fused: bool) -> dict[str, Any]:
    _exists(h)
    log = _instrument(h, RUN_FAULTS[fault_name])
    failures = (h.make_stores(RUN, 0o755, 0, 0, safe=True) if fused
                else _by_steps(h, RUN, True))
    errors = {i: (type(e).__name__, e.errno, e.strerror, e.filename,
                  getattr(e, "steps_done", None)) for i, e in failures.items()}
    h._calls = type(h._calls)()
    left: list[Any] = []
    for path in RUN:
        try:
            st = h.lstat(path.rstrip("/") if path.startswith("/") else "/" + path)
            left.append((st.mode, st.uid, st.gid))
        except OSError as exc:
            left.append(exc.errno)
    return {"errors": errors, "left": left, "calls": log,
            "mounts": canonical({"init": h.mountinfo()})}


@pytest.mark.parametrize("fault", list(RUN_FAULTS))
def test_make_stores_ends_as_make_store_by_steps_for_each_path(fault: str) -> None:
    fused = run_in_sandbox(_run_many, fault, True)
    steps = run_in_sandbox(_run_many, fault, False)
    assert fused == steps
    # the run goes on after a failure: a's EEXIST, z's ENOENT and the relative path's EINVAL
    # (host.py: paths are absolute) do not stop d
    errors = fused["errors"]
    assert [errors[i][1] for i in (1, 3, 5)] == [errno.EEXIST, errno.ENOENT, errno.EINVAL]
    assert 6 not in errors and fused["left"][6][0] & 0o7777 == 0o755
    # an injected fault costs exactly one more store (y, or b for the openat2)
    assert len(errors) == (3 if fault == "none" else 4)


def test_make_store_is_make_stores_of_one_path() -> None:
    """make_store raises the one failure make_stores reports, steps_done included."""

    def run(h: KernelHost) -> tuple[Any, ...]:
        _exists(h)
        failures = h.make_stores([f"{S}/a"], 0o755, 0, 0, safe=True)
        try:
            h.make_store(f"{S}/a", 0o755, 0, 0, safe=True)
        except OSError as exc:
            one = (exc.errno, exc.filename, exc.steps_done)  # type: ignore[attr-defined]
        many = failures[0]
        return one, (many.errno, many.filename, many.steps_done)  # type: ignore[attr-defined]

    one, many = run_in_sandbox(run)
    assert one == many == (errno.EEXIST, f"{S}/a", 0)
