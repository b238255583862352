"""The parts of daemonstore.kernel that need no root and touch no mount: the ctypes table, the
errno conversion, and the constructor's refusal in the initial namespace.
(Not marked ``kernel``: these run everywhere.)"""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

import pytest

from daemonstore.kernel import KernelHost, SandboxRefused, check_private_namespace, syscalls
from daemonstore.kernel import host as kernel_host
from daemonstore.kernel.uapi import AT_FDCWD, O_PATH, RESOLVE_BENEATH, RESOLVE_IN_ROOT


def test_signatures_table() -> None:
    assert set(syscalls.SIGNATURES) >= {"mount", "umount2", "unshare", "setns", "openat2",
                                      "open_tree", "move_mount", "mount_setattr", "prctl",
                                      "statx", "fchownat", "fchmodat2"}
    for name, (symbol, _argtypes, _restype) in syscalls.SIGNATURES.items():
        if symbol == "syscall":
            for arch in ("x86_64", "aarch64"):
                assert name in syscalls.SYSCALL_NUMBERS[arch]
    unified = {"open_tree": 428, "move_mount": 429, "openat2": 437, "mount_setattr": 442,
               "fchmodat2": 452}
    # statx (Linux 4.11) and pivot_root predate the unified numbering of new syscalls
    assert syscalls.SYSCALL_NUMBERS["x86_64"] == {**unified, "statx": 332, "pivot_root": 155}
    assert syscalls.SYSCALL_NUMBERS["aarch64"] == {**unified, "statx": 291, "pivot_root": 41}
    assert ctypes.sizeof(syscalls.OpenHow) == 24  # OPEN_HOW_SIZE_VER0
    assert ctypes.sizeof(syscalls.MountAttr) == 32  # MOUNT_ATTR_SIZE_VER0


def test_minus_one_becomes_oserror_with_the_filename(tmp_path: Path) -> None:
    """openat2 is a plain lookup: safe to call in the pytest process."""
    fd = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    try:
        with pytest.raises(FileNotFoundError) as info:
            syscalls.openat2(fd, "missing", O_PATH, filename="/shown")
        assert (info.value.errno, info.value.filename) == (errno.ENOENT, "/shown")
        with pytest.raises(OSError) as info:  # RESOLVE_BENEATH: ".." may not leave the dirfd
            syscalls.openat2(fd, "../..", O_PATH, resolve=RESOLVE_BENEATH)
        assert (info.value.errno, info.value.filename) == (errno.EXDEV, "../..")
        inner = syscalls.openat2(fd, "../../../..", O_PATH, resolve=RESOLVE_IN_ROOT)
        try:  # RESOLVE_IN_ROOT: ".." stops at the dirfd
            assert os.path.samestat(os.fstat(inner), os.fstat(fd))
        finally:
            os.close(inner)
    finally:
        os.close(fd)


def test_unknown_architecture_is_enosys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(syscalls.platform, "machine", lambda: "pdp11")
    with pytest.raises(OSError) as info:
        syscalls.openat2(AT_FDCWD, "/", O_PATH)
    assert info.value.errno == errno.ENOSYS


def test_constructor_refuses_in_the_initial_namespace(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Called in the pytest process itself: it must raise before opening or calling anything."""
    try:
        check_private_namespace()
    except SandboxRefused:
        pass
    else:
        pytest.skip("pytest itself runs outside the initial mount namespace")
    fds_before = sorted(os.listdir("/proc/self/fd"))

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("KernelHost acted before refusing")

    with monkeypatch.context() as m:
        m.setattr(kernel_host, "BoundCalls", forbidden)
        m.setattr(os, "open", forbidden)
        with pytest.raises(SandboxRefused, match="initial mount namespace"):
            KernelHost(str(tmp_path))
    assert sorted(os.listdir("/proc/self/fd")) == fds_before


def test_refusal_is_a_permission_error() -> None:
    assert issubclass(SandboxRefused, PermissionError)
