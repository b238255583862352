"""The session hook's one job, as a plan and its apply (plan layer: reads the Host, then runs
sign-in's own ops on it): make the mounts under ``/run/daemon-store{,-cache}`` agree with the
vaults that are mounted (docs/architecture.md §8).

* every user with an active session (``RetrieveActiveSessions``; all mounted users when no
  session list is given, e.g. ``--once``) whose vault is mounted at ``/home/.shadow/<H>/mount``
  gets the store binds that are missing or lack their flags:
  :func:`daemonstore.session.repair.plan_store_binds`, sign-in's steps (owner and mode copied
  from the template, ``MS_BIND`` then the remount adding nosuid,nodev,noexec,nosymfollow, every
  path opened without following a symlink) and its LIFO rollback. Where cryptohome made them
  already (ChromeOS does, in PreparePersistentVault) the plan is empty: nothing is bound twice.
  Only users with a session: a vault that is mounted but whose session has not started
  (cryptohome still signing in, making its own binds) or has stopped (ui-post-stop unmounting
  it, store binds first) must not be raced;
* the store binds of a user whose vault is no longer mounted are unmounted (reverse mount order,
  lazy detach on EBUSY, as sign-out's ``ForceUmount``); their empty targets stay, as cryptohome
  leaves them (docs/chromeos.md §7 item 1), renewed as sign-out renews them (rmdir, mkdir:
  session/sign_out.py); a guest's (its ephemeral vault lives in mnt_chrome, guest.py owns it)
  are left alone.

Each user is one action: a failure (refused or rolled back) is reported and the others go on.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from daemonstore import mountinfo, paths
from daemonstore.errors import DaemonStoreError
from daemonstore.host import Host
from daemonstore.ops import ForceUmount, Op, RenewDir
from daemonstore.session.apply import SignInPlan
from daemonstore.session.guest import mounted_guests
from daemonstore.session.plan import TARGET_MODE
from daemonstore.session.queries import existing_dir, mounted_users, store_user
from daemonstore.session.repair import plan_store_binds
from daemonstore.session.sign_out import SignOutPlan

__all__ = ["BIND", "UNBIND", "Action", "ConvergeReport", "converge", "plan_converge"]

BIND = "bind"
UNBIND = "unbind"


@dataclass(frozen=True)
class Action:
    """One user's change: ``bind`` (a SignInPlan of store binds) or ``unbind`` (a SignOutPlan
    of store umounts and target renewals)."""

    kind: str
    user_hash: str
    plan: SignInPlan | SignOutPlan

    def to_lines(self) -> list[str]:
        return [f"# {self.kind} {self.user_hash}", *(op.to_line() for op in self.plan.steps)]


@dataclass
class ConvergeReport:
    """What one pass did: a line per action (``done``), the users that failed (``failed``)."""

    done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


def _stale_users(host: Host, entries: list[mountinfo.MountInfoEntry]) -> list[str]:
    """Hashes that have store binds here but no mounted vault (nor a guest vault), in the order
    their first store bind appears."""
    keep = set(mounted_users(host))
    found: list[str] = []
    for e in entries:
        h = store_user(e.mount_point)
        if h is None or h in keep or h in found:
            continue
        try:
            found.append(paths.check_hash(h))
        except paths.BadName:
            continue  # not a user target: left alone
    if found:
        keep |= set(mounted_guests(host))
    return [h for h in found if h not in keep]


def _unbind_plan(host: Host, entries: list[mountinfo.MountInfoEntry],
                 user_hash: str) -> SignOutPlan:
    """Unmount the user's store binds; the empty targets stay, renewed as sign-out renews them
    (module docstring)."""
    mine = [e for e in entries if store_user(e.mount_point) == user_hash]
    steps: list[Op] = [ForceUmount(e.mount_point) for e in reversed(mine)]
    targets = {f"{base}/{e.mount_point[len(base) + 1:].split('/')[0]}/{user_hash}"
               for e in mine for base in paths.STORE_BASES
               if e.mount_point.startswith(base + "/")}
    steps += [RenewDir(t, TARGET_MODE) for t in sorted(targets) if existing_dir(host, t)]
    return SignOutPlan(user_hash, tuple(steps), False)


def plan_converge(host: Host, sessions: Collection[str] | None = None) -> list[Action]:
    """The actions that would make the store binds agree with the mounted vaults (pure);
    ``sessions``: the hashes with an active session, the only ones bound (None: every mounted
    user)."""
    entries = mountinfo.parse(host.mountinfo())
    actions = [Action(BIND, h, plan) for h in mounted_users(host)
               if (sessions is None or h in sessions)
               and (plan := plan_store_binds(host, h)).steps]
    actions += [Action(UNBIND, h, _unbind_plan(host, entries, h))
                for h in _stale_users(host, entries)]
    return actions


def converge(host: Host, log: Callable[[str], None] = lambda line: None, *,
             kinds: tuple[str, ...] = (BIND, UNBIND),
             sessions: Collection[str] | None = None) -> ConvergeReport:
    """Plan and apply, one user at a time; ``log`` gets one line per action. ``kinds``: which
    halves to carry out (both by default); ``sessions`` as :func:`plan_converge`."""
    report = ConvergeReport()
    try:
        actions = [a for a in plan_converge(host, sessions) if a.kind in kinds]
    except (OSError, DaemonStoreError) as exc:
        report.failed.append("*")
        log(f"cannot read the mounts: {exc}")
        return report
    for action in actions:
        line = _apply(host, action)
        (report.failed if line.startswith("failed") else report.done).append(line)
        log(line)
    return report


def _apply(host: Host, action: Action) -> str:
    h = action.user_hash
    if isinstance(action.plan, SignInPlan):
        try:
            result = action.plan.apply(host)
        except (OSError, DaemonStoreError) as exc:  # SignInError: rolled back already
            return f"failed to bind the stores of {h}: {exc}"
        if not result.stores:
            return f"remounted the store binds of {h} with their flags"
        return f"bound {len(result.stores)} stores of {h}: {', '.join(result.stores)}"
    out = action.plan.apply(host)
    gone = len(out.unmounted) + len(out.lazily_detached)
    if out.failed:
        return f"failed to unbind the stores of {h}: {'; '.join(out.warnings)}"
    return f"unbound {gone} stores of {h} (vault no longer mounted)"
