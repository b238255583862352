"""Sign-in and sign-out, the cryptohome side: plan (pure inspection of a Host) then apply (the
steps of :mod:`daemonstore.ops`, on the Host given).

Written once against :class:`~daemonstore.host.Host`: it runs on the pure model and, inside
``run_in_sandbox``, on the real kernel.

Public API (cryptohome_sim and ``daemonstore.testing`` call it; keep the names)::

    plan_sign_in(host, user_hash, *, first_user=None, vault="dir") -> SignInPlan   pure
    sign_in(host, user_hash, *, first_user=None, fail_at=None, vault="dir") -> SessionResult
        raises SignInError(reason, path, errno) after rolling back
    plan_sign_out(host, user_hash) -> SignOutPlan                        pure, no changes
    sign_out(host, user_hash) -> SignOutResult                           best effort, no raise
    mounted_users(host) -> list[str]                                     hashes, from mountinfo

    SignInPlan.steps (tuple of Op), .warnings, .stores, .first_user, .to_lines(), .apply(host,
        *, fail_at=None)
    SessionResult.mounted (mount points, in order), .warnings, .stores, .first_user
    SignOutPlan.steps, .warnings, .signed_in, .to_lines(), .apply(host)
    SignOutResult.unmounted (plain umounts), .lazily_detached (EBUSY, then MNT_DETACH; not
        repeated in .unmounted), .removed_dirs, .failed, .warnings

``first_user=None`` decides from mountinfo: the first user is the one who finds
``/home/chronos/user`` not mounted. ``fail_at=N`` raises an injected ``OSError(EIO)`` before step
N (0-based index into ``plan.steps``; a value past the end injects nothing), so tests and
cryptohome_sim's control interface can fail sign-in at every step and watch the rollback.

Sign-in for user hash H (chromeos-facts.md §2, ``Mounter::PerformMount``, in its order):

1. the home mount points ``/home/user/H`` (0750 1000:1001), ``/home/chronos/u-H`` (0750
   1000:1001), ``/home/root/H`` (0700 root) and, for the first user, ``/home/chronos/user``
   (``EnsureUserMountPoints``);
2. the vault: refused if ``/home/.shadow/H/mount`` is already a mount point ("Mount point is
   busy"); the persistent per-user storage ``/home/.shadow/H/vault`` (our stand-in for
   eCryptfs/dm-crypt) is bound onto ``mount``; then the vault directories ``root`` 01770
   root:400 (daemon-store group), ``root/.cache`` 0770 root:400 and ``user`` 0750 1000:1001
   (``CreateVaultDirectoryStructure``, §2 step 3 and §6 "Where the cache is stored");
3. ``MountHomesAndDaemonStores`` (§2 step 5): ``user`` and ``root`` self-bound and made shared,
   then ``/home/chronos/user`` (first user only), ``/home/chronos/u-H``, ``/home/user/H`` bound
   from ``user`` and ``/home/root/H`` from ``root``, each made slave;
4. for each store ``<d>`` -- a template ``/etc/daemon-store/<d>`` (a real directory, valid name,
   not world-writable) whose ``/run/daemon-store/<d>`` is mounted -- ``root/<d>`` with the
   template's owner and mode (mkdir, chown, chmod; an existing one gets both re-applied when
   they differ: the original only re-chmods, §7 item 5), the target ``/run/daemon-store/<d>/H``
   (0700 root) and the bind; then the same for ``root/.cache/<d>`` and
   ``/run/daemon-store-cache/<d>/H`` (§2 step 7).

Every bind is ``Platform::Bind``: ``MS_BIND``, then a remount adding nosuid, nodev, noexec,
nosymfollow, then the propagation change if any (§2, "Mount flags used for every bind").

Better than the original, on purpose:

* a store that is not mounted (template installed without a reboot) is skipped with a warning
  instead of failing the whole sign-in (§7 item 12);
* the vault is user-controlled, so everything in it is inspected with ``lstat`` and every step
  uses ``safe=True``: a symlink, file or fifo where a directory should be refuses that user's
  sign-in with a reason naming the path, before anything is mounted (plan time) or, if planted
  meanwhile, at the step that meets it (ELOOP / ENOTDIR), followed by the rollback;
* a failure part-way unmounts what this sign-in mounted (LIFO) and removes the directories it
  created outside ``/home/.shadow`` (the original leaves the latter, §2 "InternalMount..." 7);
* sign-out removes the empty per-user targets the original leaves behind (§7 item 1).

The vault is inspected through its backing directory ``/home/.shadow/H/vault`` at plan time (the
plan is pure, so it cannot mount the vault to look); the steps act on the mounted paths.

``vault="loop"`` (kernel only, :mod:`daemonstore.session.loop_vault`) backs the vault with an ext4
image
``/home/.shadow/H/vault.img`` on a loop device instead of the directory: the image is made on
first use, attached and mounted on ``mount`` in place of the bind. Its contents cannot be seen at
plan time, so the vault directories and store sources become :class:`EnsureDir` steps that
decide (create, or repair owner and mode, or refuse a symlink/file) when applied. A user's two
vault kinds are separate storage: data is not migrated between them. On the model ``"loop"`` is
refused at plan time (EOPNOTSUPP): the model has no block devices.

Sign-out (§2 "Unmount at sign-out"): every mount of the user found in mountinfo (vault and
below, the home binds, ``/home/chronos/user`` when it is this user's, the store binds and
anything mounted below them) is unmounted in reverse mount order (LIFO) with
``ForceUmount`` (plain umount, lazy detach on EBUSY, reported); then the empty mount points are
removed: the user's own, and also the vault's mount point and ``/home/chronos/user`` when it was
theirs, which outlive a user in the original. Removing a mount point detaches the mounts on it
in every other namespace, so a daemon namespace made mid-session keeps no copy of the vault (the
original has ``ui-post-stop`` kill such daemons instead). The user's data stays in the vault.

Guest sessions (ephemeral tmpfs vault, the ``mnt_chrome`` namespace) are
:mod:`daemonstore.session.guest`, built on the planner here.
"""

