"""Guest sessions, the cryptohome side (plan layer: plans are pure records, ``apply`` only calls
the Host given): the ephemeral vault, mounted inside Chrome's namespace
(:mod:`~daemonstore.session.mnt_chrome`).

Public API::

    plan_sign_in_guest(host, user_hash, *, first_user=None) -> GuestSignInPlan
    sign_in_guest(host, user_hash, *, first_user=None, fail_at=None) -> SessionResult
        raises session.SignInError after rolling back (inside mnt_chrome)
    plan_sign_out_guest(host, user_hash, *, remove_store_targets=False) -> GuestSignOutPlan
    sign_out_guest(host, user_hash, *, remove_store_targets=False) -> SignOutResult
                                                              best effort, no raise
    mounted_guests(host) -> list[str]                         hashes with an ephemeral vault

The guest's hash is ``paths.sanitize_username(salt, paths.GUEST_USER)`` (``"$guest"``); callers
(cryptohome_sim, ``daemonstore.world``) hash it with their salt, as for any user.

**Sign-in** (``Mounter::PerformEphemeralMount``, in its order): reach mnt_chrome (made first if
needed) and enter it; remove leftovers of an earlier guest (below); the home mount points; a
tmpfs at ``/run/cryptohome/ephemeral_mount/<H>`` standing in for the ext4 loop device
(nosuid,nodev,noexec,nosymfollow like every ``MountAndPush``); then the vault directories, home
binds and store binds exactly as for a regular user (the session planner, with the tmpfs as the
vault). A failure part-way rolls back in LIFO order inside mnt_chrome, the tmpfs included, with
``fail_at`` as for a regular sign-in.

**Leftovers** (``CleanUpGuestDaemonDirectories``, crbug.com/1069501): the original deletes what
daemons wrote under the unmounted ``/home/root/<guest hash>``. Here *anything* found inside an
unmounted guest mount point (``/home/{root,user}/<H>``, ``/home/chronos/u-<H>``, the ephemeral
mount point, every ``/run/daemon-store[-cache]/<d>/<H>``) is removed first: a guest's data must
never reach the next guest. Removal never follows a symlink and never crosses a mount
(``RemoveTree``).

**Sign-out** (``Mounter::UnmountAll``): inside mnt_chrome every mount of the guest is unmounted
in reverse mount order (lazy detach on EBUSY); the store umounts propagate to the root namespace
and the daemons' copies; the tmpfs goes last, and the guest's data with it. Then the home and
ephemeral mount points are removed with whatever was written below them meanwhile. The store
targets ``/run/daemon-store{,-cache}/<d>/<H>`` stay (renewed, as a user's: session/sign_out.py),
as after any sign-out on ChromeOS; the next guest sign-in empties them first (leftovers, above),
so nothing a daemon writes there after sign-out reaches the next guest's store.
``remove_store_targets=True`` removes them at sign-out, with anything written below them.

Where the original differs: when mnt_chrome cannot be created or entered, session_manager carries
on and the helper mounts in the root namespace; here the guest sign-in fails instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from daemonstore import mountinfo, paths
from daemonstore.host import Host, Stat, in_namespace
from daemonstore.ops import ForceUmount, Op, RemoveTree, RenewDir, quote
from daemonstore.session.apply import SignInPlan
from daemonstore.session.mnt_chrome import (
    CHROME_NS,
    chrome_namespace,
    guest_refused,
    plan_chrome_namespace,
    setup_hint,
)
from daemonstore.session.plan import ROOT_ID, TARGET_MODE, VAULT_DIRS, Refused, SignInPlanner
from daemonstore.session.queries import existing_dir, user_mounts
from daemonstore.session.results import SessionResult, SignInError, SignOutResult
from daemonstore.session.sign_out import SignOutPlan, store_targets

__all__ = [
    "GuestSignInPlan",
    "GuestSignOutPlan",
    "mounted_guests",
    "plan_sign_in_guest",
    "plan_sign_out_guest",
    "sign_in_guest",
    "sign_out_guest",
]

RUN_CRYPTOHOME = "/run/cryptohome"
#: the ephemeral vault: MountAndPush's flags (kDefaultMountFlags | MS_NOSYMFOLLOW); the tmpfs
#: root gets an ext4 root's mode (a bare tmpfs root would be 1777)
EPHEMERAL_SOURCE = "ephemeral"
EPHEMERAL_FLAGS = frozenset({"nosuid", "nodev", "noexec", "nosymfollow"})
EPHEMERAL_DATA = "mode=0755"
#: /run/cryptohome and ephemeral_mount are root-only (cryptohome's tmpfiles.d)
RUN_CRYPTOHOME_MODE = 0o700
EPHEMERAL_POINT_MODE = 0o700


# ---- plan steps --------------------------------------------------------------------------------


@dataclass(frozen=True)
class MountEphemeral(Op):
    """``mount -t tmpfs -o FLAGS,DATA SOURCE P``: the ephemeral vault (PerformEphemeralMount's
    ext4 loop device, as a tmpfs). Undone -- and the guest's data dropped -- by umount."""

    source: str
    target: str
    flags: frozenset[str] = EPHEMERAL_FLAGS
    data: str = EPHEMERAL_DATA

    def apply(self, host: Host) -> None:
        host.mount_tmpfs(self.source, self.target, flags=self.flags, data=self.data, safe=True)

    def undo(self) -> Op | None:
        return ForceUmount(self.target)

    def to_line(self) -> str:
        opts = ",".join([*sorted(self.flags), *([self.data] if self.data else [])])
        return f"mount -t tmpfs -o {opts} {quote(self.source)} {quote(self.target)}"


