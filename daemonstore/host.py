"""The interface both backends implement: the pure model and the real kernel.

Components (startup, the sign-in hook, the namespace helper, cryptohome_sim) are written once
against :class:`Host` and run unchanged on either backend (docs/architecture.md
§2).

Paths
-----
Every path given to a Host is *sandbox-absolute*: ``/`` is the sandbox root that the host owns
(the model's root tmpfs ``sandbox``; on the kernel, the tmpfs mounted at ``--root``). A host never
lets a path, or a symlink met while resolving one, lead outside its sandbox: absolute symlink
targets are resolved against the sandbox root (like ``openat2(RESOLVE_IN_ROOT)``).

Errors
------
Every failure is an ``OSError`` whose ``errno`` is exactly what the kernel gives for the same
operation (docs/architecture.md §2), with ``filename`` set to the sandbox path involved. Callers
compare errnos, never messages.

``safe=True`` on an operation means: no symlink may appear in *any* component of the path
(``RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS``); meeting one is ``ELOOP``. Components use it
for everything inside a user's home, which is attacker-controlled. Two more rules come with it
(SECURITY.md, "What each check prevents"), checked on the very fd that is acted on:

* ``chown``/``chmod`` change only a directory, a symlink (``follow_symlinks=False``) or a regular
  file with one link: a hard link (``nlink > 1``), device node, fifo or socket is ``EPERM``;
* ``read_file``/``write_file`` never open a device node: ``EACCES``, as on a ``nodev`` mount.
"""

from __future__ import annotations

import functools
import stat as stat_mod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from daemonstore.records import fast_init


class Propagation(StrEnum):
    """Propagation types, in the kernel's own words (docs/architecture.md §11)."""

    SHARED = "shared"
    SLAVE = "slave"
    PRIVATE = "private"
    UNBINDABLE = "unbindable"


@fast_init  # one per lstat/stat on the kernel (records.py)
@dataclass(frozen=True)
class Stat:
    """The subset of ``struct stat`` components need; ``mode`` includes the file type bits."""

    mode: int
    uid: int
    gid: int
    size: int
    ino: int
    dev: int
    nlink: int = 1
    #: id of the mount the path resolved onto (mountinfo field 1; statx ``STATX_MNT_ID``)
    mnt_id: int = 0

    @property
    def is_dir(self) -> bool:
        return stat_mod.S_ISDIR(self.mode)

    @property
    def is_file(self) -> bool:
        return stat_mod.S_ISREG(self.mode)

    @property
    def is_symlink(self) -> bool:
        return stat_mod.S_ISLNK(self.mode)

    @property
    def perm(self) -> int:
        """Permission bits including setuid/setgid/sticky (``mode & 0o7777``)."""
        return stat_mod.S_IMODE(self.mode)


@dataclass(frozen=True)
class OpenFile:
    """A reference that pins a mount: a file held open, or a process's cwd or root.

    On the model it is a file held with :meth:`Host.hold` (``holder`` is the hold's name,
    ``pid`` None); on the kernel, any process's open fd, cwd or root found in ``/proc``
    (``holder`` is ``pid N (comm)``; for this process's own holds, the hold's name). ``how`` is
    ``hold``, ``fd N``, ``cwd`` or ``root``; ``path`` is what the holder opened (model, own
    holds) or what ``/proc`` shows (``readlink``, sandbox-relative when inside the sandbox);
    ``mnt_id`` the id of the mount it pins (mountinfo field 1), ``attached`` False once that
    mount was detached (``umount -l``) and lives on only through such references.
    """

    holder: str
    namespace: str
    how: str
    path: str
    mnt_id: int
    pid: int | None = None
    attached: bool = True

    def describe(self) -> str:
        where = "" if self.attached else " (on a detached mount)"
        return f"{self.holder} in namespace {self.namespace}: {self.how} {self.path}{where}"


