"""Sign-out, the cryptohome side (plan layer): :func:`plan_sign_out` reads the Host,
:meth:`SignOutPlan.apply` runs the steps on it, best effort.

Every mount of the user found in mountinfo (vault and below, the home binds,
``/home/chronos/user`` when it is this user's, the store binds and anything mounted below them)
is unmounted in reverse mount order with ``ForceUmount`` (plain umount, lazy detach on EBUSY,
reported), as ``Mounter::UnmountAll`` pops its stack (docs/chromeos.md §2.7); then the emptied
home and vault mount points are removed (a hardening measure, below). The user's data stays in
the vault.

The per-user store targets ``/run/daemon-store{,-cache}/<d>/<H>`` stay, empty, as on ChromeOS
(cryptohome never removes them, docs/chromeos.md §2.3 step 5, §7 item 1): a daemon that writes
wherever the directory exists writes into the tmpfs after sign-out, here as on a device, so its
tests catch it. A daemon asks whether the path is *mounted* (``store_check``). Each one this
sign-out unmounted is *renewed* (``RenewDir``: rmdir, mkdir root 0700 again): the rmdir detaches
the copies of the store bind that no umount reaches (a private namespace a root daemon made
mid-session), in every namespace, as for the vault's mount point below; one that holds files
(written while the user was not signed in) is reported and kept. ``remove_store_targets=True``
removes them instead (our tidy option; the next sign-in makes them again). The targets live in
root-owned ``/run``, so they carry no mount-point guard (ops/guard.py: only mount points in
chronos-owned ``/home/chronos`` do); the renewal is a plain rmdir.

A busy store (a daemon holding a file in it): every reference that pins the user's mounts is
reported first (session/holders.py); with ``kill_holders`` the holders are made to let go before
the umounts (``process_killer --mount_holders``, run by ``ui-post-stop``); what stays busy is
flushed (``syncfs``) and lazily detached, and reported with its holders.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from daemonstore import mountinfo, paths
from daemonstore.errors import errname
from daemonstore.host import Host
from daemonstore.ops import ForceUmount, Op, RemoveDir, RenewDir, op_path
from daemonstore.session.activity import record_activity
from daemonstore.session.apply import plan_lines
from daemonstore.session.detach import detach_found, left_note
from daemonstore.session.holders import end_pins, user_pins
from daemonstore.session.plan import TARGET_MODE
from daemonstore.session.queries import existing_dir, stray_mounts, user_mounts
from daemonstore.session.results import SignOutResult

__all__ = ["SignOutPlan", "plan_sign_out", "sign_out", "store_targets"]


@dataclass(frozen=True)
class SignOutPlan:
    """What a sign-out will do: ``ForceUmount`` steps (LIFO), then ``RemoveDir`` steps (and a
    ``RenewDir`` for each store target that stays)."""

    user_hash: str
    steps: tuple[Op, ...]
    signed_in: bool
    warnings: tuple[str, ...] = ()
    #: end the holders of the user's mounts first (``process_killer --mount_holders``)
    kill_holders: bool = False
    #: write the activity record when the user was signed in (activity.py; not for a guest)
    records_activity: ClassVar[bool] = True

    def header(self) -> str:
        first = ", ending the holders of its mounts first" if self.kill_holders else ""
        return f"sign-out of {self.user_hash}{first}: {len(self.steps)} steps"

    def to_lines(self, *, numbered: bool = False) -> list[str]:
        return plan_lines(self.header(), self.warnings, self.steps, numbered)

    def apply(self, host: Host) -> SignOutResult:
        """Best effort, like ``UnmountAll``: every step is tried; problems become warnings."""
        result = SignOutResult(self.user_hash, warnings=list(self.warnings))
        if self.kill_holders:
            _handle_holders(host, self, result)
        for op in self.steps:
            if isinstance(op, ForceUmount):
                _unmount(host, op, result, lambda h: _handle_holders(h, self, result))
            elif isinstance(op, RenewDir):
                _renew(host, op, result)
            else:
                _remove(host, op, result)
        note = (record_activity(host, self.user_hash)  # activity.py
                if self.signed_in and self.records_activity else None)
        result.warnings += [note] if note else []  # (last seen now: the cleanup's LRU order)
        return result


def _handle_holders(host: Host, plan: SignOutPlan, result: SignOutResult) -> None:
    """Report who keeps the user's mounts busy; with ``kill_holders`` end them. Runs once:
    before the first umount with ``kill_holders`` (as ui-post-stop runs process_killer before
    cryptohome unmounts), else at the first EBUSY, while the busy mount is still there (so an
    ordinary sign-out does not scan /proc)."""
    if not paths.is_hash(plan.user_hash) or result.holders_checked:
        return  # a repair's clean-up plan of leftovers ("-"): no user to find
    result.holders_checked = True
    pins = user_pins(host, plan.user_hash)
    result.holders = [p.describe() for p in pins]
    if not pins:
        return
    result.warnings.append(f"{len(pins)} reference(s) keep the user's mounts busy: "
                           + "; ".join(result.holders))
    if plan.kill_holders:
        result.ended, problems = end_pins(host, pins)
        result.warnings += problems
        if result.ended:
            result.warnings.append("ended before unmounting (process_killer --mount_holders): "
                                   + ", ".join(result.ended))


def _remove(host: Host, op: Op, result: SignOutResult) -> None:
    try:
        op.apply(host)
    except OSError as exc:
        _left(op_path(op), exc, result)
        return
    result.removed_dirs.append(op_path(op))


def _left(path: str, exc: OSError, result: SignOutResult) -> None:
    """Report a directory a removal left in place (nothing to say if it was gone already)."""
    if exc.errno == errno.ENOTEMPTY:
        result.warnings.append(f"left {path} in place: it holds files written while the user "
                               "was not signed in (writes before mount); never deleted")
    elif exc.errno != errno.ENOENT:
        result.warnings.append(f"left {path} in place: {exc.strerror or errname(exc.errno)}")


def _renew(host: Host, op: RenewDir, result: SignOutResult) -> None:
    """The target stays (module docstring): rmdir it (ENOTEMPTY: kept, reported), make it
    again. A plain rmdir, not RemoveDir's: a target in root-owned /run carries no mount-point
    guard (ops/guard.py), so an entry in it is content, never taken away."""
    try:
        op.remove(host)
    except OSError as exc:
        _left(op.path, exc, result)
        if exc.errno != errno.ENOENT:
            return
    try:
        op.make(host)
    except OSError as exc:
        if exc.errno != errno.EEXIST:  # a root daemon made it meanwhile: it is there
            result.warnings.append(f"could not make {op.path} again after removing it: "
                                   f"{exc.strerror or errname(exc.errno)}")


def _unmount(host: Host, op: ForceUmount, result: SignOutResult,
             on_busy: Callable[[Host], object]) -> None:
    try:
        lazy = op.unmount(host, on_busy)
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
        result.warnings.append(f"{op.target} was busy (EBUSY): flushed (syncfs) and lazily "
                               "detached (MNT_DETACH); it is gone from the mount table and is "
                               "freed when its last user lets go")
    else:
        result.unmounted.append(op.target)


def plan_sign_out(host: Host, user_hash: str, *, kill_holders: bool = False,
                  remove_store_targets: bool = False) -> SignOutPlan:
    """Plan user ``user_hash``'s sign-out (pure): unmount every mount of the user in reverse
    mount order, then remove the empty home and vault mount points; the empty store targets
    too only with ``remove_store_targets`` (ChromeOS leaves them: module docstring)."""
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
    if remove_store_targets:
        steps += [RemoveDir(t) for t in store_targets(host, user_hash)]
    elif mine:  # something is unmounted: renew the targets (module docstring); else nothing
        steps += [RenewDir(t, TARGET_MODE) for t in store_targets(host, user_hash)]
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
    # (process_killer --mount_holders, docs/chromeos.md §2.7). Sign-in makes both again.
    # A sign-in cut short may have made them without mounting: not mounted, they go as well.
    owned, mounted = {e.mount_point for e in mine}, {e.mount_point for e in entries}
    steps += [RemoveDir(p) for p in (paths.vault_mount(user_hash), paths.HOME_CHRONOS_USER)
              if p in owned or (p not in mounted and existing_dir(host, p))]
    return SignOutPlan(user_hash, tuple(steps), signed_in, tuple(warnings),
                       kill_holders=kill_holders)


def store_targets(host: Host, user_hash: str) -> list[str]:
    """The user's per-user store targets that exist as directories, ``-cache`` first (the
    order a sign-out removes them in)."""
    found = []
    for base in reversed(paths.STORE_BASES):
        try:
            daemons = host.listdir(base, safe=True)
        except OSError:
            continue
        found += [t for name in daemons if existing_dir(host, t := f"{base}/{name}/{user_hash}")]
    return found


def _umount_step(entry: mountinfo.MountInfoEntry, user_hash: str) -> ForceUmount:
    """ForceUmount, or for a loop vault (ext4 from /dev/loopN on the vault mount point) the
    umount followed by LOOP_CLR_FD of its device."""
    if (entry.mount_point == paths.vault_mount(user_hash) and entry.fstype == "ext4"
            and entry.source.startswith("/dev/loop")):
        from daemonstore.session import loop_vault  # only where a loop vault is in use

        return loop_vault.LoopVaultUmount(entry.mount_point, image=paths.vault_image(user_hash))
    return ForceUmount(entry.mount_point)


def sign_out(host: Host, user_hash: str, *, kill_holders: bool = False,
             remove_store_targets: bool = False) -> SignOutResult:
    """Plan and apply a sign-out. Never raises for a mount problem (see ``failed`` and
    ``warnings``); ``BadName`` for a malformed hash. The user's data stays in the vault; the
    empty store targets stay unless ``remove_store_targets`` (module docstring).

    Then whatever of the user is still mounted in this namespace, found by identity, is
    detached (session.detach): a mount point renamed from another namespace between the plan
    and its umount is found again at its new place. ``kill_holders``: end whatever keeps the
    user's mounts busy first (holders.py)."""
    result = plan_sign_out(host, user_hash, kill_holders=kill_holders,
                           remove_store_targets=remove_store_targets).apply(host)
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