# ---- sign-in -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class GuestSignInPlan(SignInPlan):
    """A guest sign-in: ``setup`` reaches mnt_chrome (in the current namespace), then ``steps``
    run inside namespace ``namespace``. ``fail_at`` indexes ``steps``."""

    namespace: str = CHROME_NS
    setup: tuple[Op, ...] = ()
    records_activity: ClassVar[bool] = False  # no /home/.shadow/<H> to keep the record in

    def header(self) -> str:
        return (f"guest sign-in of {self.user_hash} inside {self.namespace} "
                f"({paths.ephemeral_mount(self.user_hash)} is a tmpfs): "
                f"{len(self.steps)} steps, {len(self.stores)} stores")

    def to_lines(self, *, numbered: bool = False) -> list[str]:
        head = [f"# setup, in the current namespace: {op.to_line()}" for op in self.setup]
        return head + super().to_lines(numbered=numbered)

    def apply(self, host: Host, *, fail_at: int | None = None) -> SessionResult:
        """Set up mnt_chrome from the current namespace (which the setup comes back to, and
        so does a failure), then sign in inside it."""
        with in_namespace(host, host.current_namespace()):
            self.set_up(host)
        with in_namespace(host, self.namespace):
            return super().apply(host, fail_at=fail_at)

    def identity_vault_mount(self) -> str | None:
        return paths.ephemeral_mount(self.user_hash)

    def set_up(self, host: Host) -> None:
        """Run ``setup`` (create and pin mnt_chrome); SignInError if a step fails."""
        for op in self.setup:
            try:
                op.apply(host)
            except OSError as exc:
                raise SignInError(
                    f"guest sign-in of {self.user_hash} failed: cannot set up "
                    f"{paths.MNT_CHROME} ({op.to_line()}): {exc.strerror}"
                    f"{setup_hint(op, exc)}; nothing was mounted for the guest",
                    paths.MNT_CHROME, exc.errno) from exc


class _GuestPlanner(SignInPlanner):
    """session's planner with the ephemeral tmpfs as the vault (it starts empty, so everything
    inside it is planned as missing) and the leftovers removed first."""

    def __init__(self, host: Host, user_hash: str) -> None:
        super().__init__(host, user_hash)
        self.vault_mount = paths.ephemeral_mount(user_hash)
        self.vault = self.vault_mount  # no backing storage: nothing persists

    def inspect(self, path: str) -> Stat | None:
        if path.startswith(self.vault_mount + "/"):
            return None  # inside the fresh tmpfs: nothing exists yet
        return super().inspect(path)

    def plan(self, first_user: bool | None) -> SignInPlan:
        if self.vault_mount not in self.mount_points:
            self.plan_leftovers()
        return super().plan(first_user)

    def leftover_points(self) -> list[str]:
        h = self.user_hash
        found = [paths.home_root(h), paths.home_user(h), paths.home_chronos(h), self.vault_mount]
        for base in paths.STORE_BASES:
            try:
                daemons = self.host.listdir(base, safe=True)
            except OSError:
                continue
            found += [f"{base}/{d}/{h}" for d in daemons]
        return found

    def plan_leftovers(self) -> None:
        for path in self.leftover_points():
            if path in self.mount_points or not existing_dir(self.host, path):
                continue  # a mount point is refused later (require_unmounted()); so is a file
            try:
                if not self.host.listdir(path, safe=True):
                    continue
            except OSError:
                continue
            self.steps.append(RemoveTree(path, keep_top=True))
            self.warnings.append(f"{path} held leftovers of an earlier guest session: removed "
                                 "(CleanUpGuestDaemonDirectories)")

    def plan_vault(self) -> None:
        # like the home parents: made when missing, removed again by a rollback
        for parent in (RUN_CRYPTOHOME, paths.EPHEMERAL_MOUNT):
            self.ensure_dir(parent, RUN_CRYPTOHOME_MODE, ROOT_ID, ROOT_ID, target=True,
                            repair=False)
        self.ensure_dir(self.vault_mount, EPHEMERAL_POINT_MODE, ROOT_ID, ROOT_ID, target=True,
                        repair=False)
        self.steps.append(MountEphemeral(EPHEMERAL_SOURCE, self.vault_mount))
        for name, mode, uid, gid in VAULT_DIRS:
            self.ensure_dir(f"{self.vault_mount}/{name}", mode, uid, gid)


