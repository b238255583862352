"""The parts of daemonstore.kernel that need no root and touch no mount: the ctypes table, the
MS_* names, the errno conversion, and the constructor's refusal in the initial namespace.
(Not marked ``kernel``: these run everywhere.)"""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

import pytest

from daemonstore import kernel
from daemonstore.kernel import KernelHost, SandboxRefused
from daemonstore.kernel.sandbox import check_private_namespace


@pytest.mark.parametrize(("flags", "text"), [
    (kernel.MS_BIND | kernel.MS_REC, "MS_BIND|MS_REC"),
    (kernel.MS_REMOUNT | kernel.MS_BIND | kernel.MS_RDONLY, "MS_RDONLY|MS_REMOUNT|MS_BIND"),
    (kernel.MS_SLAVE | kernel.MS_REC, "MS_REC|MS_SLAVE"),
    (0, "0"),
    (kernel.MS_SHARED | (1 << 30), "MS_SHARED|0x40000000"),
])
def test_mount_flags_to_string(flags: int, text: str) -> None:
    assert kernel.mount_flags_to_string(flags) == text
    assert kernel.parse_mount_flags(text) == flags


@pytest.mark.parametrize(("text", "flags"), [
    ("MS_BIND|MS_REC", 0x5000), ("ms_bind | ms_rec", 0x5000), ("4096|16384", 0x5000),
    ("0x1000|MS_REC", 0x5000), ("", 0), ("MS_NOSUID|MS_NODEV|MS_NOEXEC", 14),
])
def test_parse_mount_flags(text: str, flags: int) -> None:
    assert kernel.parse_mount_flags(text) == flags


@pytest.mark.parametrize("text", ["MS_BOGUS", "MS_BIND||MS_REC", "-1", "bind"])
def test_parse_mount_flags_rejects_junk(text: str) -> None:
    with pytest.raises(ValueError):
        kernel.parse_mount_flags(text)


def test_every_ms_name_round_trips() -> None:
    for name, bit in kernel.MS_FLAG_NAMES.items():
        assert getattr(kernel, name) == bit
        assert kernel.mount_flags_to_string(bit) == name


def test_signatures_table() -> None:
    assert set(kernel.SIGNATURES) >= {"mount", "umount2", "unshare", "setns", "openat2",
                                      "open_tree", "move_mount", "mount_setattr", "prctl",
                                      "statx", "fchownat", "fchmodat2"}
    for name, (symbol, _argtypes, _restype) in kernel.SIGNATURES.items():
        if symbol == "syscall":
            for arch in ("x86_64", "aarch64"):
                assert name in kernel.SYSCALL_NUMBERS[arch]
    unified = {"open_tree": 428, "move_mount": 429, "openat2": 437, "mount_setattr": 442,
               "fchmodat2": 452}
    # statx (Linux 4.11) predates the unified numbering of new syscalls
    assert kernel.SYSCALL_NUMBERS["x86_64"] == {**unified, "statx": 332}
    assert kernel.SYSCALL_NUMBERS["aarch64"] == {**unified, "statx": 291}
    assert ctypes.sizeof(kernel.OpenHow) == 24  # OPEN_HOW_SIZE_VER0
    assert ctypes.sizeof(kernel.MountAttr) == 32  # MOUNT_ATTR_SIZE_VER0


def test_minus_one_becomes_oserror_with_the_filename(tmp_path: Path) -> None:
    """openat2 is a plain lookup: safe to call in the pytest process."""
    fd = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    try:
        with pytest.raises(FileNotFoundError) as info:
            kernel.openat2(fd, "missing", kernel.O_PATH, filename="/shown")
        assert (info.value.errno, info.value.filename) == (errno.ENOENT, "/shown")
        with pytest.raises(OSError) as info:  # RESOLVE_BENEATH: ".." may not leave the dirfd
            kernel.openat2(fd, "../..", kernel.O_PATH, resolve=kernel.RESOLVE_BENEATH)
        assert (info.value.errno, info.value.filename) == (errno.EXDEV, "../..")
        inner = kernel.openat2(fd, "../../../..", kernel.O_PATH, resolve=kernel.RESOLVE_IN_ROOT)
        try:  # RESOLVE_IN_ROOT: ".." stops at the dirfd
            assert os.path.samestat(os.fstat(inner), os.fstat(fd))
        finally:
            os.close(inner)
    finally:
        os.close(fd)


def test_unknown_architecture_is_enosys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernel.platform, "machine", lambda: "pdp11")
    with pytest.raises(OSError) as info:
        kernel.openat2(kernel.AT_FDCWD, "/", kernel.O_PATH)
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
        m.setattr(kernel, "_functions", forbidden)
        m.setattr(os, "open", forbidden)
        with pytest.raises(SandboxRefused, match="initial mount namespace"):
            KernelHost(str(tmp_path))
    assert sorted(os.listdir("/proc/self/fd")) == fds_before


def test_refusal_is_a_permission_error() -> None:
    assert issubclass(SandboxRefused, PermissionError)
