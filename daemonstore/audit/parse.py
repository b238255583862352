"""Init scripts and minijail config files -> minijail0 argv with file positions (pure: works on
text; only :func:`read_inputs` opens files).

Two inputs are understood:

* an upstart job (``/etc/init/*.conf``): every ``minijail0`` invocation in command position
  (``exec minijail0 ...``, ``pre-start exec /sbin/minijail0 ...``, a line of a ``script`` block),
  with ``\\`` continuations joined and shell quoting undone. Variables (``${VAR}``) are left as
  written: the audit judges the script, not one expansion of it.
* a minijail config file (``% minijail-config-file v0`` on the first line; minijail's
  config_parser.c): ``key = value`` or bare ``key`` lines, ``#`` comments, ``\\`` continuations.
  A key is a long option name or one letter of minijail0's optstring (``getopt_from_conf``);
  an unknown key is kept for the audit.

``--config FILE`` in an upstart invocation is spliced in from the audited config file of that
path (or name) where minijail0 would read it: config entries are consumed where ``--config``
stands. Every argv word keeps its ``(path, line)``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace

from daemonstore.errors import DaemonStoreError
from daemonstore.jail.options import Arg, option_for_config_key

CONFIG_HEADER = "% minijail-config-file v0"
_CONTROL = frozenset({";", "&", "|", "&&", "||", "(", ")", ";;"})
_PREFIX_WORDS = frozenset({"exec", "env", "nice", "pre-start", "post-start", "pre-stop",
                           "post-stop", "then", "do", "else", "!", "{"})


class InputError(DaemonStoreError, ValueError):
    """An input the audit cannot read (missing, not text, or malformed): exit code 2."""


@dataclass(frozen=True)
class Invocation:
    """One minijail0 run: its arguments (without the program name) and where each came from."""

    path: str
    kind: str  # "upstart" or "config"
    line: int  # where the invocation starts (the minijail0 word; 1 for a config file)
    argv: tuple[str, ...]
    where: tuple[tuple[str, int], ...]  # (path, line) of each argv word
    #: config-file keys minijail0 does not know (key, path, line)
    unknown_keys: tuple[tuple[str, str, int], ...] = ()
    #: config-file entries minijail0 would refuse (reason, path, line)
    bad_entries: tuple[tuple[str, str, int], ...] = ()
    #: a ``--config FILE`` that is not among the audited inputs
    unresolved_config: str | None = None

    def location(self, position: int | None) -> tuple[str, int]:
        """``(path, line)`` of argv word ``position`` (the invocation's start when unknown)."""
        if position is not None and 0 <= position < len(self.where):
            return self.where[position]
        return self.path, self.line


@dataclass
class Input:
    """One audited file: its invocations, or why it could not be read."""

    path: str
    kind: str = "upstart"
    invocations: list[Invocation] = field(default_factory=list)
    error: str | None = None
    #: a config file spliced into an upstart invocation is audited there, not on its own
    used_by: str | None = None


# ---- upstart ----------------------------------------------------------------------------------


def _logical_lines(text: str) -> Iterator[tuple[str, list[int]]]:
    """Physical lines joined at a trailing backslash; each character's line number kept."""
    chars: list[str] = []
    lines: list[int] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        body = raw[:-1] if raw.endswith("\\") else raw
        chars.extend(body)
        lines.extend([number] * len(body))
        if raw.endswith("\\"):
            continue
        yield "".join(chars), lines or [number]
        chars, lines = [], []
    if chars:
        yield "".join(chars), lines


def shell_words(text: str) -> list[tuple[str, int]]:
    """Split like sh (quotes, backslashes, control operators) without expanding anything;
    ``(word, offset of its first character)``. ValueError for an unterminated quote."""
    words: list[tuple[str, int]] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in " \t":
            i += 1
            continue
        if ch == "#":
            break  # a comment to the end of the line
        if ch in ";&|()":
            op = text[i:i + 2] if text[i:i + 2] in _CONTROL else ch
            words.append((op, i))
            i += len(op)
            continue
        start, word = i, []
        while i < n and text[i] not in " \t;&|()":
            ch = text[i]
            if ch == "'":
                end = text.find("'", i + 1)
                if end < 0:
                    raise ValueError("unterminated single quote")
                word.append(text[i + 1:end])
                i = end + 1
            elif ch == '"':
                i = _double_quoted(text, i + 1, word)
            elif ch == "\\" and i + 1 < n:
                word.append(text[i + 1])
                i += 2
            else:
                word.append(ch)
                i += 1
        words.append(("".join(word), start))
    return words


def _double_quoted(text: str, i: int, word: list[str]) -> int:
    while i < len(text):
        ch = text[i]
        if ch == '"':
            return i + 1
        if ch == "\\" and i + 1 < len(text) and text[i + 1] in '"\\$`':
            word.append(text[i + 1])
            i += 2
            continue
        word.append(ch)
        i += 1
    raise ValueError("unterminated double quote")


def _is_minijail(word: str) -> bool:
    return word == "minijail0" or word.endswith("/minijail0")


def read_upstart(path: str, text: str) -> list[Invocation]:
    """Every minijail0 invocation in command position (module docstring)."""
    found: list[Invocation] = []
    for logical, line_of in _logical_lines(text):
        if logical.lstrip().startswith("#"):
            continue
        try:
            words = shell_words(logical)
        except ValueError as exc:
            raise InputError(f"{path}:{line_of[0]}: {exc}") from None
        command_position = True
        for index, (word, offset) in enumerate(words):
            if word in _CONTROL:
                command_position = True
            elif command_position and _is_minijail(word):
                found.append(_invocation(path, words[index + 1:], line_of, line_of[offset]))
                command_position = False
            elif not (word in _PREFIX_WORDS or _is_assignment(word)):
                command_position = False
    return found


def _is_assignment(word: str) -> bool:
    name, eq, _ = word.partition("=")
    return bool(eq) and name.isidentifier()


def _invocation(path: str, words: Sequence[tuple[str, int]], line_of: list[int],
                line: int) -> Invocation:
    argv: list[str] = []
    where: list[tuple[str, int]] = []
    for word, offset in words:
        if word in _CONTROL:
            break
        argv.append(word)
        where.append((path, line_of[min(offset, len(line_of) - 1)]))
    return Invocation(path, "upstart", line, tuple(argv), tuple(where))


# ---- minijail config files ---------------------------------------------------------------------


def read_config(path: str, text: str) -> Invocation:
    """A ``% minijail-config-file v0`` file as argv (config_parser.c ``parse_config_file``)."""
    physical = text.splitlines()
    if not physical or physical[0] != CONFIG_HEADER:
        raise InputError(f"{path}:1: the first line must be {CONFIG_HEADER!r}")
    argv: list[str] = []
    where: list[tuple[str, int]] = []
    unknown: list[tuple[str, str, int]] = []
    bad: list[tuple[str, str, int]] = []
    body = "\n".join(physical[1:])
    for logical, line_of in _logical_lines(body):
        entry = logical.strip()
        line = line_of[0] + 1  # the header was line 1
        if not entry or entry.startswith("#"):
            continue
        key, eq, value = (part.strip() for part in entry.partition("="))
        if not key or (eq and not value):
            raise InputError(f"{path}:{line}: cannot parse {entry!r} (key = value, or key)")
        option = option_for_config_key(key)
        if option is None:
            unknown.append((key, path, line))
            continue
        words = _config_words(key, option[1], value if eq else None)
        if words is None:
            bad.append((f"{key} needs a value", path, line))
            continue
        argv += words
        where += [(path, line)] * len(words)
    return Invocation(path, "config", 1, tuple(argv), tuple(where), tuple(unknown), tuple(bad))


def _config_words(key: str, kind: Arg, value: str | None) -> list[str] | None:
    """The argv words minijail0 would have seen for one entry (``getopt_from_conf`` hands the
    value over as ``optarg``; a value given to a flag that takes none is ignored)."""
    flag = f"-{key}" if len(key) == 1 else f"--{key}"
    if kind is Arg.NONE:
        return [flag]
    if kind is Arg.OPTIONAL:
        if value is None:
            return [flag]
        return [f"{flag}{value}" if len(key) == 1 else f"{flag}={value}"]
    return None if value is None else [flag, value]


# ---- files -------------------------------------------------------------------------------------


def expand_paths(paths: Sequence[str]) -> list[str]:
    """Files as given; a directory gives its ``*.conf`` files (recursively, sorted)."""
    out: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            for root, dirs, files in os.walk(path):
                dirs.sort()
                out += [os.path.join(root, f) for f in sorted(files) if f.endswith(".conf")]
        else:
            out.append(path)
    return out


def read_inputs(paths: Sequence[str]) -> list[Input]:
    """Read and split every input; unreadable ones carry ``error``. ``--config`` is spliced."""
    inputs: list[Input] = []
    for path in expand_paths(paths):
        item = Input(path)
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
            if text.startswith("% minijail-config-file"):  # a wrong version is an error
                item.kind = "config"
                item.invocations = [read_config(path, text)]
            else:
                item.invocations = read_upstart(path, text)
        except (OSError, UnicodeDecodeError) as exc:
            item.error = f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}"
        except InputError as exc:
            item.error = str(exc)
        inputs.append(item)
    _splice_configs(inputs)
    return inputs


