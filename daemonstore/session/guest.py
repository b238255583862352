"""Guest sessions, the cryptohome side: Chrome's mount namespace ``mnt_chrome`` and the ephemeral
vault mounted inside it (plan layer: plans are pure records, ``apply`` only calls the Host given;
runs on the model and, inside ``run_in_sandbox``, on the kernel).

Public API::

    plan_chrome_namespace(host) -> ChromeNamespacePlan        pure (opens a pinned file, see below)
    ensure_chrome_namespace(host) -> str                      the namespace's name in the host
    chrome_namespace(host) -> str | None                      open it if pinned, never create
    plan_sign_in_guest(host, user_hash, *, first_user=None) -> GuestSignInPlan
    sign_in_guest(host, user_hash, *, first_user=None, fail_at=None) -> SessionResult
        raises session.SignInError after rolling back (inside mnt_chrome)
    plan_sign_out_guest(host, user_hash) -> GuestSignOutPlan
    sign_out_guest(host, user_hash) -> SignOutResult          best effort, no raise
    mounted_guests(host) -> list[str]                         hashes with an ephemeral vault

The guest's hash is ``paths.sanitize_username(salt, paths.GUEST_USER)`` (``"$guest"``); callers
(cryptohome_sim, ``daemonstore.testing``) hash it with their salt, as for any user.

**mnt_chrome** (chromeos-facts.md §2, "Entering the mnt_chrome namespace"). session_manager
makes it with ``brillo::MountNamespace::Create``: a plain ``unshare(CLONE_NEWNS)`` with *no*
propagation change, then the parent binds the child's ``/proc/<pid>/ns/mnt`` onto
``/run/namespaces/mnt_chrome`` and remounts that bind nosuid,nodev,noexec. Here that is
``new_namespace(name)`` (propagation unchanged), back to the previous namespace, mkdir/touch,
``pin_namespace`` and the remount. Because the propagation is unchanged, mnt_chrome's copies of
the shared stores ``/run/daemon-store{,-cache}/<d>`` are **peers** of the root namespace's: a bind
made under them inside mnt_chrome propagates back to the root namespace and from there to the
daemons' slave copies ("Why daemon-store still works from mnt_chrome"; commits cc17be02bc,
2df581a4b0). A bind under a *private* path (``/home/root/<H>``) does not leave mnt_chrome -- the
reason daemons moved to daemon-store (crbug 1069501). If the file is already a pinned mount
namespace it is opened (``open_pinned_namespace``: an ``open(PATH)``, kept for a later setns).
It is never removed here: it belongs to session_manager (ui-post-stop unmounts it), so one
namespace serves every guest session of this host. session_manager makes it before anyone signs
in; made later (here: at the first guest sign-in, with regular users signed in) the unshare
would copy their vaults and home binds, whose private parents keep the copies after their
sign-out -- a loop vault would stay attached -- so those copies are detached inside the new
namespace at once (:class:`DetachCopy`; their peer store binds are left to propagation).

**Sign-in** (``Mounter::PerformEphemeralMount``, in its order): enter mnt_chrome (setns); remove
leftovers of an earlier guest (below); the home mount points (``EnsureUserMountPoints``); a tmpfs
at ``/run/cryptohome/ephemeral_mount/<H>`` standing in for the ext4 loop device
(nosuid,nodev,noexec,nosymfollow like every ``MountAndPush``); the vault directories ``root``
``root/.cache`` ``user`` (``CreateVaultDirectoryStructure``); ``MountHomesAndDaemonStores`` and
``MountDaemonStoreCacheDirectories`` exactly as for a regular user (``session``'s planner, with
the tmpfs as the vault: per-daemon ``root/<d>`` with the template's owner and mode, bound to
``/run/daemon-store[-cache]/<d>/<H>``); then back to the previous namespace. A failure part-way
rolls back in LIFO order inside mnt_chrome (the tmpfs is unmounted: nothing of the guest is
left), with ``fail_at`` as for a regular sign-in.

**Leftovers** (``CleanUpGuestDaemonDirectories``, crbug.com/1069501): the original deletes
``/home/root/<guest hash>/{session_manager,shill,shill_logs}``, data daemons wrote under the
unmounted mount point. Here *anything* found inside an unmounted guest mount point
(``/home/{root,user}/<H>``, ``/home/chronos/u-<H>``, the ephemeral mount point, every
``/run/daemon-store[-cache]/<d>/<H>``) is removed first: a guest's data must never reach the next
guest. Removal never follows a symlink and never crosses a mount (session_ops.RemoveTree).

**Sign-out** (``Mounter::UnmountAll``): inside mnt_chrome every mount of the guest is unmounted in
reverse mount order (ForceUmount: lazy detach on EBUSY); the store umounts propagate to the root
namespace and the daemons' copies; the tmpfs goes last, and the guest's data with it. Then the
mount points are removed with whatever was written below them meanwhile.

Where the original differs: when mnt_chrome cannot be created or entered, session_manager carries
on and the helper mounts in the root namespace; here the guest sign-in fails instead (a guest
session outside mnt_chrome is a different, undocumented arrangement).
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from dataclasses import dataclass, field
from shlex import quote as _q

from daemonstore import mountinfo, paths
from daemonstore.host import Host, Stat, in_namespace
from daemonstore.ops import (
    ForceUmount,
    MakeDir,
    NewNamespace,
    Op,
    RemountBind,
    RemoveTree,
    UseNamespace,
)
from daemonstore.session import (
    ROOT_ID,
    VAULT_DIRS,
    SessionResult,
    SignInError,
    SignInPlan,
    SignOutPlan,
    SignOutResult,
    _apply_sign_in,
    _apply_sign_out,
    _existing_dir,
    _lines,
    _Refused,
    _SignInPlanner,
    _user_mounts,
    mounted_users,
)

__all__ = [
    "CHROME_NS",
    "ChromeNamespacePlan",
    "GuestSignInPlan",
    "GuestSignOutPlan",
    "chrome_namespace",
    "ensure_chrome_namespace",
    "mounted_guests",
    "plan_chrome_namespace",
    "plan_sign_in_guest",
    "plan_sign_out_guest",
    "sign_in_guest",
    "sign_out_guest",
]

#: the name the host knows Chrome's namespace by (``mnt_chrome-2`` ... if that name is taken by
#: an older namespace whose file was unmounted meanwhile)
CHROME_NS = "mnt_chrome"
RUN_NAMESPACES = "/run/namespaces"
RUN_CRYPTOHOME = "/run/cryptohome"
#: MountNamespace::Create remounts the ns file bind MS_NOSUID|MS_NODEV|MS_NOEXEC
PIN_FLAGS = frozenset({"nosuid", "nodev", "noexec"})
#: the ephemeral vault: MountAndPush's flags (kDefaultMountFlags | MS_NOSYMFOLLOW); the tmpfs
#: root gets an ext4 root's mode (a bare tmpfs root would be 1777)
EPHEMERAL_SOURCE = "ephemeral"
EPHEMERAL_FLAGS = frozenset({"nosuid", "nodev", "noexec", "nosymfollow"})
EPHEMERAL_DATA = "mode=0755"
#: /run/cryptohome and ephemeral_mount are root-only (cryptohome's tmpfiles.d)
RUN_CRYPTOHOME_MODE = 0o700
EPHEMERAL_POINT_MODE = 0o700


#: why pinning a just-made namespace can be EINVAL on the kernel: mnt_ns_loop() wants the
#: pinned namespace's id larger than the caller's, and Linux 6.18 allocates namespace ids in
#: per-CPU batches (a later namespace made on another CPU may get a smaller id).
#: run_in_sandbox keeps its child on one CPU for this reason.
_PIN_HINT = (" (the kernel pins only a namespace whose id is larger than the caller's "
             "namespace's; namespace ids come in per-CPU batches, so create the namespaces "
             "from a process kept on one CPU, e.g. under taskset -c 0)")

# ---- plan steps --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreateFile(Op):
    """``touch P`` of a missing file (the ns file's mount point); planned only when missing."""

    path: str
    mode: int = 0o644

    def apply(self, host: Host) -> None:
        host.write_file(self.path, b"", mode=self.mode, safe=True)

    def to_line(self) -> str:
        return f"touch {_q(self.path)}"


@dataclass(frozen=True)
class PinNamespace(Op):
    """``mount --bind /proc/<pid>/ns/mnt P``: keep namespace ``name`` alive and enterable."""

    name: str
    path: str

    def apply(self, host: Host) -> None:
        host.pin_namespace(self.name, self.path)

    def to_line(self) -> str:
        return f"mount --bind /proc/<pid in {self.name}>/ns/mnt {_q(self.path)}"


@dataclass(frozen=True)
class DetachCopy(Op):
    """``umount -l P`` inside a just-made mnt_chrome, of its copy of a signed-in user's vault or
    home bind. session_manager makes mnt_chrome before anyone signs in; made later, it would
    keep these copies, and their parents there are private, so the user's sign-out in the root
    namespace would not reach them: the vault (a loop device, too) would stay mounted in
    mnt_chrome. The parent being private is also why detaching the copy does not propagate
    back. Already gone (EINVAL/ENOENT) is fine."""

    path: str

    def apply(self, host: Host) -> None:
        try:
            host.umount(self.path, detach=True, safe=True)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOENT):
                raise

    def to_line(self) -> str:
        return f"umount -l {_q(self.path)}  # a signed-in user's mount, copied by the unshare"


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
        return f"mount -t tmpfs -o {opts} {_q(self.source)} {_q(self.target)}"


