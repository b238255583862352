"""The propagation picture: peer groups and masters across mount namespaces, as terminal text or
Graphviz DOT (pure: input is ``{namespace label: mountinfo text}``, output is a string).

Vocabulary is the kernel's (docs/architecture.md §11): a *peer group* is the set of mounts showing
the same ``shared:N`` (they propagate mount events to each other), a mount showing ``master:N`` is a
*slave* of group N (it receives from N, never sends back; sharedsubtree.rst §2), a mount showing
both is a shared+slave: a peer of its own group *and* a slave of N, so its group hangs below N in
the tree. Group ids are global to the kernel (one id space across namespaces), so one read of every
namespace's mountinfo gives the whole picture. Ids are relabelled ``G1``, ``G2``... in order
of first appearance (as mountinfo.canonical does), so the picture does not depend on raw ids.

By default only *visible* mounts are drawn: the top of the stack a path lookup reaches (e.g. a
jailed daemon's namespace still holds the copies of every store hidden under its new ``/run``;
they receive propagation but nothing can reach them) -- their number is reported.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from daemonstore import mountinfo
from daemonstore.mounttree import MountView

__all__ = ["Node", "Picture", "build_picture", "group_labels", "render_dot", "render_text"]


@dataclass(frozen=True)
class Node:
    """One mount of one namespace."""

    ns: str
    entry: mountinfo.MountInfoEntry

    @property
    def key(self) -> str:
        return f"{self.ns}:{self.entry.mount_id}"

    def label(self, aliases: Mapping[str, str] = {}) -> str:  # noqa: B006 - never mutated
        return f"{self.ns}:{_alias(self.entry.mount_point, aliases)}"


@dataclass
class Picture:
    """Peer groups (relabelled), their masters, their slave-only mounts, and private mounts."""

    namespaces: list[str]
    #: raw kernel group id -> "G<n>"
    labels: dict[int, str] = field(default_factory=dict)
    #: "G<n>" -> mounts showing shared:<id> (its peers)
    peers: dict[str, list[Node]] = field(default_factory=dict)
    #: "G<n>" -> the group its peers are slaves of (shared+slave), if any
    master_of: dict[str, str] = field(default_factory=dict)
    #: "G<n>" -> mounts that are slaves of it and not shared themselves
    slaves: dict[str, list[Node]] = field(default_factory=dict)
    #: mounts in view that neither send nor receive (private or unbindable)
    private: list[Node] = field(default_factory=list)
    #: mounts left out because a path lookup cannot reach them (covered by another mount)
    hidden: int = 0

    def group_order(self) -> list[str]:
        return sorted(self.peers.keys() | self.slaves.keys() | self.master_of.keys()
                      | set(self.master_of.values()), key=lambda g: int(g[1:]))

    def roots(self) -> list[str]:
        """Groups that are no one's slave (the tops of the tree)."""
        return [g for g in self.group_order() if g not in self.master_of]

    def sub_groups(self, group: str) -> list[str]:
        return [g for g in self.group_order() if self.master_of.get(g) == group]


def _alias(path: str, aliases: Mapping[str, str]) -> str:
    for text, name in aliases.items():
        path = path.replace(text, f"<{name}>")
    return path


def _wanted(path: str, prefixes: Sequence[str] | None) -> bool:
    if prefixes is None:
        return True
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in prefixes)


def group_labels(namespaces: Mapping[str, str]) -> dict[int, str]:
    """Raw group id -> ``G<n>`` in order of first appearance (``shared:`` or ``master:``) over
    every mount of every namespace, in the mapping's order: the same labels whatever part of the
    picture is drawn, and the same ones ``daemonstore status`` prints for the same input."""
    labels: dict[int, str] = {}
    for text in namespaces.values():
        for e in mountinfo.parse(text):
            for group in (e.shared, e.master):
                if group is not None and group not in labels:
                    labels[group] = f"G{len(labels) + 1}"
    return labels


def build_picture(namespaces: Mapping[str, str], *, prefixes: Sequence[str] | None = None,
                  visible_only: bool = True) -> Picture:
    """Collect the groups of the mounts whose mount point is under one of ``prefixes`` (all
    mounts if None), namespaces in the mapping's order, mounts in mountinfo order."""
    pic = Picture(list(namespaces), labels=group_labels(namespaces))

    def label(group: int) -> str:
        return pic.labels[group]

    for ns, text in namespaces.items():
        entries = mountinfo.parse(text)
        view = MountView(entries)
        for e in entries:
            if not _wanted(e.mount_point, prefixes):
                continue
            if visible_only and not _reachable(view, e):
                pic.hidden += 1
                continue
            node = Node(ns, e)
            if e.shared is not None:
                group = label(e.shared)
                pic.peers.setdefault(group, []).append(node)
                if e.master is not None:
                    pic.master_of.setdefault(group, label(e.master))
            elif e.master is not None:
                pic.slaves.setdefault(label(e.master), []).append(node)
            else:
                pic.private.append(node)
    return pic