@runtime_checkable
class Host(Protocol):
    """Mount-namespace and file operations, identical in signature and errno on both backends."""

    #: "model" or "kernel"
    kind: str

    # ---- namespaces ---------------------------------------------------------------------------
    def namespaces(self) -> list[str]:
        """Names of the namespaces this host created, ``"init"`` first."""
        ...

    def current_namespace(self) -> str: ...

    def new_namespace(self, name: str, propagation: Propagation | str | None = None) -> None:
        """Clone the current namespace (``unshare(CLONE_NEWNS)``) and make it current.

        ``propagation`` (if given and not ``"unchanged"``) is then applied recursively to the
        whole tree of the new namespace, like ``unshare -m --propagation X``. ``EEXIST`` if the
        name is taken.
        """
        ...

    def use_namespace(self, name: str) -> None:
        """Make an existing namespace current (``setns``); ``ENOENT`` for an unknown name."""
        ...

    # ---- mounts -------------------------------------------------------------------------------
    def mount_tmpfs(self, source: str, target: str, *, flags: frozenset[str] = frozenset(),
                    data: str = "", safe: bool = False) -> None:
        """``mount -t tmpfs SOURCE TARGET`` with per-mount ``flags`` in mountinfo spelling
        (``nosuid``, ``nodev``...: the values of mountflags.OPTION_OF)."""
        ...

    def bind(self, source: str, target: str, *, recursive: bool = False,
             safe: bool = False) -> None:
        """``mount --bind`` (``MS_BIND``) or ``--rbind`` (``MS_BIND|MS_REC``)."""
        ...

    def move(self, source: str, target: str, *, safe: bool = False) -> None:
        """``mount --move`` (``MS_MOVE``)."""
        ...

    def make(self, target: str, propagation: Propagation | str, *, recursive: bool = False,
             safe: bool = False) -> None:
        """``mount --make-[r]{shared,slave,private,unbindable} TARGET``."""
        ...

    def umount(self, target: str, *, detach: bool = False, safe: bool = False) -> None:
        """``umount`` / ``umount -l`` (``MNT_DETACH``)."""
        ...

    def make_store(self, path: str, mode: int, uid: int, gid: int, *,
                   safe: bool = False) -> None:
        """Startup's four steps for a store that is missing, in one call: exactly
        ``mkdir(path, mode)``, ``chown(path, uid, gid)``, ``bind(path, path)``,
        ``make(path, SHARED)``, in that order, each with ``safe``, stopping at the first failure
        (:func:`make_store_by_steps` is the definition; KernelHost fuses it into one call that
        issues the same system calls). The ``OSError`` of a failed step is raised as that step
        raised it, with ``steps_done`` (0-3) set to how many steps completed before it (as
        ``BlockingIOError.characters_written`` reports partial progress), so the caller can
        report the step and what was done."""
        ...

    def make_stores(self, paths: Sequence[str], mode: int, uid: int, gid: int, *,
                    safe: bool = False) -> dict[int, OSError]:
        """:meth:`make_store` of each path in turn, going on after a failure (one broken store
        must not cost the others theirs; boot/apply.py); the failures by index in ``paths``,
        each the ``OSError`` make_store raised (with ``steps_done``). :func:`make_stores_by_calls`
        is the definition; KernelHost runs the same system calls in one loop (startup's missing
        stores of a base, one Python call instead of one per store, issue 14 item 6)."""
        ...

    def remount_bind(self, target: str, flags: frozenset[str], *, safe: bool = False) -> None:
        """``MS_REMOUNT|MS_BIND|flags``: set the per-mount flags of the top mount at TARGET.

        ``flags`` replaces the mount's flag set (``rw`` unless ``ro`` is in it); ``relatime`` is
        kept as the atime default when no atime flag is given.
        """
        ...

    def clone_detached(self, source: str, *, recursive: bool = False,
                       safe: bool = False) -> str:
        """``open_tree(OPEN_TREE_CLONE[|AT_RECURSIVE])``: a bind of SOURCE made now, held
        detached (it receives no propagation) until :meth:`attach_detached`. Returns a handle.
        """
        ...

    def attach_detached(self, handle: str, target: str, *, safe: bool = False) -> None:
        """``move_mount(MOVE_MOUNT_F_EMPTY_PATH)`` of a detached tree onto TARGET (attached and
        propagated like a bind); ``EBADF`` for an unknown handle."""
        ...

    def drop_detached(self, handle: str) -> None:
        """Close a detached tree that was not attached (no-op for an unknown handle)."""
        ...

    def pin_namespace(self, name: str, path: str) -> None:
        """``mount --bind /proc/PID/ns/mnt PATH`` for namespace NAME; PATH must be an existing
        regular file, and NAME newer than the current namespace (else ``EINVAL``)."""
        ...

    def open_pinned_namespace(self, path: str, name: str) -> None:
        """Open the namespace file bound at PATH and register it as NAME (for
        :meth:`use_namespace`); ``EINVAL`` if PATH is not a mount namespace file."""
        ...

    def mountinfo(self, namespace: str | None = None) -> str:
        """``/proc/PID/mountinfo`` of a namespace (current by default), restricted to the sandbox,
        mount points relative to the sandbox root, lines in creation order, no trailing newline.
        """
        ...

    def watch_mounts(self, notify: Callable[[], None]) -> Callable[[], None]:
        """Call ``notify()`` after the mount table of the current namespace may have changed,
        until the returned function is called. A call may be spurious; a change after this
        returns is never missed. The model calls it synchronously after each of its mount
        operations (any namespace); the kernel from the running asyncio loop, after any change
        to the namespace current now, by anyone (``POLLPRI`` on ``/proc/self/mountinfo``): call
        it from a coroutine. What a daemon waits on instead of polling (daemon/client.py)."""
        ...

    # ---- files (resolved through the mount tree of the current namespace) ---------------------
    def mkdir(self, path: str, mode: int = 0o755, *, parents: bool = False,
              safe: bool = False) -> None:
        """``mkdir`` (``EEXIST`` if present unless ``parents``); mode applied exactly (no umask)."""
        ...

    def stat(self, path: str, *, safe: bool = False) -> Stat: ...

    def lstat(self, path: str, *, safe: bool = False) -> Stat: ...

    def lstat_many(self, paths: Sequence[str], *, safe: bool = False) -> list[Stat | OSError]:
        """:meth:`lstat` of each path, in order: its Stat, or the ``OSError`` it raised
        (:func:`lstat_many_by_calls` is the definition; KernelHost issues the same system calls
        in one loop: startup's templates, issue 14 item 6)."""
        ...

    def chown(self, path: str, uid: int, gid: int, *, follow_symlinks: bool = True,
              safe: bool = False) -> None: ...

    def chmod(self, path: str, mode: int, *, follow_symlinks: bool = True,
              safe: bool = False) -> None: ...

    def read_file(self, path: str, *, safe: bool = False) -> bytes: ...

    def write_file(self, path: str, data: bytes, *, mode: int = 0o644, append: bool = False,
                   safe: bool = False) -> None:
        """Create or truncate (or append to) a regular file; ``ELOOP`` on a final symlink when
        ``safe``; ``EISDIR`` on a directory."""
        ...

    def symlink(self, target: str, path: str) -> None: ...

    def readlink(self, path: str) -> str: ...

    def listdir(self, path: str, *, safe: bool = False) -> list[str]:
        """Entry names, sorted."""
        ...

    def unlink(self, path: str, *, safe: bool = False) -> None: ...

    def rmdir(self, path: str, *, safe: bool = False) -> None: ...

    def mkfifo(self, path: str, mode: int = 0o644) -> None: ...

    def exists(self, path: str) -> bool:
        """``lstat`` succeeds (a dangling symlink exists)."""
        ...

    # ---- open files: what makes a mount busy (fs/namespace.c, do_umount) ----------------------
    def hold(self, name: str, path: str, *, safe: bool = False) -> None:
        """Open PATH (``O_RDONLY``, following symlinks unless ``safe``; a file or a directory)
        in the current namespace and keep it open as NAME: the mount it resolves onto is busy
        (``umount`` without ``-l`` is ``EBUSY``, on it or on any copy the umount would propagate
        to) and, detached by ``umount -l``, stays alive until released. ``EEXIST`` if NAME is
        held (checked first)."""
        ...

    def release(self, name: str) -> None:
        """Close what NAME holds (``EBADF`` if NAME is not held); the last reference to a
        detached mount frees it."""
        ...

    def open_files(self) -> list[OpenFile]:
        """Every reference that pins a mount of this host's sandbox, in any namespace: the
        model's holds; on the kernel every process's fds, cwd and root (``/proc``), this
        process's own holds named by their hold names."""
        ...

    def end_holder(self, found: OpenFile) -> None:
        """Make ``found``'s holder let go, as ``process_killer --mount_holders`` does: on the
        model the hold is released; on the kernel this process releases its own hold, any
        other process is sent SIGKILL and waited for (its files close as it exits).
        ``ESRCH`` if the holder is already gone."""
        ...

    def syncfs(self, path: str, *, safe: bool = False) -> None:
        """``syncfs(2)`` on the filesystem PATH resolves onto (the model's data is always
        stable: a check of PATH only)."""
        ...

    # ---- space (the low-disk cleanup, docs/chromeos.md §6) -----------------------------------
    def statvfs(self, path: str, *, safe: bool = False) -> tuple[int, int]:
        """``statvfs(2)`` of the filesystem PATH resolves onto: ``(total, free)`` in bytes, i.e.
        ``(f_blocks * f_frsize, f_bavail * f_frsize)`` -- free as cryptohome measures it
        (``AmountOfFreeDiskSpace``). A tmpfs without a size limit (``size=0``) reports
        ``(0, 0)``, as the kernel does."""
        ...

