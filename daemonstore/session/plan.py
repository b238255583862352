"""The sign-in planner (plan layer, pure: reads the Host, changes nothing): :func:`plan_sign_in`
builds a :class:`~daemonstore.session.apply.SignInPlan` with :class:`SignInPlanner`, in
``Mounter::PerformMount``'s order (docs/chromeos.md §2.2) for user hash H:

1. the home mount points ``/home/user/H``, ``/home/chronos/u-H``, ``/home/root/H`` and, for the
   user who gets it, ``/home/chronos/user`` (``EnsureUserMountPoints``);
2. the vault: ``/home/.shadow/H/vault`` (our stand-in for eCryptfs/dm-crypt) bound onto
   ``/home/.shadow/H/mount``, then ``root`` 01770 root:400, ``root/.cache`` 0770 root:400 and
   ``user`` 0750 1000:1001 inside it (``CreateVaultDirectoryStructure``, §2.2 step 3);
3. ``user`` and ``root`` self-bound and made shared, then the home binds, each made slave
   (``MountHomesAndDaemonStores``, §2.2 step 5);
4. per store ``<d>`` (a valid, not world-writable template whose ``/run/daemon-store/<d>`` is
   mounted): ``root/<d>`` with the template's owner and mode, the target
   ``/run/daemon-store/<d>/H`` root 0700 (made, or reused from an earlier session with owner
   and mode re-applied) and the bind; then the same for the cache (§2.2 step 7).

Every bind is ``Platform::Bind``: ``MS_BIND``, a remount adding :data:`BIND_FLAGS`, then the
propagation change (§2.4). The vault is user-controlled: it is
inspected with ``lstat`` through its backing directory, and anything but a real directory where
one must be refuses the sign-in before anything is mounted. A loop vault's contents cannot be
seen at plan time, so its directories become ``EnsureDir`` steps that decide when applied.
"""

from __future__ import annotations

import errno

from daemonstore import mountinfo, paths
from daemonstore.errors import errname
from daemonstore.host import Host, Propagation, Stat
from daemonstore.mounttree import MountView
from daemonstore.ops import (
    BindDir,
    DirChmod,
    DirChown,
    EnsureDir,
    GuardMountPoint,
    MakeDir,
    MakeTarget,
    Op,
    RemountBind,
    SafeMake,
)
from daemonstore.session.apply import SignInPlan
from daemonstore.session.planted import RemovePlanted, planted_kind, user_owned_mount_points
from daemonstore.session.results import SessionResult, SignInError

__all__ = ["BIND_FLAGS", "ROOT_ID", "TARGET_MODE", "VAULTS", "VAULT_DIRS", "Refused",
           "SignInPlanner", "file_type_name", "plan_sign_in", "read_templates", "sign_in"]

#: per-mount flags of every cryptohome bind: kDefaultMountFlags plus nosymfollow
#: (docs/chromeos.md §2.4)
BIND_FLAGS = frozenset({"nosuid", "nodev", "noexec", "nosymfollow"})

ROOT_ID = 0
CHRONOS_UID = 1000
CHRONOS_GID = 1000
CHRONOS_ACCESS_GID = 1001
DAEMON_STORE_GID = 400  # the daemon-store group that owns the vault's root/ (§2.2 step 3)

#: (path, mode, uid, gid) of the parents of the home mount points, created when missing:
#: modes as cryptohome's tmpfiles.d sets them (§1.2), /home/chronos
#: belongs to chronos (§2.2 step 1, EnsurePathComponent)
HOME_PARENTS = (
    ("/home", 0o755, ROOT_ID, ROOT_ID),
    ("/home/user", 0o755, ROOT_ID, ROOT_ID),
    ("/home/root", 0o1751, ROOT_ID, ROOT_ID),
    ("/home/chronos", 0o755, CHRONOS_UID, CHRONOS_GID),
)
#: (name, mode, uid, gid) of the vault directories (CreateVaultDirectoryStructure, §2.2 step 3)
VAULT_DIRS = (
    ("root", 0o1770, ROOT_ID, DAEMON_STORE_GID),
    (f"root/{paths.CACHE_DIR}", 0o770, ROOT_ID, DAEMON_STORE_GID),
    ("user", 0o750, CHRONOS_UID, CHRONOS_ACCESS_GID),
)
#: mode of a new per-user target /run/daemon-store[-cache]/<d>/<H> (CreateDirectory, §2.3 step 5)
TARGET_MODE = 0o700
SHADOW_MODE = 0o700
VAULT_MODE = 0o755
#: vault backends: a directory bound onto the mount point, or an ext4 image on a loop device
VAULTS = ("dir", "loop")

