"""Chrome's mount namespace ``mnt_chrome``, where the guest's ephemeral vault is mounted (plan
layer: the plan is a pure record, ``apply`` only calls the Host given).

It is made as ``brillo::MountNamespace::Create`` makes it for session_manager
(docs/chromeos.md §2.6): ``unshare(CLONE_NEWNS)`` with *no*
propagation change, the child's ``/proc/<pid>/ns/mnt`` bound onto ``/run/namespaces/mnt_chrome``,
the bind remounted nosuid,nodev,noexec. With the propagation unchanged, its copies of the shared
stores ``/run/daemon-store{,-cache}/<d>`` are peers of the root namespace's, so a bind made under
them inside mnt_chrome reaches the root namespace and the daemons' slave copies ("Why
daemon-store still works from mnt_chrome"; commits cc17be02bc, 2df581a4b0), while a bind under a
private path (``/home/root/<H>``) does not leave it (crbug 1069501).

A file that is already a pinned mount namespace is opened (``open_pinned_namespace``), never
removed: it belongs to session_manager (ui-post-stop unmounts it), so one namespace serves every
guest session of the host. session_manager makes it before anyone signs in; made later, the
unshare would copy the signed-in users' vaults and home binds, whose private parents keep those
copies after their sign-out, so they are detached inside the new namespace at once
(:class:`DetachCopy`; their peer store binds are left to propagation).
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from dataclasses import dataclass

from daemonstore import mountinfo, paths
from daemonstore.host import Host
from daemonstore.mounttree import MountView
from daemonstore.ops import MakeDir, NewNamespace, Op, RemountBind, UseNamespace, quote
from daemonstore.session.queries import mounted_users
from daemonstore.session.results import SignInError

__all__ = [
    "CHROME_NS",
    "ChromeNamespacePlan",
    "chrome_namespace",
    "ensure_chrome_namespace",
    "guest_refused",
    "plan_chrome_namespace",
    "setup_hint",
]

#: the name the host knows Chrome's namespace by (``mnt_chrome-2`` ... if that name is taken by
#: an older namespace whose file was unmounted meanwhile)
CHROME_NS = "mnt_chrome"
RUN_NAMESPACES = "/run/namespaces"
#: MountNamespace::Create remounts the ns file bind MS_NOSUID|MS_NODEV|MS_NOEXEC
PIN_FLAGS = frozenset({"nosuid", "nodev", "noexec"})

#: why pinning a just-made namespace can be EINVAL on the kernel: mnt_ns_loop() wants the
#: pinned namespace's id larger than the caller's, and Linux 6.18 allocates namespace ids in
#: per-CPU batches (a later namespace made on another CPU may get a smaller id).
#: run_in_sandbox keeps its child on one CPU for this reason.
_PIN_HINT = (" (the kernel pins only a namespace whose id is larger than the caller's "
             "namespace's; namespace ids come in per-CPU batches, so create the namespaces "
             "from a process kept on one CPU, e.g. under taskset -c 0)")


def setup_hint(op: Op, exc: OSError) -> str:
    """What to add to the message when step ``op`` of reaching mnt_chrome failed with ``exc``."""
    return _PIN_HINT if isinstance(op, PinNamespace) and exc.errno == errno.EINVAL else ""


def guest_refused(reason: str, path: str, err: int | None) -> SignInError:
    """A guest sign-in refused at plan time (here, or by the guest's planner)."""
    return SignInError(f"guest sign-in refused: {reason}; nothing was changed", path, err)


# ---- plan steps --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreateFile(Op):
    """``touch P`` of a missing file (the ns file's mount point); planned only when missing."""

    path: str
    mode: int = 0o644

    def apply(self, host: Host) -> None:
        host.write_file(self.path, b"", mode=self.mode, safe=True)

    def to_line(self) -> str:
        return f"touch {quote(self.path)}"


@dataclass(frozen=True)
class PinNamespace(Op):
    """``mount --bind /proc/<pid>/ns/mnt P``: keep namespace ``name`` alive and enterable."""

    name: str
    path: str

    def apply(self, host: Host) -> None:
        host.pin_namespace(self.name, self.path)

    def to_line(self) -> str:
        return f"mount --bind /proc/<pid in {self.name}>/ns/mnt {quote(self.path)}"


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
        return f"umount -l {quote(self.path)}  # a signed-in user's mount, copied by the unshare"


# ---- the namespace -----------------------------------------------------------------------------


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
    top = MountView.from_host(host).top(path)
    return top is not None and top.fstype == "nsfs"


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
        raise guest_refused(f"cannot inspect {path}: {exc.strerror}", path, exc.errno) from None
    if st is not None and not st.is_file:
        raise guest_refused(f"{path} is not a regular file (a symlink or directory there is "
                            "never used as Chrome's namespace)", path, errno.EINVAL)
    if st is not None and _pinned(host, path):
        try:
            return ChromeNamespacePlan(_open_pinned(host, path), existed=True)
        except OSError as exc:
            raise guest_refused(f"{path} is bound but is not a mount namespace file "
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
