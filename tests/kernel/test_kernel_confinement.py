"""KernelHost never leaves its sandbox: openat2(RESOLVE_IN_ROOT) keeps absolute symlinks and
``..`` inside, ``safe=True`` refuses every symlink (ELOOP), and the constructor refuses to run in
the initial mount namespace or on anything but a tmpfs mount point."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from daemonstore.kernel import KernelHost, SandboxRefused, check_private_namespace, run_in_sandbox
from daemonstore.kernel.syscalls import mount
from daemonstore.mountflags import MS_FLAGS as MS
from tests.kernel.util import errname, mount_points

pytestmark = pytest.mark.kernel


def _guard_host_etc() -> None:
    """Make the host's /etc read-only *in this sandbox child's private namespace only*, so that a
    confinement bug would fail with EROFS instead of writing to the real /etc."""
    check_private_namespace()
    mount("/etc", "/etc", None, MS["MS_BIND"])
    mount(None, "/etc", None, MS["MS_REMOUNT"] | MS["MS_BIND"] | MS["MS_RDONLY"])


def test_absolute_symlink_to_a_host_directory_resolves_inside(tmp_path: Path) -> None:
    canary = tmp_path / "canary"  # a real host directory the planted symlink names
    canary.mkdir()

    def body(h: KernelHost, canary: str) -> Any:
        h.symlink(canary, "/lnk")
        missing = errname(h.write_file, "/lnk/planted", b"x")  # no such dir in the sandbox
        h.mkdir(canary, parents=True)
        h.write_file("/lnk/planted", b"inside")
        return missing, h.read_file(f"{canary}/planted"), os.listdir(canary)

    assert run_in_sandbox(body, str(canary)) == ("ENOENT", b"inside", [])
    assert list(canary.iterdir()) == []


def test_symlink_to_etc_never_reaches_the_host_etc() -> None:
    probe = f"daemonstore-probe-{uuid.uuid4().hex}"

    def body(h: KernelHost) -> Any:
        _guard_host_etc()
        h.symlink("/etc", "/etc-link")
        h.symlink("../../../../../../etc", "/etc-rel")
        # the host has an /etc, the sandbox not yet: ENOENT proves the link stayed inside
        missing = [errname(h.write_file, f"{link}/{probe}", b"x")
                   for link in ("/etc-link", "/etc-rel", "/../../etc")]
        h.mkdir("/etc")
        h.write_file(f"/etc-link/{probe}", b"one")
        h.write_file(f"/etc-rel/{probe}", b"two", append=True)
        h.write_file(f"/../../../etc/{probe}", b"three", append=True)
        return missing, h.read_file(f"/etc/{probe}"), os.path.lexists(f"/etc/{probe}")

    assert run_in_sandbox(body) == (["ENOENT"] * 3, b"onetwothree", False)
    assert not os.path.lexists(f"/etc/{probe}")


def test_mount_ops_through_absolute_symlinks_stay_inside() -> None:
    def body(h: KernelHost) -> Any:
        h.mkdir("/tmp")
        h.mkdir("/etc")
        h.symlink("/tmp", "/t")
        h.symlink("/etc", "/e")
        h.mount_tmpfs("x", "/t")
        h.bind("/e", "/t")
        h.make("/t", "shared")
        return mount_points(h)

    assert run_in_sandbox(body) == ["/", "/tmp", "/tmp"]


def test_safe_refuses_every_symlink_with_eloop() -> None:
    def body(h: KernelHost) -> Any:
        h.mkdir("/real/sub", parents=True)
        h.mkdir("/dst")
        h.mount_tmpfs("m", "/real/sub")
        h.write_file("/real/f", b"")
        h.symlink("/real", "/via")  # a symlink as an intermediate component ...
        h.symlink("/real/f", "/flink")  # ... and as the final one
        h.symlink("/real/sub", "/mlink")
        before = h.mountinfo()
        calls: dict[str, tuple[Any, ...]] = {
            "stat": (h.stat, "/via/f"), "stat final": (h.stat, "/flink"),
            "lstat": (h.lstat, "/via/f"), "read_file": (h.read_file, "/via/f"),
            "read_file final": (h.read_file, "/flink"),
            "write_file": (h.write_file, "/via/new", b""),
            "write_file final": (h.write_file, "/flink", b"x"),
            "mkdir": (h.mkdir, "/via/d"), "listdir": (h.listdir, "/via"),
            "unlink": (h.unlink, "/via/f"), "rmdir": (h.rmdir, "/via/sub"),
            "chmod": (h.chmod, "/via/f", 0o600), "chown": (h.chown, "/via/f", 1, 1),
            "mount_tmpfs": (h.mount_tmpfs, "t", "/via/sub"),
            "mount_tmpfs final": (h.mount_tmpfs, "t", "/mlink"),
            "bind source": (h.bind, "/via/sub", "/dst"), "bind target": (h.bind, "/dst", "/mlink"),
            "move": (h.move, "/mlink", "/dst"), "make": (h.make, "/mlink", "private"),
            "umount": (h.umount, "/via/sub"), "umount final": (h.umount, "/mlink"),
            "remount_bind": (h.remount_bind, "/mlink", frozenset({"ro"})),
        }
        errs = {name: errname(fn, *args, safe=True) for name, (fn, *args) in calls.items()}
        errs["mkdir -p"] = errname(h.mkdir, "/via/d/e", parents=True, safe=True)
        untouched = (h.mountinfo() == before, h.read_file("/real/f"), h.listdir("/real"))
        # lstat follows no final symlink, so safe does not refuse it (openat2(2): O_PATH |
        # O_NOFOLLOW returns the link itself even with RESOLVE_NO_SYMLINKS)
        return errs, untouched, h.lstat("/flink", safe=True).is_symlink

    errs, untouched, lstat_link = run_in_sandbox(body)
    assert {name: err for name, err in errs.items() if err != "ELOOP"} == {}
    assert untouched == (True, b"", ["f", "sub"])
    assert lstat_link


def test_constructor_refuses_bad_roots() -> None:
    def body(h: KernelHost) -> Any:
        h.mkdir("/plain")
        h.mkdir("/ram")
        mount("ramfs", f"{h.root}/ram", "ramfs", 0)
        out: dict[str, str | None] = {}
        h.mkdir("/shared")
        h.mount_tmpfs("s", "/shared")
        h.make("/shared", "shared")
        for label, root in (("host root", "/"), ("relative", "tmp"),
                            ("shared tmpfs", f"{h.root}/shared"),
                            ("not a mount point", f"{h.root}/plain"),
                            ("not tmpfs", f"{h.root}/ram"), ("missing", f"{h.root}/none")):
            try:
                KernelHost(root).close()
                out[label] = None
            except SandboxRefused:
                out[label] = "refused"
            except OSError as exc:
                out[label] = os.strerror(exc.errno or 0)
        h.mount_tmpfs("t", "/plain")
        with KernelHost(f"{h.root}/plain") as inner:
            inner.write_file("/f", b"nested")
        out["tmpfs mount point"] = h.read_file("/plain/f").decode()
        return out

    assert run_in_sandbox(body) == {
        # "/" is the real system: allowed outside the initial namespace (docs/architecture.md
        # §10); constructing and closing it changes nothing
        "host root": None, "relative": "refused", "shared tmpfs": "refused",
        "not a mount point": "refused",
        "not tmpfs": "refused", "missing": os.strerror(2), "tmpfs mount point": "nested"}