_FILE_TYPE_NAMES = {0o140000: "socket", 0o100000: "regular file", 0o060000: "block device",
                    0o020000: "character device", 0o010000: "fifo"}


def file_type_name(st: Stat) -> str:
    """What ``st`` is, in words ("fifo"), for a refusal."""
    kind = st.mode & 0o170000
    return _FILE_TYPE_NAMES.get(kind, f"file of type {kind:o}")


class Refused(Exception):
    """A plan-time refusal inside the session package: the planners raise it, and
    :func:`plan_sign_in` (or the guest's) turns it into SignInError."""

    def __init__(self, reason: str, path: str, err: int | None) -> None:
        super().__init__(reason)
        self.reason, self.path, self.err = reason, path, err


def read_templates(host: Host) -> tuple[list[tuple[str, Stat]], list[str]]:
    """The templates sign-in copies from (valid name, real directory, not world-writable), and
    a warning for each one skipped. Whether the daemon's template is trusted at all is
    startup's call: it only mounts stores for templates it accepts, and sign-in skips a store
    that is not mounted."""
    base = paths.ETC_DAEMON_STORE
    try:
        names = host.listdir(base, safe=True)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return [], []
        return [], [f"cannot list {base} ({errname(exc.errno)}): no store is mounted for this "
                    "user"]
    found: list[tuple[str, Stat]] = []
    warnings: list[str] = []
    for name in names:
        path = f"{base}/{name}"
        try:
            paths.check_daemon_name(name)
            st = host.lstat(path, safe=True)
        except (paths.BadName, OSError) as exc:
            warnings.append(f"template {path!r} skipped: {exc}")
            continue
        if st.is_symlink:
            warnings.append(f"template {path} skipped: it is a symbolic link")
        elif st.is_dir and st.perm & 0o002:
            warnings.append(f"template {path} skipped: mode {st.perm:04o} is world-writable")
        elif st.is_dir:  # plain files are ignored, as chromeos_startup's enumerator does
            found.append((name, st))
    return found, warnings


