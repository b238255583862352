"""Sign-out, the cryptohome side (plan layer): :func:`plan_sign_out` reads the Host,
:meth:`SignOutPlan.apply` runs the steps on it, best effort.

Every mount of the user found in mountinfo (vault and below, the home binds,
``/home/chronos/user`` when it is this user's, the store binds and anything mounted below them)
is unmounted in reverse mount order with ``ForceUmount`` (plain umount, lazy detach on EBUSY,
reported), as ``Mounter::UnmountAll`` pops its stack (chromeos-facts.md §2 "Unmount at
sign-out"); then the empty mount points are removed (the original leaves the per-user targets,
§7 item 1). The user's data stays in the vault.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import ClassVar

from daemonstore import mountinfo, paths
from daemonstore.errors import errname
from daemonstore.host import Host
from daemonstore.ops import ForceUmount, Op, RemoveDir, op_path
from daemonstore.session.activity import record_activity
from daemonstore.session.apply import plan_lines
from daemonstore.session.detach import detach_found, left_note
from daemonstore.session.queries import existing_dir, stray_mounts, user_mounts
from daemonstore.session.results import SignOutResult

__all__ = ["SignOutPlan", "plan_sign_out", "sign_out"]


@dataclass(frozen=True)
class SignOutPlan:
    """What a sign-out will do: ``ForceUmount`` steps (LIFO), then ``RemoveDir`` steps."""

    user_hash: str
    steps: tuple[Op, ...]
    signed_in: bool
    warnings: tuple[str, ...] = ()
    #: write the activity record when the user was signed in (activity.py; not for a guest)
    records_activity: ClassVar[bool] = True

    def header(self) -> str:
        return f"sign-out of {self.user_hash}: {len(self.steps)} steps"

    def to_lines(self, *, numbered: bool = False) -> list[str]:
        return plan_lines(self.header(), self.warnings, self.steps, numbered)

    def apply(self, host: Host) -> SignOutResult:
        """Best effort, like ``UnmountAll``: every step is tried; problems become warnings."""
        result = SignOutResult(self.user_hash, warnings=list(self.warnings))
        for op in self.steps:
            if isinstance(op, ForceUmount):
                _unmount(host, op, result)
            else:
                _remove(host, op, result)
        note = (record_activity(host, self.user_hash)  # activity.py
                if self.signed_in and self.records_activity else None)
        result.warnings += [note] if note else []  # (last seen now: the cleanup's LRU order)
        return result


def _remove(host: Host, op: Op, result: SignOutResult) -> None:
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
        return
    result.removed_dirs.append(op_path(op))


def _unmount(host: Host, op: ForceUmount, result: SignOutResult) -> None:
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


def plan_sign_out(host: Host, user_hash: str) -> SignOutPlan:
    """Plan user ``user_hash``'s sign-out (pure): unmount every mount of the user in reverse
    mount order, then remove the empty mount points (store targets, home mount points)."""
    paths.check_hash(user_hash)
    entries = mountinfo.parse(host.mountinfo())
    mine = user_mounts(entries, user_hash)
    signed_in = any(e.mount_point == paths.vault_mount(user_hash) for e in entries)
    warnings = [] if signed_in else [f"user {user_hash} is not signed in (no mount at "
                                     f"{paths.vault_mount(user_hash)})"]
    steps: list[Op] = [_umount_step(e, user_hash) for e in reversed(mine)]
    # mounts found by identity away from their place (queries.stray_mounts): once unmounted
    # here, their mount points are removed too, which detaches the copies other namespaces
    # hold on those dentries (a daemon's slave of a store renamed to <H>.keep)
    strays = [e.mount_point for e in stray_mounts(entries, user_hash)]
    if strays:
        warnings.append("mounts of the user found away from where sign-in puts them (a "
                        "mount point swapped or renamed): " + ", ".join(strays))
    steps += [RemoveDir(p) for p in dict.fromkeys(reversed(strays))]
    for base in reversed(paths.STORE_BASES):
        try:
            daemons = host.listdir(base, safe=True)
        except OSError:
            continue
        for name in daemons:
            target = f"{base}/{name}/{user_hash}"
            if existing_dir(host, target):
                steps.append(RemoveDir(target))
    for home in (paths.home_root(user_hash), paths.home_user(user_hash),
                 paths.home_chronos(user_hash)):
        if existing_dir(host, home):
            steps.append(RemoveDir(home))
    # The mount points this sign-out empties that outlive the user's own: the vault's and, when
    # it showed this user, /home/chronos/user. A daemon namespace made during the session
    # (``-v -Kslave``) holds copies of them that no umount propagates to (the vault bind is
    # private, /home/chronos/user a slave); rmdir detaches every mount on a dentry in every
    # namespace (__detach_mounts(), lazily), so the user's files are reachable nowhere once
    # they are signed out. The original leaves them and has ui-post-stop kill such daemons
    # (process_killer --mount_holders, chromeos-facts.md §2). Sign-in makes both again.
    # A sign-in cut short may have made them without mounting: not mounted, they go as well.
    owned, mounted = {e.mount_point for e in mine}, {e.mount_point for e in entries}
    steps += [RemoveDir(p) for p in (paths.vault_mount(user_hash), paths.HOME_CHRONOS_USER)
              if p in owned or (p not in mounted and existing_dir(host, p))]
    return SignOutPlan(user_hash, tuple(steps), signed_in, tuple(warnings))


def _umount_step(entry: mountinfo.MountInfoEntry, user_hash: str) -> ForceUmount:
    """ForceUmount, or for a loop vault (ext4 from /dev/loopN on the vault mount point) the
    umount followed by LOOP_CLR_FD of its device."""
    if (entry.mount_point == paths.vault_mount(user_hash) and entry.fstype == "ext4"
            and entry.source.startswith("/dev/loop")):
        from daemonstore.session import loop_vault  # only where a loop vault is in use

        return loop_vault.LoopVaultUmount(entry.mount_point, image=paths.vault_image(user_hash))
    return ForceUmount(entry.mount_point)


def sign_out(host: Host, user_hash: str) -> SignOutResult:
    """Plan and apply a sign-out. Never raises for a mount problem (see ``failed`` and
    ``warnings``); ``BadName`` for a malformed hash. The user's data stays in the vault.

    Then whatever of the user is still mounted in this namespace, found by identity, is
    detached (session.detach): a mount point renamed from another namespace between the plan
    and its umount is found again at its new place."""
    result = plan_sign_out(host, user_hash).apply(host)
    try:
        done, left = detach_found(host, lambda entries: user_mounts(entries, user_hash))
    except OSError as exc:
        result.warnings.append(f"could not look for mounts of the user left behind: "
                               f"{exc.strerror or errname(exc.errno)}")
        return result
    result.lazily_detached += done
    left = [p for p in left if p not in result.failed]  # those are reported already
    result.warnings += [f"{p} was still mounted after the umounts (moved meanwhile): "
                        "detached" for p in done] + [left_note(p) for p in left]
    result.failed += left
    return result