from __future__ import annotations

import errno
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, field

from daemonstore import mountinfo, paths
from daemonstore.errors import DaemonStoreError, errname
from daemonstore.host import Host, Propagation, Stat
from daemonstore.ops import (
    BindDir,
    DirChmod,
    DirChown,
    EnsureDir,
    ForceUmount,
    MakeDir,
    MakeTarget,
    Op,
    RemountBind,
    RemoveDir,
    SafeMake,
    op_path,
    undo_of,
)
from daemonstore.session import loop_vault as loopvault
from daemonstore.session.activity import record_activity

__all__ = [
    "BIND_FLAGS",
    "VAULTS",
    "SessionResult",
    "SignInError",
    "SignInPlan",
    "SignOutPlan",
    "SignOutResult",
    "mounted_users",
    "plan_sign_in",
    "plan_sign_out",
    "sign_in",
    "sign_out",
]

#: per-mount flags of every cryptohome bind: kDefaultMountFlags plus nosymfollow
#: (chromeos-facts.md §2, "Mount flags used for every bind")
BIND_FLAGS = frozenset({"nosuid", "nodev", "noexec", "nosymfollow"})

ROOT_ID = 0
CHRONOS_UID = 1000
CHRONOS_GID = 1000
CHRONOS_ACCESS_GID = 1001
DAEMON_STORE_GID = 400  # the daemon-store group that owns the vault's root/ (§2 step 3)

#: (path, mode, uid, gid) of the parents of the home mount points, created when missing:
#: modes as cryptohome's tmpfiles.d sets them (§1 "The parent directories"), /home/chronos
#: belongs to chronos (§2 step 1, EnsurePathComponent)
HOME_PARENTS = (
    ("/home", 0o755, ROOT_ID, ROOT_ID),
    ("/home/user", 0o755, ROOT_ID, ROOT_ID),
    ("/home/root", 0o1751, ROOT_ID, ROOT_ID),
    ("/home/chronos", 0o755, CHRONOS_UID, CHRONOS_GID),
)
#: (name, mode, uid, gid) of the vault directories (CreateVaultDirectoryStructure, §2 step 3)
VAULT_DIRS = (
    ("root", 0o1770, ROOT_ID, DAEMON_STORE_GID),
    (f"root/{paths.CACHE_DIR}", 0o770, ROOT_ID, DAEMON_STORE_GID),
    ("user", 0o750, CHRONOS_UID, CHRONOS_ACCESS_GID),
)
#: mode of a new per-user target /run/daemon-store[-cache]/<d>/<H> (plain CreateDirectory, §2)
TARGET_MODE = 0o700
SHADOW_MODE = 0o700
VAULT_MODE = 0o755
#: vault backends: a directory bound onto the mount point, or an ext4 image on a loop device
VAULTS = ("dir", "loop")

_KIND = {0o140000: "socket", 0o100000: "regular file", 0o060000: "block device",
         0o020000: "character device", 0o010000: "fifo"}


def _what(st: Stat) -> str:
    return _KIND.get(st.mode & 0o170000, f"file of type {st.mode & 0o170000:o}")


