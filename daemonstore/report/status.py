"""``daemonstore status``: stores, signed-in users, and which mount namespaces receive which store
(a pure core over mountinfo texts and file facts, plus two collectors: any Host's own namespaces,
or every process's namespace found through ``/proc`` on the kernel).

The core, :func:`analyze`, takes ``{namespace label: mountinfo text}`` (mount points relative to
the sandbox root, as ``Host.mountinfo`` and ``mountinfo.rebase`` give them) and :class:`Facts`
read from the root namespace, and answers:

* each store ``/run/daemon-store[-cache]/<d>`` (from the templates in ``/etc/daemon-store`` and
  from the mounts found): is it a shared self-bind (startup's own test, ``MountView
  .store_problem``), its peer group, the users mounted below it;
* for every other namespace that can reach a store's path: is the mount there a *peer* of the
  root namespace's store group or a *slave* of it (directly or through a chain of
  shared+slave groups: propagation reaches it, sign-ins appear), or not (private, or a slave of
  some unrelated group: it never sees a sign-in; docs/chromeos.md §5.3);
* problems: a store that is not shared (or not mounted although its template exists), a
  namespace holding a store copy that receives nothing, and a per-user directory under
  ``/run/daemon-store/<d>/`` with nothing mounted on it that holds files -- the
  writes-before-mount trap of docs/chromeos.md §4.4 and §7 item 1: a daemon wrote into the
  tmpfs. An *empty* one is no problem: sign-out leaves the empty targets, as ChromeOS does
  (session/sign_out.py).

Only *reachable* mounts count (the top of the stack a path lookup meets, ``MountView.stack``): a
jailed daemon still holds hidden copies of every store under its new ``/run``, and those say
nothing about what the daemon sees.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from daemonstore import mountinfo, paths
from daemonstore.host import Host
from daemonstore.mounttree import MountView
from daemonstore.report.graph import group_labels

__all__ = ["ROOT", "Facts", "Reach", "StatusReport", "StoreRow", "analyze", "collect_facts",
           "format_table", "host_namespaces", "scan_proc", "status_of"]

#: label of the root namespace (where startup and sign-in mount; the Host's first namespace)
ROOT = "init"


@dataclass(frozen=True)
class Facts:
    """What the root namespace's files say (read by :func:`collect_facts`)."""

    #: names of the template directories in /etc/daemon-store
    templates: tuple[str, ...] = ()
    #: store path -> names of the directories directly below it (the per-user targets)
    store_dirs: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: hashes of the signed-in users (session.mounted_users), in sign-in order
    users: tuple[str, ...] = ()
    #: user hash -> the holders keeping a detached mount of that user alive (a store that a
    #: sign-out had to detach lazily; session.holders.detached_pins)
    held: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: paths of the per-user directories in store_dirs that hold entries
    written: frozenset[str] = frozenset()


@dataclass(frozen=True)
class StoreRow:
    path: str
    daemon: str
    has_template: bool
    #: "shared", or what is wrong with it ("not mounted", "its mount is private, not shared")
    state: str
    group: str | None
    #: hashes of the users whose store is mounted (reachable) below it in the root namespace
    users: tuple[str, ...]


@dataclass(frozen=True)
class Reach:
    """How one namespace's reachable copy of one store relates to the root namespace's."""

    namespace: str
    store: str
    propagation: str
    relation: str
    receives: bool
    users: tuple[str, ...]


