"""Parse, render and canonicalize ``/proc/PID/mountinfo`` (proc_pid_mountinfo(5)).

The canonical form is what "the model equals the kernel" means (docs/propagation.md §5: two results
are equal when their canonical forms are equal): per namespace, the mount tree by mount-point path
and stacking order, each mount with its source, fstype, root and unbindable flag; peer groups and
masters as a relabelled partition (ids renamed in order of first appearance); errors by (line,
errno). Raw mount ids, group ids and device numbers never take part.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

_ESCAPE = re.compile(r"\\([0-7]{3})")


def unescape(text: str) -> str:
    """Undo the kernel's ``\\ooo`` octal escapes (``mangle()`` / ``seq_path``)."""
    if "\\" not in text:  # the common case, and a regex pass costs as much as the parse
        return text
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), text)


def _plain_pattern(extra: str) -> re.Pattern[str]:
    """Matches a text with nothing to escape."""
    return re.compile(f"[^ \\t\\n\\\\{re.escape(extra)}]*\\Z")


#: the two that render() uses, compiled at import like _ESCAPE (a first compile costs more than
#: parsing a whole mount table)
_PLAIN = {"": _plain_pattern(""), "#": _plain_pattern("#")}


def escape(text: str, extra: str = "") -> str:
    """Escape space, tab, newline, backslash (and ``extra``) as the kernel does."""
    if (_PLAIN.get(extra) or _plain_pattern(extra)).match(text):
        return text  # nothing to escape: the common case, without a per-character loop
    out = []
    for ch in text:
        if ch in " \t\n\\" or ch in extra:
            out.append(f"\\{ord(ch):03o}")
        else:
            out.append(ch)
    return "".join(out)


@dataclass(frozen=True)
class MountInfoEntry:
    """One mountinfo line (fields numbered as in proc_pid_mountinfo(5))."""

    mount_id: int
    parent_id: int
    dev: str
    root: str
    mount_point: str
    options: tuple[str, ...]
    shared: int | None = None
    master: int | None = None
    propagate_from: int | None = None
    unbindable: bool = False
    fstype: str = ""
    source: str = ""
    super_options: str = ""
    unknown_tags: tuple[str, ...] = field(default=())

    @property
    def propagation(self) -> str:
        """Human-readable propagation: shared, slave, shared+slave, private or unbindable."""
        if self.shared is not None and self.master is not None:
            return "shared+slave"
        if self.shared is not None:
            return "shared"
        if self.master is not None:
            return "slave"
        if self.unbindable:
            return "unbindable"
        return "private"

    def tags(self, *, all_fields: bool = True) -> list[str]:
        """The optional fields in the kernel's order (fs/proc_namespace.c ``show_mountinfo``):
        ``shared:N``, ``master:N``, ``propagate_from:N``, ``unbindable``, then tags this parser
        does not know. ``all_fields=False``: only the mount's own propagation state (no
        ``propagate_from``, no unknown tags)."""
        tags = []
        if self.shared is not None:
            tags.append(f"shared:{self.shared}")
        if self.master is not None:
            tags.append(f"master:{self.master}")
            if self.propagate_from is not None and all_fields:
                tags.append(f"propagate_from:{self.propagate_from}")
        if self.unbindable:
            tags.append("unbindable")
        if all_fields:
            tags.extend(self.unknown_tags)
        return tags

    def render(self) -> str:
        opt = "".join(" " + t for t in self.tags())
        return (f"{self.mount_id} {self.parent_id} {self.dev} {escape(self.root)} "
                f"{escape(self.mount_point)} {','.join(self.options)}{opt} - "
                f"{escape(self.fstype, '#')} {escape(self.source, '#')} {self.super_options}")


