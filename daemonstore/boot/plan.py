"""Plan the boot step that turns ``/etc/daemon-store`` templates into shared ``/run/daemon-store``
mounts (pure: reads the Host it is given, never changes it; docs/architecture.md §3).

What chromeos_startup does, and what we do differently (docs/chromeos.md §1):

* For each template ``/etc/daemon-store/<d>`` it makes ``/run/daemon-store/<d>`` and
  ``/run/daemon-store-cache/<d>`` 0755, self-binds each (``MS_BIND``, no ``MS_REC``) and makes it
  ``MS_SHARED``. We plan exactly those steps (plus ``chown 0:0``, so the result is 0755
  root:root whatever the parent's setgid bit or the caller's ids), but only the ones still
  missing: the plan is computed from the current state, so a second run is empty, a half-done
  run is finished, and nothing is ever stacked.
* It validates nothing and follows a symlinked template (``stat()`` in FileEnumerator). We skip,
  with a reason naming the path, every entry that is not a valid template
  (:func:`check_template`, docs/architecture.md §5):

  - the name matches ``[A-Za-z0-9_][A-Za-z0-9_.-]*`` without ``..`` (paths.check_daemon_name);
  - it is a real directory: ``lstat``, never ``stat``; a symlink (or a device, fifo, socket)
    is skipped; a regular file (a README, a packaging leftover) is ignored: neither a store nor
    a reason to fail startup;
  - it is owned by root or by an existing system user: uid 0 always; any other uid must be
    listed in ``<root>/etc/passwd`` (read with ``safe=True``; a missing or unreadable file means
    "only root") *and* be a system uid as ChromeOS allocates them, 1-999 or 20100-29999
    (:data:`SYSTEM_UID_RANGES`): chronos, chronos-access, nobody or a login user owning a
    template would let that user decide what a daemon's per-user directory looks like;
  - it is not world-writable (``mode & 0o002 == 0``). Group-writable is accepted, as ChromeOS
    ships such templates (crash 3770 crash:crash-user-access, fbpreprocessord 3770, pvm 0770,
    debugd 0660; docs/chromeos.md §1.6): the group is the daemon's own. The mode is
    not copied to the store anyway: ``/run/daemon-store/<d>`` is made 0755 root:root, and the
    per-user directory's owner and mode come from the vault.

  The directory ``/etc/daemon-store`` itself must be a real, root-owned directory that is not
  group/world-writable, or else no template in it can be trusted and all are skipped.
* The parents ``/run/daemon-store`` and ``/run/daemon-store-cache`` come from tmpfiles.d on
  ChromeOS (``d /run/daemon-store 0755 root root``). We create them (and ``/run``) when missing
  and, like tmpfiles' ``d``, reset an existing parent to 0755 root:root.
* "Is it mounted and shared already?" is decided from one read of the host's mountinfo
  (:class:`MountView`, read when a store or orphan that is there first needs it: not at all at
  boot, when every store is missing): a store is *ready* when the mount a path lookup reaches
  at its path is a self-bind (same device; root = the path inside the parent mount's
  filesystem), is the only mount stacked there, and has ``shared:N``. A different mount
  there, or several stacked ones, is *blocked*: reported, never covered by yet another bind.
* A symlink, a file or anything unreadable at ``/run/daemon-store/<d>`` is *blocked* too: we
  neither follow nor remove it (and every apply step uses ``safe=True``, so a symlink planted
  after planning fails with ``ELOOP`` instead of leading a mount outside).
* A store whose template has gone (or is now invalid) is an *orphan*: reported, never torn down,
  because users may be signed in and their per-user mounts live below it (docs/chromeos.md §7
  item 11: tearing down in-use mounts breaks things).

All reads use ``safe=True`` (no symlink in any component; ``ELOOP`` otherwise).
"""

from __future__ import annotations

import errno
import functools
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass, field
from stat import S_IMODE, S_ISDIR, S_ISLNK, S_ISREG

from daemonstore import paths
from daemonstore.errors import errname
from daemonstore.host import Host, Propagation, Stat
from daemonstore.mounttree import MountView, MountViewOnDemand, describe_mount, show_path
from daemonstore.ops import Chmod, Chown, MakeDir, MakeStore, Op, SafeBind, SafeMake, flatten
from daemonstore.records import fast_init

