"""KernelHost's per-call fast path (issue "Performance: sign-in latency"): statx for Stat and the
mount id, fchownat/fchmodat2 on the O_PATH fd, umount2 through the parent's fd. Each must give
exactly what the slower calls it replaced give (fstat + /proc/self/fdinfo, chown/chmod of the
/proc/self/fd magic link), and the fallbacks for kernels without statx or fchmodat2 must work."""

from __future__ import annotations

import errno
import os
from typing import Any

import pytest

from daemonstore.kernel import KernelHost, run_in_sandbox
from daemonstore.kernel.files import _mnt_id, _to_stat

pytestmark = pytest.mark.kernel

PATHS = ("/", "/d", "/d/f", "/d/link", "/d/dangling", "/m", "/m/inner", "/fifo")


def _tree(h: KernelHost) -> None:
    h.mkdir("/d", 0o2751)
    h.write_file("/d/f", b"12345", mode=0o640)
    h.symlink("f", "/d/link")
    h.symlink("/nowhere", "/d/dangling")
    h.mkdir("/m")
    h.mount_tmpfs("m", "/m")
    h.mkdir("/m/inner", 0o700)
    h.mkfifo("/fifo", 0o600)


def _stats(h: KernelHost) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path in PATHS:
        for name in ("stat", "lstat"):
            try:
                out[f"{name} {path}"] = getattr(h, name)(path)
            except OSError as exc:
                out[f"{name} {path}"] = (exc.errno, exc.filename)
    return out


def test_statx_gives_what_fstat_and_fdinfo_give() -> None:
    def body(h: KernelHost) -> tuple[Any, Any, Any]:
        _tree(h)
        fast = _stats(h)
        h._calls.have_statx = False  # the fallback: fstat + /proc/self/fdinfo/N
        slow = _stats(h)
        fd = os.open(h.root + "/m/inner", os.O_PATH)  # the reference, computed by hand
        try:
            ref = _to_stat(os.fstat(fd), _mnt_id(fd))
        finally:
            os.close(fd)
        return fast, slow, ref

    fast, slow, ref = run_in_sandbox(body)
    assert fast == slow
    assert fast["stat /m/inner"] == ref and ref.mnt_id > 0
    assert fast["lstat /d/link"].is_symlink and fast["stat /d/link"].size == 5
    assert fast["stat /d/dangling"] == (errno.ENOENT, "/d/dangling")
    assert fast["stat /m"].mnt_id != fast["stat /d"].mnt_id  # the tmpfs mounted at /m


def _modes_and_owners(h: KernelHost) -> list[Any]:
    out: list[Any] = []
    for path, mode in (("/d", 0o1770), ("/d/f", 0o604), ("/m/inner", 0o2750)):
        h.chmod(path, mode, safe=True)
        h.chown(path, 1234, -1, safe=True)  # -1: the gid stays
        h.chown(path, -1, 4321, safe=True)
        st = h.lstat(path)
        out.append((path, st.perm, st.uid, st.gid))
    for call in (lambda: h.chmod("/d/missing", 0o700), lambda: h.chown("/d/missing", 1, 1),
                 lambda: h.chmod("/d/link", 0o700, safe=True)):
        try:
            call()
        except OSError as exc:
            out.append((exc.errno, exc.filename))
    h.mkdir("/d/new", 0o2711)  # exact mode, setgid included (mkdir alone drops it)
    out.append(h.lstat("/d/new").perm)
    return out


def test_fchmodat2_and_fchownat_act_like_the_magic_link_calls() -> None:
    def body(h: KernelHost) -> tuple[Any, Any]:
        _tree(h)
        fast = _modes_and_owners(h)
        h.rmdir("/d/new")
        h._calls.have_fchmodat2 = False  # the fallback: chmod of /proc/self/fd/N
        return fast, _modes_and_owners(h)

    fast, slow = run_in_sandbox(body)
    assert fast == slow
    assert fast[:3] == [("/d", 0o1770, 1234, 4321), ("/d/f", 0o604, 1234, 4321),
                        ("/m/inner", 0o2750, 1234, 4321)]
    assert fast[3:6] == [(errno.ENOENT, "/d/missing"), (errno.ENOENT, "/d/missing"),
                         (errno.ELOOP, "/d/link")]
    assert fast[6] == 0o2711


def test_umount_through_the_parent_fd_leaves_cwd_alone() -> None:
    def body(h: KernelHost) -> list[Any]:
        _tree(h)
        h.mkdir("/m/inner/deeper")
        h.mount_tmpfs("deeper", "/m/inner/deeper")
        h.bind("/d", "/d")  # stacked on itself: the top one goes first
        os.chdir(h.root)  # a cwd of our own, which umount must neither need nor change
        out: list[Any] = []
        for target in ("/m/inner/deeper", "/d", "/d", "/m", "/"):
            try:
                h.umount(target)
                out.append((target, "ok"))
            except OSError as exc:
                out.append((target, exc.errno, exc.filename))
        out.append(os.getcwd() == h.root)
        out.append(" /m " in " " + h.mountinfo().replace("\n", " ") + " ")
        return out

    out = run_in_sandbox(body)
    assert out[:4] == [("/m/inner/deeper", "ok"), ("/d", "ok"), ("/d", errno.EINVAL, "/d"),
                       ("/m", "ok")]
    assert out[4] == ("/", errno.EBUSY, "/")  # our cwd (and the host's fds) pin the root
    assert out[5] is True and out[6] is False