# Memoized, which cannot change a result: an entry is frozen and a function of its line alone.
# A mount table hardly changes between two reads while parsing a line costs more than the kernel
# takes to print it. Bounded, so a long-lived service does not grow without end.
@functools.lru_cache(maxsize=8192)
def parse_line(line: str) -> MountInfoEntry:
    """Parse one mountinfo line; unknown optional tags are kept but otherwise ignored."""
    fields = line.rstrip("\n").split(" ")
    try:
        sep = fields.index("-", 6)
    except ValueError as exc:
        raise ValueError(f"mountinfo line has no ' - ' separator: {line!r}") from exc
    if sep < 6 or len(fields) < sep + 3:
        raise ValueError(f"malformed mountinfo line: {line!r}")
    shared = master = prop_from = None
    unbindable = False
    unknown: list[str] = []
    for tag in fields[6:sep]:
        name, _, value = tag.partition(":")
        if name == "shared":
            shared = int(value)
        elif name == "master":
            master = int(value)
        elif name == "propagate_from":
            prop_from = int(value)
        elif name == "unbindable":
            unbindable = True
        elif tag:
            unknown.append(tag)
    return MountInfoEntry(
        mount_id=int(fields[0]),
        parent_id=int(fields[1]),
        dev=fields[2],
        root=unescape(fields[3]),
        mount_point=unescape(fields[4]),
        options=tuple(fields[5].split(",")),
        shared=shared,
        master=master,
        propagate_from=prop_from,
        unbindable=unbindable,
        fstype=unescape(fields[sep + 1]),
        source=unescape(fields[sep + 2]),
        super_options=" ".join(fields[sep + 3:]),
        unknown_tags=tuple(unknown),
    )


def parse(text: str) -> list[MountInfoEntry]:
    return [parse_line(ln) for ln in text.splitlines() if ln.strip()]


def render(entries: Iterable[MountInfoEntry]) -> str:
    return "\n".join(e.render() for e in entries)


def rebase(text: str, prefix: str) -> str:
    """Keep the lines whose mount point is ``prefix`` or below it, shown relative to ``prefix``.

    This is what a process whose root directory is ``prefix`` would read (fields 4 and 5 are
    escaped, so the comparison works on unescaped paths).
    """
    prefix = prefix.rstrip("/")
    lines = (_rebase_line(ln, prefix) for ln in text.splitlines() if ln.strip())
    return "\n".join(ln for ln in lines if ln is not None)


@functools.lru_cache(maxsize=8192)  # memoized like parse_line, and for the same reason
def _rebase_line(line: str, prefix: str) -> str | None:
    """One line of :func:`rebase`: re-rendered relative to ``prefix``, None if not below it."""
    entry = parse_line(line)
    mp = entry.mount_point
    if prefix and mp != prefix and not mp.startswith(prefix + "/"):
        return None
    return _replace(entry, mount_point=mp[len(prefix):] or "/").render()


def _replace(entry: MountInfoEntry, **changes: object) -> MountInfoEntry:
    from dataclasses import replace

    return replace(entry, **changes)  # type: ignore[arg-type]


# ---- canonical form ---------------------------------------------------------------------------

