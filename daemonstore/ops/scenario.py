"""The scenario language, the contract (plan layer): its ten ops, the table-driven parser and
the runner (pure parsing; the runner only calls the Host it is given).

Grammar (docs/architecture.md §4, contract)::

    mkdir P...                                  like mkdir -p, mode 0755, in the current namespace
    mount -t tmpfs NAME P                       a new tmpfs instance; NAME is its mountinfo source
    mount --bind S D | mount --rbind S D | mount --move S D
    mount --make-{shared,slave,private,unbindable} P   and --make-r{...} (recursive)
    umount P | umount -l P                      -l is MNT_DETACH
    ns NAME [--propagation slave|private|shared|unchanged]
    use NAME
    hold NAME P                                 open P (O_RDONLY) and keep it open: its mount is
                                                busy; EEXIST if NAME is held
    release NAME                                close it; EBADF if NAME is not held

One operation a line, ``#`` starts a comment, paths are absolute inside the sandbox root. Words are
split like a POSIX shell (``shlex``) so that :meth:`Op.to_line` can quote odd names and the line
still parses back to the same op; ``#`` outside quotes starts a comment anywhere on the line
(``/a#b`` is ``/a``; ``'/a#b'`` is a path, and ``to_line`` quotes it so). Line numbers are
physical and 1-based, comments and blank lines included, because errors are reported as
``[line, "ERRNO"]``.

The ops are the plan steps of later components too (:mod:`daemonstore.ops`), so each one knows how
to ``apply`` itself to a Host and how to render itself back to one line of this language
(``to_line``; the dry runs print plans that way). The backends that run a scenario from a file
are picked in :mod:`daemonstore.sim.files`.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from daemonstore.errors import DaemonStoreError, errname
from daemonstore.host import Host, Propagation
from daemonstore.ops.base import Op, quote

__all__ = [
    "Bind",
    "Hold",
    "Make",
    "Mkdir",
    "Move",
    "MountTmpfs",
    "NewNamespace",
    "Release",
    "ScenarioSyntaxError",
    "Umount",
    "UseNamespace",
    "canonical_result",
    "parse",
    "parse_line",
    "run_scenario",
]

#: ``ns NAME --propagation X`` values; "unchanged" (the default) leaves the copied tree as it is
#: (docs/propagation.md §2.8: unshare(1)'s alternatives, minus its rprivate default).
NS_PROPAGATIONS = (*(p.value for p in Propagation if p is not Propagation.UNBINDABLE), "unchanged")

_NS_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")
_PROPAGATIONS = tuple(p.value for p in Propagation)


class ScenarioSyntaxError(DaemonStoreError, ValueError):
    """A line of a scenario does not parse; ``line`` is 1-based, ``reason`` says why."""

    def __init__(self, line: int, reason: str, text: str = "") -> None:
        self.line = line
        self.reason = reason
        self.text = text
        super().__init__(f"line {line}: {reason}" + (f": {text.strip()!r}" if text else ""))


# ---- ops ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mkdir(Op):
    """``mkdir P...``: like ``mkdir -p`` with mode 0755 (exact, no umask)."""

    paths: tuple[str, ...]
    mode: ClassVar[int] = 0o755

    def apply(self, host: Host) -> None:
        # like mkdir(1) with several operands: try every path, report the first failure
        first: OSError | None = None
        for path in self.paths:
            try:
                host.mkdir(path, self.mode, parents=True)
            except OSError as exc:
                first = first or exc
        if first is not None:
            raise first

    def to_line(self) -> str:
        return "mkdir " + " ".join(quote(p) for p in self.paths)


@dataclass(frozen=True)
class MountTmpfs(Op):
    """``mount -t tmpfs NAME P``: a new tmpfs instance whose mountinfo source is NAME.

    Outside the language, a plan may add per-mount ``flags`` (mountinfo spelling: ``nodev``)
    and tmpfs ``data`` (``mode=0755,size=10M``), as the jail's ``-k tmpfs,...`` does; the line
    then takes mount(8)'s ``-o`` form, which the parser does not accept."""

    source: str
    target: str
    flags: frozenset[str] = field(default=frozenset(), kw_only=True)
    data: str = field(default="", kw_only=True)

    def apply(self, host: Host) -> None:
        host.mount_tmpfs(self.source, self.target, flags=self.flags, data=self.data)

    def to_line(self) -> str:
        opts = ",".join(sorted(self.flags | ({self.data} if self.data else set())))
        return (f"mount -t tmpfs {'-o ' + opts + ' ' if opts else ''}"
                f"{quote(self.source)} {quote(self.target)}")