#: the steps of :meth:`Host.make_store`, in order (what ``steps_done`` counts)
MAKE_STORE_STEPS = ("mkdir", "chown", "bind", "make")


def make_store_by_steps(host: Host, path: str, mode: int, uid: int, gid: int, *,
                        safe: bool = False) -> None:
    """:meth:`Host.make_store` as four separate Host calls: the definition the fused kernel call
    must match (tests/kernel/test_make_store.py), and the implementation of every Host that
    has no fused one (the model, and wrappers such as FaultHost that count each step)."""
    done = 0
    try:
        host.mkdir(path, mode, safe=safe)
        done = 1
        host.chown(path, uid, gid, safe=safe)
        done = 2
        host.bind(path, path, safe=safe)
        done = 3
        host.make(path, Propagation.SHARED, safe=safe)
    except OSError as exc:
        exc.steps_done = done  # type: ignore[attr-defined]
        raise


def lstat_many_by_calls(host: Host, paths: Sequence[str], *,
                        safe: bool = False) -> list[Stat | OSError]:
    """:meth:`Host.lstat_many` as one :meth:`Host.lstat` per path: the definition
    (tests/kernel/test_lstat_many.py) and the model's implementation."""
    out: list[Stat | OSError] = []
    for path in paths:
        try:
            out.append(host.lstat(path, safe=safe))
        except OSError as exc:
            out.append(exc)
    return out