# ---- errors and results ------------------------------------------------------------------------


class SignInError(DaemonStoreError, OSError):
    """Sign-in refused or failed, after rolling back. ``reason`` tells the whole story (which
    step, which path, why); ``path`` is the path involved, ``errno`` the kernel's (or the
    injected EIO; None for a refusal that had none). ``step`` is the plan index that failed
    (None when refused at plan time), ``op`` that step's line, ``rollback`` what went wrong
    while rolling back (empty when the rollback was clean)."""

    def __init__(self, reason: str, path: str, err: int | None = None, *,
                 step: int | None = None, op: str | None = None,
                 rollback: Sequence[str] = ()) -> None:
        super().__init__(err, reason, path)
        self.reason = reason
        self.path = path
        self.step = step
        self.op = op
        self.rollback = list(rollback)

    def __str__(self) -> str:
        if not self.rollback:
            return self.reason
        return f"{self.reason}; rollback problems: {'; '.join(self.rollback)}"

    def __reduce__(self) -> tuple[object, ...]:
        # OSError pickles as cls(errno, strerror, filename); ours takes (reason, path, errno)
        return (type(self), (self.reason, self.path, self.errno),
                {"step": self.step, "op": self.op, "rollback": self.rollback})


@dataclass
class SessionResult:
    """A completed sign-in. ``mounted``: every mount point this sign-in mounted, in order;
    ``stores``: the stores (``/run/daemon-store[-cache]/<d>``) that got the user's mount."""

    user_hash: str
    first_user: bool
    mounted: list[str] = field(default_factory=list)
    stores: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class SignOutResult:
    """A sign-out. ``unmounted``: plain umounts; ``lazily_detached``: mount points that were
    busy and were detached with MNT_DETACH (not repeated in ``unmounted``); ``failed``: could
    not be unmounted at all (see ``warnings``)."""

    user_hash: str
    unmounted: list[str] = field(default_factory=list)
    lazily_detached: list[str] = field(default_factory=list)
    removed_dirs: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


# ---- plans -------------------------------------------------------------------------------------


def _lines(header: str, warnings: Sequence[str], steps: Sequence[Op],
           numbered: bool) -> list[str]:
    lines = [f"# {header}"] + [f"# warning: {w}" for w in warnings]
    width = len(str(max(len(steps) - 1, 0)))
    for index, op in enumerate(steps):
        lines.append(f"{index:>{width}}: {op.to_line()}" if numbered else op.to_line())
    return lines


@dataclass(frozen=True)
class SignInPlan:
    """What a sign-in will do, as data (``steps``); ``apply`` carries it out."""

    user_hash: str
    first_user: bool
    steps: tuple[Op, ...]
    stores: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    def to_lines(self, *, numbered: bool = False) -> list[str]:
        """The dry run: a ``#`` header and warnings, then one line per step (``N: `` prefixed
        with ``numbered``, N being what ``fail_at`` takes)."""
        who = "first user" if self.first_user else "additional user"
        return _lines(f"sign-in of {self.user_hash} ({who}): {len(self.steps)} steps, "
                      f"{len(self.stores)} stores", self.warnings, self.steps, numbered)

    def apply(self, host: Host, *, fail_at: int | None = None) -> SessionResult:
        return _apply_sign_in(self, host, fail_at)


@dataclass(frozen=True)
class SignOutPlan:
    """What a sign-out will do: ``ForceUmount`` steps (LIFO), then ``RemoveDir`` steps."""

    user_hash: str
    steps: tuple[Op, ...]
    signed_in: bool
    warnings: tuple[str, ...] = ()

    def to_lines(self, *, numbered: bool = False) -> list[str]:
        return _lines(f"sign-out of {self.user_hash}: {len(self.steps)} steps", self.warnings,
                      self.steps, numbered)

    def apply(self, host: Host) -> SignOutResult:
        return _apply_sign_out(self, host)


# ---- sign-in planning --------------------------------------------------------------------------


class _Refused(Exception):
    """Internal: plan-time refusal, turned into SignInError by plan_sign_in."""

    def __init__(self, reason: str, path: str, err: int | None) -> None:
        super().__init__(reason)
        self.reason, self.path, self.err = reason, path, err


