"""minijail0's option table and its getopt_long word splitting (pure; the semantics live in
:mod:`daemonstore.jail.spec`, the one parser that ``daemonstore jail`` and the audit share).

The tables are minijail0_cli.c's ``optstring`` and ``long_options`` (google/minijail), so every
option minijail0 knows is *recognised* here, even those ``daemonstore jail`` does not implement:
the audit needs ``-c``, ``-S``, ``-p``, ``--fs-path-*`` and the rest to judge a sandbox. getopt's
rules are kept exactly: ``+`` (stop at the first non-option), clustered short flags (``-vn``),
a required value attached or in the next word (``-k/a,/b,none`` / ``-k /a,/b,none``), an optional
value only attached (``-Kslave``, ``-e/run/netns/x``, ``--uts=name``), ``--name=value`` or
``--name value`` for long options, and unambiguous prefixes of long names (``--ns-m``).

A minijail config file (``% minijail-config-file v0``) names options by their long name or
their single letter (minijail0_cli.c ``getopt_from_conf``): :func:`option_for_config_key`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from daemonstore.errors import DaemonStoreError


class Arg(IntEnum):
    """How an option takes its value (getopt: none, ``:`` required, ``::`` optional)."""

    NONE = 0
    REQUIRED = 1
    OPTIONAL = 2


def _optstring(spec: str) -> dict[str, Arg]:
    out: dict[str, Arg] = {}
    i = 0
    while i < len(spec):
        letter, i = spec[i], i + 1
        if letter == "+":
            continue
        if spec.startswith("::", i):
            out[letter], i = Arg.OPTIONAL, i + 2
        elif spec.startswith(":", i):
            out[letter], i = Arg.REQUIRED, i + 1
        else:
            out[letter] = Arg.NONE
    return out


#: minijail0_cli.c ``optstring`` (the leading ``+``: stop at the first non-option)
SHORT: dict[str, Arg] = _optstring(
    "+a:b:c:de::f:g:hik:lm::nprst::u:vwyzB:C:GHIK::LM::NP:R:S:T:UV:Y")

_N, _R, _O = Arg.NONE, Arg.REQUIRED, Arg.OPTIONAL
#: minijail0_cli.c ``long_options``: name -> (key, argument); a key is the short letter when the
#: long name is only a spelling of it (``--mount`` is ``-k``), else the long name itself
LONG: dict[str, tuple[str, Arg]] = {
    "help": ("h", _N), "mount-dev": ("d", _N), "ambient": ("ambient", _N),
    "uts": ("uts", _O), "logging": ("logging", _R), "profile": ("profile", _R),
    "preload-library": ("preload-library", _R),
    "seccomp-bpf-binary": ("seccomp-bpf-binary", _R),
    "add-suppl-group": ("add-suppl-group", _R),
    "allow-speculative-execution": ("allow-speculative-execution", _N),
    "config": ("config", _R), "gen-config": ("gen-config", _R),
    "env-add": ("env-add", _R), "env-reset": ("env-reset", _N),
    "mount": ("k", _R), "bind-mount": ("b", _R), "ns-mount": ("v", _N),
    "enable-profile-fs-restrictions": ("enable-profile-fs-restrictions", _N),
    "fs-default-paths": ("fs-default-paths", _N), "fs-path-rx": ("fs-path-rx", _R),
    "fs-path-ro": ("fs-path-ro", _R), "fs-path-rw": ("fs-path-rw", _R),
    "fs-path-advanced-rw": ("fs-path-advanced-rw", _R),
    "no-default-runtime-environment": ("no-default-runtime-environment", _N),
    "no-fs-restrictions": ("no-fs-restrictions", _N),
    "no-new-sessions": ("no-new-sessions", _N), "preserve-fd": ("preserve-fd", _R),
}
#: daemonstore's own long spellings, accepted on the command line only (not minijail0's)
LONG_EXTRA: dict[str, tuple[str, Arg]] = {"enter": ("V", _R), "no-new-privs": ("n", _N)}
_ALL_LONG = {**LONG, **LONG_EXTRA}


class JailSpecError(DaemonStoreError, ValueError):
    """A bad argument: ``position`` is its index in argv (0-based), ``reason`` says why."""

    def __init__(self, position: int, arg: str, reason: str) -> None:
        self.position = position
        self.arg = arg
        self.reason = reason
        super().__init__(f"argument {position} ({arg!r}): {reason}")


@dataclass(frozen=True)
class Option:
    """One option as given: ``key`` (short letter or long name), its value, where it was."""

    key: str
    value: str | None
    #: argv index of the option word, and of the word holding the value (the same when the
    #: value is attached or absent)
    position: int
    value_position: int
    #: as written, value included: ``-c 0x9``, ``-Kslave``, ``--uts=host``
    text: str


@dataclass(frozen=True)
class Problem:
    """Something minijail0 itself would refuse (kept, not raised, when auditing)."""

    position: int
    arg: str
    reason: str


@dataclass
class Words:
    """argv split into options, the command, and (when auditing) what was not understood."""

    options: list[Option]
    command: tuple[str, ...]
    unknown: list[Option]
    problems: list[Problem]


def option_for_config_key(key: str) -> tuple[str, Arg] | None:
    """A config-file key's option: a long name, else one letter of ``optstring``."""
    if key in LONG:
        return LONG[key]
    if len(key) == 1 and key.isalpha() and key in SHORT:
        return key, SHORT[key]
    return None