def _canon_namespace(entries: list[MountInfoEntry]) -> list[tuple]:
    """Order one namespace's mounts by (mount point, stack index, ancestry), ids dropped.

    The ancestry is the chain of (mount point, stack index) of every ancestor up to the root:
    hidden mounts at one path can hang under different parents that share a path themselves
    (FZ04), and only the whole chain tells them apart independently of the kernel's line order.
    """
    by_id = {e.mount_id: e for e in entries}
    stack: dict[int, int] = {}
    chains: dict[int, tuple[tuple[str, int], ...]] = {}

    def parent_of(e: MountInfoEntry) -> MountInfoEntry | None:
        return by_id.get(e.parent_id) if e.parent_id != e.mount_id else None

    def stack_index(e: MountInfoEntry) -> int:
        """How many mounts ``e`` sits on at its mount point (0: directly on its parent's
        directory). Asked of every mount, hidden ones included, so it follows the parent chain;
        which mount a lookup of a path lands on is a different question
        (``mounttree.MountView.top``)."""
        if e.mount_id not in stack:
            depth, cur, seen = 0, e, {e.mount_id}
            # a mount stacked on another one has that one as parent and the same mount point
            while (parent := parent_of(cur)) is not None and parent.mount_id not in seen:
                if parent.mount_point != cur.mount_point:
                    break
                depth += 1
                seen.add(parent.mount_id)
                cur = parent
            stack[e.mount_id] = depth
        return stack[e.mount_id]

    def chain(e: MountInfoEntry) -> tuple[tuple[str, int], ...]:
        if e.mount_id not in chains:
            links: list[tuple[str, int]] = []
            cur, seen = parent_of(e), {e.mount_id}
            while cur is not None and cur.mount_id not in seen:
                seen.add(cur.mount_id)
                links.append((cur.mount_point, stack_index(cur)))
                cur = parent_of(cur)
            chains[e.mount_id] = tuple(links)
        return chains[e.mount_id]

    keyed = sorted(((e.mount_point, stack_index(e), chain(e)), e) for e in entries)
    return [(k[0], k[1], k[2], e) for k, e in keyed]


def canonical(namespaces: Mapping[str, str],
              errors: Iterable[Iterable[object]] = ()) -> dict[str, object]:
    """The canonical, id-free form of a scenario result (JSON-serialisable)."""
    labels: dict[int, int] = {}

    def label(group: int | None) -> int | None:
        if group is None:
            return None
        if group not in labels:
            labels[group] = len(labels) + 1
        return labels[group]

    out_ns: dict[str, list[list[object]]] = {}
    for name in sorted(namespaces, key=lambda n: (n != "init", n)):
        rows = []
        for mp, idx, ancestry, e in _canon_namespace(parse(namespaces[name])):
            rows.append([mp, idx, [list(link) for link in ancestry], e.root, e.fstype, e.source,
                         e.unbindable, label(e.shared), label(e.master)])
        out_ns[name] = rows
    errs = sorted([int(line), str(err)] for line, err in (tuple(x) for x in errors))
    return {"errors": errs, "namespaces": out_ns}


def canonical_diff(a: Mapping[str, object], b: Mapping[str, object],
                   a_name: str = "model", b_name: str = "kernel") -> list[str]:
    """Human-readable differences between two canonical forms (empty list = equal)."""
    diffs: list[str] = []
    if a["errors"] != b["errors"]:
        diffs.append(f"errors: {a_name}={a['errors']} {b_name}={b['errors']}")
    ans = a["namespaces"]
    bns = b["namespaces"]
    assert isinstance(ans, dict) and isinstance(bns, dict)
    for ns in sorted(set(ans) | set(bns)):
        ra, rb = ans.get(ns), bns.get(ns)
        if ra is None or rb is None:
            diffs.append(f"namespace {ns}: only in {a_name if rb is None else b_name}")
            continue
        if ra == rb:
            continue
        fmt = _fmt_row
        sa, sb = [fmt(r) for r in ra], [fmt(r) for r in rb]
        for row in sa:
            if row not in sb:
                diffs.append(f"[{ns}] only {a_name}: {row}")
        for row in sb:
            if row not in sa:
                diffs.append(f"[{ns}] only {b_name}: {row}")
        if not any(d.startswith(f"[{ns}]") for d in diffs):
            diffs.append(f"[{ns}] same mounts, different order/labels")
    return diffs


def _fmt_row(row: list[object]) -> str:
    mp, idx, pkey, root, fstype, source, unb, sh, ma = row
    prop = []
    if sh is not None:
        prop.append(f"shared:G{sh}")
    if ma is not None:
        prop.append(f"master:G{ma}")
    if unb:
        prop.append("unbindable")
    where = f"{mp}" + (f" (stack {idx})" if idx else "")
    parent = f" on {pkey[0][0]}#{pkey[0][1]}" if pkey else ""
    return f"{where}{parent} root={root} {fstype}:{source} {' '.join(prop) or 'private'}"