def _reachable(view: MountView, e: mountinfo.MountInfoEntry) -> bool:
    stack = view.stack(e.mount_point)
    return bool(stack) and stack[-1].mount_id == e.mount_id


# ---- text ---------------------------------------------------------------------------------------


def render_text(pic: Picture, aliases: Mapping[str, str] = {}) -> str:  # noqa: B006
    """A tree: each peer group with its peers, below it its slaves and the groups that are its
    slaves (shared+slave), then the private mounts."""
    lines = ["Propagation: peer groups G<n> (shared:N, relabelled) and their slaves (master:N);",
             "a slave receives mount events from its master group and never sends any back."]
    for group in pic.roots():
        lines += _group_lines(pic, group, "", aliases)
    if pic.private:
        lines.append("private (receive nothing, send nothing):")
        lines += [f"  {n.label(aliases)}" for n in pic.private]
    if not pic.peers and not pic.slaves and not pic.private:
        lines.append("(no mounts in view)")
    if pic.hidden:
        lines.append(f"({pic.hidden} mounts hidden under a covering mount are not shown: they "
                     "still receive, but no path reaches them)")
    return "\n".join(lines)


def _group_lines(pic: Picture, group: str, indent: str,
                 aliases: Mapping[str, str]) -> list[str]:
    peers = [n.label(aliases) for n in pic.peers.get(group, [])]
    kind = " (shared+slave)" if group in pic.master_of else ""
    head = f"{group}{kind} peers: "
    out = [indent + head + (peers[0] if peers else "(none in view)")]
    out += [indent + " " * len(head) + p for p in peers[1:]]
    children: list[tuple[str, str | None]] = [
        (f"slave {n.label(aliases)}", None) for n in pic.slaves.get(group, [])]
    children += [("", g) for g in pic.sub_groups(group)]
    for i, (text, sub) in enumerate(children):
        last = i == len(children) - 1
        branch = "`-> " if last else "|-> "
        if sub is None:
            out.append(indent + "  " + branch + text)
            continue
        nested = _group_lines(pic, sub, indent + "  " + ("    " if last else "|   "), aliases)
        nested[0] = indent + "  " + branch + "slave group " + nested[0].lstrip()
        out += nested
    return out


# ---- DOT ----------------------------------------------------------------------------------------


def _q(text: str) -> str:
    """A DOT double-quoted string (a newline becomes DOT's centred line break ``\\n``)."""
    body = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return '"' + body + '"'


def render_dot(pic: Picture, aliases: Mapping[str, str] = {}) -> str:  # noqa: B006
    """Graphviz DOT: one cluster per namespace holding its mounts, one ellipse per peer group;
    bold undirected edges join a group to its peers, dashed arrows point from a master group to
    its slaves (mounts, or whole shared+slave groups)."""
    out = ["digraph propagation {", "  rankdir=LR;",
           '  node [shape=box, fontname="monospace", fontsize=10];',
           '  edge [fontname="monospace", fontsize=9];']
    nodes = _all_nodes(pic)
    for i, ns in enumerate(pic.namespaces):
        mine = [n for n in nodes if n.ns == ns]
        if not mine:
            continue
        out.append(f"  subgraph {_q(f'cluster_{i}')} {{")
        out.append(f"    label={_q('namespace ' + ns)};")
        for n in mine:
            text = f"{_alias(n.entry.mount_point, aliases)}\n{n.entry.propagation}"
            out.append(f"    {_q(n.key)} [label={_q(text)}];")
        out.append("  }")
    for group in pic.group_order():
        out.append(f"  {_q(group)} [shape=ellipse, style=filled, fillcolor=lightyellow];")
    for group in pic.group_order():
        for n in pic.peers.get(group, []):
            out.append(f'  {_q(group)} -> {_q(n.key)} [dir=none, penwidth=2, label="peer"];')
        for n in pic.slaves.get(group, []):
            out.append(f'  {_q(group)} -> {_q(n.key)} [style=dashed, label="slave"];')
        for sub in pic.sub_groups(group):
            out.append(f'  {_q(group)} -> {_q(sub)} [style=dashed, label="slave group"];')
    out.append("}")
    return "\n".join(out) + "\n"


def _all_nodes(pic: Picture) -> list[Node]:
    seen: dict[str, Node] = {}
    groups: Iterable[list[Node]] = [*pic.peers.values(), *pic.slaves.values(), pic.private]
    for members in groups:
        for n in members:
            seen.setdefault(n.key, n)
    order = {ns: i for i, ns in enumerate(pic.namespaces)}
    return sorted(seen.values(), key=lambda n: (order[n.ns], n.entry.mount_id))