def split_words(argv: list[str], *, audit: bool) -> Words:
    """getopt_long over minijail0's tables. Strict (``audit=False``): the first problem raises
    JailSpecError. Audit: unknown options and malformed words are kept and splitting goes on."""
    words = Words([], (), [], [])
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            words.command = tuple(argv[i + 1:])
            break
        if not arg.startswith("-") or arg == "-":
            words.command = tuple(argv[i:])  # "+": getopt stops at the first non-option
            break
        try:
            i = _long(argv, i, words, audit) if arg.startswith("--") else _short(argv, i, words,
                                                                                 audit)
        except JailSpecError as exc:
            if not audit:
                raise
            words.problems.append(Problem(exc.position, exc.arg, exc.reason))
            i += 1
    return words


def _lookup_long(name: str, pos: int, arg: str) -> tuple[str, Arg] | None:
    if name in _ALL_LONG:
        return _ALL_LONG[name]
    matches = sorted({v for k, v in _ALL_LONG.items() if name and k.startswith(name)})
    if len(matches) > 1:
        raise JailSpecError(pos, arg, "ambiguous option")
    return matches[0] if matches else None


def _long(argv: list[str], i: int, words: Words, audit: bool) -> int:
    arg = argv[i]
    name, eq, value = arg[2:].partition("=")
    found = _lookup_long(name, i, arg)
    if found is None:
        if not audit:
            raise JailSpecError(i, arg, "unknown option")
        words.unknown.append(Option(arg[2:], None, i, i, arg))
        return i + 1
    key, kind = found
    if kind is Arg.NONE:
        if eq:
            raise JailSpecError(i, arg, "takes no value")
        words.options.append(Option(key, None, i, i, arg))
        return i + 1
    if eq or kind is Arg.OPTIONAL:
        words.options.append(Option(key, value if eq else None, i, i, arg))
        return i + 1
    if i + 1 >= len(argv):
        raise JailSpecError(i, arg, "needs a value")
    words.options.append(Option(key, argv[i + 1], i, i + 1, f"{arg} {argv[i + 1]}"))
    return i + 2


def _short(argv: list[str], i: int, words: Words, audit: bool) -> int:
    arg = argv[i]
    j = 1
    while j < len(arg):
        letter, rest = arg[j], arg[j + 1:]
        kind = SHORT.get(letter)
        if kind is None:
            if not audit:
                raise JailSpecError(i, arg, f"unknown option -{letter}")
            words.unknown.append(Option(letter, None, i, i, f"-{letter}"))
            return i + 1  # the rest of the word cannot be read without knowing -{letter}
        if kind is Arg.NONE:
            words.options.append(Option(letter, None, i, i, f"-{letter}"))
            j += 1
            continue
        if kind is Arg.OPTIONAL or rest:
            words.options.append(Option(letter, rest or None, i, i, f"-{letter}{rest}"))
            return i + 1
        if i + 1 >= len(argv):
            raise JailSpecError(i, arg, f"-{letter} needs a value")
        words.options.append(Option(letter, argv[i + 1], i, i + 1, f"-{letter} {argv[i + 1]}"))
        return i + 2
    return i + 1
