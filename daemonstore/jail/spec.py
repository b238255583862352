"""minijail0-style arguments -> :class:`JailSpec` (pure: no namespace is ever entered here).

One parser, two uses: ``daemonstore jail`` (strict: the first bad or unsupported argument
raises :class:`JailSpecError` with its position) and ``daemonstore audit`` (``audit=True``: every
minijail0 option is parsed and kept, unknown options and what minijail0 would refuse are
recorded in :attr:`JailSpec.unknown` / :attr:`JailSpec.problems`, and parsing goes on). The
option table and getopt's word rules are in :mod:`daemonstore.jail.options`; the semantics here
follow minijail0_cli.c ``parse_args`` and libminijail.c (docs/chromeos.md §5.1):

``-v``/``--ns-mount``      new mount namespace; in minijail0 (not the library) it also sets the
                           remount mode to slave (commit 9e1ac37)
``-K``                     do not change propagation; ``-K<mode>`` (attached only: getopt
                           ``K::``) sets it to shared/private/slave/unbindable; needs ``-v``
``-k SPEC``                ``src,dest,type[,flags[,data]]``
``-b SPEC``                ``src[,[dest][,writable]]``: MS_BIND without MS_REC, read-only
                           unless writable=1
``--profile NAME``         minimalistic-mountns[-nodev]: a mount namespace *without* -v
``-u USER``/``-g GROUP``   drop to a uid/gid (names are resolved by the caller)
``-n``                     no_new_privs
``--enter PATH``/``-V PATH`` join an existing mount namespace (e.g. mnt_chrome) first

Parsed and kept for the audit (``daemonstore jail`` refuses them: it does not implement them):
``-c`` capabilities (:mod:`daemonstore.jail.caps`), ``-S``/``--seccomp-bpf-binary``/``-s``
seccomp, ``--fs-*`` Landlock, ``-G``/``-y``/``--add-suppl-group`` groups, ``-p``/``-I``/``-U``
pid and user namespaces, ``-P``/``-C`` pivot_root and chroot, ``-N``/``-l``/``-e``/``--uts``,
``-r``/``-t``/``-d``, ``-i``, ``-T``, ``--config`` and every other minijail0 option.

A new mount namespace comes from ``-v``, ``--profile``, ``-P``, ``-t``, ``-d``, ``-r``, ``-p``,
``-I``, ``-U``/``-m``/``-M`` (they all call ``minijail_namespace_vfs`` or
``minijail_namespace_pids``), and from ``-k``/``-b`` -- unless ``-V`` came first: then
``minijail_mount_with_data`` leaves the mounts to the *entered* namespace (libminijail.c;
``daemonstore jail`` refuses that, the audit reports it). Only ``-v`` sets slave; every other
way leaves the library default, private (the §5 trap).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from daemonstore import mountflags
from daemonstore.host import Propagation
from daemonstore.jail import caps as caps_mod
from daemonstore.jail.options import JailSpecError, Option, Problem, split_words
from daemonstore.paths import RUN_DAEMON_STORE, RUN_DAEMON_STORE_CACHE

__all__ = ["JailSpec", "JailSpecError", "MountSpec", "Option", "Problem", "is_store_path",
           "parse_b", "parse_jail_args", "parse_k"]

MS_BIND = mountflags.MS_FLAGS["MS_BIND"]
MS_REC = mountflags.MS_FLAGS["MS_REC"]
DEFAULT_MOUNT_FLAGS = (mountflags.MS_FLAGS["MS_NODEV"] | mountflags.MS_FLAGS["MS_NOEXEC"]
                       | mountflags.MS_FLAGS["MS_NOSUID"])
DEFAULT_TMPFS_DATA = "mode=0755,size=10M"  # minijail_mount_with_data's default for tmpfs
#: ``-K`` values: the kernel's four propagation types, in minijail0 ``set_remount_mode``'s order
REMOUNT_MODES: tuple[str, ...] = (Propagation.SHARED, Propagation.PRIVATE, Propagation.SLAVE,
                                  Propagation.UNBINDABLE)
PROFILES = ("minimalistic-mountns", "minimalistic-mountns-nodev")

#: options ``daemonstore jail`` implements; the others are parsed for the audit only
JAIL_SUPPORTED = frozenset({"v", "K", "k", "b", "u", "g", "n", "V", "profile"})
#: options that make a new mount namespace by themselves (vfs = 1 in libminijail.c)
_VFS_KEYS = frozenset({"v", "profile", "P", "t", "d", "r", "p", "I", "U", "m", "M"})
_PID_KEYS = frozenset({"p", "I", "U", "m", "M"})
_USERNS_KEYS = frozenset({"U", "m", "M"})
_SECCOMP_KEYS = frozenset({"s", "S", "seccomp-bpf-binary"})
_LANDLOCK_KEYS = frozenset({"fs-default-paths", "fs-path-rx", "fs-path-ro", "fs-path-rw",
                            "fs-path-advanced-rw"})


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
    # ---- kept for the audit (see the module docstring) ----
    #: every recognised option in command-line order
    options: tuple[Option, ...] = ()
    #: options minijail0 does not know (audit mode only; strict mode raises)
    unknown: tuple[Option, ...] = ()
    #: what minijail0 would refuse to start with (audit mode only; strict mode raises)
    problems: tuple[Problem, ...] = ()
    #: the option that made the new mount namespace (None: there is none)
    mount_ns_from: Option | None = None
    #: ``-c``: the effective capability mask (None: capabilities are not restricted)
    caps: int | None = None
    #: ``-S``, ``--seccomp-bpf-binary`` or ``-s`` (None: no seccomp asked for)
    seccomp: Option | None = None
    #: a Landlock ruleset is applied (``--fs-*``, or the profile's own rules)
    landlock: bool = False
    new_pid_ns: bool = False
    new_user_ns: bool = False
    pivot_root: str | None = None
    chroot: str | None = None
    #: ``-G``: the supplementary groups of the ``-u`` user (from /etc/group)
    inherit_groups: bool = False
    #: ``--add-suppl-group`` names, in order
    suppl_groups: tuple[str, ...] = ()
    #: ``--no-default-runtime-environment``
    no_default_runtime: bool = False
    #: ``--config FILE``
    config: str | None = None

    def store_binds(self) -> list[MountSpec]:
        """Mounts whose source is a daemon store (``/run/daemon-store[-cache]/<d>``)."""
        return [m for m in self.mounts if m.is_bind and is_store_path(m.src)]

    def find(self, *keys: str) -> Option | None:
        """The first option with one of ``keys`` (a short letter or a long name)."""
        return next((o for o in self.options if o.key in keys), None)

    def option_of(self, mount: MountSpec) -> Option | None:
        """The ``-k``/``-b`` option a mount came from."""
        return next((o for o in self.options if o.key in ("k", "b")
                     and o.value_position == mount.position), None)

    @property
    def nnp_effective(self) -> bool:
        """Is no_new_privs set? ``-n``, or minijail0's default runtime, which sets it when no
        seccomp filter file is given (minijail0_cli.c ``parse_args``, after the option loop)."""
        filter_file = self.seccomp is not None and self.seccomp.key != "s"
        return self.no_new_privs or not (filter_file or self.no_default_runtime)


def is_store_path(path: str) -> bool:
    p = path.rstrip("/")
    for base in (RUN_DAEMON_STORE, RUN_DAEMON_STORE_CACHE):
        if p.startswith(base + "/") and "/" not in p[len(base) + 1:]:
            return True
    return False


def parse_jail_args(argv: list[str], *, audit: bool = False) -> JailSpec:
    """Parse minijail0-style ``argv`` (without the program name) into a JailSpec.

    Strict by default (``daemonstore jail``): raises JailSpecError for the first bad, unknown
    or unsupported argument. With ``audit=True`` nothing raises for an argument: see the module
    docstring."""
    words = split_words(argv, audit=audit)
    state = _State(argv, audit, list(words.problems))
    for opt in words.options:
        try:
            state.apply(opt)
        except JailSpecError as exc:
            state.problem(exc)
    state.options = words.options
    return state.finish(words.command, words.unknown)


class _State:
    """What the options said so far (minijail0_cli.c ``parse_args`` locals)."""

    def __init__(self, argv: list[str], audit: bool, problems: list[Problem]) -> None:
        self.argv = argv
        self.audit = audit
        self.problems = problems
        self.options: list[Option] = []
        self.mounts: list[MountSpec] = []
        self.values: dict[str, Option] = {}  # last occurrence of each single-valued option
        self.caps: int | None = None
        self.seccomp: Option | None = None
        self.suppl_groups: list[str] = []

    def problem(self, exc: JailSpecError) -> None:
        if not self.audit:
            raise exc
        self.problems.append(Problem(exc.position, exc.arg, exc.reason))

    def refuse(self, opt: Option, reason: str) -> None:
        pos = opt.value_position
        raise JailSpecError(pos, self.argv[pos] if pos < len(self.argv) else opt.text, reason)

    def apply(self, opt: Option) -> None:
        key, value = opt.key, opt.value
        if not self.audit and key not in JAIL_SUPPORTED:
            name = opt.text.split()[0]
            self.refuse(opt, f"{name} is parsed for the audit but not supported by "
                        "daemonstore jail")
        if key in ("u", "g") and key in self.values:
            self.refuse(opt, f"-{key} provided multiple times (minijail0 refuses it too)")
        if key == "K" and value is not None and value not in REMOUNT_MODES:
            self.refuse(opt, f"unknown remount mode {value!r} (one of {', '.join(REMOUNT_MODES)})")
        if key == "profile" and value not in PROFILES:
            self.refuse(opt, f"unknown profile (one of {', '.join(PROFILES)})")
        if key == "T" and value not in ("static", "dynamic"):
            self.refuse(opt, "ELF type must be 'static' or 'dynamic'")
        if key in ("k", "b"):
            assert value is not None
            parse = parse_k if key == "k" else parse_b
            self.mounts.append(parse(value, opt.value_position, audit=self.audit))
        elif key == "c":
            try:
                self.caps = caps_mod.parse_caps(value or "")
            except ValueError as exc:
                self.refuse(opt, str(exc))
        elif key in _SECCOMP_KEYS:
            if self.seccomp is not None and self.seccomp.key != key:
                self.refuse(opt, "Do not use -s, -S, or --seccomp-bpf-binary together")
            self.seccomp = opt
        elif key == "add-suppl-group":
            self.suppl_groups.append(value or "")
        self._conflicts(opt)
        self.values[key] = opt

    def _conflicts(self, opt: Option) -> None:
        """Pairs minijail0 refuses (minijail0_cli.c ``parse_args``)."""
        for a, b, what in (("G", "y", "-y and -G are not compatible"),
                           ("P", "C", "-P and -C are not compatible")):
            other = b if opt.key == a else a if opt.key == b else None
            if other is not None and other in self.values:
                self.refuse(opt, what)

    def finish(self, command: tuple[str, ...], unknown: list[Option]) -> JailSpec:
        vals = self.values
        v = "v" in vals
        vfs_from = _vfs_origin(self.options)
        new_ns = vfs_from is not None
        k_opt = vals.get("K")
        self._refusals(v, new_ns)
        if k_opt is not None:
            remount = k_opt.value  # bare -K: leave propagation unchanged
        elif v:
            remount = "slave"  # minijail0's -v default since commit 9e1ac37
        elif new_ns:
            remount = "private"  # the library default when the namespace comes from elsewhere
        else:
            remount = None
        profile = vals["profile"].value if "profile" in vals else None
        return JailSpec(
            new_mount_ns=new_ns, v_given=v, remount_mode=remount, mounts=tuple(self.mounts),
            profile=profile, user=_value(vals, "u"), group=_value(vals, "g"),
            no_new_privs="n" in vals, enter=_value(vals, "V"), command=command,
            warnings=tuple(_warnings(self.mounts, vfs_from, v, k_opt)),
            options=tuple(self.options), unknown=tuple(unknown), problems=tuple(self.problems),
            mount_ns_from=vfs_from, caps=self.caps, seccomp=self.seccomp,
            landlock=_landlock(set(vals), profile, self.mounts),
            new_pid_ns=bool(_PID_KEYS & vals.keys()),
            new_user_ns=bool(_USERNS_KEYS & vals.keys()),
            pivot_root=_value(vals, "P") or ("/var/empty" if profile else None),
            chroot=_value(vals, "C"), inherit_groups="G" in vals,
            suppl_groups=tuple(self.suppl_groups),
            no_default_runtime="no-default-runtime-environment" in vals,
            config=_value(vals, "config"))


    def _refusals(self, v: bool, new_ns: bool) -> None:
        """What minijail0 refuses after its option loop (minijail0_cli.c ``parse_args``)."""
        vals = self.values
        k_opt = vals.get("K")
        if k_opt is not None and not v:
            # minijail0: "No need to use -K ... without -v (new mount namespace)"
            self.problem(JailSpecError(k_opt.position, k_opt.text,
                                       "-K needs an explicit -v (minijail0 refuses it too)"))
        first_b = next((m for m in self.mounts if m.from_b), None)
        if first_b is not None and not (v or {"P", "C", "profile"} & vals.keys()):
            # minijail0: "Bind mounts require a chroot, pivot_root, or new mount namespace"
            self.problem(JailSpecError(first_b.position, self.argv[first_b.position],
                                       "-b needs -v, -P, -C or --profile (minijail0 refuses "
                                       "bind mounts without them)"))
        v_opt = vals.get("V")
        if not self.audit and v_opt is not None and self.mounts and not new_ns:
            # minijail0 would mount into the entered namespace (libminijail.c
            # minijail_mount_with_data); the jail refuses rather than leak mounts there
            raise JailSpecError(v_opt.position, v_opt.text.split()[0], "-V before -k/-b with no "
                                "new mount namespace: the mounts would land in the entered "
                                "namespace; add -v")


def _value(vals: dict[str, Option], key: str) -> str | None:
    opt = vals.get(key)
    return opt.value if opt is not None else None


def _vfs_origin(options: list[Option]) -> Option | None:
    """The first option that makes a new mount namespace (module docstring)."""
    entered = False
    for opt in options:
        if opt.key in _VFS_KEYS or (opt.key in ("k", "b") and not entered):
            return opt
        entered = entered or opt.key == "V"
    return None


def _landlock(keys: set[str], profile: str | None, mounts: list[MountSpec]) -> bool:
    """``--fs-*`` rules, or minimalistic-mountns with only bind mounts, whose destinations
    minijail turns into Landlock rules itself (``minijail_add_minimalistic_mountns_fs_rules``)."""
    if "no-fs-restrictions" in keys:
        return False
    if _LANDLOCK_KEYS & keys:
        return True
    return profile is not None and all(m.is_bind for m in mounts)


def _warnings(mounts: list[MountSpec], vfs_from: Option | None, v: bool,
              k_opt: Option | None) -> list[str]:
    """The traps minijail0 accepts silently, for ``daemonstore jail`` to print."""
    warnings: list[str] = []
    if vfs_from is not None and not v:
        what = vfs_from.text.split()[0] if vfs_from.key not in ("k", "b") else "-k/-b"
        warnings.append(f"{what} makes a mount namespace without -v: propagation becomes "
                        "private and store binds will never see sign-ins (docs/chromeos.md "
                        "§5); add -v -Kslave")
    stores = [m for m in mounts if m.is_bind and is_store_path(m.src)]
    k = k_opt.value if k_opt is not None else None
    if stores and k in ("private", "unbindable"):
        warnings.append(f"-K{k} cuts the store binds off: sign-ins will never arrive; "
                        "use -Kslave")
    if stores and k_opt is not None and k in (None, "", "shared"):
        # audit's store-propagation-shared: the jail's copies stay peers of the root
        # namespace's stores, so the daemon's mounts flow out (docs/chromeos.md §5); a mount
        # it leaves on <store>/<H> makes that user's next sign-in refuse the target (EBUSY)
        how = "bare -K leaves propagation unchanged" if not k else "-Kshared keeps it shared"
        warnings.append(f"{how}: the store binds stay peers of the root namespace's stores, so "
                        "whatever the daemon mounts below them appears outside, in every "
                        "other jail of the store, and blocks the user's next sign-in; use "
                        "-Kslave")
    for m in stores:
        if m.from_b:
            warnings.append(f"-b {m.src} is not recursive: users already signed in stay "
                            "invisible; use -k SRC,DEST,none,MS_BIND|MS_REC")
        elif not m.recursive:
            warnings.append(f"-k {m.src} lacks MS_REC: users already signed in stay "
                            "invisible; use MS_BIND|MS_REC")
    return warnings


def parse_k(value: str, pos: int = 0, *, audit: bool = False) -> MountSpec:
    """``src,dest,type[,flags[,data]]`` (minijail0_cli.c ``add_mount``). ``audit``: any
    filesystem type is kept (``daemonstore jail`` mounts only tmpfs and binds)."""
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
    if not audit and fstype not in ("tmpfs", "none", "bind") and not flags & MS_BIND:
        raise JailSpecError(pos, value, f"filesystem type {fstype!r} is not supported "
                            "(tmpfs, or a bind with MS_BIND)")
    return MountSpec(src, dest, fstype, flags, data, position=pos)


def parse_b(value: str, pos: int = 0, *, audit: bool = False) -> MountSpec:
    """``src[,[dest][,writable]]`` (``minijail_bind``): MS_BIND without MS_REC."""
    parts = value.split(",")
    if len(parts) > 3 or not parts[0]:
        raise JailSpecError(pos, value, "needs src[,[dest][,writable]]")
    src = parts[0]
    dest = parts[1] if len(parts) > 1 and parts[1] else src
    flag = parts[2] if len(parts) > 2 else ""
    if flag not in ("", "0", "1"):
        raise JailSpecError(pos, value, f"bad value for <writable>: {flag!r} (0 or 1)")
    if not src.startswith("/") or not dest.startswith("/"):
        raise JailSpecError(pos, value, "source and destination must be absolute")
    if ".." in src.split("/"):
        raise JailSpecError(pos, value, "source must be a canonical path (no '..')")
    flags = MS_BIND | (0 if flag == "1" else mountflags.MS_FLAGS["MS_RDONLY"])
    return MountSpec(src, dest, "none", flags, "", from_b=True, position=pos)
