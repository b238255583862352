"""Linux capability names and minijail0's ``-c`` argument (pure: no I/O, no libcap).

``-c`` takes either libcap's text form (``cap_chown,cap_fowner+eip``; the guide's current
permission_broker example) or a hex mask (``0009``, ``0x300b``): minijail0_cli.c ``use_caps``
tries ``cap_from_text(3)`` first and falls back to ``strtoull(arg, NULL, 16)``; the jail keeps the
capabilities that end up in the *effective* set. A text clause always has an operator (``=``,
``+`` or ``-``), a mask never does, which is how the two are told apart here.
"""

from __future__ import annotations

import re

#: include/uapi/linux/capability.h, index -> name (CAP_TO_MASK(x) is 1 << x)
CAP_NAMES: tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK",
    "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
    "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)
CAP_INDEX: dict[str, int] = {name: i for i, name in enumerate(CAP_NAMES)}
ALL_CAPS = (1 << len(CAP_NAMES)) - 1

_HEX = re.compile(r"\s*(0[xX])?[0-9a-fA-F]+\Z")
_CLAUSE = re.compile(r"([^=+-]*)((?:[=+-][a-zA-Z]*)+)\Z")
_ACTION = re.compile(r"([=+-])([a-zA-Z]*)")


def bit(name: str) -> int:
    """``CAP_TO_MASK`` of a capability name (``CAP_SYS_ADMIN`` -> ``1 << 21``)."""
    return 1 << CAP_INDEX[name]


def names(mask: int) -> list[str]:
    """Capability names in ``mask``, lowest index first; unknown bits as ``cap_<n>``."""
    out = [name for i, name in enumerate(CAP_NAMES) if mask & (1 << i)]
    rest = mask & ~ALL_CAPS
    out += [f"cap_{i}" for i in range(64) if rest & (1 << i)]
    return out


def parse_caps(text: str) -> int:
    """The effective-set mask minijail0 gets from ``-c TEXT``; ValueError says what is wrong."""
    if _HEX.match(text):
        return int(text.strip(), 16)
    mask = 0
    clauses = text.split()
    if not clauses:
        raise ValueError("empty capability set")
    for clause in clauses:
        match = _CLAUSE.match(clause)
        if not match:
            raise ValueError(f"invalid cap set {text!r}: neither a hex mask nor "
                             "cap_from_text(3) clauses like cap_chown,cap_fowner+eip")
        wanted = _names_mask(match.group(1), text)
        for op, flags in _ACTION.findall(match.group(2)):
            if set(flags.lower()) - set("eip"):
                raise ValueError(f"invalid cap flags {flags!r} in {text!r} (e, i, p)")
            if op == "=":
                # "=" sets exactly these flags: the named caps leave E unless 'e' is given
                mask &= ~wanted
            if "e" in flags.lower():
                mask = mask & ~wanted if op == "-" else mask | wanted
    return mask


def _names_mask(spec: str, text: str) -> int:
    if spec in ("", "all"):
        return ALL_CAPS  # "=e" / "all+e": every capability
    mask = 0
    for word in spec.split(","):
        name = word.strip().upper()
        if name.isdigit():
            mask |= 1 << int(name)
        elif name in CAP_INDEX:
            mask |= bit(name)
        else:
            raise ValueError(f"unknown capability {word!r} in {text!r}")
    return mask
