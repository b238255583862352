"""minijail0-style arguments -> :class:`JailSpec` (pure: no namespace is ever entered here).

The subset of minijail0 that matters for mount namespaces (chromeos-facts.md §5), parsed with
getopt's rules so that the original's traps behave as they do there and can be named:

``-v``/``--ns-mount``      new mount namespace; in minijail0 (not the library) it also sets the
                           remount mode to slave (commit 9e1ac37)
``-K``                     do not change propagation; ``-K<mode>`` (attached only: getopt
                           ``K::``) sets it to shared/private/slave/unbindable
``-k SPEC``                ``src,dest,type[,flags[,data]]``
``-b SPEC``                ``src[,[dest][,writable]]``: MS_BIND without MS_REC, read-only
                           unless writable=1
``--profile NAME``         minimalistic-mountns[-nodev]: a mount namespace *without* -v
``-u USER``/``-g GROUP``   drop to a uid/gid (names are resolved by the caller)
``-n``                     no_new_privs
``--enter PATH``/``-V PATH`` join an existing mount namespace (e.g. mnt_chrome) first

Bad specs raise :class:`JailSpecError` naming the argument's position and the reason; the
traps that minijail0 accepts silently come back as :attr:`JailSpec.warnings`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import mountflags
from .paths import RUN_DAEMON_STORE, RUN_DAEMON_STORE_CACHE

MS_BIND = mountflags.MS_FLAGS["MS_BIND"]
MS_REC = mountflags.MS_FLAGS["MS_REC"]
DEFAULT_MOUNT_FLAGS = (mountflags.MS_FLAGS["MS_NODEV"] | mountflags.MS_FLAGS["MS_NOEXEC"]
                       | mountflags.MS_FLAGS["MS_NOSUID"])
DEFAULT_TMPFS_DATA = "mode=0755,size=10M"  # minijail_mount_with_data's default for tmpfs
REMOUNT_MODES = ("shared", "private", "slave", "unbindable")
PROFILES = ("minimalistic-mountns", "minimalistic-mountns-nodev")


class JailSpecError(ValueError):
    """A bad argument: ``position`` is its index in argv (0-based), ``reason`` says why."""

    def __init__(self, position: int, arg: str, reason: str) -> None:
        self.position = position
        self.arg = arg
        self.reason = reason
        super().__init__(f"argument {position} ({arg!r}): {reason}")


@dataclass(frozen=True)
class MountSpec:
    """One ``-k`` (or ``-b``, with ``from_b``) mount in command-line order."""

    src: str
    dest: str
    fstype: str
    flags: int
    data: str = ""
    from_b: bool = False
    position: int = 0

    @property
    def is_bind(self) -> bool:
        return bool(self.flags & MS_BIND)

    @property
    def recursive(self) -> bool:
        return bool(self.flags & MS_REC)

    def to_arg(self) -> str:
        if self.from_b:
            writable = not self.flags & mountflags.MS_FLAGS["MS_RDONLY"]
            return f"-b {self.src},{self.dest}" + (",1" if writable else "")
        tail = f",{self.data}" if self.data and not self.is_bind else ""
        return f"-k {self.src},{self.dest},{self.fstype},{mountflags.to_string(self.flags)}{tail}"


@dataclass(frozen=True)
class JailSpec:
    """What the jail should be; nothing here touches the kernel."""

    new_mount_ns: bool = False
    v_given: bool = False
    remount_mode: str | None = None  # None = leave propagation as it is
    mounts: tuple[MountSpec, ...] = ()
    profile: str | None = None
    user: str | None = None
    group: str | None = None
    no_new_privs: bool = False
    enter: str | None = None
    command: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default=())

    def store_binds(self) -> list[MountSpec]:
        """Mounts whose source is a daemon store (``/run/daemon-store[-cache]/<d>``)."""
        return [m for m in self.mounts if m.is_bind and is_store_path(m.src)]


def is_store_path(path: str) -> bool:
    p = path.rstrip("/")
    for base in (RUN_DAEMON_STORE, RUN_DAEMON_STORE_CACHE):
        if p.startswith(base + "/") and "/" not in p[len(base) + 1:]:
            return True
    return False


# getopt tables: options taking a required argument, and -K with an optional attached one
_REQUIRED = {"k", "b", "u", "g", "V", "P"}
_NOARG = {"v", "n"}
_LONG = {"--ns-mount": "v", "--profile": "profile", "--enter": "V", "--mount": "k",
         "--bind-mount": "b", "--no-new-privs": "n"}


def parse_jail_args(argv: list[str]) -> JailSpec:
    """Parse minijail0-style ``argv`` (without the program name) into a JailSpec."""
    state: dict[str, object] = {"mounts": [], "warnings": []}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            state["command"] = tuple(argv[i + 1:])
            break
        if arg.startswith("--"):
            i = _long_option(argv, i, state)
            continue
        if not arg.startswith("-") or arg == "-":
            state["command"] = tuple(argv[i:])  # getopt stops at the first non-option
            break
        i = _short_options(argv, i, state)
    return _finish(argv, state)


def _long_option(argv: list[str], i: int, state: dict[str, object]) -> int:
    arg = argv[i]
    name, eq, value = arg.partition("=")
    key = _LONG.get(name)
    if key is None:
        raise JailSpecError(i, arg, "unknown option")
    if key in ("v", "n"):
        if eq:
            raise JailSpecError(i, arg, "takes no value")
        _apply(key, None, i, arg, state)
        return i + 1
    if not eq:
        if i + 1 >= len(argv):
            raise JailSpecError(i, arg, "needs a value")
        value = argv[i + 1]
        _apply(key, value, i + 1, value, state)
        return i + 2
    _apply(key, value, i, arg, state)
    return i + 1


def _short_options(argv: list[str], i: int, state: dict[str, object]) -> int:
    arg = argv[i]
    j = 1
    while j < len(arg):
        opt = arg[j]
        rest = arg[j + 1:]
        if opt in _NOARG:
            _apply(opt, None, i, arg, state)
            j += 1
            continue
        if opt == "K":  # optional argument, attached only (getopt "K::")
            _apply("K", rest or None, i, arg, state)
            return i + 1
        if opt in _REQUIRED:
            if rest:
                _apply(opt, rest, i, arg, state)
                return i + 1
            if i + 1 >= len(argv):
                raise JailSpecError(i, arg, f"-{opt} needs a value")
            _apply(opt, argv[i + 1], i + 1, argv[i + 1], state)
            return i + 2
        raise JailSpecError(i, arg, f"unknown option -{opt}")
    return i + 1


def _apply(key: str, value: str | None, pos: int, arg: str, state: dict[str, object]) -> None:
    mounts = state["mounts"]
    assert isinstance(mounts, list)
    if key == "v":
        state["v"] = True
    elif key == "n":
        state["n"] = True
    elif key == "K":
        if value is not None and value not in REMOUNT_MODES:
            raise JailSpecError(pos, arg, f"unknown remount mode {value!r} "
                                f"(one of {', '.join(REMOUNT_MODES)})")
        state["K"] = value or ""
        state["K_pos"] = pos
    elif key == "k":
        assert value is not None
        mounts.append(parse_k(value, pos))
    elif key == "b":
        assert value is not None
        mounts.append(parse_b(value, pos))
    elif key == "profile":
        if value not in PROFILES:
            raise JailSpecError(pos, arg, f"unknown profile (one of {', '.join(PROFILES)})")
        state["profile"] = value
    elif key == "u":
        state["user"] = value
    elif key == "g":
        state["group"] = value
    elif key == "V":
        state["enter"] = value
    elif key == "P":
        raise JailSpecError(pos, arg, "-P (pivot_root) is not supported by daemonstore jail")


def parse_k(value: str, pos: int = 0) -> MountSpec:
    """``src,dest,type[,flags[,data]]`` (minijail0_cli.c ``add_mount``)."""
    parts = value.split(",", 4)
    if len(parts) < 3 or not all(parts[:3]):
        raise JailSpecError(pos, value, "needs src,dest,type[,flags[,data]]")
    src, dest, fstype = parts[:3]
    if not dest.startswith("/"):
        raise JailSpecError(pos, value, f"destination {dest!r} must be absolute")
    try:
        flags = mountflags.parse(parts[3]) if len(parts) > 3 else 0
    except ValueError as exc:
        raise JailSpecError(pos, value, str(exc)) from None
    data = parts[4] if len(parts) > 4 else None
    if flags & MS_BIND:
        if data is not None:
            raise JailSpecError(pos, value, "a bind (MS_BIND) takes no data field")
        if not src.startswith("/"):
            raise JailSpecError(pos, value, f"bind source {src!r} must be absolute")
    if flags == 0:
        flags = DEFAULT_MOUNT_FLAGS  # minijail_mount_with_data's default for empty flags
    if data is None:
        data = DEFAULT_TMPFS_DATA if fstype == "tmpfs" and not flags & MS_BIND else ""
    if fstype not in ("tmpfs", "none", "bind") and not flags & MS_BIND:
        raise JailSpecError(pos, value, f"filesystem type {fstype!r} is not supported "
                            "(tmpfs, or a bind with MS_BIND)")
    return MountSpec(src, dest, fstype, flags, data, position=pos)


def parse_b(value: str, pos: int = 0) -> MountSpec:
    """``src[,[dest][,writable]]`` (``minijail_bind``): MS_BIND without MS_REC."""
    parts = value.split(",")
    if len(parts) > 3 or not parts[0]:
        raise JailSpecError(pos, value, "needs src[,[dest][,writable]]")
    src = parts[0]
    dest = parts[1] if len(parts) > 1 and parts[1] else src
    writable = len(parts) > 2 and parts[2] not in ("", "0")
    if not src.startswith("/") or not dest.startswith("/"):
        raise JailSpecError(pos, value, "source and destination must be absolute")
    if ".." in src.split("/"):
        raise JailSpecError(pos, value, "source must be a canonical path (no '..')")
    flags = MS_BIND | (0 if writable else mountflags.MS_FLAGS["MS_RDONLY"])
    return MountSpec(src, dest, "none", flags, "", from_b=True, position=pos)


def _finish(argv: list[str], state: dict[str, object]) -> JailSpec:
    mounts = tuple(state["mounts"])  # type: ignore[arg-type]
    v = bool(state.get("v"))
    k = state.get("K")
    profile = state.get("profile")
    new_ns = v or bool(profile) or bool(mounts)
    warnings: list[str] = []
    if k is not None and not v:
        # minijail0 refuses this too ("No need to use -K ... without -v")
        pos = int(state["K_pos"])  # type: ignore[call-overload]
        raise JailSpecError(pos, argv[pos], "-K needs an explicit -v (minijail0 refuses it too)")
    if k == "":
        remount: str | None = None
    elif k is not None:
        remount = str(k)
    elif v:
        remount = "slave"  # minijail0's -v default since commit 9e1ac37
    elif new_ns:
        remount = "private"  # the library default when the namespace comes from elsewhere
    else:
        remount = None
    if new_ns and not v:
        what = "--profile" if profile else "-k/-b"
        warnings.append(f"{what} makes a mount namespace without -v: propagation becomes "
                        "private and store binds will never see sign-ins (chromeos-facts.md "
                        "§5); add -v -Kslave")
    stores = [m for m in mounts if m.is_bind and is_store_path(m.src)]
    if stores and k in ("private", "unbindable"):
        warnings.append(f"-K{remount} cuts the store binds off: sign-ins will never arrive; "
                        "use -Kslave")
    for m in stores:
        if m.from_b:
            warnings.append(f"-b {m.src} is not recursive: users already signed in stay "
                            "invisible; use -k SRC,DEST,none,MS_BIND|MS_REC")
        elif not m.recursive:
            warnings.append(f"-k {m.src} lacks MS_REC: users already signed in stay "
                            "invisible; use MS_BIND|MS_REC")
    command = state.get("command", ())
    return JailSpec(new_mount_ns=new_ns, v_given=v, remount_mode=remount, mounts=mounts,
                    profile=profile if isinstance(profile, str) else None,
                    user=state.get("user"), group=state.get("group"),  # type: ignore[arg-type]
                    no_new_privs=bool(state.get("n")),
                    enter=state.get("enter"),  # type: ignore[arg-type]
                    command=tuple(command),  # type: ignore[arg-type]
                    warnings=tuple(warnings))
