"""run_in_sandbox: a forked child in a fresh private namespace on a fresh tmpfs; results and
exceptions come back, the host's mount table and /tmp are left as they were."""

from __future__ import annotations

import errno
import os
import signal
import tempfile
from pathlib import Path
from typing import Any

import pytest

from daemonstore.kernel import KernelHost, run_in_sandbox, sandbox
from daemonstore.kernel.sandbox import kernel_unavailable_reason
from daemonstore.kernel.syscalls import mount_setattr, move_mount, open_tree
from daemonstore.kernel.uapi import (
    AT_FDCWD,
    MOUNT_ATTR_RDONLY,
    MOVE_MOUNT_F_EMPTY_PATH,
    OPEN_TREE_CLOEXEC,
    OPEN_TREE_CLONE,
)
from daemonstore.mountflags import MS_FLAGS as MS
from tests.kernel.util import errname, mounts_at

pytestmark = pytest.mark.kernel


@pytest.fixture
def made_dirs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The sandbox directories run_in_sandbox creates during the test (other test runs on the
    machine create their own concurrently, so a glob over /tmp would race)."""
    made: list[str] = []
    real = tempfile.mkdtemp

    def recording(*args: Any, **kwargs: Any) -> str:
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(sandbox.tempfile, "mkdtemp", recording)
    return made


def test_kernel_is_available_here() -> None:
    assert kernel_unavailable_reason() is None


def test_arguments_and_result_travel() -> None:
    def body(h: KernelHost, a: int, *, b: str) -> Any:
        return a, b, h.kind, h.namespaces()

    assert run_in_sandbox(body, 1, b="two") == (1, "two", "kernel", ["init"])


def test_child_runs_in_a_new_namespace_with_everything_private() -> None:
    def body(h: KernelHost, parent_ns: int) -> Any:
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            shared = [ln for ln in f if " shared:" in ln]
        return os.stat("/proc/self/ns/mnt").st_ino != parent_ns, shared, os.getpid()

    new_ns, shared, child_pid = run_in_sandbox(body, os.stat("/proc/self/ns/mnt").st_ino)
    assert new_ns and shared == [] and child_pid != os.getpid()


def test_host_mount_table_and_tmp_are_unchanged(made_dirs: list[str]) -> None:
    mountinfo_before = Path("/proc/self/mountinfo").read_text()

    def body(h: KernelHost) -> str:
        h.mkdir("/A")
        h.mount_tmpfs("a", "/A")
        h.make("/A", "shared")
        h.bind("/A", "/A")
        h.new_namespace("kid", "slave")
        h.write_file("/A/f", b"x")
        return h.root

    root = run_in_sandbox(body)
    assert root.startswith(os.path.join(tempfile.gettempdir(), "daemonstore-sandbox-"))
    assert Path("/proc/self/mountinfo").read_text() == mountinfo_before
    assert made_dirs == [root]
    assert not os.path.exists(root)


def test_exception_comes_back_with_the_child_traceback() -> None:
    def explode(h: KernelHost) -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError) as info:
        run_in_sandbox(explode)
    message = str(info.value)
    assert message.startswith("boom\n")
    assert "traceback in the sandbox child" in message and "explode" in message


def test_oserror_keeps_errno_and_filename_and_gets_a_note() -> None:
    with pytest.raises(FileNotFoundError) as info:
        run_in_sandbox(lambda h: h.read_file("/nope"))
    assert (info.value.errno, info.value.filename) == (errno.ENOENT, "/nope")
    assert any("traceback in the sandbox child" in n for n in info.value.__notes__)


def test_unpicklable_exception_and_result() -> None:
    class Local(Exception):  # a local class cannot be pickled
        pass

    def raise_local(h: KernelHost) -> None:
        raise Local("local trouble")

    with pytest.raises(RuntimeError, match="Local: local trouble"):
        run_in_sandbox(raise_local)
    with pytest.raises(TypeError, match="cannot be pickled"):
        run_in_sandbox(lambda h: lambda: None)


def test_child_killed_by_a_signal_is_a_runtime_error(made_dirs: list[str]) -> None:
    with pytest.raises(RuntimeError, match="SIGKILL"):
        run_in_sandbox(lambda h: os.kill(os.getpid(), signal.SIGKILL))
    assert len(made_dirs) == 1 and not os.path.exists(made_dirs[0])  # cleaned up anyway


def test_new_mount_api_wrappers() -> None:
    """open_tree(OPEN_TREE_CLONE) + move_mount(F_EMPTY_PATH) is a bind; mount_setattr sets flags
    and propagation (docs/propagation.md §2.9, §2.2: more than one type is EINVAL)."""

    def body(h: KernelHost) -> Any:
        h.mkdir("/A")
        h.mkdir("/B")
        h.mount_tmpfs("a", "/A")
        h.write_file("/A/f", b"cloned")
        fd = open_tree(AT_FDCWD, f"{h.root}/A", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC)
        try:
            move_mount(fd, "", AT_FDCWD, f"{h.root}/B", MOVE_MOUNT_F_EMPTY_PATH)
        finally:
            os.close(fd)
        mount_setattr(AT_FDCWD, f"{h.root}/B", 0, attr_set=MOUNT_ATTR_RDONLY,
                      propagation=MS["MS_SHARED"])
        (b,) = mounts_at(h, "/B")
        two_types = errname(mount_setattr, AT_FDCWD, f"{h.root}/B", 0,
                            propagation=MS["MS_SHARED"] | MS["MS_SLAVE"])
        return b.source, b.options[0], b.propagation, h.read_file("/B/f"), two_types

    assert run_in_sandbox(body) == ("a", "ro", "shared", b"cloned", "EINVAL")