class SignInPlanner:
    """Builds one SignInPlan from one read of the host (never changes it). The guest's planner
    (guest.py) derives from it with the ephemeral tmpfs as the vault."""

    def __init__(self, host: Host, user_hash: str, vault: str = "dir") -> None:
        self.host = host
        self.user_hash = user_hash
        self.vault_kind = vault
        self.tree = MountView(mountinfo.parse(host.mountinfo()))
        #: every mount point in this namespace, hidden or not (sign-in refuses to mount on one)
        self.mount_points = {e.mount_point for e in self.tree.entries}
        self.steps: list[Op] = []
        self.warnings: list[str] = []
        self.stores: list[str] = []
        self.vault_mount = paths.vault_mount(user_hash)
        self.vault = paths.vault(user_hash)
        #: non-directories this plan removes first (session/planted.py)
        self.planted: set[str] = set()
        #: where a planted non-directory is removed rather than refused (session/planted.py)
        self.user_owned = user_owned_mount_points(user_hash)

    # -- inspection
    def inspect(self, path: str) -> Stat | None:
        """lstat a directory-to-be: None if missing, refuse anything but a real directory."""
        if path in self.planted:
            return None  # removed by an earlier step of this plan
        try:
            st = self.host.lstat(path, safe=True)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return None
            if exc.errno == errno.ELOOP:
                raise Refused(f"a component of {path} is a symbolic link; nothing is "
                              "followed", path, errno.ELOOP) from None
            if exc.errno == errno.ENOTDIR:
                raise Refused(f"a component of {path} is not a directory", path,
                              errno.ENOTDIR) from None
            raise Refused(f"cannot inspect {path}: {exc.strerror}", path, exc.errno) from None
        if st.is_symlink:
            raise Refused(f"{path} is a symbolic link where a directory must be; it is not "
                          "followed", path, errno.ELOOP)
        if not st.is_dir:
            raise Refused(f"{path} is a {file_type_name(st)} where a directory must be", path,
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
            raise Refused(f"cannot inspect {path}: {exc.strerror}", path, exc.errno) from None
        if not st.is_file:
            raise Refused(f"{path} is a {file_type_name(st)} where the vault image must be",
                          path, errno.ELOOP if st.is_symlink else errno.EINVAL)
        return st

    def store_source(self, name: str, cache: bool) -> str:
        """Bind source of store ``name``: its directory in the vault
        (:func:`paths.store_in_vault`) under this planner's vault mount (a guest's is its
        tmpfs)."""
        return f"{self.vault_mount}/{paths.store_in_vault(name, cache)}"

    def backing(self, path: str) -> str:
        """Where a path inside the (not yet mounted) vault is seen at plan time."""
        if path == self.vault_mount or path.startswith(self.vault_mount + "/"):
            return self.vault + path[len(self.vault_mount):]
        return path

    # -- steps
    def ensure_dir(self, path: str, mode: int, uid: int, gid: int, *, target: bool = False,
                   repair: bool = True) -> None:
        """Steps that make ``path`` a directory: mkdir + chown + chmod when missing (chmod
        always: mkdirat drops setgid, §2.5 SafeCreateDirAndSetOwnershipAndPermissions), else
        chown/chmod where owner/mode differ (``repair``). ``target``: removed on rollback.
        Inside a loop vault, whose image is not mounted at plan time so its contents are
        unknown: one EnsureDir that decides when applied."""
        if self.vault_kind == "loop" and path.startswith(self.vault_mount + "/"):
            self.steps.append(EnsureDir(path, mode, uid, gid))
            return
        if path in self.user_owned:
            self.remove_planted(path)
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

    def remove_planted(self, path: str) -> None:
        """A non-directory at a mount point in chronos-owned /home/chronos is removed, not
        refused (session/planted.py); the plan then makes the directory. Inspected afterwards
        as missing: ``inspect`` sees the plan's state."""
        try:
            st = self.host.lstat(path, safe=True)
        except OSError:
            return  # missing, or a problem inspect() reports
        kind = planted_kind(st)
        if kind is None:
            return
        self.warnings.append(f"{path} was a {kind} (planted in a user-owned directory): "
                             "removed, never followed")
        self.steps.append(RemovePlanted(path, kind))
        self.planted.add(path)

    def require_unmounted(self, path: str) -> None:
        """Refuse ``path`` if anything is mounted there (a mount left from an earlier session)."""
        if path in self.mount_points:
            raise Refused(f"{path} is already a mount point (a mount left from an earlier "
                          "session?)", path, errno.EBUSY)

    def bind(self, source: str, target: str, propagation: Propagation | None = None) -> None:
        """``Platform::Bind``: bind, remount with the flags, then the propagation change."""
        self.steps += [BindDir(source, target), RemountBind(target, BIND_FLAGS)]
        if propagation is not None:
            self.steps.append(SafeMake(target, propagation))

    # -- the plan, in PerformMount's order (module docstring)
    def plan(self, first_user: bool | None) -> SignInPlan:
        """The plan; ``first_user`` None: the user gets /home/chronos/user if it is free."""
        h = self.user_hash
        if self.vault_mount in self.mount_points:
            raise Refused(f"user {h} is already signed in: {self.vault_mount} is busy",
                          self.vault_mount, errno.EBUSY)
        chronos_user_taken = paths.HOME_CHRONOS_USER in self.mount_points
        gets_chronos_user = not chronos_user_taken if first_user is None else first_user
        if gets_chronos_user and chronos_user_taken:
            raise Refused(f"{paths.HOME_CHRONOS_USER} is already mounted for another user; "
                          "only the first user gets it", paths.HOME_CHRONOS_USER, errno.EBUSY)
        self.plan_mount_points(gets_chronos_user)
        self.plan_vault()
        user_home, root_home = f"{self.vault_mount}/user", f"{self.vault_mount}/root"
        self.bind(user_home, user_home, Propagation.SHARED)
        self.bind(root_home, root_home, Propagation.SHARED)
        if gets_chronos_user:
            self.bind(user_home, paths.HOME_CHRONOS_USER, Propagation.SLAVE)
        self.bind(user_home, paths.home_chronos(h), Propagation.SLAVE)
        self.bind(user_home, paths.home_user(h), Propagation.SLAVE)
        self.bind(root_home, paths.home_root(h), Propagation.SLAVE)
        templates, warnings = read_templates(self.host)
        self.warnings += warnings
        for cache in (False, True):
            for name, st in templates:
                self.plan_store(name, st, cache)
        return SignInPlan(h, gets_chronos_user, tuple(self.steps), tuple(self.stores),
                          tuple(self.warnings))

    def plan_mount_points(self, gets_chronos_user: bool) -> None:
        for path, mode, uid, gid in HOME_PARENTS:
            self.ensure_dir(path, mode, uid, gid, target=True, repair=False)
        h = self.user_hash
        homes = ((paths.home_user(h), 0o750, CHRONOS_UID, CHRONOS_ACCESS_GID),
                 (paths.home_chronos(h), 0o750, CHRONOS_UID, CHRONOS_ACCESS_GID),
                 (paths.home_root(h), 0o700, ROOT_ID, ROOT_ID))
        for path, mode, uid, gid in homes:
            self.require_unmounted(path)
            self.ensure_dir(path, mode, uid, gid, target=True)
            self.guard(path)
        if gets_chronos_user:
            self.ensure_dir(paths.HOME_CHRONOS_USER, 0o755, CHRONOS_UID, CHRONOS_GID,
                            target=True, repair=False)
            self.guard(paths.HOME_CHRONOS_USER)

    def guard(self, path: str) -> None:
        """A mount point in chronos-owned /home/chronos gets a root-owned guard before its bind,
        so chronos cannot rmdir it from another namespace and so detach the user's home in
        every namespace (ops/guard.py; SECURITY.md, "Mount points chronos cannot remove").
        The other mount points live in root-owned directories (/home/user, /home/root,
        /home/.shadow/<H>, /run/daemon-store[-cache]/<d>): chronos cannot rmdir them."""
        if path in self.user_owned:
            self.steps.append(GuardMountPoint(path))

    def plan_vault(self) -> None:
        # /home/.shadow and the user's shadow dir are persistent storage: created for a new
        # user, kept even if this sign-in fails (cryptohome creates the vault on first mount)
        self.ensure_dir(paths.SHADOW, SHADOW_MODE, ROOT_ID, ROOT_ID, repair=False)
        self.ensure_dir(paths.shadow(self.user_hash), SHADOW_MODE, ROOT_ID, ROOT_ID,
                        repair=False)
        if self.vault_kind == "loop":
            self.plan_loop_vault()
        else:
            self.ensure_dir(self.vault, VAULT_MODE, ROOT_ID, ROOT_ID, repair=False)
            self.plan_vault_mount_point()
            self.bind(self.vault, self.vault_mount)
        for name, mode, uid, gid in VAULT_DIRS:
            self.ensure_dir(f"{self.vault_mount}/{name}", mode, uid, gid)

    def plan_loop_vault(self) -> None:
        """The image (made on first use), attached and mounted on the vault mount point."""
        from daemonstore.session import loop_vault  # only where a loop vault is in use

        image = paths.vault_image(self.user_hash)
        if self.inspect_file(image) is None:
            self.steps.append(loop_vault.CreateVaultImage(image))
        self.plan_vault_mount_point()
        self.steps.append(loop_vault.MountLoopVault(image, self.vault_mount))

    def plan_vault_mount_point(self) -> None:
        # "already signed in" (the mount point is busy) was refused in plan(); sign-out removes
        # the mount point, and so does a failed sign-in
        if self.inspect(self.vault_mount) is None:
            self.steps.append(MakeTarget(self.vault_mount, VAULT_MODE))

    def plan_store(self, name: str, template: Stat, cache: bool) -> None:
        store = paths.store(name, cache)
        top = self.tree.top(store)
        if top is None:
            self.warnings.append(
                f"store {store} is not mounted (template installed without a reboot, or "
                "startup failed): skipped for this user; the original fails the whole "
                "sign-in here (docs/chromeos.md §7 item 12)")
            return
        if top.shared is None:
            self.warnings.append(f"store {store} is {top.propagation}, not shared: "
                                 "daemons' namespaces will not receive this user's mount")
        source = self.store_source(name, cache)
        target = paths.user_store(name, self.user_hash, cache)
        self.require_unmounted(target)
        self.ensure_dir(source, template.perm, template.uid, template.gid)
        # the target outlives a sign-out (as on ChromeOS, session/sign_out.py): reused, with
        # its owner and mode re-applied when they drifted (ChromeOS re-applies neither)
        self.ensure_dir(target, TARGET_MODE, ROOT_ID, ROOT_ID, target=True)
        self.report_writes_before_mount(target)
        self.bind(source, target)
        self.stores.append(store)

    def report_writes_before_mount(self, target: str) -> None:
        """A daemon that wrote to ``/run/daemon-store/<d>/<H>`` before the vault was mounted
        (docs/chromeos.md §7 item 1) left files that the bind is about to hide: say so, and
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
    if vault == "loop":
        from daemonstore.session import loop_vault  # only where a loop vault is in use

        if (why := loop_vault.unavailable_reason(host)) is not None:
            raise SignInError(f"sign-in of {user_hash} refused: {why}; nothing was changed",
                              paths.vault_image(user_hash), errno.EOPNOTSUPP)
    try:
        return SignInPlanner(host, user_hash, vault).plan(first_user)
    except Refused as exc:
        raise SignInError(f"sign-in of {user_hash} refused: {exc.reason}; nothing was changed",
                          exc.path, exc.err) from None


def sign_in(host: Host, user_hash: str, *, first_user: bool | None = None,
            fail_at: int | None = None, vault: str = "dir") -> SessionResult:
    """Plan and apply a sign-in; SignInError after a rollback (``SignInPlan.apply``)."""
    plan = plan_sign_in(host, user_hash, first_user=first_user, vault=vault)
    return plan.apply(host, fail_at=fail_at)