@dataclass
class StatusReport:
    stores: list[StoreRow]
    users: list[str]
    namespaces: list[str]
    reach: list[Reach]
    problems: list[str]
    #: signed-out user hash -> holders of its detached stores (see Facts.held)
    held: dict[str, list[str]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"stores": [{**asdict(s), "users": list(s.users)} for s in self.stores],
                "users": list(self.users), "namespaces": list(self.namespaces),
                "reach": [{**asdict(r), "users": list(r.users)} for r in self.reach],
                "held": {u: list(h) for u, h in self.held.items()},
                "problems": list(self.problems)}

    def to_lines(self) -> list[str]:
        lines = ["stores (root namespace):"]
        rows = [(s.path, s.state, s.group or "-", _hashes(s.users)) for s in self.stores]
        lines += format_table(("STORE", "STATE", "GROUP", "USERS"), rows, "  ") if rows \
            else ["  (no templates and no stores)"]
        lines.append(f"signed-in users: {len(self.users)}")
        lines += [f"  {h}" for h in self.users]
        lines.append("namespaces (which receive which store):")
        rows = [(r.namespace, r.store, r.propagation,
                 ("yes, " if r.receives else "NO, ") + r.relation, _hashes(r.users))
                for r in self.reach]
        lines += format_table(("NAMESPACE", "STORE", "MOUNT", "RECEIVES SIGN-INS", "USERS"),
                              rows, "  ") if rows else ["  (no other namespace holds a store)"]
        blind = [ns for ns in self.namespaces[1:] if not any(r.namespace == ns
                                                             for r in self.reach)]
        if blind:
            lines.append(f"  holding no store: {', '.join(blind)}")
        if self.held:
            lines.append("held stores of signed-out users (detached, alive while held):")
            for user, holders in self.held.items():
                lines.append(f"  {user[:12]}: " + "; ".join(holders))
        lines.append(f"problems: {len(self.problems) or 'none'}")
        lines += [f"  - {p}" for p in self.problems]
        return [printable(line) for line in lines]


def printable(text: str) -> str:
    """``text`` with every non-printable character (an ESC starting a terminal escape, a
    newline, a C1 control) and the backslash shown as a ``\\xNN``/``\\uNNNN`` escape: process
    names (``/proc/PID/comm``, set by any process with prctl(PR_SET_NAME)) and mount points
    in other users' and daemons' namespaces are attacker-controlled, and a terminal must never
    interpret them. Printable text, other languages' letters included, is kept as is."""
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(c if c.isprintable() and c != "\\" else
                   (repr(c)[1:-1] if c != "\\" else "\\\\") for c in text)


def _hashes(users: Sequence[str]) -> str:
    """Hashes shortened for a table (12 hex digits identify a user in practice)."""
    return ",".join(h[:12] for h in users) or "-"


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]],
                 indent: str = "") -> list[str]:
    """Left-aligned columns, two spaces apart, no trailing blanks."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return [(indent + "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True))).rstrip()
            for r in [header, *rows]]


# ---- the pure core -------------------------------------------------------------------------------


class _Labels:
    """Kernel group ids relabelled G1, G2... (raw ids are meaningless), exactly as the
    propagation picture labels them (graph.group_labels), so the two can be read together."""

    def __init__(self, namespaces: Mapping[str, str]) -> None:
        self._ids = group_labels(namespaces)

    def __call__(self, group: int) -> str:
        return self._ids.setdefault(group, f"G{len(self._ids) + 1}")


def _store_paths(facts: Facts, view: MountView) -> list[tuple[str, str, bool]]:
    """(path, daemon, has template): the templates' stores, then stores mounted without one."""
    found: list[tuple[str, str, bool]] = []
    for daemon in sorted(facts.templates):
        found += [(paths.store(daemon, cache), daemon, True) for cache in (False, True)]
    known = {p for p, _, _ in found}
    for e in view.entries:
        for base in paths.STORE_BASES:
            name = e.mount_point[len(base) + 1:]
            if (e.mount_point.startswith(base + "/") and "/" not in name
                    and e.mount_point not in known and _reachable(view, e)):
                found.append((e.mount_point, name, False))
                known.add(e.mount_point)
    return found


def _reachable(view: MountView, e: mountinfo.MountInfoEntry) -> bool:
    stack = view.stack(e.mount_point)
    return bool(stack) and stack[-1].mount_id == e.mount_id


def _mounted_below(view: MountView, store: str) -> tuple[str, ...]:
    """Names with a reachable mount at ``<store>/<name>`` (the per-user stores), in order."""
    names = []
    for e in view.entries:
        name = e.mount_point[len(store) + 1:]
        if (e.mount_point.startswith(store + "/") and name and "/" not in name
                and name not in names and view.stack(e.mount_point)):
            names.append(name)
    return tuple(names)