__all__ = [
    "BLOCKED", "MISSING", "NOT_SHARED", "READY", "UNMOUNTED", "WRONG_ATTRIBUTES",
    "MissingStores", "MountView", "Orphan", "Skipped", "StartupPlan", "Target", "check_template",
    "SYSTEM_UID_RANGES", "describe_mount", "is_system_uid", "plan_startup", "read_system_uids",
    "show_path",
]

ROOT_UID = 0
ROOT_GID = 0
#: mode of the stores and their parents (chromeos_startup's SetPermissions; tmpfiles.d)
STORE_MODE = 0o755
PASSWD = "/etc/passwd"

# what the planner found at a target (the steps say what will be done about it)
READY = "ready"                        # nothing to do
MISSING = "missing"                    # directory absent: create, chown, bind, make shared
UNMOUNTED = "unmounted"                # directory there, no mount: bind, make shared
NOT_SHARED = "not-shared"              # self-bind there but private/slave/unbindable
WRONG_ATTRIBUTES = "wrong-attributes"  # mounted and shared; only mode/owner to repair
BLOCKED = "blocked"                    # cannot be made ready safely; ``problem`` says why


def _oserror_text(exc: OSError) -> str:
    text = f"{errname(exc.errno)} ({exc.strerror})" if exc.strerror else errname(exc.errno)
    if exc.errno == errno.ELOOP:
        text += ": a symlink in the path, refused"
    return text


# ---- records ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Skipped:
    """An entry of /etc/daemon-store that is not a valid template, and why."""

    path: str
    reason: str

    def line(self) -> str:
        return f"{show_path(self.path)}: {self.reason}"


@dataclass(frozen=True)
class Orphan:
    """A store without a valid template. Reported, left in place."""

    path: str
    mounted: bool
    reason: str

    def line(self) -> str:
        state = "mounted" if self.mounted else "not mounted"
        return f"{show_path(self.path)}: {self.reason} ({state}; left in place)"


@fast_init  # one per store (records.py)
@dataclass(frozen=True)
class Target:
    """One directory startup answers for: a store base (``daemon`` None) or a store.

    ``steps`` bring it to the ready state; ``problem`` (state BLOCKED) says why that cannot be
    done safely. ``needs`` is the base a store depends on: if the base fails, the store is not
    attempted.
    """

    path: str
    daemon: str | None
    state: str
    steps: tuple[Op, ...] = ()
    problem: str | None = None
    needs: str | None = None

    @property
    def is_store(self) -> bool:
        return self.daemon is not None


@dataclass(frozen=True)
class MissingStores:
    """Stores of one base that are simply missing, in plan order: the compact form of their
    Targets (each MISSING, one MakeStore, needing ``base``), made only when asked for
    (:meth:`targets`). Startup finds every store missing at boot and applies such a run with one
    Host.make_stores call: no Python object per store in planning or applying (bench/boot.py,
    issue 14 item 6); printed and reported store by store all the same."""

    base: str
    daemons: tuple[str, ...]

    def paths(self) -> list[str]:
        base = self.base
        return [f"{base}/{d}" for d in self.daemons]

    def targets(self) -> list[Target]:
        base = self.base
        return [Target(path, d, MISSING, (MakeStore(path, STORE_MODE, ROOT_UID, ROOT_GID),),
                       None, base) for d, path in zip(self.daemons, self.paths(), strict=True)]


@dataclass(frozen=True)
class StartupPlan:
    """Everything one run will do (``targets`` in order), and what it will not (``skipped``
    templates, ``orphans``). ``templates`` are the valid daemon names. ``entries`` is the plan
    as made: targets, with runs of missing stores as :class:`MissingStores`; ``targets`` has
    each of those as its stores' Targets."""

    entries: tuple[Target | MissingStores, ...]
    skipped: tuple[Skipped, ...] = ()
    orphans: tuple[Orphan, ...] = ()
    templates: tuple[str, ...] = ()

    @functools.cached_property
    def targets(self) -> tuple[Target, ...]:
        return tuple(t for e in self.entries
                     for t in (e.targets() if isinstance(e, MissingStores) else (e,)))

    @property
    def steps(self) -> list[Op]:
        """Every step, in order, a composite as its parts (ops/base.py ``flatten``)."""
        return flatten(op for t in self.targets for op in t.steps)

    @property
    def stores(self) -> list[Target]:
        return [t for t in self.targets if t.is_store]

    @property
    def blocked(self) -> list[Target]:
        return [t for t in self.targets if t.state == BLOCKED]

    def to_lines(self) -> list[str]:
        """The dry-run text: steps as shell-like lines (mount steps in the scenario language),
        everything else as ``#`` comments."""
        lines = [f"# skip {s.line()}" for s in self.skipped]
        for t in self.targets:
            if t.state == BLOCKED:
                lines.append(f"# blocked {show_path(t.path)}: {t.problem}")
            elif t.state == READY:
                lines.append(f"# ready {show_path(t.path)}")
            else:
                lines.append(f"# {t.state} {show_path(t.path)}")
                lines.extend(op.to_line() for op in flatten(t.steps))
        lines.extend(f"# orphan {o.line()}" for o in self.orphans)
        return lines