def _splice_configs(inputs: list[Input]) -> None:
    configs = [i for i in inputs if i.kind == "config" and i.error is None]
    for item in inputs:
        if item.kind != "upstart":
            continue
        item.invocations = [_splice(inv, configs) for inv in item.invocations]


def _splice(inv: Invocation, configs: list[Input]) -> Invocation:
    for i, word in enumerate(inv.argv):
        if word == "--":
            break
        if word == "--config" or word.startswith("--config="):
            target = word.partition("=")[2] if "=" in word else (
                inv.argv[i + 1] if i + 1 < len(inv.argv) else "")
            end = i + 1 if "=" in word else i + 2
            match = _find_config(target, configs)
            if match is None:
                return replace(inv, unresolved_config=target)
            match.used_by = inv.path
            conf = match.invocations[0]
            return replace(inv, argv=inv.argv[:i] + conf.argv + inv.argv[end:],
                           where=inv.where[:i] + conf.where + inv.where[end:],
                           unknown_keys=inv.unknown_keys + conf.unknown_keys,
                           bad_entries=inv.bad_entries + conf.bad_entries)
    return inv


def _find_config(target: str, configs: list[Input]) -> Input | None:
    """The audited config file minijail0 would read: the same path, else the same name."""
    for conf in configs:
        if os.path.abspath(conf.path) == os.path.abspath(target):
            return conf
    named = [c for c in configs if os.path.basename(c.path) == os.path.basename(target)]
    return named[0] if len(named) == 1 else None
