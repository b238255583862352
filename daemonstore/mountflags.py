"""``MS_*`` mount flags: names, numbers and their per-mount option names (pure; no ctypes).

One table serves the kernel backend, the jail's ``-k`` parser and the audit, so a flag is
spelled the same everywhere (systemd's ``mount_flags_to_string`` style: ``MS_BIND|MS_REC``).
"""

from __future__ import annotations

# include/uapi/linux/mount.h
MS_FLAGS: dict[str, int] = {
    "MS_RDONLY": 1,
    "MS_NOSUID": 2,
    "MS_NODEV": 4,
    "MS_NOEXEC": 8,
    "MS_SYNCHRONOUS": 16,
    "MS_REMOUNT": 32,
    "MS_MANDLOCK": 64,
    "MS_DIRSYNC": 128,
    "MS_NOSYMFOLLOW": 256,
    "MS_NOATIME": 1024,
    "MS_NODIRATIME": 2048,
    "MS_BIND": 4096,
    "MS_MOVE": 8192,
    "MS_REC": 16384,
    "MS_SILENT": 32768,
    "MS_POSIXACL": 1 << 16,
    "MS_UNBINDABLE": 1 << 17,
    "MS_PRIVATE": 1 << 18,
    "MS_SLAVE": 1 << 19,
    "MS_SHARED": 1 << 20,
    "MS_RELATIME": 1 << 21,
    "MS_KERNMOUNT": 1 << 22,
    "MS_I_VERSION": 1 << 23,
    "MS_STRICTATIME": 1 << 24,
    "MS_LAZYTIME": 1 << 25,
}
ALL_BITS = 0
for _bit in MS_FLAGS.values():
    ALL_BITS |= _bit

#: MS_* flag -> per-mount option as mountinfo field 6 spells it (show_mnt_opts())
OPTION_OF: dict[int, str] = {
    MS_FLAGS["MS_RDONLY"]: "ro",
    MS_FLAGS["MS_NOSUID"]: "nosuid",
    MS_FLAGS["MS_NODEV"]: "nodev",
    MS_FLAGS["MS_NOEXEC"]: "noexec",
    MS_FLAGS["MS_NOATIME"]: "noatime",
    MS_FLAGS["MS_NODIRATIME"]: "nodiratime",
    MS_FLAGS["MS_RELATIME"]: "relatime",
    MS_FLAGS["MS_NOSYMFOLLOW"]: "nosymfollow",
}
#: the reverse of OPTION_OF, for :func:`option_bits`
BITS_OF: dict[str, int] = {opt: bit for bit, opt in OPTION_OF.items()}
PROPAGATION_BITS = (MS_FLAGS["MS_SHARED"] | MS_FLAGS["MS_SLAVE"] | MS_FLAGS["MS_PRIVATE"]
                    | MS_FLAGS["MS_UNBINDABLE"])


def to_string(flags: int) -> str:
    """``MS_BIND|MS_REC`` for 0x5000; unknown bits in hex; 0 is ``"0"``."""
    names = [name for name, bit in MS_FLAGS.items() if flags & bit]
    rest = flags & ~ALL_BITS
    if rest:
        names.append(hex(rest))
    return "|".join(names) or "0"


def parse(text: str) -> int:
    """``MS_*`` names (any case), decimal or ``0x`` hex numbers joined by ``|`` (minijail's
    ``parse_constant`` without parentheses or ``~``); empty is 0. ValueError names the word."""
    if not text.strip():
        return 0
    value = 0
    for word in (w.strip() for w in text.split("|")):
        name = word.upper()
        if name in MS_FLAGS:
            value |= MS_FLAGS[name]
            continue
        try:
            number = int(word, 0)
        except ValueError:
            raise ValueError(f"unknown mount flag {word!r}") from None
        if number < 0:
            raise ValueError(f"negative mount flag {word!r}")
        value |= number
    return value


def options(flags: int) -> frozenset[str]:
    """The per-mount options (``nosuid`` ...) that ``flags`` asks for."""
    return frozenset(opt for bit, opt in OPTION_OF.items() if flags & bit)


def option_bits(opts: frozenset[str] | set[str]) -> int:
    """The reverse of :func:`options`; ValueError for an option with no MS_ flag."""
    value = 0
    for opt in opts:
        if opt == "rw":
            continue
        bit = BITS_OF.get(opt)
        if bit is None:
            raise ValueError(f"unknown mount option {opt!r}")
        value |= bit
    return value
