"""Low-disk cleanup, acting part: measure (statvfs, cache sizes), plan
(:mod:`daemonstore.cleanup.plan`), then clear caches on a :class:`Disk` -- a Host of either
backend, or the :class:`~daemonstore.cleanup.osdisk.OsDisk` adapter -- re-measuring free space
before every cache (docs/chromeos.md §6).

Where the caches are (§6.3 steps 2-3, RemoveDaemonStoreCache, DeleteDaemonStoreCacheMountedUsers):

* signed-out user H: ``/home/.shadow/H/vault/root/.cache/<d>`` -- the persistent vault
  directory itself, since nothing is mounted (our vault stands in for eCryptfs, whose tracked
  ``root/.cache`` name is not encrypted);
* signed-in user H: ``/run/daemon-store-cache/<d>/H`` when it is H's bind of the vault's
  ``root/.cache/<d>`` (same device and inode), else the mounted vault's
  ``/home/.shadow/H/mount/root/.cache/<d>``; the daemon list comes from the mounted vault. A
  loop vault (``vault.img``, session ``vault="loop"``) is reached the same way while mounted
  (it is mounted with ``discard``, so deleting gives the space back to the image's
  filesystem); a signed-out user's loop vault is not attached, so it is left alone.

The home directories are attacker-controlled, so clearing a cache:

* never follows a symlink: every call is ``safe=True`` (no symlink in any component, ELOOP),
  entries are examined with ``lstat``, and a symlink in a cache is unlinked itself -- the link,
  never its target;
* never crosses into another mount: every entry must be on the mount the cache directory
  was found on (``Stat.mnt_id``); anything else (a mount point, a bind-mounted file) is skipped
  and reported, and so is a cache directory that is itself a mount point or not on its vault;
* keeps each ``.cache/<d>`` directory (and ``.cache`` itself, and anything loose in it): only
  their contents go, so the owner and mode sign-in gave them stay;
* survives a tree changing underneath: an entry that vanished (ENOENT) is counted, a directory
  that gained entries is left in place (ENOTEMPTY), a directory that became a symlink or a mount
  is not entered (ELOOP / mount check), and one entry's error never stops the rest.

On the kernel the caches are cleared by file descriptor, one component at a time
(:mod:`daemonstore.cleanup.fdwalk`: no ``PATH_MAX`` limit, at most a few dozen fds open
whatever the depth); elsewhere (the model, the pyfakefs adapter) the walk is
:func:`daemonstore.ops.walk_tree` (iterative: no recursion limit for a deep attacker-made tree),
the one that guest sign-in's ``RemoveTree`` uses too. Deletion only: the
cleanup writes nothing (the LRU records are written by sign-in/sign-out, activity.py).
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any, Protocol, cast

from daemonstore import paths, session
from daemonstore.cleanup.plan import (
    NEEDS_CLEANUP,
    CacheFacts,
    CleanupReport,
    ClearCache,
    StepResult,
    Thresholds,
    UserFacts,
    plan_cleanup,
)
from daemonstore.errors import errname
from daemonstore.host import Host, Stat, in_namespace
from daemonstore.ops import TreeItem, walk_tree
from daemonstore.session.activity import read_activity

#: the filesystem whose free space counts: where the vaults live (``ShadowRoot()``, §6)
MEASURED_PATH = paths.SHADOW


class Disk(Protocol):
    """What the cleanup needs of a backend: a subset of :class:`~daemonstore.host.Host` (which
    satisfies it), so the tiny OsDisk adapter can run the same code under pyfakefs."""

    def statvfs(self, path: str, *, safe: bool = False) -> tuple[int, int]: ...

    def lstat(self, path: str, *, safe: bool = False) -> Stat: ...

    def listdir(self, path: str, *, safe: bool = False) -> list[str]: ...

    def unlink(self, path: str, *, safe: bool = False) -> None: ...

    def rmdir(self, path: str, *, safe: bool = False) -> None: ...

    def read_file(self, path: str, *, safe: bool = False) -> bytes: ...

    def mountinfo(self, namespace: str | None = None) -> str: ...


# ---- measuring ---------------------------------------------------------------------------------


def _measure(disk: Disk, top: str, mnt_id: int) -> tuple[int, int]:
    """(bytes of regular-file data, number of entries) below ``top``. On the kernel by fd, one
    component at a time, never leaving ``top`` even if a directory in it is moved meanwhile
    (fdwalk.measure_by_fd); elsewhere (model, pyfakefs) by path, no symlink followed."""
    if hasattr(disk, "open_fd"):
        from daemonstore.cleanup.fdwalk import measure_by_fd

        st = disk.lstat(top, safe=True)
        if st.mnt_id != mnt_id or not st.is_dir:
            raise OSError(errno.ESTALE, "changed since it was found", top)
        return measure_by_fd(cast(Any, disk), top, (st.dev, st.ino))
    data = entries = 0
    for item in walk_tree(disk, top, mnt_id):
        if item.stat is not None and item.kind in ("entry", "dir"):
            entries += 1
            data += item.stat.size if item.stat.is_file else 0
    return data, entries


def _lstat(disk: Disk, path: str) -> Stat | None:
    try:
        return disk.lstat(path, safe=True)
    except OSError:
        return None


def _vault_root(disk: Disk, user_hash: str, signed_in: bool) -> Stat | None:
    """The user's ``root`` directory -- the mount everything in ``root/.cache`` must be on.
    Signed out: ``vault/root``, on the vault directory's own mount. Signed in:
    ``mount/root``, sign-in's self-bind of it (a mount of its own), checked to be the same
    directory as ``vault/root`` (device and inode) -- or, for a loop vault (``vault.img``, no
    vault directory), whatever the mounted image holds."""
    vault, backing = _lstat(disk, paths.vault(user_hash)), _lstat(disk, _root_of(user_hash))
    if not signed_in:
        if vault is None or backing is None or not backing.is_dir:
            return None
        return backing if backing.mnt_id == vault.mnt_id else None
    mounted = _lstat(disk, _root_of(user_hash, signed_in=True))
    if mounted is None or not mounted.is_dir:
        return None
    if vault is None and _is_loop_vault(disk, user_hash):
        return mounted
    if backing is None or (mounted.dev, mounted.ino) != (backing.dev, backing.ino):
        return None
    return mounted


def _is_loop_vault(disk: Disk, user_hash: str) -> bool:
    image = _lstat(disk, paths.vault_image(user_hash))
    return image is not None and image.is_file


def _root_of(user_hash: str, *, signed_in: bool = False) -> str:
    vault = paths.vault_mount(user_hash) if signed_in else paths.vault(user_hash)
    return f"{vault}/root"


def _user_caches(disk: Disk, user_hash: str, signed_in: bool,
                 warnings: list[str]) -> tuple[CacheFacts, ...]:
    root = _root_of(user_hash, signed_in=signed_in)
    base = f"{root}/{paths.CACHE_DIR}"
    root_st = _vault_root(disk, user_hash, signed_in)
    if root_st is None:
        if not signed_in and _is_loop_vault(disk, user_hash) and \
                _lstat(disk, paths.vault(user_hash)) is None:
            warnings.append(f"{paths.vault_image(user_hash)}: a signed-out user's loop vault "
                            "is not attached, so its caches cannot be reached: left alone")
        elif _lstat(disk, root) is not None:
            warnings.append(f"{root} is not the user's vault directory on its own mount: "
                            "its caches are left alone")
        return ()
    base_st = _lstat(disk, base)
    if base_st is None:
        return ()
    if not base_st.is_dir or base_st.mnt_id != root_st.mnt_id:
        warnings.append(f"{base} is not a directory on its vault's mount: left alone")
        return ()
    try:
        names = disk.listdir(base, safe=True)
    except OSError as exc:
        warnings.append(f"cannot list {base} ({errname(exc.errno)}): left alone")
        return ()
    caches = []
    for daemon in names:
        top = f"{base}/{daemon}"
        try:
            paths.check_daemon_name(daemon)
        except paths.BadName as exc:
            warnings.append(f"{top} left alone: {exc}")
            continue
        st = _lstat(disk, top)
        if st is None or not st.is_dir:
            if st is not None:  # a symlink or a file where a daemon's cache belongs
                warnings.append(f"{top} is not a directory: left alone")
            continue
        if st.mnt_id != root_st.mnt_id:
            warnings.append(f"{top} is a mount point: not crossed, left alone")
            continue
        where, mnt_id = top, st.mnt_id
        if signed_in:
            store = paths.user_store(daemon, user_hash, cache=True)
            store_st = _lstat(disk, store)
            if store_st is not None and store_st.is_dir and \
                    (store_st.dev, store_st.ino) == (st.dev, st.ino):
                where, mnt_id = store, store_st.mnt_id  # §6.3 step 3: through the store
        try:
            data, entries = _measure(disk, where, mnt_id)
        except OSError as exc:
            warnings.append(f"cannot measure {where} ({errname(exc.errno)}): left alone")
            continue
        caches.append(CacheFacts(daemon, where, mnt_id, data, entries))
    return tuple(caches)


def gather(disk: Disk, *, signed_in: Sequence[str] | None = None
           ) -> tuple[list[UserFacts], list[str]]:
    """Every user with a home under ``/home/.shadow`` (40-hex names), signed in or not, with
    their caches; signed-in users (from mountinfo unless ``signed_in`` is given) come first, in
    sign-in order. Returns the facts and the warnings (things left alone, and why)."""
    warnings: list[str] = []
    if signed_in is None:  # mounted_users() only reads mountinfo(), which a Disk has
        signed_in = session.mounted_users(cast(Host, disk))
    mounted = list(signed_in)
    try:
        names = disk.listdir(paths.SHADOW, safe=True)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            warnings.append(f"cannot list {paths.SHADOW} ({errname(exc.errno)})")
        names = []
    homes = []
    for name in names:
        try:
            paths.check_hash(name)
        except paths.BadName:
            continue  # the salt, and anything else that is not a user's home
        st = _lstat(disk, paths.shadow(name))
        if st is not None and st.is_dir:
            homes.append(name)
    order = [h for h in mounted if h in homes] + [h for h in homes if h not in mounted]
    users = [UserFacts(h, h in mounted, read_activity(disk, h),
                       _user_caches(disk, h, h in mounted, warnings)) for h in order]
    return users, warnings


# ---- clearing ----------------------------------------------------------------------------------


def clear_cache(disk: Disk, step: ClearCache) -> StepResult:
    """Delete the contents of ``step.path`` (never the directory itself) under the rules of the
    module docstring. Never raises for the filesystem: problems land in the result."""
    result = StepResult(step)
    st = _lstat(disk, step.path)
    if st is None:
        result.vanished += 1
        return result
    if not st.is_dir or st.mnt_id != step.mnt_id:
        result.skipped.append(f"{step.path}: changed since it was measured (no longer a "
                              "directory on the same mount): left alone")
        return result
    if hasattr(disk, "open_fd"):  # the kernel: by fd, one component at a time (fdwalk.py)
        from daemonstore.cleanup.fdwalk import clear_by_fd

        clear_by_fd(cast(Any, disk), step.path, (st.dev, st.ino), result)
        return result
    try:
        for item in walk_tree(disk, step.path, step.mnt_id):
            _remove(disk, item, result)
    except OSError as exc:  # only listing the cache directory itself raises
        if exc.errno == errno.ENOENT:
            result.vanished += 1
        else:
            result.errors.append(f"{step.path}: cannot list ({errname(exc.errno)})")
    return result


def _remove(disk: Disk, item: TreeItem, result: StepResult) -> None:
    """Act on one walk item (see :func:`~daemonstore.ops.walk_tree`)."""
    path, what, st = item.path, item.kind, item.stat
    if what == "vanished":
        result.vanished += 1
        return
    if item.error is not None:
        result.skipped.append(f"{path}: {errname(item.error.errno)} (replaced or unreadable "
                              "meanwhile), not entered")
        return
    if what == "mount":
        result.skipped.append(f"{path}: mount point (another mount), not crossed")
        return
    if st is None:  # every other item carries its lstat
        return
    try:
        if what == "dir":
            disk.rmdir(path, safe=True)
            result.removed_dirs += 1
        else:
            disk.unlink(path, safe=True)  # a symlink: the link itself, never its target
            result.removed_files += 1
            result.removed_bytes += st.size if st.is_file else 0
    except OSError as exc:
        code = exc.errno
        if code == errno.ENOENT:
            result.vanished += 1
        elif what == "dir" and code in (errno.ENOTEMPTY, errno.EEXIST, errno.EBUSY):
            result.kept_dirs += 1  # something stayed (a mount point) or appeared in it
        elif code in (errno.ELOOP, errno.ENOTDIR, errno.EISDIR, errno.EBUSY):
            result.skipped.append(f"{path}: {errname(exc.errno)} (replaced meanwhile), left alone")
        else:
            result.errors.append(f"{path}: {exc.strerror or errname(exc.errno)}")


# ---- a pass, and the watch loop -------------------------------------------------------------


def measure(disk: Disk) -> tuple[int, int]:
    """(total, free) bytes of the filesystem holding ``/home/.shadow`` (``AmountOfFreeDiskSpace
    (ShadowRoot())``, §6); ``safe``: a symlinked ``/home`` or ``/home/.shadow`` is ELOOP."""
    return disk.statvfs(MEASURED_PATH, safe=True)


def run_cleanup(disk: Disk, thresholds: Thresholds | None = None, *, dry_run: bool = False,
                signed_in: Sequence[str] | None = None, namespace: str | None = None,
                log: Callable[[str], None] | None = None) -> CleanupReport:
    """One ``FreeDiskSpace`` pass over the daemon-store caches (§6): measure; if the state is
    below the normal threshold, gather the users and their caches, plan, and clear cache by
    cache until :meth:`CleanupPlan.stop_reason` says stop. ``dry_run``: plan and predict only.
    ``signed_in``: the signed-in hashes (default: from mountinfo); ``namespace``: a Host
    namespace to run in (cryptohome's, e.g. ``Cryptohome.namespace``); ``log``: called with each
    step's line before it runs. Raises OSError only when free space cannot be measured."""
    thresholds = thresholds or Thresholds()
    with nullcontext() if namespace is None else in_namespace(cast(Host, disk), namespace):
        total, free = measure(disk)
        users: list[UserFacts] = []
        warnings: list[str] = []
        if thresholds.state(total, free) in NEEDS_CLEANUP:  # else FreeDiskSpace returns early
            users, warnings = gather(disk, signed_in=signed_in)
        plan = plan_cleanup(thresholds, total, free, users)
        report = CleanupReport(plan, dry_run=dry_run, warnings=warnings)
        if dry_run or not plan.steps:
            report.total_after, report.free_after = total, free
            report.stopped = plan.reason
            return report
        for index, step in enumerate(plan.steps):
            reason = plan.stop_reason(index, total, free)
            if reason is not None:
                report.stopped = reason
                break
            if log is not None:
                log(step.to_line())
            result = clear_cache(disk, step)
            total, now = measure(disk)
            result.freed_bytes, free = now - free, now
            report.steps.append(result)
        else:
            report.stopped = "every cache that may be cleared was cleared"
        report.total_after, report.free_after = total, free
        return report


def watch(disk: Disk, thresholds: Thresholds | None = None, *, interval: float,
          count: int | None = None, on_report: Callable[[CleanupReport], None] | None = None,
          sleep: Callable[[float], None] = time.sleep, dry_run: bool = False,
          signed_in: Sequence[str] | None = None, namespace: str | None = None,
          log: Callable[[str], None] | None = None) -> int:
    """Run :func:`run_cleanup` now and then every ``interval`` seconds (``LowDiskSpaceHandler``
    checks every minute, §6), ``count`` times (None: until interrupted); each report goes to
    ``on_report``. The other keywords are run_cleanup's. Returns the number of passes.

    Simplified from cryptohome: every pass that finds the state below the normal threshold
    cleans (no one-hour ``kAutoCleanupPeriod`` between automatic cleanups). The
    ``LowDiskSpace`` signal is the caller's: ``daemonstore cleanup --watch`` emits it from
    ``on_report`` (daemonstore.dbus.lowdisk)."""
    if interval <= 0:
        raise ValueError(f"interval must be positive, not {interval}")
    passes = 0
    while count is None or passes < count:
        if passes:
            sleep(interval)
        report = run_cleanup(disk, thresholds, dry_run=dry_run, signed_in=signed_in,
                             namespace=namespace, log=log)
        passes += 1
        if on_report is not None:
            on_report(report)
    return passes