class _SignInPlanner:
    """Builds one SignInPlan from one read of the host (never changes it)."""

    def __init__(self, host: Host, user_hash: str, vault: str = "dir") -> None:
        self.host = host
        self.h = user_hash
        #: the loop vault's contents are unknown at plan time (the image is not mounted)
        self.opaque_vault = vault == "loop"
        self.entries = mountinfo.parse(host.mountinfo())
        self.mount_points = {e.mount_point for e in self.entries}
        #: mount point -> its mounts, bottom to top (one pass, not one scan per store)
        self.stacks: dict[str, list[mountinfo.MountInfoEntry]] = {}
        for e in self.entries:
            self.stacks.setdefault(e.mount_point, []).append(e)
        self.steps: list[Op] = []
        self.warnings: list[str] = []
        self.stores: list[str] = []
        self.vault_mount = paths.vault_mount(user_hash)
        self.vault = paths.vault(user_hash)

    # -- inspection
    def inspect(self, path: str) -> Stat | None:
        """lstat a directory-to-be: None if missing, refuse anything but a real directory."""
        try:
            st = self.host.lstat(path, safe=True)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return None
            if exc.errno == errno.ELOOP:
                raise _Refused(f"a component of {path} is a symbolic link; nothing is "
                               "followed", path, errno.ELOOP) from None
            if exc.errno == errno.ENOTDIR:
                raise _Refused(f"a component of {path} is not a directory", path,
                               errno.ENOTDIR) from None
            raise _Refused(f"cannot inspect {path}: {exc.strerror}", path, exc.errno) from None
        if st.is_symlink:
            raise _Refused(f"{path} is a symbolic link where a directory must be; it is not "
                           "followed", path, errno.ELOOP)
        if not st.is_dir:
            raise _Refused(f"{path} is a {_what(st)} where a directory must be", path,
                           errno.ENOTDIR)
        return st

    def inspect_file(self, path: str) -> Stat | None:
        """lstat a regular file-to-be (the loop vault's image): None if missing; a symlink or
        anything else is refused (the image is opened with O_NOFOLLOW anyway)."""
        try:
            st = self.host.lstat(path, safe=True)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise _Refused(f"cannot inspect {path}: {exc.strerror}", path, exc.errno) from None
        if not st.is_file:
            raise _Refused(f"{path} is a {_what(st)} where the vault image must be", path,
                           errno.ELOOP if st.is_symlink else errno.EINVAL)
        return st

    def store_source(self, name: str, cache: bool) -> str:
        """Bind source of store ``name``: ``<vault mount>/root[/.cache]/<d>``."""
        sub = f"root/{paths.CACHE_DIR}" if cache else "root"
        return f"{self.vault_mount}/{sub}/{paths.check_daemon_name(name)}"

    def backing(self, path: str) -> str:
        """Where a path inside the (not yet mounted) vault is seen at plan time."""
        if path == self.vault_mount or path.startswith(self.vault_mount + "/"):
            return self.vault + path[len(self.vault_mount):]
        return path

    def ensure_dir(self, path: str, mode: int, uid: int, gid: int, *, target: bool = False,
                   repair: bool = True) -> None:
        """Steps that make ``path`` a directory: mkdir + chown + chmod when missing (chmod
        always: mkdirat drops setgid, §2 SafeCreateDirAndSetOwnershipAndPermissions), else
        chown/chmod where owner/mode differ (``repair``). ``target``: removed on rollback.
        Inside an opaque (loop) vault: one EnsureDir that decides when applied."""
        if self.opaque_vault and path.startswith(self.vault_mount + "/"):
            self.steps.append(EnsureDir(path, mode, uid, gid))
            return
        st = self.inspect(self.backing(path))
        if st is None:
            self.steps.append(MakeTarget(path, mode) if target else MakeDir(path, mode))
            if (uid, gid) != (ROOT_ID, ROOT_ID):
                self.steps.append(DirChown(path, uid, gid))
            self.steps.append(DirChmod(path, mode))
            return
        if not repair:
            return
        if (st.uid, st.gid) != (uid, gid):
            self.steps.append(DirChown(path, uid, gid))
        if st.perm != mode:
            self.steps.append(DirChmod(path, mode))

    def free(self, path: str) -> None:
        if path in self.mount_points:
            raise _Refused(f"{path} is already a mount point (a mount left from an earlier "
                           "session?)", path, errno.EBUSY)

    def bind(self, source: str, target: str, propagation: Propagation | None = None) -> None:
        """``Platform::Bind``: bind, remount with the flags, then the propagation change."""
        self.steps += [BindDir(source, target), RemountBind(target, BIND_FLAGS)]
        if propagation is not None:
            self.steps.append(SafeMake(target, propagation))

    # -- the plan, in PerformMount's order (module docstring)
    def plan(self, first_user: bool | None) -> SignInPlan:
        h = self.h
        if self.vault_mount in self.mount_points:
            raise _Refused(f"user {h} is already signed in: {self.vault_mount} is busy",
                           self.vault_mount, errno.EBUSY)
        chronos_user_taken = paths.HOME_CHRONOS_USER in self.mount_points
        legacy = not chronos_user_taken if first_user is None else first_user
        if legacy and chronos_user_taken:
            raise _Refused(f"{paths.HOME_CHRONOS_USER} is already mounted for another user; "
                           "only the first user gets it", paths.HOME_CHRONOS_USER, errno.EBUSY)
        self.plan_mount_points(legacy)
        self.plan_vault()
        user_home, root_home = f"{self.vault_mount}/user", f"{self.vault_mount}/root"
        self.bind(user_home, user_home, Propagation.SHARED)
        self.bind(root_home, root_home, Propagation.SHARED)
        if legacy:
            self.bind(user_home, paths.HOME_CHRONOS_USER, Propagation.SLAVE)
        self.bind(user_home, paths.home_chronos(h), Propagation.SLAVE)
        self.bind(user_home, paths.home_user(h), Propagation.SLAVE)
        self.bind(root_home, paths.home_root(h), Propagation.SLAVE)
        templates = self.templates()
        for cache in (False, True):
            for name, st in templates:
                self.plan_store(name, st, cache)
        return SignInPlan(h, legacy, tuple(self.steps), tuple(self.stores),
                          tuple(self.warnings))

    def plan_mount_points(self, legacy: bool) -> None:
        for path, mode, uid, gid in HOME_PARENTS:
            self.ensure_dir(path, mode, uid, gid, target=True, repair=False)
        homes = ((paths.home_user(self.h), 0o750, CHRONOS_UID, CHRONOS_ACCESS_GID),
                 (paths.home_chronos(self.h), 0o750, CHRONOS_UID, CHRONOS_ACCESS_GID),
                 (paths.home_root(self.h), 0o700, ROOT_ID, ROOT_ID))
        for path, mode, uid, gid in homes:
            self.free(path)
            self.ensure_dir(path, mode, uid, gid, target=True)
        if legacy:
            self.ensure_dir(paths.HOME_CHRONOS_USER, 0o755, CHRONOS_UID, CHRONOS_GID,
                            target=True, repair=False)

    def plan_vault(self) -> None:
        # /home/.shadow and the user's shadow dir are persistent storage: created for a new
        # user, kept even if this sign-in fails (cryptohome creates the vault on first mount)
        self.ensure_dir(paths.SHADOW, SHADOW_MODE, ROOT_ID, ROOT_ID, repair=False)
        self.ensure_dir(paths.shadow(self.h), SHADOW_MODE, ROOT_ID, ROOT_ID, repair=False)
        image = paths.vault_image(self.h)
        if not self.opaque_vault:
            self.ensure_dir(self.vault, VAULT_MODE, ROOT_ID, ROOT_ID, repair=False)
        elif self.inspect_file(image) is None:
            self.steps.append(loopvault.CreateVaultImage(image))
        # the mount point itself: the check for "vault mount point busy" was done in plan()
        st = self.inspect(self.vault_mount)
        if st is None:  # sign-out removes it (plan_sign_out); a failed sign-in removes it too
            self.steps.append(MakeTarget(self.vault_mount, VAULT_MODE))
        if self.opaque_vault:
            self.steps.append(loopvault.MountLoopVault(image, self.vault_mount))
        else:
            self.bind(self.vault, self.vault_mount)
        for name, mode, uid, gid in VAULT_DIRS:
            self.ensure_dir(f"{self.vault_mount}/{name}", mode, uid, gid)

    def templates(self) -> list[tuple[str, Stat]]:
        """Templates sign-in copies from: valid name, real directory, not world-writable.
        Whether the daemon's template is trusted at all is startup's call: it only mounts
        stores for templates it accepts, and a store that is not mounted is skipped below."""
        base = paths.ETC_DAEMON_STORE
        try:
            names = self.host.listdir(base, safe=True)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                self.warnings.append(f"cannot list {base} ({errname(exc.errno)}): no store "
                                     "is mounted for this user")
            return []
        found = []
        for name in names:
            path = f"{base}/{name}"
            try:
                paths.check_daemon_name(name)
                st = self.host.lstat(path, safe=True)
            except (paths.BadName, OSError) as exc:
                self.warnings.append(f"template {path!r} skipped: {exc}")
                continue
            if st.is_symlink:
                self.warnings.append(f"template {path} skipped: it is a symbolic link")
            elif st.is_dir and st.perm & 0o002:
                self.warnings.append(f"template {path} skipped: mode {st.perm:04o} is "
                                     "world-writable")
            elif st.is_dir:  # plain files are ignored, as chromeos_startup's enumerator does
                found.append((name, st))
        return found

    def plan_store(self, name: str, template: Stat, cache: bool) -> None:
        store = paths.store(name, cache)
        tops = self.stacks.get(store, [])
        if not tops:
            self.warnings.append(
                f"store {store} is not mounted (template installed without a reboot, or "
                "startup failed): skipped for this user; the original fails the whole "
                "sign-in here (chromeos-facts.md §7 item 12)")
            return
        if tops[-1].shared is None:
            self.warnings.append(f"store {store} is {tops[-1].propagation}, not shared: "
                                 "daemons' namespaces will not receive this user's mount")
        source = self.store_source(name, cache)
        target = paths.user_store(name, self.h, cache)
        self.free(target)
        self.ensure_dir(source, template.perm, template.uid, template.gid)
        self.ensure_dir(target, TARGET_MODE, ROOT_ID, ROOT_ID, target=True, repair=False)
        self.report_writes_before_mount(target)
        self.bind(source, target)
        self.stores.append(store)

    def report_writes_before_mount(self, target: str) -> None:
        """A daemon that wrote to ``/run/daemon-store/<d>/<H>`` before the vault was mounted
        (chromeos-facts.md §7 item 1) left files that the bind is about to hide: say so, and
        never delete them (they stay, reachable again once the user signs out)."""
        try:
            found = self.host.listdir(target, safe=True)
        except OSError:
            return  # missing (created by the plan) or refused already by inspect()
        if found:
            shown = ", ".join(repr(n) for n in found[:3]) + (", ..." if len(found) > 3 else "")
            self.warnings.append(f"{target} already holds {len(found)} entries ({shown}) "
                                 "written before the user's vault was mounted: kept, hidden "
                                 "under the mount until sign-out, never deleted")