def make_stores_by_calls(host: Host, paths: Sequence[str], mode: int, uid: int, gid: int, *,
                         safe: bool = False) -> dict[int, OSError]:
    """:meth:`Host.make_stores` as one :meth:`Host.make_store` call per path: the definition
    (tests/kernel/test_make_store.py checks KernelHost's loop against it) and the implementation
    of every Host without a loop of its own (the model, FaultHost)."""
    failures: dict[int, OSError] = {}
    for index, path in enumerate(paths):
        try:
            host.make_store(path, mode, uid, gid, safe=safe)
        except OSError as exc:
            failures[index] = exc
    return failures


@contextmanager
def in_namespace(host: Host, name: str) -> Iterator[None]:
    """Make ``name`` the host's current namespace for the block, then restore the previous one
    (cryptohome's ``ScopedMountNamespace``): the one scoped setns of the product."""
    previous = host.current_namespace()
    if previous != name:
        host.use_namespace(name)
    try:
        yield
    finally:
        if host.current_namespace() != previous:
            host.use_namespace(previous)


class NamespaceView:
    """``NamespaceView(host, "d-biod")`` behaves like ``host`` seen from namespace d-biod."""

    def __init__(self, host: Host, namespace: str) -> None:
        self._host = host
        self.namespace = namespace
        self.kind = host.kind

    def current_namespace(self) -> str:
        return self.namespace

    def mountinfo(self, namespace: str | None = None) -> str:
        return self._host.mountinfo(namespace or self.namespace)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._host, name)
        if not callable(attr):
            return attr
        return self._pinned(attr)

    def _pinned(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            with in_namespace(self._host, self.namespace):
                return fn(*args, **kwargs)

        return call
