"""Helpers the hardening bodies use inside the sandbox child (plain functions: they run after
``run_in_sandbox`` forked, on a KernelHost or a ModelHost)."""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from collections.abc import Callable
from typing import Any, TypeVar

from daemonstore import mountinfo, paths
from daemonstore.host import Host
from daemonstore.kernel.syscalls import mount_setattr
from daemonstore.kernel.uapi import AT_FDCWD, AT_RECURSIVE, MOUNT_ATTR_RDONLY
from daemonstore.session.activity import activity_path
from daemonstore.world import World

R = TypeVar("R")


def guard_host(world: World) -> None:
    """In this sandbox child's private mount namespace only: make every mount of the host
    read-only (``mount_setattr(AT_RECURSIVE, MOUNT_ATTR_RDONLY)`` on ``/``), then the sandbox
    writable again. The bodies below use raw ``os`` calls on host paths of the sandbox (rename,
    link, mknod, an attacker's renameat2); if one of them were ever led outside by a symlink it
    would fail with EROFS instead of writing to the machine. Per-mount flags belong to this
    namespace's copies: the host's own mounts are not touched. Namespaces cloned afterwards
    (daemon views) inherit the read-only copies."""
    from daemonstore.kernel.guards import check_private_namespace

    check_private_namespace()
    root = world.host.root  # type: ignore[attr-defined]
    mount_setattr(AT_FDCWD, "/", AT_RECURSIVE, attr_set=MOUNT_ATTR_RDONLY)
    mount_setattr(AT_FDCWD, root, AT_RECURSIVE, attr_clr=MOUNT_ATTR_RDONLY)


def guarded(body: Callable[..., R]) -> Callable[..., R]:
    """``body(world, ...)`` preceded by :func:`guard_host` (for ``kernel_world``)."""

    def run(world: World, *args: Any) -> R:
        if world.kind == "kernel":
            guard_host(world)
        return body(world, *args)

    run.__name__ = body.__name__
    return run


#: victims and canary: files and a directory OUTSIDE every vault, inside the sandbox
SHADOW_VICTIM = "/etc/shadow"
CANARY = "/canary"
VICTIM_SHADOW_BYTES = b"root:$6$not-a-real-hash:19000:0:99999:7:::\n"


def setup_victims(world: World) -> None:
    host = world.host
    with world.in_namespace(world.namespace):
        host.write_file(SHADOW_VICTIM, VICTIM_SHADOW_BYTES, mode=0o600, safe=True)
        host.mkdir(CANARY, 0o755, safe=True)
        host.mkdir(f"{CANARY}/sub", 0o700, safe=True)
        host.write_file(f"{CANARY}/sub/secret", b"canary\n", mode=0o600, safe=True)


def victims(world: World, *, skip: tuple[str, ...] = ()) -> dict[str, tuple]:
    """Everything a planted link could lead to: /etc (templates, passwd, shadow) and the canary,
    with type, mode, owner and content (symlinks never followed)."""
    with world.in_namespace(world.namespace):
        return {**world.snapshot("/etc", skip=skip), **world.snapshot(CANARY)}


def mount_state(host: Host) -> dict[str, Any]:
    """Every namespace's mounts: the canonical form (tree, peer groups relabelled) plus each
    mount's per-mount options, which the canonical form leaves out (a bind that missed its
    remount to nosuid,nodev,noexec,nosymfollow must not look equal)."""
    texts = {ns: host.mountinfo(ns) for ns in host.namespaces()}
    options = {ns: sorted((e.mount_point, e.root, e.options) for e in mountinfo.parse(text))
               for ns, text in texts.items()}
    return {"canonical": mountinfo.canonical(texts), "options": options}


def files_state(world: World, user_hash: str) -> dict[str, tuple]:
    """Every file in the sandbox as seen from the root namespace, minus the user's activity
    record (a timestamp every sign-in and sign-out rewrites)."""
    with world.in_namespace(world.namespace):
        return world.snapshot(skip=[activity_path(user_hash)])


def real(world: World, path: str) -> str:
    """The host path of a sandbox path (for os.* calls the Host interface does not have:
    rename, link, mknod). Only ever below the sandbox root."""
    root = world.host.root  # type: ignore[attr-defined]
    assert root not in ("", "/") and path.startswith("/")
    return root + path


def aside(world: World, path: str) -> str | None:
    """Move whatever is at ``path`` to ``path + '.aside'`` (rename; None if nothing there)."""
    if not os.path.lexists(real(world, path)):
        return None
    os.rename(real(world, path), real(world, path + ".aside"))
    return path + ".aside"


def restore(world: World, path: str, moved: str | None) -> None:
    """Remove what was planted at ``path`` and put the original back."""
    p = real(world, path)
    if os.path.lexists(p):
        if os.path.isdir(p) and not os.path.islink(p):
            os.rmdir(p)
        else:
            os.unlink(p)
    if moved is not None:
        os.rename(real(world, moved), p)


#: what can be planted where a directory is expected
KINDS = ("symlink-etc", "symlink-canary", "symlink-shadow", "file", "fifo", "chardev",
         "hardlink-shadow")


def plant(world: World, path: str, kind: str) -> None:
    p = real(world, path)
    if kind == "symlink-etc":
        os.symlink("/etc", p)
    elif kind == "symlink-canary":
        os.symlink(f"../../../../../..{CANARY}", p)
    elif kind == "symlink-shadow":
        os.symlink(SHADOW_VICTIM, p)
    elif kind == "file":
        with open(p, "wb") as f:
            f.write(b"not a directory")
    elif kind == "fifo":
        os.mkfifo(p, 0o600)
    elif kind == "chardev":  # /dev/null's numbers: harmless even if something did open it
        os.mknod(p, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    elif kind == "hardlink-shadow":
        os.link(real(world, SHADOW_VICTIM), p)
    else:
        raise ValueError(kind)


# ---- renameat2(RENAME_EXCHANGE): the TOCTOU attacker's primitive ----------------------------

RENAME_EXCHANGE = 2
_libc = ctypes.CDLL(None, use_errno=True)
_renameat2 = _libc.renameat2
_renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                       ctypes.c_uint]
_renameat2.restype = ctypes.c_int


def exchange_at(dirfd: int, a: str, b: str) -> None:
    """Atomically swap two names in the directory ``dirfd`` (neither is ever missing). Names are
    single components relative to an fd opened once: the swapper never resolves a path, so a
    symlink it planted itself can never lead it anywhere."""
    if _renameat2(dirfd, os.fsencode(a), dirfd, os.fsencode(b), RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), a)


def store_entries(host: Host, user_hash: str) -> list[mountinfo.MountInfoEntry]:
    return [e for e in mountinfo.parse(host.mountinfo())
            if e.mount_point.startswith(tuple(b + "/" for b in paths.STORE_BASES))
            and e.mount_point.endswith("/" + user_hash)]


def errname(code: int | None) -> str:
    return errno.errorcode.get(code or 0, str(code))