def plan_sign_in(host: Host, user_hash: str, *, first_user: bool | None = None,
                 vault: str = "dir") -> SignInPlan:
    """Plan user ``user_hash``'s sign-in (pure: reads the host, changes nothing). Raises
    SignInError when the state refuses it (already signed in, something that is not a real
    directory where one must be, ``vault="loop"`` on a host without block devices);
    ``BadName`` (a ValueError) for a malformed hash, ValueError for an unknown ``vault``."""
    paths.check_hash(user_hash)
    if vault not in VAULTS:
        raise ValueError(f"vault must be one of {', '.join(VAULTS)}, not {vault!r}")
    if vault == "loop" and (why := loopvault.unavailable_reason(host)) is not None:
        raise SignInError(f"sign-in of {user_hash} refused: {why}; nothing was changed",
                          paths.vault_image(user_hash), errno.EOPNOTSUPP)
    try:
        return _SignInPlanner(host, user_hash, vault).plan(first_user)
    except _Refused as exc:
        raise SignInError(f"sign-in of {user_hash} refused: {exc.reason}; nothing was changed",
                          exc.path, exc.err) from None


def sign_in(host: Host, user_hash: str, *, first_user: bool | None = None,
            fail_at: int | None = None, vault: str = "dir") -> SessionResult:
    """Plan and apply a sign-in (see the module docstring); SignInError after a rollback."""
    plan = plan_sign_in(host, user_hash, first_user=first_user, vault=vault)
    return plan.apply(host, fail_at=fail_at)