# ---- templates ----------------------------------------------------------------------------------


#: ChromeOS's system users (the accounts README of ChromiumOS's eclass-overlay,
#: profiles/base/accounts, "Choosing UIDs and GIDs"): below 1000 (system daemons 200-299, FUSE
#: daemons 300-399, groups 400s, users shared with other user namespaces 600-699) and the daemon
#: range 20100-29999 (crash is 20125). Not: chronos 1000, chronos-access 1001, anything from 1000
#: to 20099, nobody 65534, and the ranges ARC++ and VMs map (655360 up).
SYSTEM_UID_RANGES = ((1, 999), (20100, 29999))
SYSTEM_UIDS_TEXT = " or ".join(f"{lo}-{hi}" for lo, hi in SYSTEM_UID_RANGES)


def is_system_uid(uid: int) -> bool:
    """Root, or a uid in one of :data:`SYSTEM_UID_RANGES`."""
    return uid == ROOT_UID or any(lo <= uid <= hi for lo, hi in SYSTEM_UID_RANGES)


def read_system_uids(host: Host) -> frozenset[int]:
    """uids of ``<root>/etc/passwd`` (field 3), plus 0. Missing or unreadable: only root."""
    try:
        data = host.read_file(PASSWD, safe=True)
    except OSError:
        return frozenset({ROOT_UID})
    uids = {ROOT_UID}
    for line in data.decode("utf-8", "replace").splitlines():
        fields = line.split(":")
        if len(fields) >= 3 and not line.startswith("#"):
            try:
                uids.add(int(fields[2]))
            except ValueError:
                continue
    return frozenset(uids)


def check_template(name: str, st: Stat | OSError, system_uids: Iterable[int]) -> str | None:
    """Why ``/etc/daemon-store/<name>`` is not a valid template (None if it is); ``st`` is its
    ``lstat`` or the error that gave. The checks run in a fixed order; the first failure wins."""
    try:
        paths.check_daemon_name(name)
    except paths.BadName as exc:
        return str(exc)
    if isinstance(st, OSError):
        return f"cannot inspect: {_oserror_text(st)}"
    # mode and uid read once, not through Stat's properties: this runs for every template at
    # boot (bench/boot.py, issue 14 item 6)
    mode, uid = st.mode, st.uid
    if S_ISLNK(mode):
        return "is a symlink; templates must be real directories"
    if not S_ISDIR(mode):
        return "is not a directory"
    if uid != ROOT_UID:  # root is always a system user
        if uid not in system_uids:
            return f"owned by uid {uid}, which is neither root nor a user in {PASSWD}"
        if not is_system_uid(uid):
            return (f"owned by uid {uid}, which is not a system user: a template's owner must "
                    f"be root or a {PASSWD} user with a uid in {SYSTEM_UIDS_TEXT} (ChromeOS's "
                    "system and daemon ranges); chronos (1000), chronos-access (1001), nobody "
                    "(65534) and login users are not")
    if mode & 0o002:
        return f"mode {S_IMODE(mode):04o} is world-writable"
    return None


def _lstat(host: Host, path: str) -> Stat | OSError:
    try:
        return host.lstat(path, safe=True)
    except OSError as exc:
        return exc