@dataclass(frozen=True)
class Bind(Op):
    """``mount --bind S D`` (``MS_BIND``) or ``mount --rbind S D`` (``MS_BIND|MS_REC``)."""

    source: str
    target: str
    recursive: bool = False

    def apply(self, host: Host) -> None:
        host.bind(self.source, self.target, recursive=self.recursive)

    def to_line(self) -> str:
        flag = "--rbind" if self.recursive else "--bind"
        return f"mount {flag} {quote(self.source)} {quote(self.target)}"


@dataclass(frozen=True)
class Move(Op):
    """``mount --move S D`` (``MS_MOVE``)."""

    source: str
    target: str

    def apply(self, host: Host) -> None:
        host.move(self.source, self.target)

    def to_line(self) -> str:
        return f"mount --move {quote(self.source)} {quote(self.target)}"


@dataclass(frozen=True)
class Make(Op):
    """``mount --make-[r]{shared,slave,private,unbindable} P``."""

    target: str
    propagation: Propagation
    recursive: bool = False

    def __post_init__(self) -> None:
        # accept the kernel word as a plain string too; store the enum (docs/architecture.md
        # §11). A member is kept as it is: Propagation(member) costs as much as the rest of the
        # constructor
        if type(self.propagation) is not Propagation:
            object.__setattr__(self, "propagation", Propagation(self.propagation))

    def apply(self, host: Host) -> None:
        host.make(self.target, self.propagation, recursive=self.recursive)

    def to_line(self) -> str:
        r = "r" if self.recursive else ""
        return f"mount --make-{r}{self.propagation.value} {quote(self.target)}"


@dataclass(frozen=True)
class Umount(Op):
    """``umount P`` or ``umount -l P`` (``MNT_DETACH``)."""

    target: str
    detach: bool = False

    def apply(self, host: Host) -> None:
        host.umount(self.target, detach=self.detach)

    def to_line(self) -> str:
        return ("umount -l " if self.detach else "umount ") + quote(self.target)


@dataclass(frozen=True)
class NewNamespace(Op):
    """``ns NAME [--propagation X]``: clone the current namespace, apply X recursively, use it."""

    name: str
    propagation: str = "unchanged"

    def __post_init__(self) -> None:
        if self.propagation not in NS_PROPAGATIONS:
            raise ValueError(f"bad namespace propagation {self.propagation!r}")

    def apply(self, host: Host) -> None:
        prop = None if self.propagation == "unchanged" else self.propagation
        host.new_namespace(self.name, prop)

    def to_line(self) -> str:
        if self.propagation == "unchanged":
            return f"ns {self.name}"
        return f"ns {self.name} --propagation {self.propagation}"


@dataclass(frozen=True)
class UseNamespace(Op):
    """``use NAME``: make an existing namespace current (``setns``)."""

    name: str

    def apply(self, host: Host) -> None:
        host.use_namespace(self.name)

    def to_line(self) -> str:
        return f"use {self.name}"


@dataclass(frozen=True)
class Hold(Op):
    """``hold NAME P``: open P and keep it open as NAME (Host.hold: the mount is busy)."""

    name: str
    path: str

    def apply(self, host: Host) -> None:
        host.hold(self.name, self.path)

    def to_line(self) -> str:
        return f"hold {self.name} {quote(self.path)}"