# ---- sign-in apply and rollback ----------------------------------------------------------------


_HINTS = {
    errno.ELOOP: "a symbolic link is in the path; it was not followed",
    errno.ENOTDIR: "something that is not a directory is where a directory must be",
    errno.EBUSY: "already mounted or in use",
}


def _apply_sign_in(plan: SignInPlan, host: Host, fail_at: int | None, *,
                   record: bool = True) -> SessionResult:
    """Apply the steps, rolling back on failure; ``record``: write the activity record (not for
    a guest, whose ephemeral session has no /home/.shadow/<H> to keep it in)."""
    if fail_at is not None and fail_at < 0:
        raise ValueError(f"fail_at must be a step index >= 0, not {fail_at}")
    undo: list[Op] = []
    mounted: list[str] = []
    for index, op in enumerate(plan.steps):
        try:
            if index == fail_at:
                raise OSError(errno.EIO, f"injected failure before step {index}", op_path(op))
            op.apply(host)
        except OSError as exc:
            notes = _rollback(host, undo)
            path = exc.filename if isinstance(exc.filename, str) else op_path(op)
            hint = _HINTS.get(exc.errno or 0)
            reason = (f"sign-in of {plan.user_hash} failed at step {index} ({op.to_line()}) on "
                      f"{path}: {exc.strerror or errname(exc.errno)}"
                      + (f" ({hint})" if hint else "") + "; rolled back")
            raise SignInError(reason, path, exc.errno, step=index, op=op.to_line(),
                              rollback=notes) from exc
        except BaseException:
            _rollback(host, undo)  # a bug or an interrupt: still leave no mount behind
            raise
        step_undo = undo_of(op)
        if step_undo is not None:
            undo.append(step_undo)
        if isinstance(step_undo, ForceUmount):  # a bind, the loop vault, a guest's tmpfs
            mounted.append(step_undo.target)
    if record:
        record_activity(host, plan.user_hash)  # LRU order of the low-disk cleanup (activity.py)
    return SessionResult(plan.user_hash, plan.first_user, mounted, list(plan.stores),
                         list(plan.warnings))


