"""``daemonstore repair``: bring a host back to a consistent state after a crash (a SIGKILL of the
process doing startup, sign-in or sign-out, a failed step that could not roll back, a reboot of
cryptohome with mounts still up). Plan layer: :func:`plan_repair` only reads the Host,
:meth:`RepairPlan.apply` runs the steps on it; runs on the model and on the kernel.

What it does, in order (SECURITY.md, "daemonstore repair"):

1. **startup**: ``startup.plan_startup`` again. It is idempotent: a store left half-made (made
   but not bound, bound but not shared) is finished, a ready one is left alone.
2. **signed-in users** (a vault mounted at ``/home/.shadow/<H>/mount``):

   * the *core* of the session -- the vault, ``user``/``root`` self-bound and shared, the home
     binds made slave, each with nosuid,nodev,noexec,nosymfollow -- must be complete. Sign-in
     makes these in a fixed order, so anything missing or half-made means it was cut short:
     the whole session is **torn down** (``session.sign_out``: LIFO umounts, lazy detach when
     busy, empty mount points removed). The user signs in again; nothing in the vault is lost.
   * the core is complete but some store binds are missing or lack their flags (cut short in
     the store phase, or a store that appeared since): they are **finished** -- source
     directory ensured with the template's owner and mode, target made, bind, remount -- with
     sign-in's own steps and rollback.
3. **users who are not signed in** but have mounts left (store binds under
   ``/run/daemon-store[-cache]/<d>/<H>``, home binds, a ``/home/chronos/user`` whose vault is
   gone) or leftover mount points: ``session.sign_out`` for them, which unmounts the leaked
   binds and removes the *empty* home and vault mount points. The store targets
   ``/run/daemon-store{,-cache}/<d>/<H>`` are left as every sign-out leaves them (as ChromeOS
   does, docs/chromeos.md §7 item 1: they are not a leftover of a crash), with whatever a
   daemon wrote into them; the user's next sign-in reuses them and reports such files.

Never deleted: anything that is not an empty directory (``rmdir`` only). Never touched: guest
sessions (an ephemeral vault in ``mnt_chrome``: :mod:`daemonstore.session.guest` owns them),
names that are not 40 lowercase hex digits (reported), anything outside the daemon-store and
home paths.

A second run right after a first one has nothing to do (tests/hardening prove both halves).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from daemonstore import mountinfo, paths
from daemonstore.boot.apply import StartupReport, apply_plan, dry_run_report
from daemonstore.boot.plan import StartupPlan, plan_startup
from daemonstore.host import Host, Propagation
from daemonstore.mounttree import MountView
from daemonstore.ops import (
    BindDir,
    EnsureDir,
    ForceUmount,
    MakeTarget,
    Op,
    RemountBind,
    RemoveDir,
    op_path,
)
from daemonstore.session.apply import SignInPlan
from daemonstore.session.guest import mounted_guests
from daemonstore.session.plan import BIND_FLAGS, ROOT_ID, TARGET_MODE, read_templates
from daemonstore.session.queries import (
    existing_dir,
    mounted_users,
    store_user,
    stray_mounts,
    user_mounts,
)
from daemonstore.session.results import SignInError
from daemonstore.session.sign_out import SignOutPlan, plan_sign_out

__all__ = ["RepairPlan", "RepairReport", "UserRepair", "plan_repair", "plan_store_binds",
           "repair", "session_problems"]

#: a dir vault's /home/chronos/user shows <sandbox>/home/.shadow/<H>/vault/user
_CHRONOS_USER_ROOT = re.compile(r"/\.shadow/([0-9a-f]{40})/vault/user\Z")

#: a mount of a user's shadow directory, wherever it is mounted (queries.vault_identity)
_SHADOW_ROOT = re.compile(r"/\.shadow/([0-9a-f]{40})(?:/|\Z)")

# what is done for a user
TEAR_DOWN = "tear-down"    # an incomplete sign-in (or sign-out): everything of the user unmounted
FINISH = "finish"          # core complete: missing store binds made
CLEAN_UP = "clean-up"      # not signed in: leaked mounts unmounted, empty mount points removed


def _mount_problem(e: mountinfo.MountInfoEntry | None, path: str,
                   propagation: str | None) -> str | None:
    if e is None:
        return f"{path} is not mounted"
    missing = BIND_FLAGS - set(e.options)
    if missing:
        return f"{path} lacks {','.join(sorted(missing))} (its remount did not happen)"
    if propagation == Propagation.SHARED and e.shared is None:
        return f"{path} is {e.propagation}, not shared"
    if propagation == Propagation.SLAVE and (e.master is None or e.shared is not None):
        return f"{path} is {e.propagation}, not slave"
    return None


def session_problems(mounts: MountView, user_hash: str) -> list[str]:
    """What is missing from the core of a signed-in user's session (empty: complete), judged
    by the mount on top at each path. The core is everything sign-in mounts before the stores,
    in its order (session/plan.py docstring)."""
    vm = paths.vault_mount(user_hash)
    core: list[tuple[str, str | None]] = [
        (vm, None), (f"{vm}/user", Propagation.SHARED), (f"{vm}/root", Propagation.SHARED),
        (paths.home_chronos(user_hash), Propagation.SLAVE),
        (paths.home_user(user_hash), Propagation.SLAVE),
        (paths.home_root(user_hash), Propagation.SLAVE),
    ]
    if any(e.mount_point == paths.HOME_CHRONOS_USER
           for e in user_mounts(mounts.entries, user_hash)):
        core.append((paths.HOME_CHRONOS_USER, Propagation.SLAVE))
    found = [_mount_problem(mounts.top(path), path, prop) for path, prop in core]
    found += [f"{e.mount_point} is the user's but not where sign-in mounts it (a mount point "
              "swapped or renamed)" for e in stray_mounts(mounts.entries, user_hash)]
    return [p for p in found if p is not None]


@dataclass(frozen=True)
class UserRepair:
    """What repair does for one user hash: ``kind`` (tear-down, finish, clean-up), why, and the
    plan it runs (a SignOutPlan for tear-down and clean-up, a SignInPlan for finish)."""

    user_hash: str
    kind: str
    reasons: tuple[str, ...]
    plan: SignInPlan | SignOutPlan

    @property
    def steps(self) -> tuple[Op, ...]:
        return self.plan.steps


@dataclass(frozen=True)
class RepairPlan:
    startup: StartupPlan
    users: tuple[UserRepair, ...]
    kept: tuple[str, ...] = ()      # guests, non-hash names: left alone, with the reason

    @property
    def empty(self) -> bool:
        return not self.startup.steps and not any(u.steps for u in self.users)

    def to_lines(self) -> list[str]:
        lines = ["# startup"] + self.startup.to_lines()
        for u in self.users:
            lines.append(f"# {u.kind} {u.user_hash}: {'; '.join(u.reasons)}")
            lines += [op.to_line() for op in u.steps]
        lines += [f"# kept {k}" for k in self.kept]
        return lines

    def apply(self, host: Host) -> RepairReport:
        startup = apply_plan(host, self.startup, verify=True)
        done: list[tuple[UserRepair, list[str], bool]] = []
        for u in self.users:
            if isinstance(u.plan, SignOutPlan):
                result = u.plan.apply(host)
                notes = [w for w in result.warnings if "is not signed in" not in w]
                done.append((u, notes, result.ok))
                continue
            try:
                result_in = u.plan.apply(host)
            except SignInError as exc:  # rolled back: the user's core session stays as it was
                done.append((u, [f"could not finish: {exc}"], False))
            else:
                done.append((u, list(result_in.warnings), True))
        return RepairReport(startup, tuple(done), self.kept, dry_run=False)


@dataclass(frozen=True)
class RepairReport:
    startup: StartupReport
    users: tuple[tuple[UserRepair, list[str], bool], ...]
    kept: tuple[str, ...] = ()
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        """Everything repairable was repaired (startup complete apart from skipped templates,
        every user's plan applied without a failure)."""
        return not self.startup.problems and all(ok for _u, _n, ok in self.users)

    @property
    def changes(self) -> int:
        return len(self.startup.changed) + sum(1 for u, _n, _ok in self.users if u.steps)

    def lines(self) -> list[str]:
        verb = "would" if self.dry_run else "did"
        out = [self.startup.summary()]
        out += [f"startup problem: {line}" for line in self.startup.problem_lines()]
        for u, notes, ok in self.users:
            state = "" if ok else " (NOT complete)"
            out.append(f"{u.kind} {u.user_hash}{state}: {'; '.join(u.reasons)} "
                       f"({verb} {len(u.steps)} steps)")
            out += [f"  {n}" for n in notes]
        out += [f"kept {k}" for k in self.kept]
        return out

    def summary(self) -> str:
        kinds = [u.kind for u, _n, _ok in self.users]
        failed = sum(1 for _u, _n, ok in self.users if not ok)
        verb = "would change" if self.dry_run else "changed"
        return (f"repair: {verb} {self.changes} things: {kinds.count(TEAR_DOWN)} sessions torn "
                f"down, {kinds.count(FINISH)} finished, {kinds.count(CLEAN_UP)} users cleaned "
                f"up; {failed + len(self.startup.problems)} problems")

    def to_json(self) -> dict[str, object]:
        """The report as JSON-ready data (``daemonstore repair --json``)."""
        return {"ok": self.ok, "summary": self.summary(), "lines": self.lines(),
                "users": [{"hash": u.user_hash, "action": u.kind, "reasons": list(u.reasons),
                           "steps": [op.to_line() for op in u.steps], "notes": notes, "ok": ok}
                          for u, notes, ok in self.users],
                "kept": list(self.kept), "startup": self.startup.to_json()}


# ---- planning ----------------------------------------------------------------------------------


def _hashes_in(host: Host, directory: str, prefix: str = "") -> tuple[set[str], list[str]]:
    """Hash names (after ``prefix``) of the entries of ``directory``; other names, reported."""
    try:
        names = host.listdir(directory, safe=True)
    except OSError:
        return set(), []
    found, odd = set(), []
    for name in names:
        if not name.startswith(prefix):
            continue
        h = name[len(prefix):]
        try:
            found.add(paths.check_hash(h))
        except paths.BadName:
            odd.append(f"{directory}/{name}: not a user hash (left alone)")
    return found, odd


def _candidates(host: Host, entries: list[mountinfo.MountInfoEntry]) -> tuple[set[str],
                                                                               list[str]]:
    """Every user hash with a mount or a mount point left somewhere sign-in puts them."""
    hashes: set[str] = set()
    odd: list[str] = []
    for e in entries:
        mp = e.mount_point
        if (h := store_user(mp)) is not None:
            hashes.add(h)
        for base in ("/home/user/", "/home/root/", "/home/chronos/u-"):
            if mp.startswith(base):
                hashes.add(mp[len(base):].split("/")[0])
        if mp == paths.HOME_CHRONOS_USER and (m := _CHRONOS_USER_ROOT.search(e.root)):
            hashes.add(m.group(1))
        if m := _SHADOW_ROOT.search(e.root):  # a user's mount by identity, at any path
            hashes.add(m.group(1))
    for base in paths.STORE_BASES:
        try:
            daemons = host.listdir(base, safe=True)
        except OSError:
            continue
        for d in daemons:
            found, names = _hashes_in(host, f"{base}/{d}")
            hashes |= found
            odd += names
    for directory, prefix in (("/home/user", ""), ("/home/root", ""), ("/home/chronos", "u-")):
        found, names = _hashes_in(host, directory, prefix)
        hashes |= found
        odd += names
    valid = set()
    for h in hashes:
        try:
            valid.add(paths.check_hash(h))
        except paths.BadName:
            odd.append(f"mount or mount point of {h!r}: not a user hash (left alone)")
    return valid, odd


def _finish_plan(host: Host, mounts: MountView,
                 user_hash: str) -> tuple[SignInPlan, list[str]]:
    """Steps that make a signed-in user's missing or half-made store binds (sign-in's own ops:
    EnsureDir decides at apply time whether to create or repair, so the vault kind does not
    matter)."""
    templates, _skipped = read_templates(host)  # sign-in reports the skipped ones
    steps: list[Op] = []
    reasons: list[str] = []
    stores: list[str] = []
    for cache in (False, True):
        for name, template in templates:
            store = paths.store(name, cache)
            if mounts.top(store) is None:
                continue  # no store: sign-in skips it too
            target = paths.user_store(name, user_hash, cache)
            e = mounts.top(target)
            if e is not None:
                if BIND_FLAGS - set(e.options):
                    reasons.append(f"{target} lacks its flags")
                    steps.append(RemountBind(target, BIND_FLAGS))
                continue
            reasons.append(f"{target} is not mounted")
            source = paths.vault_store(user_hash, name, cache)
            steps.append(EnsureDir(source, template.perm, template.uid, template.gid))
            # a target left by an earlier sign-out is reused, its owner and mode re-applied
            steps.append(EnsureDir(target, TARGET_MODE, ROOT_ID, ROOT_ID)
                         if existing_dir(host, target) else MakeTarget(target, TARGET_MODE))
            steps += [BindDir(source, target), RemountBind(target, BIND_FLAGS)]
            stores.append(store)
    return SignInPlan(user_hash, False, tuple(steps), tuple(stores)), reasons


def plan_store_binds(host: Host, user_hash: str) -> SignInPlan:
    """Only the store binds of a user whose vault is mounted: what is missing or lacks its
    flags, with sign-in's own ops and rollback (the session hook, daemonstore.hook, runs it
    where cryptohome mounts vaults without daemon stores). Empty when all are there."""
    return _finish_plan(host, MountView(mountinfo.parse(host.mountinfo())), user_hash)[0]


def _leaked_chronos_user(mounts: MountView, signed: list[str]) -> bool:
    """/home/chronos/user is mounted but belongs to no signed-in user (its vault is gone)."""
    if mounts.top(paths.HOME_CHRONOS_USER) is None:
        return False
    return not any(e.mount_point == paths.HOME_CHRONOS_USER
                   for h in signed for e in user_mounts(mounts.entries, h))


def _leftover_mount_points(host: Host, entries: list[mountinfo.MountInfoEntry],
                           signed: list[str]) -> list[str]:
    """Mount points a sign-out removes that outlive the user's own (``session.plan_sign_out``):
    /home/chronos/user and the vault's, left unmounted by a sign-out that stopped part-way."""
    mounted = {e.mount_point for e in entries}
    hashes, _odd = _hashes_in(host, paths.SHADOW)
    points = [paths.HOME_CHRONOS_USER, *(paths.vault_mount(h) for h in sorted(hashes)
                                         if h not in signed)]
    return [p for p in points if p not in mounted and existing_dir(host, p)]


def _repair_signed_in(host: Host, mounts: MountView, user_hash: str) -> UserRepair | None:
    """Tear down an incomplete session, finish one whose store binds are missing; None when
    the session is complete."""
    problems = session_problems(mounts, user_hash)
    if problems:
        return UserRepair(user_hash, TEAR_DOWN, ("incomplete session: " + "; ".join(problems),),
                          plan_sign_out(host, user_hash))
    finish, reasons = _finish_plan(host, mounts, user_hash)
    return UserRepair(user_hash, FINISH, tuple(reasons), finish) if finish.steps else None


def _clean_up(host: Host, user_hash: str, chronos_owner: str | None) -> UserRepair | None:
    """Sign-out of a user who is not signed in: leaked mounts, empty mount points."""
    out = plan_sign_out(host, user_hash)
    steps = out.steps
    if user_hash == chronos_owner:  # sign_out names /home/chronos/user only while the vault is up
        steps = (ForceUmount(paths.HOME_CHRONOS_USER), *steps)
    if not steps:
        return None
    umounts = sum(1 for op in steps if isinstance(op, ForceUmount))
    why = (f"not signed in, {umounts} mounts left" if umounts
           else "not signed in, mount points left")
    return UserRepair(user_hash, CLEAN_UP, (why,),
                      SignOutPlan(user_hash, tuple(steps), False, out.warnings))


def _clean_up_unowned(host: Host, entries: list[mountinfo.MountInfoEntry], signed: list[str],
                      users: list[UserRepair], chronos_leaked: bool) -> list[UserRepair]:
    """What belongs to no user: mount points a sign-out left, /home/chronos/user mounted for
    nobody (e.g. a loop vault's, whose root does not name the user)."""
    found = []
    planned = {op_path(op) for u in users for op in u.plan.steps}
    leftovers = [p for p in _leftover_mount_points(host, entries, signed) if p not in planned]
    if leftovers:
        found.append(UserRepair("-", CLEAN_UP, ("mount points a sign-out left: "
                                                + ", ".join(leftovers),),
                                SignOutPlan("-", tuple(RemoveDir(p) for p in leftovers),
                                            False)))
    if chronos_leaked:
        found.append(UserRepair("-", CLEAN_UP, (f"{paths.HOME_CHRONOS_USER} is mounted for no "
                                                "signed-in user",),
                                SignOutPlan("-", (ForceUmount(paths.HOME_CHRONOS_USER),),
                                            False)))
    return found


def plan_repair(host: Host) -> RepairPlan:
    """What repair would do on ``host`` now (pure: reads only). The user plans are made against
    the state *after* startup's plan; startup never touches a user's mount, so the two do not
    interfere."""
    startup = plan_startup(host)
    entries = mountinfo.parse(host.mountinfo())
    mounts = MountView(entries)
    signed = mounted_users(host)
    guests = set(mounted_guests(host))
    candidates, kept = _candidates(host, entries)
    users = [u for h in signed if (u := _repair_signed_in(host, mounts, h)) is not None]
    chronos_leaked = _leaked_chronos_user(mounts, signed)
    chronos_user = mounts.top(paths.HOME_CHRONOS_USER)
    chronos_owner = None
    if chronos_leaked and chronos_user and (m := _CHRONOS_USER_ROOT.search(chronos_user.root)):
        chronos_owner = m.group(1)
    not_signed = sorted(candidates - set(signed))
    kept += [f"{h}: a guest session (daemonstore.session.guest owns it)"
             for h in not_signed if h in guests]
    cleaned = [h for h in not_signed if h not in guests]
    users += [u for h in cleaned if (u := _clean_up(host, h, chronos_owner)) is not None]
    chronos_leaked = chronos_leaked and chronos_owner not in cleaned  # else taken with its owner
    users += _clean_up_unowned(host, entries, signed, users, chronos_leaked)
    return RepairPlan(startup, tuple(users), tuple(kept))


def repair(host: Host, *, dry_run: bool = False) -> tuple[RepairPlan, RepairReport]:
    """Plan, then apply unless ``dry_run``."""
    plan = plan_repair(host)
    if dry_run:
        report = RepairReport(dry_run_report(plan.startup),
                              tuple((u, [], True) for u in plan.users), plan.kept, dry_run=True)
        return plan, report
    return plan, plan.apply(host)