# ---- mnt_chrome --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChromeNamespacePlan:
    """How to reach mnt_chrome: ``steps`` (run in the current namespace) create and pin it;
    none when it exists (``existed``: already opened under ``name``)."""

    name: str
    steps: tuple[Op, ...] = ()
    existed: bool = False

    def to_lines(self) -> list[str]:
        if self.existed:
            return [f"# {paths.MNT_CHROME} exists: setns into it (known as {self.name})"]
        return [f"# create {paths.MNT_CHROME} as session_manager does "
                "(MountNamespace::Create)"] + [op.to_line() for op in self.steps]

    def apply(self, host: Host) -> str:
        for op in self.steps:
            op.apply(host)
        return self.name


def _pinned(host: Host, path: str) -> bool:
    """Is an nsfs file bound at ``path`` (the top mount there) in the current namespace?"""
    tops = [e for e in mountinfo.parse(host.mountinfo()) if e.mount_point == path]
    return bool(tops) and tops[-1].fstype == "nsfs"


def _candidate_names() -> Iterator[str]:
    yield CHROME_NS
    n = 2
    while True:
        yield f"{CHROME_NS}-{n}"
        n += 1


def _open_pinned(host: Host, path: str) -> str:
    """Open the pinned file under the first name that is free or already means it."""
    for name in _candidate_names():
        try:
            host.open_pinned_namespace(path, name)
        except OSError as exc:
            if exc.errno == errno.EEXIST:  # that name is another (older) namespace
                continue
            raise
        return name
    raise AssertionError("unreachable")  # the candidates never end