def _masters(namespaces: Mapping[str, Sequence[mountinfo.MountInfoEntry]]) -> dict[int, int]:
    """Peer group -> the group it is a slave of (shared+slave mounts), over every namespace."""
    out: dict[int, int] = {}
    for entries in namespaces.values():
        for e in entries:
            if e.shared is not None and e.master is not None:
                out.setdefault(e.shared, e.master)
    return out


def _relation(e: mountinfo.MountInfoEntry, group: int, masters: Mapping[int, int],
              label: _Labels) -> tuple[str, bool]:
    """How mount ``e`` relates to the root store's peer group ``group`` (propagation flows from
    a group to its slaves, and on to their groups' slaves: sharedsubtree.rst §2)."""
    if e.shared == group:
        return f"peer of {label(group)}", True
    chain: list[int] = []
    master = e.master
    while master is not None and master not in chain:
        chain.append(master)
        if master == group:
            via = "".join(f" via {label(g)}" for g in chain[:-1])
            return f"slave of {label(group)}{via}", True
        master = masters.get(master)
    if e.master is not None:
        return f"slave of {label(e.master)}, not of {label(group)}", False
    return e.propagation, False


def analyze(namespaces: Mapping[str, str], facts: Facts, root: str = ROOT) -> StatusReport:
    """The status of the stores (pure; see the module docstring). ``namespaces`` must hold
    ``root``; the others are reported in the mapping's order."""
    parsed = {ns: mountinfo.parse(text) for ns, text in namespaces.items()}
    views = {ns: MountView(entries) for ns, entries in parsed.items()}
    root_view = views[root]
    label = _Labels(namespaces)
    masters = _masters(parsed)
    problems: list[str] = []
    stores: list[StoreRow] = []
    groups: dict[str, int] = {}
    for path, daemon, has_template in _store_paths(facts, root_view):
        stack = root_view.stack(path)
        problem = root_view.store_problem(path) if stack else "not mounted"
        group = stack[-1].shared if stack and problem is None else None
        if group is not None:
            groups[path] = group
        if problem is not None and (stack or has_template):
            problems.append(f"{path}: {problem} -- sign-ins there never reach a daemon's "
                            "namespace (startup makes each store a shared self-bind)")
        users = _mounted_below(root_view, path)
        stores.append(StoreRow(path, daemon, has_template, problem or "shared",
                               label(group) if group is not None else None, users))
        for name in facts.store_dirs.get(path, ()):
            # empty and unmounted is what every sign-out leaves (as on ChromeOS): no problem
            if name not in users and f"{path}/{name}" in facts.written:
                problems.append(f"{path}/{name} holds files but nothing is mounted on it: a "
                                "daemon wrote into /run's tmpfs, seen by no user and lost at "
                                "reboot (the writes-before-mount trap; check "
                                "store_check.store_status, not existence)")
    reach: list[Reach] = []
    for ns, view in views.items():
        if ns == root:
            continue
        for row in stores:
            group = groups.get(row.path)
            stack = view.stack(row.path)
            if group is None or not stack:
                continue
            relation, receives = _relation(stack[-1], group, masters, label)
            reach.append(Reach(ns, row.path, stack[-1].propagation, relation, receives,
                               _mounted_below(view, row.path)))
            if not receives:
                problems.append(f"namespace {ns}: its {row.path} is {relation}: it never sees a "
                                "sign-in (jail it with -v -Kslave and MS_BIND|MS_REC, "
                                "docs/chromeos.md §5)")
    held = {user: list(holders) for user, holders in facts.held.items()
            if user not in facts.users}
    for user, holders in held.items():
        problems.append(f"user {user} is signed out, but a store of theirs lives on detached: "
                        f"{len(holders)} reference(s) hold it ({'; '.join(holders)}); the "
                        "holder still reads and writes the user's data after sign-out, which "
                        "no other process can see (end the holder: process_killer "
                        "--mount_holders, sign-out's kill_holders)")
    return StatusReport(stores, list(facts.users), list(namespaces), reach, problems, held)


# ---- collectors (they read; never change anything) ---------------------------------------------