def _templates(host: Host) -> tuple[list[str], list[Skipped]]:
    """Valid daemon names (sorted) and skipped entries."""
    base = paths.ETC_DAEMON_STORE
    st = _lstat(host, base)
    if isinstance(st, OSError):
        if st.errno == errno.ENOENT:
            return [], []  # no daemon uses a store on this image
        return [], [Skipped(base, f"cannot inspect: {_oserror_text(st)}; no template used")]
    why = None
    if st.is_symlink:
        why = "is a symlink"
    elif not st.is_dir:
        why = "is not a directory"
    elif st.uid != ROOT_UID:
        why = f"owned by uid {st.uid}, not root"
    elif st.perm & 0o022:
        why = f"mode {st.perm:04o} is group- or world-writable"
    if why:
        return [], [Skipped(base, f"{why}; no template in it can be trusted")]
    try:
        names = host.listdir(base, safe=True)
    except OSError as exc:
        return [], [Skipped(base, f"cannot list: {_oserror_text(exc)}")]
    uids = read_system_uids(host)
    valid, skipped = [], []
    entries = [f"{base}/{name}" for name in names]
    # one Host call for every template (host.py lstat_many: one lstat each; bench/boot.py)
    for name, path, st in zip(names, entries, host.lstat_many(entries, safe=True), strict=True):
        # a regular file is no template and no problem: ignored
        if not isinstance(st, OSError) and S_ISREG(st.mode):
            continue
        reason = check_template(name, st, uids)
        if reason:
            skipped.append(Skipped(path, reason))
        else:
            valid.append(name)
    return valid, skipped


# ---- stores -------------------------------------------------------------------------------------


def _attr_steps(path: str, st: Stat) -> list[Op]:
    steps: list[Op] = []
    if st.perm != STORE_MODE:
        steps.append(Chmod(path, STORE_MODE))
    if (st.uid, st.gid) != (ROOT_UID, ROOT_GID):
        steps.append(Chown(path, ROOT_UID, ROOT_GID))
    return steps


def _create_steps(path: str) -> list[Op]:
    return [MakeDir(path, STORE_MODE), Chown(path, ROOT_UID, ROOT_GID)]


def _mount_steps(path: str) -> list[Op]:
    # self-bind without MS_REC, then MS_SHARED, as chromeos_startup does (docs/chromeos.md §1):
    # the store becomes its own mount and its own peer group, so a daemon that binds only its
    # store receives only its users' mounts
    return [SafeBind(path, path), SafeMake(path, Propagation.SHARED)]


def _missing_steps(path: str) -> tuple[Op, ...]:
    """``_create_steps`` then ``_mount_steps``, as one composite op (the planner makes it for
    every store at boot: one object instead of four, applied by one Host.make_store call;
    printed and reported as the four steps)."""
    return (MakeStore(path, STORE_MODE, ROOT_UID, ROOT_GID),)


@dataclass
class _Base:
    """Planner scratch for one store base."""

    target: Target
    exists: bool = False
    listed: bool = False
    names: set[str] = field(default_factory=set)


def _plan_base(host: Host, base: str, wanted: bool, created: set[str]) -> _Base:
    """``/run`` then ``/run/daemon-store[-cache]``: create what is missing, repair the base's
    mode/owner (tmpfiles.d ``d``). ``wanted`` False: only look (for orphans), plan nothing.
    ``created``: directories an earlier target already plans to create (``/run``); updated."""
    steps: list[Op] = []
    parts = base.strip("/").split("/")
    missing = False
    last: Stat | None = None
    for i in range(len(parts)):
        comp = "/" + "/".join(parts[: i + 1])
        if comp in created:
            missing = True
            continue
        if missing:
            steps += _create_steps(comp)
            if wanted:
                created.add(comp)
            continue
        st = _lstat(host, comp)
        if isinstance(st, OSError) and st.errno == errno.ENOENT:
            missing = True
            steps += _create_steps(comp)
            if wanted:
                created.add(comp)
            continue
        if isinstance(st, OSError):
            problem = f"cannot inspect {show_path(comp)}: {_oserror_text(st)}"
        elif st.is_symlink:
            problem = f"{show_path(comp)} is a symlink; refusing to follow it"
        elif not st.is_dir:
            problem = f"{show_path(comp)} is not a directory"
        else:
            last = st
            continue
        return _Base(Target(base, None, BLOCKED, problem=problem))
    if missing or last is None:
        return _Base(Target(base, None, MISSING, tuple(steps) if wanted else ()))
    try:
        names, listed = set(host.listdir(base, safe=True)), True
    except OSError:  # orphans cannot be listed; the stores are still inspected one by one
        names, listed = set(), False
    steps = _attr_steps(base, last) if wanted else []
    state = WRONG_ATTRIBUTES if steps else READY
    return _Base(Target(base, None, state, tuple(steps)), exists=True, listed=listed,
                 names=names)


