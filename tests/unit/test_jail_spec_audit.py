"""The one minijail0 parser in its two uses: strict for ``daemonstore jail``, keeping
everything for ``daemonstore audit`` (minijail0_cli.c's option table and getopt rules)."""

from __future__ import annotations

import pytest

from daemonstore.jail import caps
from daemonstore.jail.options import SHORT, Arg, option_for_config_key
from daemonstore.jail.spec import JailSpec, JailSpecError, parse_jail_args


def audit(*argv: str) -> JailSpec:
    return parse_jail_args(list(argv), audit=True)


def test_the_optstring_is_minijails() -> None:
    assert SHORT["k"] is Arg.REQUIRED and SHORT["K"] is Arg.OPTIONAL and SHORT["v"] is Arg.NONE
    assert SHORT["e"] is SHORT["t"] is SHORT["m"] is SHORT["M"] is Arg.OPTIONAL
    assert "q" not in SHORT and "x" not in SHORT
    assert option_for_config_key("ns-mount") == ("v", Arg.NONE)
    assert option_for_config_key("K") == ("K", Arg.OPTIONAL)
    assert option_for_config_key("enter") is None  # daemonstore's own spelling, CLI only
    assert option_for_config_key("net") is None


@pytest.mark.parametrize("argv", [
    ["-c", "0x9", "x"], ["-S", "/p", "x"], ["-p", "x"], ["-G", "x"], ["--uts", "x"],
    ["-N", "x"], ["-e", "x"], ["-l", "x"], ["-r", "x"], ["-t", "x"], ["-i", "x"],
    ["-T", "static", "x"], ["--fs-default-paths", "x"], ["--seccomp-bpf-binary=/p", "x"],
])
def test_strict_mode_refuses_what_the_jail_does_not_implement(argv: list[str]) -> None:
    with pytest.raises(JailSpecError, match="parsed for the audit but not supported"):
        parse_jail_args(argv)
    assert not audit(*argv).problems and not audit(*argv).unknown


def test_audit_mode_keeps_unknown_options_and_goes_on() -> None:
    spec = audit("-v", "-q", "--bogus", "-Kslave", "-x9", "-n", "--", "cmd")
    assert [o.text for o in spec.unknown] == ["-q", "--bogus", "-x"]
    assert spec.remount_mode == "slave" and spec.no_new_privs and spec.command == ("cmd",)
    assert [o.position for o in spec.unknown] == [1, 2, 4]


def test_audit_mode_records_what_minijail_refuses() -> None:
    spec = audit("-Kslave", "-k", "a,b", "-k", "/a,/b,none,MS_BIND", "cmd")
    reasons = [p.reason for p in spec.problems]
    assert any("needs src,dest,type" in r for r in reasons)
    assert any("-K needs an explicit -v" in r for r in reasons)
    assert len(spec.mounts) == 1  # the good -k is kept


def test_getopt_word_rules() -> None:
    spec = audit("-vn", "-Kslave", "-k/a,/a,none,MS_BIND|MS_REC", "--uts=host", "-e",
                 "--ns-m", "--profile=minimalistic-mountns", "cmd", "-v")
    assert [o.key for o in spec.options] == ["v", "n", "K", "k", "uts", "e", "v", "profile"]
    assert spec.find("uts").value == "host" and spec.find("e").value is None
    assert spec.mounts[0].src == "/a" and spec.command == ("cmd", "-v")
    with pytest.raises(JailSpecError, match="ambiguous"):
        parse_jail_args(["--no", "x"])  # --no-new-privs, --no-fs-restrictions, ...
    with pytest.raises(JailSpecError, match="takes no value"):
        parse_jail_args(["--ns-mount=1", "x"])


@pytest.mark.parametrize(("argv", "origin", "new_ns", "remount"), [
    (["-v"], "v", True, "slave"),
    (["--profile", "minimalistic-mountns"], "profile", True, "private"),
    (["-P", "/var/empty"], "P", True, "private"),
    (["-p"], "p", True, "private"),
    (["-I"], "I", True, "private"),
    (["-U"], "U", True, "private"),
    (["-r"], "r", True, "private"),
    (["-t"], "t", True, "private"),
    (["-d"], "d", True, "private"),
    (["-k", "tmpfs,/run,tmpfs"], "k", True, "private"),
    (["-C", "/chroot"], None, False, None),          # chroot alone: no mount namespace
    (["-V", "/ns", "-k", "tmpfs,/run,tmpfs"], None, False, None),  # mounts go into /ns
    (["-k", "tmpfs,/run,tmpfs", "-V", "/ns"], "k", True, "private"),
    (["-l", "-N", "-e", "--uts"], None, False, None),
])
def test_which_options_make_a_mount_namespace(argv: list[str], origin: str | None,
                                              new_ns: bool, remount: str | None) -> None:
    spec = audit(*argv, "cmd")
    assert spec.new_mount_ns is new_ns and spec.remount_mode == remount
    assert (spec.mount_ns_from.key if spec.mount_ns_from else None) == origin