def _rollback(host: Host, undo: list[Op]) -> list[str]:
    """Undo in LIFO order (``Mounter::UnmountAll`` pops its stack the same way); returns what
    did not go cleanly. Keeps going after a failure: every later undo is still worth doing."""
    notes = []
    for op in reversed(undo):
        try:
            if isinstance(op, ForceUmount):
                if op.unmount(host):
                    notes.append(f"{op.target} was busy: lazily detached")
            else:
                op.apply(host)
        except OSError as exc:
            notes.append(f"{op.to_line()} failed: {exc.strerror or errname(exc.errno)}")
    return notes


# ---- sign-out ----------------------------------------------------------------------------------


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def _store_user(mount_point: str) -> str | None:
    """The ``<H>`` of a mount point ``/run/daemon-store[-cache]/<d>/<H>[/...]``, else None."""
    for base in paths.STORE_BASES:
        if mount_point.startswith(base + "/"):
            parts = mount_point[len(base) + 1:].split("/")
            if len(parts) >= 2:
                return parts[1]
    return None


def _user_mounts(entries: Sequence[mountinfo.MountInfoEntry], user_hash: str,
                 vault_mount: str | None = None) -> list[mountinfo.MountInfoEntry]:
    """The user's mounts (and anything mounted below them), in mount order; ``vault_mount``
    defaults to ``/home/.shadow/<H>/mount`` (a guest's is its ephemeral mount)."""
    prefixes = [vault_mount or paths.vault_mount(user_hash), paths.home_root(user_hash),
                paths.home_user(user_hash), paths.home_chronos(user_hash)]
    vaults = [e for e in entries if e.mount_point == prefixes[0]]
    if vaults:
        # /home/chronos/user is this user's when it shows the vault's user/ directory
        want = posixpath.join(vaults[-1].root, "user")
        if any(e.mount_point == paths.HOME_CHRONOS_USER and e.dev == vaults[-1].dev
               and e.root == want for e in entries):
            prefixes.append(paths.HOME_CHRONOS_USER)
    elif vault_mount is None:
        # the vault is gone (a sign-out that failed part-way, or was killed): a directory
        # vault's user/ still names the user in its root, so a second sign-out takes it too
        mine = f"/.shadow/{user_hash}/vault/user"
        if any(e.mount_point == paths.HOME_CHRONOS_USER and e.root.endswith(mine)
               for e in entries):
            prefixes.append(paths.HOME_CHRONOS_USER)
    return [e for e in entries
            if any(_under(e.mount_point, p) for p in prefixes)
            or _store_user(e.mount_point) == user_hash]


def _existing_dir(host: Host, path: str) -> bool:
    try:
        return host.lstat(path, safe=True).is_dir
    except OSError:
        return False


def plan_sign_out(host: Host, user_hash: str) -> SignOutPlan:
    """Plan user ``user_hash``'s sign-out (pure): unmount every mount of the user in reverse
    mount order, then remove the empty mount points (store targets, home mount points)."""
    paths.check_hash(user_hash)
    entries = mountinfo.parse(host.mountinfo())
    mine = _user_mounts(entries, user_hash)
    signed_in = any(e.mount_point == paths.vault_mount(user_hash) for e in entries)
    warnings = [] if signed_in else [f"user {user_hash} is not signed in (no mount at "
                                     f"{paths.vault_mount(user_hash)})"]
    steps: list[Op] = [_umount_step(e, user_hash) for e in reversed(mine)]
    for base in reversed(paths.STORE_BASES):
        try:
            daemons = host.listdir(base, safe=True)
        except OSError:
            continue
        for name in daemons:
            target = f"{base}/{name}/{user_hash}"
            if _existing_dir(host, target):
                steps.append(RemoveDir(target))
    for home in (paths.home_root(user_hash), paths.home_user(user_hash),
                 paths.home_chronos(user_hash)):
        if _existing_dir(host, home):
            steps.append(RemoveDir(home))
    # The mount points this sign-out empties that outlive the user's own: the vault's and, when
    # it showed this user, /home/chronos/user. A daemon namespace made during the session
    # (``-v -Kslave``) holds copies of them that no umount propagates to (the vault bind is
    # private, /home/chronos/user a slave); rmdir detaches every mount on a dentry in every
    # namespace (__detach_mounts(), lazily), so the user's files are reachable nowhere once
    # they are signed out. The original leaves them and has ui-post-stop kill such daemons
    # (process_killer --mount_holders, chromeos-facts.md §2). Sign-in makes both again.
    # A crashed sign-in may have made them without mounting: not mounted, they go as well.
    owned, mounted = {e.mount_point for e in mine}, {e.mount_point for e in entries}
    steps += [RemoveDir(p) for p in (paths.vault_mount(user_hash), paths.HOME_CHRONOS_USER)
              if p in owned or (p not in mounted and _existing_dir(host, p))]
    return SignOutPlan(user_hash, tuple(steps), signed_in, tuple(warnings))