@dataclass(frozen=True)
class Release(Op):
    """``release NAME``: close what ``hold NAME`` opened."""

    name: str

    def apply(self, host: Host) -> None:
        host.release(self.name)

    def to_line(self) -> str:
        return f"release {self.name}"


# ---- parsing --------------------------------------------------------------------------------


class _SyntaxReason(Exception):
    """Why the words of one line do not parse; :func:`parse_line` turns it into a
    ScenarioSyntaxError with the line's number and text."""


def _path(word: str, what: str = "path") -> str:
    if not word.startswith("/"):
        raise _SyntaxReason(f"{what} must be absolute (inside the sandbox root): {word!r}")
    return word


def _ns_name(word: str) -> str:
    if not _NS_NAME.match(word):
        raise _SyntaxReason(f"bad namespace name {word!r} (want [A-Za-z0-9_][A-Za-z0-9_.-]*)")
    return word


def _arity(words: list[str], n: int, usage: str) -> None:
    if len(words) < n:
        raise _SyntaxReason(f"missing arguments; usage: {usage}")
    if len(words) > n:
        raise _SyntaxReason(f"too many arguments; usage: {usage}")


def _parse_mkdir(words: list[str]) -> Op:
    args = [w for w in words[1:] if w != "-p"]  # "-p" is what mkdir does anyway
    if not args:
        raise _SyntaxReason("missing arguments; usage: mkdir P...")
    for a in args:
        if a.startswith("-"):
            raise _SyntaxReason(f"unknown mkdir option {a!r}")
    return Mkdir(tuple(_path(a) for a in args))


def _parse_mount(words: list[str]) -> Op:
    if len(words) < 2:
        raise _SyntaxReason("missing arguments; usage: mount -t tmpfs NAME P | "
                            "mount --bind S D | ...")
    flag = words[1]
    if flag == "-t":
        _arity(words, 5, "mount -t tmpfs NAME P")
        if words[2] != "tmpfs":
            raise _SyntaxReason(f"unsupported filesystem type {words[2]!r} (only tmpfs)")
        return MountTmpfs(words[3], _path(words[4], "mount point"))
    if flag in ("--bind", "--rbind", "--move"):
        _arity(words, 4, f"mount {flag} S D")
        src, dst = _path(words[2], "source"), _path(words[3], "target")
        if flag == "--move":
            return Move(src, dst)
        return Bind(src, dst, recursive=flag == "--rbind")
    if flag.startswith("--make-"):
        kind = flag[len("--make-"):]
        recursive = kind.startswith("r") and kind[1:] in _PROPAGATIONS
        if recursive:
            kind = kind[1:]
        if kind not in _PROPAGATIONS:
            raise _SyntaxReason(f"unknown propagation option {flag!r} "
                                "(want --make-[r]{shared,slave,private,unbindable})")
        _arity(words, 3, f"mount {flag} P")
        return Make(_path(words[2], "mount point"), Propagation(kind), recursive=recursive)
    raise _SyntaxReason(f"unknown mount option {flag!r} (want -t tmpfs, --bind, --rbind, "
                        "--move, --make-...)")


def _parse_umount(words: list[str]) -> Op:
    if len(words) >= 2 and words[1] == "-l":
        _arity(words, 3, "umount -l P")
        return Umount(_path(words[2], "mount point"), detach=True)
    if len(words) >= 2 and words[1].startswith("-"):
        raise _SyntaxReason(f"unknown umount option {words[1]!r} (only -l)")
    _arity(words, 2, "umount [-l] P")
    return Umount(_path(words[1], "mount point"))