def _plan_stores(host: Host, base: _Base, daemons: list[str],
                 mounts: MountView) -> list[Target | MissingStores]:
    """The store of each daemon in ``base``: blocked with its base; inspected if its name is in
    the base (or the base could not be listed); else missing (runs of those as MissingStores)."""
    needs = base.target.path
    if base.target.state == BLOCKED:
        problem = f"its parent cannot be used: {base.target.problem}"
        return [Target(f"{needs}/{d}", d, BLOCKED, (), problem, needs) for d in daemons]
    if not base.exists or (base.listed and base.names.isdisjoint(daemons)):
        # the usual case at boot: no store there yet (bench/boot.py)
        return [MissingStores(needs, tuple(daemons))]
    # None: the base exists but could not be listed, so every name is inspected by lstat
    present = base.names if base.listed else None
    entries: list[Target | MissingStores] = []
    missing: list[str] = []
    for daemon in daemons:
        if present is None or daemon in present:
            if missing:
                entries.append(MissingStores(needs, tuple(missing)))
                missing = []
            entries.append(_plan_present(host, f"{needs}/{daemon}", daemon, needs, mounts))
        else:
            # the base was listed once: a name missing there needs no lstat of its own (a
            # directory appearing meanwhile makes the mkdir fail with EEXIST, reported, never
            # followed)
            missing.append(daemon)
    if missing:
        entries.append(MissingStores(needs, tuple(missing)))
    return entries


def _plan_present(host: Host, path: str, daemon: str, needs: str, mounts: MountView) -> Target:
    """A store whose name is in its (usable) base, or whose base could not be listed."""

    def target(state: str, steps: Iterable[Op] = (), problem: str | None = None) -> Target:
        return Target(path, daemon, state, tuple(steps), problem, needs)

    st = _lstat(host, path)
    if isinstance(st, OSError):
        if st.errno == errno.ENOENT:
            return target(MISSING, _missing_steps(path))
        return target(BLOCKED, problem=f"cannot inspect: {_oserror_text(st)}")
    if st.is_symlink:
        return target(BLOCKED, problem="is a symlink; refusing to follow it "
                                       "(remove it and run again)")
    if not st.is_dir:
        return target(BLOCKED, problem="is not a directory (remove it and run again)")
    steps = _attr_steps(path, st)
    stack = mounts.stack(path)
    if not stack:
        return target(UNMOUNTED, steps + _mount_steps(path))
    if len(stack) == 1 and mounts.is_self_bind(stack[0]) and stack[0].shared is None:
        return target(NOT_SHARED, [*steps, SafeMake(path, Propagation.SHARED)])
    problem = mounts.store_problem(path)
    if problem is not None:  # stacked, or a foreign mount: never cover it with another bind
        return target(BLOCKED, problem=f"{problem}; not adding another mount")
    return target(WRONG_ATTRIBUTES if steps else READY, steps)


def _orphans(base: _Base, valid: set[str], skipped: set[str], mounts: MountView) -> list[Orphan]:
    out = []
    for name in sorted(base.names):
        if name in valid:
            continue
        path = f"{base.target.path}/{name}"
        reason = ("its template was skipped" if name in skipped
                  else f"no template {paths.ETC_DAEMON_STORE}/{name}")
        out.append(Orphan(path, bool(mounts.stack(path)), reason))
    return out


def plan_startup(host: Host) -> StartupPlan:
    """Inspect ``host`` (templates, passwd, the stores, at most one mountinfo read) and return
    the plan.

    Order follows chromeos_startup: the ``/run/daemon-store`` pass, then the cache pass."""
    valid, skipped = _templates(host)
    mounts = MountViewOnDemand(host)  # read if a store or orphan is there to judge
    skipped_names = {posixpath.basename(s.path) for s in skipped}
    targets: list[Target | MissingStores] = []
    orphans: list[Orphan] = []
    created: set[str] = set()
    for base_path in paths.STORE_BASES:
        base = _plan_base(host, base_path, bool(valid), created)
        if valid:
            targets.append(base.target)
            targets += _plan_stores(host, base, valid, mounts)
        orphans += _orphans(base, set(valid), skipped_names, mounts)
    return StartupPlan(tuple(targets), tuple(skipped), tuple(orphans), tuple(valid))