def _umount_step(entry: mountinfo.MountInfoEntry, user_hash: str) -> ForceUmount:
    """ForceUmount, or for a loop vault (ext4 from /dev/loopN on the vault mount point) the
    umount followed by LOOP_CLR_FD of its device."""
    if (entry.mount_point == paths.vault_mount(user_hash) and entry.fstype == "ext4"
            and entry.source.startswith("/dev/loop")):
        return loopvault.LoopVaultUmount(entry.mount_point, image=paths.vault_image(user_hash))
    return ForceUmount(entry.mount_point)


def _apply_sign_out(plan: SignOutPlan, host: Host, *, record: bool = True) -> SignOutResult:
    """Best effort, like ``UnmountAll``: every step is tried; problems become warnings.
    ``record``: as for sign-in (False for a guest)."""
    result = SignOutResult(plan.user_hash, warnings=list(plan.warnings))
    for op in plan.steps:
        if isinstance(op, ForceUmount):
            _sign_out_umount(host, op, result)
            continue
        try:
            op.apply(host)
        except OSError as exc:
            if exc.errno == errno.ENOTEMPTY:
                result.warnings.append(f"left {op_path(op)} in place: it holds files written "
                                       "while the user was not signed in (writes before "
                                       "mount); never deleted")
            elif exc.errno != errno.ENOENT:
                result.warnings.append(f"left {op_path(op)} in place: "
                                       f"{exc.strerror or errname(exc.errno)}")
            continue
        result.removed_dirs.append(op_path(op))
    note = (record_activity(host, plan.user_hash)  # activity.py
            if plan.signed_in and record else None)
    result.warnings += [note] if note else []  # (last seen now: the cleanup's LRU order)
    return result


def _sign_out_umount(host: Host, op: ForceUmount, result: SignOutResult) -> None:
    try:
        lazy = op.unmount(host)
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.ENOENT):
            # an earlier umount took it along: umount propagates to the mounts at the same
            # place under the peers of the parent (a submount below a shared bind has copies)
            result.warnings.append(f"{op.target} was already gone (unmounted along with an "
                                   "earlier mount, by propagation)")
        else:
            result.failed.append(op.target)
            result.warnings.append(f"could not unmount {op.target}: "
                                   f"{exc.strerror or errname(exc.errno)}")
        return
    if lazy:
        result.lazily_detached.append(op.target)
        result.warnings.append(f"{op.target} was busy (EBUSY): lazily detached (MNT_DETACH); "
                               "it is gone from the mount table and is freed when its last "
                               "user lets go")
    else:
        result.unmounted.append(op.target)


def sign_out(host: Host, user_hash: str) -> SignOutResult:
    """Plan and apply a sign-out. Never raises for a mount problem (see ``failed`` and
    ``warnings``); ``BadName`` for a malformed hash. The user's data stays in the vault."""
    return plan_sign_out(host, user_hash).apply(host)


def mounted_users(host: Host) -> list[str]:
    """Hashes of the signed-in users, in sign-in order: the vault mounts at
    ``/home/.shadow/<H>/mount`` in the current namespace's mountinfo."""
    found: list[str] = []
    prefix = paths.SHADOW + "/"
    for e in mountinfo.parse(host.mountinfo()):
        mp = e.mount_point
        if mp.startswith(prefix) and mp.endswith("/mount"):
            h = mp[len(prefix):-len("/mount")]
            try:
                paths.check_hash(h)
            except paths.BadName:
                continue
            if h not in found:
                found.append(h)
    return found