def test_namespaces_privileges_and_landlock() -> None:
    spec = audit("-U", "-u", "foo", "-G", "--add-suppl-group", "video", "--add-suppl-group",
                 "audio", "-c", "cap_net_admin,cap_net_raw+eip", "--fs-path-ro", "/etc",
                 "--config", "/x.conf", "cmd")
    assert spec.new_pid_ns and spec.new_user_ns and spec.inherit_groups
    assert spec.suppl_groups == ("video", "audio") and spec.config == "/x.conf"
    assert caps.names(spec.caps or 0) == ["CAP_NET_ADMIN", "CAP_NET_RAW"]
    assert spec.landlock
    assert not audit("--fs-default-paths", "--no-fs-restrictions", "cmd").landlock
    # minimalistic-mountns with only bind mounts gets Landlock rules from minijail itself
    assert audit("--profile", "minimalistic-mountns", "-b", "/run/dbus", "cmd").landlock
    assert not audit("--profile", "minimalistic-mountns", "-k", "tmpfs,/run,tmpfs",
                     "cmd").landlock
    assert audit("--profile", "minimalistic-mountns", "cmd").pivot_root == "/var/empty"


@pytest.mark.parametrize(("argv", "nnp"), [
    (["-u", "x"], True),               # the default runtime sets no_new_privs
    (["-u", "x", "-S", "/p"], False),  # not with a filter file
    (["-u", "x", "-S", "/p", "-n"], True),
    (["-u", "x", "-s"], True),
    (["-u", "x", "--no-default-runtime-environment"], False),
])
def test_no_new_privs_as_minijail0_sets_it(argv: list[str], nnp: bool) -> None:
    assert audit(*argv, "cmd").nnp_effective is nnp


@pytest.mark.parametrize(("text", "names"), [
    ("0009", ["CAP_CHOWN", "CAP_FOWNER"]),
    ("0x300b", ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_NET_ADMIN",
                "CAP_NET_RAW"]),
    ("cap_chown,cap_fowner+eip", ["CAP_CHOWN", "CAP_FOWNER"]),
    ("cap_chown+p", []),
    ("=e cap_sys_admin-e", [n for n in caps.CAP_NAMES if n != "CAP_SYS_ADMIN"]),
    ("all=ep cap_setuid=p", [n for n in caps.CAP_NAMES if n != "CAP_SETUID"]),
    ("21+e", ["CAP_SYS_ADMIN"]),
])
def test_cap_text(text: str, names: list[str]) -> None:
    assert caps.names(caps.parse_caps(text)) == names


@pytest.mark.parametrize("text", ["", "chown+e", "cap_chown+x", "0xzz", "cap_nope+e"])
def test_bad_cap_text(text: str) -> None:
    with pytest.raises(ValueError):
        caps.parse_caps(text)


def test_minijail_refusals_also_bind_the_strict_parser() -> None:
    with pytest.raises(JailSpecError, match="provided multiple times"):
        parse_jail_args(["-u", "a", "-u", "b", "x"])
    with pytest.raises(JailSpecError, match="-b needs -v"):
        parse_jail_args(["-b", "/etc", "x"])
    with pytest.raises(JailSpecError, match="writable"):
        parse_jail_args(["-v", "-b", "/etc,/etc,yes", "x"])
    # minijail0 would mount into the entered namespace; the jail refuses instead
    with pytest.raises(JailSpecError, match="land in the entered namespace"):
        parse_jail_args(["-V", "/ns", "-k", "tmpfs,/run,tmpfs", "x"])
    spec = parse_jail_args(["-V", "/ns", "-v", "-k", "tmpfs,/run,tmpfs", "x"])
    assert spec.new_mount_ns and spec.enter == "/ns" and spec.remount_mode == "slave"