def _parse_ns(words: list[str]) -> Op:
    usage = "ns NAME [--propagation slave|private|shared|unchanged]"
    if len(words) < 2:
        raise _SyntaxReason(f"missing arguments; usage: {usage}")
    name = _ns_name(words[1])
    rest = words[2:]
    if len(rest) == 1 and rest[0].startswith("--propagation="):
        rest = ["--propagation", rest[0].partition("=")[2]]
    if not rest:
        return NewNamespace(name)
    if rest[0] != "--propagation":
        raise _SyntaxReason(f"unknown ns option {rest[0]!r}; usage: {usage}")
    if len(rest) != 2:
        count = "missing" if len(rest) < 2 else "too many"
        raise _SyntaxReason(f"{count} arguments; usage: {usage}")
    if rest[1] not in NS_PROPAGATIONS:
        raise _SyntaxReason(f"bad propagation {rest[1]!r} "
                            "(want slave, private, shared or unchanged)")
    return NewNamespace(name, rest[1])


def _parse_use(words: list[str]) -> Op:
    _arity(words, 2, "use NAME")
    return UseNamespace(_ns_name(words[1]))


def _parse_hold(words: list[str]) -> Op:
    _arity(words, 3, "hold NAME P")
    return Hold(_hold_name(words[1]), _path(words[2]))


def _parse_release(words: list[str]) -> Op:
    _arity(words, 2, "release NAME")
    return Release(_hold_name(words[1]))


def _hold_name(word: str) -> str:
    if not _NS_NAME.match(word):
        raise _SyntaxReason(f"bad hold name {word!r} (want [A-Za-z0-9_][A-Za-z0-9_.-]*)")
    return word


_PARSERS: dict[str, Callable[[list[str]], Op]] = {
    "mkdir": _parse_mkdir,
    "mount": _parse_mount,
    "umount": _parse_umount,
    "ns": _parse_ns,
    "use": _parse_use,
    "hold": _parse_hold,
    "release": _parse_release,
}


def parse_line(text: str, line: int = 1) -> Op | None:
    """One line to an op (``None`` for a blank or comment line)."""
    try:
        words = shlex.split(text, comments=True)
    except ValueError as exc:  # unterminated quote or trailing backslash
        raise ScenarioSyntaxError(line, str(exc).lower(), text) from None
    if not words:
        return None
    parser = _PARSERS.get(words[0])
    if parser is None:
        raise ScenarioSyntaxError(
            line, f"unknown operation {words[0]!r} "
            "(want mkdir, mount, umount, ns, use, hold or release)", text)
    try:
        op = parser(words)
    except _SyntaxReason as exc:
        raise ScenarioSyntaxError(line, str(exc), text) from None
    return replace(op, line=line)


def parse(text: str) -> list[Op]:
    """A whole scenario to ops; line numbers are 1-based physical lines of ``text``."""
    ops = []
    for number, raw in enumerate(text.splitlines(), start=1):
        op = parse_line(raw, number)
        if op is not None:
            ops.append(op)
    return ops


# ---- running --------------------------------------------------------------------------------


def run_scenario(host: Host, ops_or_text: str | Sequence[Op]) -> dict[str, Any]:
    """Run ops on ``host``; every failing op is recorded as ``[line, "ERRNO"]`` and the run goes
    on (docs/architecture.md §4: "An operation that fails is recorded ... and the run goes on").

    Only ``OSError`` is an operation result. Anything else (``NotImplementedError`` from the
    model, a bug) propagates: docs/architecture.md §2, the model never guesses.
    """
    ops = parse(ops_or_text) if isinstance(ops_or_text, str) else list(ops_or_text)
    errors: list[list[Any]] = []
    for op in ops:
        try:
            op.apply(host)
        except OSError as exc:
            name = errname(exc.errno)
            errors.append([op.line, name])
    return {
        "errors": errors,
        "namespaces": {name: host.mountinfo(name) for name in host.namespaces()},
    }


def canonical_result(result: dict[str, Any]) -> dict[str, object]:
    """The id-free form two results are compared in (docs/propagation.md §5; mountinfo.py)."""
    from daemonstore.mountinfo import canonical

    return canonical(result["namespaces"], result["errors"])
