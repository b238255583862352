"""The audit's rules: one function per rule, each turning a parsed jail into Findings (pure).

Sources cited in the findings (docs/chromeos.md names what was read):

* the guide: ChromiumOS ``sandboxing.md`` ("Sandboxing ChromeOS system services"; mirror
  ``KeithIMyers/chromiumos-docs``), sections "The forbidden intersection", "Capabilities",
  "Seccomp filters" and "Securely mounting cryptohome daemon store folders". The section "The
  forbidden intersection" is only in the current version (chromium.org developer library,
  guides/development/sandboxing); the mirrored commit 332f4290 predates it and its list items
  were not available to us, so its wording here is the project brief's: root (uid 0) or
  CAP_SYS_ADMIN, in the init mount *and* PID namespaces, without seccomp -- where the guide also
  counts an SELinux domain ("You don't normally need both Seccomp and SELinux"), which this
  audit cannot see. Landlock (``--fs-*``) is counted like seccomp, as the brief asks.
* google/minijail: minijail0_cli.c (options, refusals, the default runtime) and libminijail.c
  (which options make a mount namespace, the no_new_privs/seccomp ordering).
* docs/chromeos.md §2.2 (chronos-access), §4-§5 (minijail semantics and traps), §7 (pitfalls).
* capabilities(7) for what each capability allows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from daemonstore.audit.parse import Invocation
from daemonstore.jail import caps
from daemonstore.jail.spec import JailSpec, MountSpec, Option, Problem
from daemonstore.mountflags import MS_FLAGS
from daemonstore.paths import RUN_DAEMON_STORE, RUN_DAEMON_STORE_CACHE

__all__ = ["Finding", "Jail", "RULES", "Rule", "by_id", "check", "real_problems",
           "store_daemons"]

ERROR, WARNING, INFO = "error", "warning", "info"
SEVERITIES = (ERROR, WARNING, INFO)

GUIDE_FI = "sandboxing.md: 'The forbidden intersection'"
GUIDE_DS = "sandboxing.md: 'Securely mounting cryptohome daemon store folders'"
GUIDE_CAPS = "sandboxing.md: 'Capabilities'"
GUIDE_SECCOMP = "sandboxing.md: 'Seccomp filters'"

#: capabilities that give root back (error). The guide says only "some of them are equivalent
#: to root, so we avoid granting those" without a list; this table is ours, built from what
#: capabilities(7) says each one allows (UNCONFIRMED as the guide's own list).
ROOT_EQUIVALENT: dict[str, str] = {
    "CAP_SYS_ADMIN": "overloaded: mount, namespaces, and much more (capabilities(7) notes)",
    "CAP_SYS_MODULE": "loads kernel modules: code in the kernel",
    "CAP_SYS_RAWIO": "raw I/O: /dev/mem, /dev/port, iopl",
    "CAP_SYS_PTRACE": "ptrace and process_vm_writev on any process, root's included",
    "CAP_SETUID": "setuid(0)",
    "CAP_SETGID": "any gid and supplementary groups (e.g. a group owning the disk)",
    "CAP_SETFCAP": "puts any capability on a file, then execs it",
    "CAP_SYS_BOOT": "kexec_load: boots a kernel of its choice",
}
#: capabilities that become root in common set-ups (warning). Not flagged: CAP_CHOWN and
#: CAP_FOWNER, which the guide's own permission_broker example grants ("Grant CAP_CHOWN and
#: CAP_FOWNER"); CAP_NET_ADMIN/CAP_NET_RAW, which network daemons need.
NEAR_ROOT: dict[str, str] = {
    "CAP_DAC_OVERRIDE": "bypasses every file read/write/execute check",
    "CAP_DAC_READ_SEARCH": "reads any file; open_by_handle_at(2)",
    "CAP_MKNOD": "device nodes, e.g. of the system disk, wherever a mount lacks nodev",
    "CAP_BPF": "privileged BPF; with CAP_PERFMON reads kernel memory",
}
CHRONOS_ACCESS = "chronos-access"
MS_RDONLY = MS_FLAGS["MS_RDONLY"]


@dataclass(frozen=True)
class Finding:
    """One problem: which rule, how bad, the offending argument, why (citing), and where."""

    rule_id: str
    severity: str
    arg: str
    why: str
    line: int
    path: str = ""

    def to_json(self) -> dict[str, object]:
        return {"rule": self.rule_id, "severity": self.severity, "arg": self.arg,
                "why": self.why, "path": self.path, "line": self.line}


@dataclass
class Jail:
    """What a rule looks at: the parsed spec and where its words came from."""

    spec: JailSpec
    invocation: Invocation
    #: /etc/group lines for ``-G`` (``group -> members``); empty when not given
    groups: dict[str, list[str]] = field(default_factory=dict)

    def finding(self, rule: Rule, arg: str, why: str, position: int | None = None) -> Finding:
        path, line = self.invocation.location(position)
        return Finding(rule.id, rule.severity, arg, f"{why} ({rule.cite})", line, path)

    def at(self, rule: Rule, opt: Option | None, why: str, arg: str = "") -> Finding:
        return self.finding(rule, arg or (opt.text if opt else ""), why,
                            opt.position if opt else None)

    def mount_arg(self, m: MountSpec) -> str:
        opt = self.spec.option_of(m)
        return opt.text if opt else m.to_arg()


@dataclass(frozen=True)
class Rule:
    id: str
    severity: str
    what: str
    cite: str
    fn: Callable[[Jail, Rule], Iterator[Finding]]

    def run(self, jail: Jail) -> list[Finding]:
        return list(self.fn(jail, self))


RULES: list[Rule] = []
_Check = Callable[[Jail, Rule], Iterator[Finding]]


def rule(rule_id: str, severity: str, what: str, cite: str) -> Callable[[_Check], _Check]:
    """Register ``fn(jail, rule)`` as a rule (table order = report order for one line)."""
    def register(fn: _Check) -> _Check:
        RULES.append(Rule(rule_id, severity, what, cite, fn))
        return fn
    return register


def by_id(rule_id: str) -> Rule:
    return next(r for r in RULES if r.id == rule_id)


# ---- what minijail0 itself says --------------------------------------------------------------


@rule("minijail-refuses", ERROR, "minijail0 would refuse these arguments: the daemon never starts",
      "minijail0_cli.c parse_args")
def _refuses(j: Jail, r: Rule) -> Iterator[Finding]:
    for p in real_problems(j.spec):
        yield j.finding(r, p.arg, p.reason, p.position)
    for reason, path, line in j.invocation.bad_entries:
        yield Finding(r.id, r.severity, reason.split()[0], f"{reason} ({r.cite})", line, path)


def _has_variable(p: Problem) -> bool:
    return "$" in p.arg


def real_problems(spec: JailSpec) -> list[Problem]:
    """What minijail0 refuses whatever the variables expand to (a value holding ``$VAR`` is
    judged by ``unresolved-variable`` instead)."""
    return [p for p in spec.problems if not _has_variable(p)]


@rule("unresolved-variable", INFO, "a value with a shell variable that only parses once expanded",
      "upstart: variables are left as written")
def _unresolved(j: Jail, r: Rule) -> Iterator[Finding]:
    for p in j.spec.problems:
        if _has_variable(p):
            yield j.finding(r, p.arg, f"not judged: {p.reason}", p.position)


@rule("unknown-option", INFO, "an option or config key minijail0 does not know",
      "minijail0_cli.c optstring/long_options")
def _unknown(j: Jail, r: Rule) -> Iterator[Finding]:
    for opt in j.spec.unknown:
        yield j.at(r, opt, "not a minijail0 option: not judged")
    for key, path, line in j.invocation.unknown_keys:
        yield Finding(r.id, r.severity, key, f"not a minijail config key: not judged "
                      f"({r.cite})", line, path)


# ---- the forbidden intersection ----------------------------------------------------------------


@rule("forbidden-intersection", ERROR,
      "root or CAP_SYS_ADMIN, in the init mount and PID namespaces, without seccomp or Landlock",
      GUIDE_FI)
def _forbidden_intersection(j: Jail, r: Rule) -> Iterator[Finding]:
    s = j.spec
    root = s.user is None and not s.new_user_ns  # uid 0 inside a user namespace is not root
    sys_admin = s.caps is not None and bool(s.caps & caps.bit("CAP_SYS_ADMIN"))
    if not (root or sys_admin):
        return
    if s.new_mount_ns or s.enter or s.new_pid_ns or s.seccomp or s.landlock:
        return
    who = "runs as root (no -u)" if root else "keeps CAP_SYS_ADMIN"
    why = (f"{who} in the init mount and PID namespaces with no seccomp filter and no Landlock "
           "rules; the SELinux domain is unknown to this audit (one that confines the daemon "
           "would also avoid the intersection)")
    opt = s.find("c") if not root else None
    yield j.at(r, opt, why, arg="" if opt else "(no -u)")


# ---- daemon store -------------------------------------------------------------------------------


@rule("store-no-new-mount-ns", ERROR,
      "store binds without a new mount namespace: they land in the namespace entered with -V",
      f"{GUIDE_DS}; libminijail.c minijail_mount_with_data")
def _store_no_ns(j: Jail, r: Rule) -> Iterator[Finding]:
    if j.spec.new_mount_ns:
        return
    for m in j.spec.store_binds():
        yield j.finding(r, j.mount_arg(m), "-V came before the mounts and nothing made a new "
                        "namespace, so minijail mounts into the entered one (e.g. mnt_chrome): "
                        "the bind leaks there; add -v -Kslave", m.position)


@rule("store-propagation-private", ERROR,
      "store binds in a private namespace (-Kprivate, or --profile/-P/-k/-p... without -v)",
      "docs/chromeos.md §5.1 (-K) and §7 item 3")
def _store_private(j: Jail, r: Rule) -> Iterator[Finding]:
    s = j.spec
    if not (s.new_mount_ns and s.store_binds() and s.remount_mode in ("private", "unbindable")):
        return
    k = s.find("K")
    if k is not None:
        why = (f"{k.text} makes every mount {s.remount_mode}: the store binds never receive a "
               "later sign-in" + ("; an unbindable store cannot even be bound"
                                  if s.remount_mode == "unbindable" else "") + "; use -Kslave")
        yield j.at(r, k, why)
        return
    origin = s.mount_ns_from
    what = origin.text.split()[0] if origin else "the mount namespace"
    yield j.at(r, origin, f"{what} makes the mount namespace without -v, so propagation stays "
               "the library default, private: the store binds never receive a later sign-in; "
               "add -v -Kslave")


@rule("store-propagation-shared", WARNING,
      "store binds with propagation left shared (-K or -Kshared): the daemon's mounts flow out",
      "docs/chromeos.md §5.1 (-v: mounts flow in, never out)")
def _store_shared(j: Jail, r: Rule) -> Iterator[Finding]:
    s = j.spec
    if s.new_mount_ns and s.store_binds() and s.find("K") and s.remount_mode in (None, "shared"):
        yield j.at(r, s.find("K"), "the store binds stay peers of the root namespace's store: "
                   "whatever the daemon mounts below them appears outside (and in every other "
                   "jail of that store); use -Kslave")


@rule("store-bind-not-recursive", ERROR, "a -k store bind without MS_REC",
      f"{GUIDE_DS}; docs/chromeos.md §7 item 2")
def _store_not_recursive(j: Jail, r: Rule) -> Iterator[Finding]:
    for m in j.spec.store_binds():
        if not m.from_b and not m.recursive:
            yield j.finding(r, j.mount_arg(m), "without MS_REC the users already signed in "
                            "when the daemon (re)starts stay invisible; use MS_BIND|MS_REC",
                            m.position)


@rule("store-bind-with-b", ERROR, "-b used for a store (MS_BIND without MS_REC; read-only)",
      "docs/chromeos.md §5.1 (-b) and §7 item 2")
def _store_with_b(j: Jail, r: Rule) -> Iterator[Finding]:
    for m in j.spec.store_binds():
        if m.from_b:
            ro = " and read-only" if m.flags & MS_RDONLY else ""
            yield j.finding(r, j.mount_arg(m), f"-b is never recursive{ro}: users already "
                            "signed in stay invisible; use -k SRC,SRC,none,MS_BIND|MS_REC",
                            m.position)


@rule("store-bind-too-broad", WARNING,
      "all of /run/daemon-store (or -cache) bound: every daemon's and user's store",
      "docs/chromeos.md §7 item 7")
def _store_too_broad(j: Jail, r: Rule) -> Iterator[Finding]:
    for m in j.spec.mounts:
        if m.is_bind and m.src.rstrip("/") in (RUN_DAEMON_STORE, RUN_DAEMON_STORE_CACHE):
            yield j.finding(r, j.mount_arg(m), "exposes every daemon's store of every signed-in "
                            "user; bind only /run/daemon-store/<d>", m.position)


@rule("run-not-tmpfs", WARNING, "all of /run bound, or the host's /run kept, instead of a tmpfs",
      f"{GUIDE_DS} ('Be sure not to mount all of /run if possible')")
def _run_not_tmpfs(j: Jail, r: Rule) -> Iterator[Finding]:
    s = j.spec
    whole = [m for m in s.mounts if m.is_bind and (
        m.src.rstrip("/") == "/run" or (m.src == "/" and m.recursive))]
    for m in whole:
        rw = "" if m.flags & MS_RDONLY else "writable "
        yield j.finding(r, j.mount_arg(m), f"a {rw}bind of all of /run gives the daemon every "
                        "socket, lock and store there; mount a tmpfs on /run and bind only "
                        "what it needs", m.position)
    tmpfs_run = any(m.fstype == "tmpfs" and m.dest.rstrip("/") == "/run" for m in s.mounts)
    if (not whole and s.store_binds() and s.new_mount_ns and not tmpfs_run
            and not (s.pivot_root or s.chroot)):
        first = s.store_binds()[0]
        yield j.finding(r, "(no -k tmpfs,/run,tmpfs,...)", "without a tmpfs on /run the jail "
                        "keeps the host's whole /run, every other daemon's store included",
                        first.position)


@rule("store-cache-missing", WARNING,
      "/run/daemon-store/<d> bound without /run/daemon-store-cache/<d>",
      "docs/chromeos.md §4.5 (dlcservice, regmond) and §6")
def _store_cache_missing(j: Jail, r: Rule) -> Iterator[Finding]:
    binds = j.spec.store_binds()
    cached = {m.src.rstrip("/").rsplit("/", 1)[1] for m in binds
              if m.src.startswith(RUN_DAEMON_STORE_CACHE + "/")}
    for m in binds:
        if m.src.startswith(RUN_DAEMON_STORE + "/"):
            name = m.src.rstrip("/").rsplit("/", 1)[1]
            if name not in cached:
                yield j.finding(r, j.mount_arg(m), f"startup also makes "
                                f"{RUN_DAEMON_STORE_CACHE}/{name}, the store cryptohome may "
                                "empty when the disk is low; caches kept in the persistent "
                                "store are never reclaimed", m.position)


# ---- privileges ----------------------------------------------------------------------------------


def _caps_rule(j: Jail, r: Rule, table: dict[str, str]) -> Iterator[Finding]:
    mask = j.spec.caps
    if mask is None:
        return
    hits = [name for name in caps.names(mask) if name in table]
    if hits:
        detail = "; ".join(f"{name}: {table[name]}" for name in hits)
        yield j.at(r, j.spec.find("c"), f"keeps {', '.join(hits)} ({detail})")


@rule("caps-root-equivalent", ERROR, "-c keeps a capability equivalent to root",
      f"{GUIDE_CAPS} ('Some of them are equivalent to root'); capabilities(7)")
def _caps_root(j: Jail, r: Rule) -> Iterator[Finding]:
    yield from _caps_rule(j, r, ROOT_EQUIVALENT)


@rule("caps-near-root", WARNING, "-c keeps a capability that becomes root in common set-ups",
      "capabilities(7)")
def _caps_near(j: Jail, r: Rule) -> Iterator[Finding]:
    yield from _caps_rule(j, r, NEAR_ROOT)


@rule("chronos-access-group", WARNING,
      "chronos-access among the daemon's groups (-g, --add-suppl-group, -G with --group-file)",
      "docs/chromeos.md §2.2 (Mounter::PerformMount)")
def _chronos_access(j: Jail, r: Rule) -> Iterator[Finding]:
    s = j.spec
    why = ("the group of every user's /home/user/<h> and /home/chronos/u-<h> (0750 "
           "chronos:chronos-access): the daemon reads every signed-in user's files; whether an "
           "SELinux domain confines it is unknown to this audit")
    if s.group == CHRONOS_ACCESS:
        yield j.at(r, s.find("g"), why)
    for opt in s.options:
        if opt.key == "add-suppl-group" and opt.value == CHRONOS_ACCESS:
            yield j.at(r, opt, why)
    if s.inherit_groups and s.user and s.user in j.groups.get(CHRONOS_ACCESS, []):
        yield j.at(r, s.find("G"), f"-G gives {s.user}'s groups, chronos-access among them: "
                   + why)


@rule("no-new-privs", WARNING,
      "no -n while a seccomp filter file turns off minijail0's default no_new_privs",
      f"{GUIDE_SECCOMP}; minijail0_cli.c (default runtime)")
def _no_new_privs(j: Jail, r: Rule) -> Iterator[Finding]:
    s = j.spec
    drops = s.user is not None or s.group is not None or s.caps is not None
    if s.nnp_effective or not drops:
        return
    cause = s.seccomp or s.find("no-default-runtime-environment")
    yield j.at(r, cause, "without -n the filter goes on before root and capabilities are "
               "dropped, so it must allow setresuid/setgroups/capset for the daemon's whole "
               "life, and setuid or file-capability programs can give privileges back; add -n",
               arg=f"(no -n; {cause.text if cause else ''})")


def check(jail: Jail) -> list[Finding]:
    """Every rule on one jail, in table order."""
    return [f for r in RULES for f in r.run(jail)]


def store_daemons(spec: JailSpec) -> list[str]:
    """Daemon names of the store binds, in order, once each."""
    out: list[str] = []
    for m in spec.store_binds():
        name = m.src.rstrip("/").rsplit("/", 1)[1]
        if name not in out:
            out.append(name)
    return out