def _refuse(reason: str, path: str, err: int | None) -> SignInError:
    return SignInError(f"guest sign-in refused: {reason}; nothing was changed", path, err)


def plan_chrome_namespace(host: Host) -> ChromeNamespacePlan:
    """Plan reaching mnt_chrome from the current namespace (the root namespace, where
    session_manager runs). Changes no mount; if the file is already pinned it is opened and
    registered in the host (``open(PATH)``). SignInError if something other than a regular
    file or a pinned namespace sits at the path (a symlink is never followed)."""
    path = paths.MNT_CHROME
    try:
        st = host.lstat(path, safe=True)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise _refuse(f"cannot inspect {path}: {exc.strerror}", path, exc.errno) from None
    if st is not None and not st.is_file:
        raise _refuse(f"{path} is not a regular file (a symlink or directory there is never "
                      "used as Chrome's namespace)", path, errno.EINVAL)
    if st is not None and _pinned(host, path):
        try:
            return ChromeNamespacePlan(_open_pinned(host, path), existed=True)
        except OSError as exc:
            raise _refuse(f"{path} is bound but is not a mount namespace file "
                          f"({exc.strerror})", path, exc.errno) from None
    taken = set(host.namespaces())
    name = next(n for n in _candidate_names() if n not in taken)
    steps: list[Op] = [NewNamespace(name)]
    steps += [DetachCopy(p) for p in _signed_in_copies(host)]
    steps.append(UseNamespace(host.current_namespace()))
    for directory in ("/run", RUN_NAMESPACES):
        if not host.exists(directory):
            steps.append(MakeDir(directory, 0o755))
    if st is None:
        steps.append(CreateFile(path))
    steps += [PinNamespace(name, path), RemountBind(path, PIN_FLAGS)]
    return ChromeNamespacePlan(name, tuple(steps))


def _signed_in_copies(host: Host) -> list[str]:
    """Mount points of the signed-in users' vaults and home binds in the current namespace
    (the new namespace copies them), newest first. Their store binds are left alone: those
    are peers, so the users' sign-outs remove them everywhere anyway."""
    entries = mountinfo.parse(host.mountinfo())
    points = [e.mount_point for e in entries]
    wanted: set[str] = {paths.HOME_CHRONOS_USER}
    for h in mounted_users(host):
        wanted |= {paths.vault_mount(h), paths.home_user(h), paths.home_root(h),
                   paths.home_chronos(h)}
    found: list[str] = []
    for point in reversed(points):
        if point in wanted and point not in found:
            found.append(point)
    return found


def ensure_chrome_namespace(host: Host) -> str:
    """Create mnt_chrome if it is not a pinned namespace file yet, else open it; its name."""
    return plan_chrome_namespace(host).apply(host)