def plan_sign_in_guest(host: Host, user_hash: str, *,
                       first_user: bool | None = None) -> GuestSignInPlan:
    """Plan the guest's sign-in (pure but for opening a pinned mnt_chrome). Planned on
    mnt_chrome's view; when mnt_chrome does not exist yet, on the current namespace's view,
    which the new namespace will be a copy of. SignInError when refused."""
    paths.check_hash(user_hash)
    chrome = plan_chrome_namespace(host)
    view = chrome.name if chrome.existed else host.current_namespace()
    try:
        with in_namespace(host, view):
            plan = _GuestPlanner(host, user_hash).plan(first_user)
    except Refused as exc:
        raise guest_refused(exc.reason, exc.path, exc.err) from None
    warnings = list(plan.warnings)
    if not chrome.existed:
        warnings.insert(0, f"{paths.MNT_CHROME} does not exist yet: it is created first, "
                        "as a copy of the current namespace")
    return GuestSignInPlan(plan.user_hash, plan.first_user, plan.steps, plan.stores,
                           tuple(warnings), namespace=chrome.name, setup=chrome.steps)


def sign_in_guest(host: Host, user_hash: str, *, first_user: bool | None = None,
                  fail_at: int | None = None) -> SessionResult:
    """Plan and apply the guest's sign-in (module docstring); SignInError after a rollback."""
    plan = plan_sign_in_guest(host, user_hash, first_user=first_user)
    return plan.apply(host, fail_at=fail_at)


# ---- sign-out ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class GuestSignOutPlan(SignOutPlan):
    """A guest sign-out: ``steps`` run inside ``namespace`` ("" when there is no mnt_chrome:
    nothing to do)."""

    namespace: str = field(default=CHROME_NS)
    records_activity: ClassVar[bool] = False  # no /home/.shadow/<H> to keep the record in

    def header(self) -> str:
        where = f"inside {self.namespace}" if self.namespace else "(no mnt_chrome)"
        return f"guest sign-out of {self.user_hash} {where}: {len(self.steps)} steps"

    def apply(self, host: Host) -> SignOutResult:
        if not self.namespace:
            return SignOutResult(self.user_hash, warnings=list(self.warnings))
        with in_namespace(host, self.namespace):
            return super().apply(host)


def plan_sign_out_guest(host: Host, user_hash: str, *,
                        remove_store_targets: bool = False) -> GuestSignOutPlan:
    """Plan the guest's sign-out (pure but for opening a pinned mnt_chrome): inside mnt_chrome,
    unmount every mount of the guest in reverse mount order (the tmpfs last), then remove the
    home and ephemeral mount points and anything below them; the store targets too only with
    ``remove_store_targets`` (module docstring)."""
    paths.check_hash(user_hash)
    ns = chrome_namespace(host)
    if ns is None:
        return GuestSignOutPlan(user_hash, (), False,
                                (f"{paths.MNT_CHROME} is not a mount namespace: no guest is "
                                 "signed in",), namespace="")
    ephemeral = paths.ephemeral_mount(user_hash)
    with in_namespace(host, ns):
        entries = mountinfo.parse(host.mountinfo())
        mine = user_mounts(entries, user_hash, ephemeral)
        signed_in = any(e.mount_point == ephemeral for e in entries)
        steps: list[Op] = [ForceUmount(e.mount_point) for e in reversed(mine)]
        if remove_store_targets:
            steps += [RemoveTree(t) for t in store_targets(host, user_hash)]
        elif mine:  # renewed, as a user's (session/sign_out.py)
            steps += [RenewDir(t, TARGET_MODE) for t in store_targets(host, user_hash)]
        steps += [RemoveTree(p) for p in (paths.home_root(user_hash),
                                           paths.home_user(user_hash),
                                           paths.home_chronos(user_hash), ephemeral)
                  if existing_dir(host, p)]
    warnings = () if signed_in else (f"the guest {user_hash} is not signed in (no mount at "
                                     f"{ephemeral} in {ns})",)
    return GuestSignOutPlan(user_hash, tuple(steps), signed_in, warnings, namespace=ns)


def sign_out_guest(host: Host, user_hash: str, *,
                   remove_store_targets: bool = False) -> SignOutResult:
    """Plan and apply the guest's sign-out; never raises for a mount problem."""
    return plan_sign_out_guest(host, user_hash,
                               remove_store_targets=remove_store_targets).apply(host)


def mounted_guests(host: Host) -> list[str]:
    """Hashes with an ephemeral vault mounted in mnt_chrome, in mount order."""
    ns = chrome_namespace(host)
    if ns is None:
        return []
    prefix = paths.EPHEMERAL_MOUNT + "/"
    found: list[str] = []
    for e in mountinfo.parse(host.mountinfo(ns)):
        h = e.mount_point[len(prefix):] if e.mount_point.startswith(prefix) else ""
        if h and "/" not in h and h not in found:
            try:
                found.append(paths.check_hash(h))
            except paths.BadName:
                continue
    return found
