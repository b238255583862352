"""The audit rules on one-line jails: when each fires, and the cases that must stay silent."""

from __future__ import annotations

import pytest

from daemonstore.audit import audit_invocation, parse_group_file
from daemonstore.audit.parse import read_upstart
from daemonstore.audit.rules import NEAR_ROOT, ROOT_EQUIVALENT, RULES, Finding

# shell-quoted: the jail line is read as a shell word list, where an unquoted | is a pipe
STORE = "-k '/run/daemon-store/foo,/run/daemon-store/foo,none,MS_BIND|MS_REC'"
CACHE = "-k '/run/daemon-store-cache/foo,/run/daemon-store-cache/foo,none,MS_BIND|MS_REC'"
TMPFS = "-k 'tmpfs,/run,tmpfs,MS_NODEV|MS_NOEXEC|MS_NOSUID'"
USER = "-u foo -g foo -n"


def findings(args: str, groups: str = "") -> list[Finding]:
    (inv,) = read_upstart("job.conf", f"exec minijail0 {args} -- /usr/bin/foo\n")
    found, _ = audit_invocation(inv, parse_group_file(groups))
    return found


def ids(args: str, groups: str = "") -> list[str]:
    return [f.rule_id for f in findings(args, groups)]


@pytest.mark.parametrize(("args", "expected"), [
    # root in the init namespaces without seccomp or Landlock
    ("-n", ["forbidden-intersection"]),
    ("-c 0x0", ["forbidden-intersection"]),  # still uid 0
    # CAP_SYS_ADMIN kept by a non-root daemon: both the intersection and the cap table
    ("-u foo -c cap_sys_admin+eip", ["forbidden-intersection", "caps-root-equivalent"]),
    # each leg of the intersection broken on its own
    ("-v -Kslave", []),                               # a new mount namespace
    ("-p", []),                                       # pid namespace (implies a mount ns)
    ("-V /run/namespaces/mnt_chrome", []),            # not the init mount namespace
    ("-S /usr/share/policy/x.policy", []),            # seccomp
    ("--seccomp-bpf-binary=/usr/share/policy/x.bpf", []),
    ("-s", []),                                       # seccomp mode 1
    ("--fs-default-paths", []),                       # Landlock
    ("--fs-path-ro=/etc", []),
    ("-U", []),                                       # uid 0 only inside a user namespace
    ("-u foo -c cap_net_admin+eip", []),
])
def test_forbidden_intersection(args: str, expected: list[str]) -> None:
    assert ids(args) == expected


def test_forbidden_intersection_says_what_it_does_not_know() -> None:
    (f,) = findings("-i")
    assert f.arg == "(no -u)" and f.severity == "error" and f.line == 1
    assert "SELinux domain is unknown" in f.why
    assert f.why.endswith("(sandboxing.md: 'The forbidden intersection')")


@pytest.mark.parametrize(("args", "expected"), [
    (f"-v -Kslave {USER} {TMPFS} {STORE} {CACHE}", []),
    (f"-v -Kprivate {USER} {TMPFS} {STORE} {CACHE}", ["store-propagation-private"]),
    (f"-v -Kunbindable {USER} {TMPFS} {STORE} {CACHE}", ["store-propagation-private"]),
    # every way of making the namespace without -v leaves it private (docs/chromeos.md §5.1)
    (f"{USER} -P /var/empty {TMPFS} {STORE} {CACHE}", ["store-propagation-private"]),
    (f"{USER} -p {TMPFS} {STORE} {CACHE}", ["store-propagation-private"]),
    (f"{USER} -t {TMPFS} {STORE} {CACHE}", ["store-propagation-private"]),
    (f"{USER} {TMPFS} {STORE} {CACHE}", ["store-propagation-private"]),
    (f"-v -Kshared {USER} {TMPFS} {STORE} {CACHE}", ["store-propagation-shared"]),
    # -V after the first -k: the -k already made a new (private) namespace
    (f"{USER} {TMPFS} -V /run/namespaces/mnt_chrome {STORE} {CACHE}",
     ["store-propagation-private"]),
    (f"-V /run/namespaces/mnt_chrome -v -Kslave {USER} {TMPFS} {STORE} {CACHE}", []),
])
def test_store_propagation(args: str, expected: list[str]) -> None:
    assert ids(args) == expected


def test_private_names_what_made_the_namespace() -> None:
    (f,) = findings(f"{USER} -p {TMPFS} {STORE} {CACHE}")
    assert f.arg == "-p" and "-p makes the mount namespace without -v" in f.why
    (f,) = findings(f"-v -Kprivate {USER} {TMPFS} {STORE} {CACHE}")
    assert f.arg == "-Kprivate"


@pytest.mark.parametrize(("args", "expected"), [
    (f"-v -Kslave {USER} -b /run,/run,1 {STORE} {CACHE}", ["run-not-tmpfs"]),
    (f"-v -Kslave {USER} -b /run {STORE} {CACHE}", ["run-not-tmpfs"]),
    (f"-v -Kslave {USER} -k '/,/,none,MS_BIND|MS_REC'", ["run-not-tmpfs"]),
    (f"-v -Kslave {USER} -b / {TMPFS}", []),  # not recursive: /run's tmpfs is not in it
    (f"-v -Kslave {USER} -b /run/dbus {TMPFS} {STORE} {CACHE}", []),
    # pivot_root: /run in the jail is not the host's
    (f"-v -Kslave {USER} -P /var/empty -b / {STORE} {CACHE}", []),
])
def test_run_not_tmpfs(args: str, expected: list[str]) -> None:
    assert ids(args) == expected