def chrome_namespace(host: Host) -> str | None:
    """mnt_chrome's name if the file is a pinned namespace (opened now), else None."""
    try:
        if not host.lstat(paths.MNT_CHROME, safe=True).is_file:
            return None
        if not _pinned(host, paths.MNT_CHROME):
            return None
        return _open_pinned(host, paths.MNT_CHROME)
    except OSError:
        return None


# ---- sign-in -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class GuestSignInPlan(SignInPlan):
    """A guest sign-in: ``setup`` reaches mnt_chrome (in the current namespace), then ``steps``
    run inside namespace ``namespace``. ``fail_at`` indexes ``steps``."""

    namespace: str = CHROME_NS
    setup: tuple[Op, ...] = ()

    def to_lines(self, *, numbered: bool = False) -> list[str]:
        head = [f"# setup, in the current namespace: {op.to_line()}" for op in self.setup]
        body = _lines(f"guest sign-in of {self.user_hash} inside {self.namespace} "
                      f"({paths.ephemeral_mount(self.user_hash)} is a tmpfs): "
                      f"{len(self.steps)} steps, {len(self.stores)} stores",
                      self.warnings, self.steps, numbered)
        return head + body

    def apply(self, host: Host, *, fail_at: int | None = None) -> SessionResult:
        previous = host.current_namespace()
        try:
            for op in self.setup:
                try:
                    op.apply(host)
                except OSError as exc:
                    hint = _PIN_HINT if (isinstance(op, PinNamespace)
                                         and exc.errno == errno.EINVAL) else ""
                    raise SignInError(
                        f"guest sign-in of {self.user_hash} failed: cannot set up "
                        f"{paths.MNT_CHROME} ({op.to_line()}): {exc.strerror}{hint}; nothing "
                        "was mounted for the guest", paths.MNT_CHROME, exc.errno) from exc
            host.use_namespace(self.namespace)
            return _apply_sign_in(self, host, fail_at, record=False)
        finally:
            if host.current_namespace() != previous:
                host.use_namespace(previous)


class _GuestPlanner(_SignInPlanner):
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
        h = self.h
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
            if path in self.mount_points or not _existing_dir(self.host, path):
                continue  # a mount point is refused later (free()); a non-directory too
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
    except _Refused as exc:
        raise _refuse(exc.reason, exc.path, exc.err) from None
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

    def to_lines(self, *, numbered: bool = False) -> list[str]:
        where = f"inside {self.namespace}" if self.namespace else "(no mnt_chrome)"
        return _lines(f"guest sign-out of {self.user_hash} {where}: {len(self.steps)} steps",
                      self.warnings, self.steps, numbered)

    def apply(self, host: Host) -> SignOutResult:
        if not self.namespace:
            return SignOutResult(self.user_hash, warnings=list(self.warnings))
        with in_namespace(host, self.namespace):
            return _apply_sign_out(self, host, record=False)


def plan_sign_out_guest(host: Host, user_hash: str) -> GuestSignOutPlan:
    """Plan the guest's sign-out (pure but for opening a pinned mnt_chrome): inside mnt_chrome,
    unmount every mount of the guest in reverse mount order (the tmpfs last), then remove the
    mount points and anything below them."""
    paths.check_hash(user_hash)
    ns = chrome_namespace(host)
    if ns is None:
        return GuestSignOutPlan(user_hash, (), False,
                                (f"{paths.MNT_CHROME} is not a mount namespace: no guest is "
                                 "signed in",), namespace="")
    ephemeral = paths.ephemeral_mount(user_hash)
    with in_namespace(host, ns):
        entries = mountinfo.parse(host.mountinfo())
        mine = _user_mounts(entries, user_hash, ephemeral)
        signed_in = any(e.mount_point == ephemeral for e in entries)
        steps: list[Op] = [ForceUmount(e.mount_point) for e in reversed(mine)]
        for base in reversed(paths.STORE_BASES):
            try:
                daemons = host.listdir(base, safe=True)
            except OSError:
                continue
            steps += [RemoveTree(t) for d in daemons
                      if _existing_dir(host, t := f"{base}/{d}/{user_hash}")]
        steps += [RemoveTree(p) for p in (paths.home_root(user_hash),
                                           paths.home_user(user_hash),
                                           paths.home_chronos(user_hash), ephemeral)
                  if _existing_dir(host, p)]
    warnings = () if signed_in else (f"the guest {user_hash} is not signed in (no mount at "
                                     f"{ephemeral} in {ns})",)
    return GuestSignOutPlan(user_hash, tuple(steps), signed_in, warnings, namespace=ns)


def sign_out_guest(host: Host, user_hash: str) -> SignOutResult:
    """Plan and apply the guest's sign-out; never raises for a mount problem."""
    return plan_sign_out_guest(host, user_hash).apply(host)


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