def collect_facts(host: Host) -> Facts:
    """Templates, per-user directories and signed-in users, from the host's current namespace
    (every read ``safe=True``: no symlink is ever followed)."""
    from daemonstore.session import mounted_users
    from daemonstore.session.holders import detached_pins

    templates = tuple(name for name in _listdir(host, paths.ETC_DAEMON_STORE)
                      if paths.is_daemon_name(name)
                      and _is_dir(host, f"{paths.ETC_DAEMON_STORE}/{name}"))
    store_dirs: dict[str, tuple[str, ...]] = {}
    for base in paths.STORE_BASES:
        for name in _listdir(host, base):
            store = f"{base}/{name}"
            if _is_dir(host, store):
                store_dirs[store] = tuple(n for n in _listdir(host, store)
                                          if _is_dir(host, f"{store}/{n}"))
    written = frozenset(f"{store}/{n}" for store, names in store_dirs.items() for n in names
                        if _listdir(host, f"{store}/{n}"))
    held = {user: tuple(p.describe() for p in pins)
            for user, pins in detached_pins(host).items()}
    return Facts(templates, store_dirs, tuple(mounted_users(host)), held, written)


def _listdir(host: Host, path: str) -> list[str]:
    try:
        return host.listdir(path, safe=True)
    except OSError:
        return []


def _is_dir(host: Host, path: str) -> bool:
    try:
        return host.lstat(path, safe=True).is_dir
    except OSError:
        return False


def host_namespaces(host: Host) -> dict[str, str]:
    """The namespaces the host itself made (model: all of them), current one first."""
    first = host.current_namespace()
    names = [first] + [ns for ns in host.namespaces() if ns != first]
    return {ns: host.mountinfo(ns) for ns in names}


def scan_proc(sandbox_root: str, root_text: str, *, proc: str = "/proc") -> dict[str, str]:
    """Every process's mount namespace that holds the sandbox (kernel): processes grouped by
    the inode of ``/proc/PID/ns/mnt``, one ``/proc/PID/mountinfo`` read per namespace, rebased
    to ``sandbox_root`` (``mountinfo.rebase``). A namespace counts only if the sandbox's own
    tmpfs (same device as in ``root_text``, the caller's rebased mountinfo) is its ``/``;
    others (the machine's, other sandboxes') are not ours to report. Labels are
    ``pid N (comm)`` with the lowest pid; the caller's own namespace is :data:`ROOT`."""
    own = os.stat(f"{proc}/self/ns/mnt").st_ino
    root_dev = _root_dev(root_text)
    by_ino: dict[int, list[int]] = {}
    for name in os.listdir(proc):
        if not name.isdigit():
            continue
        try:
            ino = os.stat(f"{proc}/{name}/ns/mnt").st_ino
        except OSError:  # exited meanwhile, or not ours to look at
            continue
        by_ino.setdefault(ino, []).append(int(name))
    out = {ROOT: root_text}
    for ino, pids in sorted(by_ino.items(), key=lambda item: min(item[1])):
        if ino == own:
            continue
        for pid in sorted(pids):
            text = _read(f"{proc}/{pid}/mountinfo")
            if text is None:
                continue
            rebased = mountinfo.rebase(text, sandbox_root)
            if root_dev is not None and _root_dev(rebased) == root_dev:
                comm = (_read(f"{proc}/{pid}/comm") or "?").strip()
                more = f" +{len(pids) - 1}" if len(pids) > 1 else ""
                out[f"pid {pid} ({comm}){more}"] = rebased
            break
    return out


def _root_dev(text: str) -> str | None:
    for e in mountinfo.parse(text):
        if e.mount_point == "/":
            return e.dev
    return None


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return f.read()
    except OSError:
        return None


def status_of(host: Host, *, scan_processes: bool = False) -> StatusReport:
    """:func:`analyze` for a Host: its own namespaces, or (kernel, ``scan_processes``) every
    process namespace holding its sandbox, found through /proc."""
    facts = collect_facts(host)
    if scan_processes:
        root = getattr(host, "root", None)
        if host.kind != "kernel" or not isinstance(root, str):
            raise ValueError("scanning /proc needs a kernel host")
        return analyze(scan_proc(root, host.mountinfo()), facts)
    return analyze(host_namespaces(host), facts, root=host.current_namespace())