def test_writable_whole_run_says_so() -> None:
    (f,) = findings(f"-v -Kslave {USER} -b /run,/run,1 {STORE} {CACHE}")
    assert f.arg == "-b /run,/run,1" and "a writable bind of all of /run" in f.why


def test_cache_store_alone_and_other_daemons() -> None:
    assert ids(f"-v -Kslave {USER} {TMPFS} {CACHE}") == []
    other = STORE.replace("foo", "bar")
    assert ids(f"-v -Kslave {USER} {TMPFS} {STORE} {CACHE} {other}") == ["store-cache-missing"]


def test_store_bind_with_b_read_only() -> None:
    (f,) = findings(f"-v -Kslave {USER} {TMPFS} -b /run/daemon-store/foo {CACHE}")
    assert f.rule_id == "store-bind-with-b" and "never recursive and read-only" in f.why


@pytest.mark.parametrize(("mask", "expected"), [
    ("0009", []),                                    # the guide's older hex form: CHOWN|FOWNER
    ("cap_chown,cap_fowner+eip", []),
    ("0x1000", []),                                  # CAP_NET_ADMIN
    ("0x80", ["caps-root-equivalent"]),              # CAP_SETUID
    ("cap_sys_module=e", ["caps-root-equivalent"]),
    ("cap_sys_ptrace+ep cap_sys_ptrace-e", []),      # dropped again from the effective set
    ("cap_sys_ptrace+p", []),                        # only permitted: minijail keeps E
    ("0x2", ["caps-near-root"]),                     # CAP_DAC_OVERRIDE
    ("0x8000082", ["caps-root-equivalent", "caps-near-root"]),  # SETUID, DAC_OVERRIDE, MKNOD
])
def test_capability_tables(mask: str, expected: list[str]) -> None:
    assert ids(f"-u foo -g foo -n -c '{mask}'") == expected


def test_capability_tables_are_disjoint_and_documented() -> None:
    assert not set(ROOT_EQUIVALENT) & set(NEAR_ROOT)
    assert "CAP_CHOWN" not in ROOT_EQUIVALENT | NEAR_ROOT  # the guide grants it
    (f,) = findings("-u foo -g foo -n -c 0x80")
    assert f.arg == "-c 0x80" and "CAP_SETUID: setuid(0)" in f.why


GROUP = "chronos-access:x:1001:chronos,foo\nfoo:x:300:\n"


@pytest.mark.parametrize(("args", "groups", "expected"), [
    ("-u foo -g chronos-access -n", "", ["chronos-access-group"]),
    ("-u foo -g foo --add-suppl-group chronos-access -n", "", ["chronos-access-group"]),
    ("-u foo -g foo -G -n", GROUP, ["chronos-access-group"]),
    ("-u foo -g foo -G -n", "", []),                 # -G cannot be judged without /etc/group
    ("-u bar -g bar -G -n", GROUP, []),
])
def test_chronos_access(args: str, groups: str, expected: list[str]) -> None:
    assert ids(args, groups) == expected


@pytest.mark.parametrize(("args", "expected"), [
    ("-u foo -S /p", ["no-new-privs"]),
    ("-u foo --seccomp-bpf-binary /p.bpf", ["no-new-privs"]),
    ("-u foo -n -S /p", []),
    ("-u foo", []),                                  # minijail0's default runtime sets it
    ("-u foo -s", []),                               # -s leaves the default runtime on
    ("-u foo --no-default-runtime-environment --fs-default-paths", ["no-new-privs"]),
    ("-S /p", []),  # stays root: nothing is dropped (the intersection is broken by seccomp)
])
def test_no_new_privs(args: str, expected: list[str]) -> None:
    assert ids(args) == expected


@pytest.mark.parametrize(("args", "reason"), [
    ("-u foo -n -Kslave", "-K needs an explicit -v"),
    (f"-u foo -n -p -b /run/daemon-store/foo {TMPFS}", "-b needs -v, -P, -C or --profile"),
    ("-u foo -u bar -n", "provided multiple times"),
    ("-u foo -n -G -y", "-y and -G are not compatible"),
    ("-u foo -n -S /p -s", "Do not use -s, -S"),
    ("-u foo -n -T shared", "ELF type"),
    ("-u foo -n -c cap_bogus+e", "unknown capability"),
    ("-u foo -n -v -k '/a,/b,none,MS_BIND|MS_BOGUS'", "unknown mount flag"),
    ("-u foo -n --profile nope", "unknown profile"),
])
def test_minijail_refuses(args: str, reason: str) -> None:
    found = findings(args)
    assert "minijail-refuses" in [f.rule_id for f in found]
    assert any(reason in f.why for f in found if f.rule_id == "minijail-refuses")


def test_every_rule_is_documented() -> None:
    seen = set()
    for r in RULES:
        assert r.id not in seen and r.severity in ("error", "warning", "info")
        assert r.what and r.cite
        seen.add(r.id)
