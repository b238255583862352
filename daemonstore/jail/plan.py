"""The namespace helper: JailSpec -> plan -> enter -> exec (docs/architecture.md §6).

The plan follows ``minijail_enter`` (docs/chromeos.md §5.2): join a
namespace file if asked (``-V``/``--enter``), ``unshare(CLONE_NEWNS)``, apply the remount mode
to the whole tree, then the ``-k``/``-b`` mounts in command-line order, creating missing
destinations. One deliberate improvement: every bind source is *pinned* first
(``open_tree(OPEN_TREE_CLONE)``), so a later ``-k tmpfs,/run`` cannot hide it. minijail gets the
same effect only with ``-P`` (sources resolve in the old root); without it the documented
``-k tmpfs,/run ... -k /run/daemon-store/<d>,...`` would bind from the empty tmpfs. A clone of
the daemon's slave copy of the store is itself a slave of the store's group, so sign-ins that
happen later still propagate into the jail (the bind table of docs/propagation.md §2.4).

Plans are data (docs/architecture.md §3): :func:`plan_jail` is pure and returns
:mod:`daemonstore.ops` steps, :func:`apply_jail` runs them on any Host (the model for tests and
the demo, the kernel for real), :func:`exec_jail` adds the privilege drop and ``execvp`` on the
kernel.
"""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Sequence
from dataclasses import dataclass

from daemonstore import mountflags, paths
from daemonstore.errors import DaemonStoreError
from daemonstore.host import Host
from daemonstore.jail.spec import JailSpec, MountSpec
from daemonstore.ops import (
    AttachTree,
    DetachedTrees,
    EnterNamespaceFile,
    Mkdir,
    MountTmpfs,
    Op,
    PinTree,
    RemountBind,
    Unshare,
)

_BIND_ONLY = mountflags.MS_FLAGS["MS_BIND"] | mountflags.MS_FLAGS["MS_REC"]


#: ``-k`` for the daemon's fresh ``/run`` (docs/chromeos.md §4.5, the doc's canonical form)
RUN_TMPFS = "tmpfs,/run,tmpfs,MS_NODEV|MS_NOEXEC|MS_NOSUID"


def store_jail_argv(daemon: str, stores: Sequence[str] | None = None) -> list[str]:
    """The documented daemon-store recipe as ``daemonstore jail`` arguments (no command):
    ``-v -Kslave -k tmpfs,/run,... -k <store>,<store>,none,MS_BIND|MS_REC`` for each of
    ``stores`` (default: ``/run/daemon-store/<d>`` and ``/run/daemon-store-cache/<d>``, as
    dlcservice and regmond do; docs/chromeos.md §4.5)."""
    if stores is None:
        stores = [paths.store(daemon, cache) for cache in (False, True)]
    argv = ["-v", "-Kslave", "-k", RUN_TMPFS]
    for store in stores:
        argv += ["-k", f"{store},{store},none,MS_BIND|MS_REC"]
    return argv


def plan_jail(spec: JailSpec, name: str = "jail") -> list[Op]:
    """The steps that build the jail's mount namespace (pure). The pin and attach steps share
    one :class:`~daemonstore.ops.DetachedTrees`, which :func:`apply_jail` closes."""
    steps: list[Op] = []
    if spec.enter:
        steps.append(EnterNamespaceFile(spec.enter, f"{name}-host"))
    if spec.new_mount_ns:
        steps.append(Unshare(name, spec.remount_mode or "unchanged"))
        if spec.remount_mode not in (None, "", "unchanged"):
            steps.append(RemountWholeTree(spec.remount_mode))
    trees = DetachedTrees()
    binds = [(f"tree{i}", m) for i, m in enumerate(spec.mounts) if m.is_bind]
    keys = {id(m): key for key, m in binds}
    steps += [PinTree(key, m.src, m.recursive, trees=trees) for key, m in binds]
    for m in spec.mounts:
        steps.append(Mkdir((m.dest,)))
        if m.is_bind:
            steps.append(AttachTree(keys[id(m)], m.dest, trees=trees))
            extra = _bind_remount_options(m)
            if extra:
                steps.append(RemountBind(m.dest, extra, safe=False))
        else:
            steps.append(MountTmpfs(m.src, m.dest, flags=mountflags.options(m.flags),
                                    data=m.data))
    return steps


@dataclass(frozen=True)
class RemountWholeTree(Op):
    """minijail's ``-K`` remount of the *whole* new tree, ``mount(NULL, "/", NULL,
    MS_REC | mode)`` (libminijail.c ``remount_propagation``): not only the sandbox root, so
    no copy of a shared mount outside it stays a peer of the caller's namespace. On the
    kernel :meth:`KernelHost.make_whole_tree` (the process's ``/``, in the jail's own
    namespace only); on a Host without it (the model, whose sandbox root is its whole tree)
    ``mount --make-r<mode> /``."""

    propagation: str

    def apply(self, host: Host) -> None:
        whole = getattr(host, "make_whole_tree", None)
        if whole is not None:
            whole(self.propagation)
        else:
            host.make("/", self.propagation, recursive=True)

    def to_line(self) -> str:
        return f"mount --make-r{self.propagation} /  # the whole tree, as minijail -K"


def _bind_remount_options(m: MountSpec) -> frozenset[str]:
    """Flags a bind ignores (mount(2): only MS_REC counts) need a second, remount call, as
    minijail does for ``-b`` read-only."""
    return mountflags.options(m.flags & ~_BIND_ONLY)


def apply_jail(host: Host, steps: Sequence[Op]) -> None:
    """Run the steps; a failure re-raises with the step, and any tree pinned but not attached
    is closed either way."""
    trees = {id(s.trees): s.trees for s in steps if isinstance(s, PinTree)}
    try:
        for step in steps:
            try:
                step.apply(host)
            except OSError as exc:
                raise JailError(step, exc) from exc
    finally:
        for pinned in trees.values():
            pinned.close(host)


class JailError(DaemonStoreError, OSError):
    """A jail step failed: names the step and the path, keeps the errno."""

    def __init__(self, step: Op, exc: OSError) -> None:
        super().__init__(exc.errno, f"{step.to_line()}: {exc.strerror}", exc.filename)
        self.step = step


def resolve_ids(spec: JailSpec) -> tuple[int | None, int | None]:
    """Numeric uid/gid for ``-u``/``-g`` (names from the host's user database, as minijail)."""
    uid = gid = None
    if spec.user is not None:
        uid = int(spec.user) if spec.user.isdigit() else pwd.getpwnam(spec.user).pw_uid
    if spec.group is not None:
        gid = int(spec.group) if spec.group.isdigit() else grp.getgrnam(spec.group).gr_gid
    return uid, gid


def drop_privileges(uid: int | None, gid: int | None, no_new_privs: bool) -> None:
    """Groups, then gid, then uid (once the uid is gone, the rest could not be changed)."""
    from daemonstore.kernel import set_no_new_privs

    if gid is not None:
        os.setgroups([gid])
        os.setgid(gid)
    if uid is not None:
        os.setuid(uid)
    if no_new_privs:
        set_no_new_privs()


def exec_jail(host: Host, spec: JailSpec, name: str = "jail") -> None:
    """Build the jail in this process on the kernel, drop privileges, exec the command."""
    if not spec.command:
        raise ValueError("no command to run (put it after --)")
    uid, gid = resolve_ids(spec)
    apply_jail(host, plan_jail(spec, name))
    drop_privileges(uid, gid, spec.no_new_privs)
    os.execvp(spec.command[0], list(spec.command))
