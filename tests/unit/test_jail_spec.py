"""argv -> JailSpec, valid/invalid pairs in the style of minijail0_cli_unittest.cc."""

from __future__ import annotations

import pytest

from daemonstore import mountflags
from daemonstore.jail.spec import DEFAULT_MOUNT_FLAGS, JailSpecError, parse_jail_args

DOC_FORM = ["-v", "-Kslave", "-k", "tmpfs,/run,tmpfs,MS_NOSUID|MS_NODEV|MS_NOEXEC",
            "-k", "/run/daemon-store/foo,/run/daemon-store/foo,none,MS_BIND|MS_REC",
            "--", "/bin/true", "-x"]


def test_the_documented_form() -> None:
    spec = parse_jail_args(DOC_FORM)
    assert spec.new_mount_ns and spec.remount_mode == "slave" and not spec.warnings
    tmpfs, store = spec.mounts
    assert (tmpfs.fstype, tmpfs.dest, tmpfs.data) == ("tmpfs", "/run", "mode=0755,size=10M")
    assert tmpfs.flags == DEFAULT_MOUNT_FLAGS
    assert store.is_bind and store.recursive and store.src == "/run/daemon-store/foo"
    assert spec.command == ("/bin/true", "-x")
    assert spec.store_binds() == [store]


@pytest.mark.parametrize(("argv", "mode"), [
    (["-v", "--", "x"], "slave"),
    (["-v", "-K", "--", "x"], None),
    (["-v", "-Kshared", "x"], "shared"),
    (["-v", "-Kprivate", "x"], "private"),
    (["-Kunbindable", "-v", "x"], "unbindable"),  # -K is applied after parsing
    (["-vn", "x"], "slave"),
    (["x"], None),
])
def test_valid_remount_mode(argv: list[str], mode: str | None) -> None:
    assert parse_jail_args(argv).remount_mode == mode


@pytest.mark.parametrize(("argv", "position", "reason"), [
    (["-v", "-Kfoo", "x"], 1, "unknown remount mode"),
    (["-Kslave", "x"], 0, "needs an explicit -v"),
    (["-v", "-k", "tmpfs,/run"], 2, "needs src,dest,type"),
    (["-v", "-k", "a,run,tmpfs"], 2, "must be absolute"),
    (["-v", "-k", "/a,/b,none,MS_BIND|MS_BOGUS"], 2, "unknown mount flag 'MS_BOGUS'"),
    (["-v", "-k", "/a,/b,none,MS_BIND,mode=1"], 2, "takes no data"),
    (["-v", "-k", "/a,/b,ext4,MS_NOSUID"], 2, "not supported"),
    (["-v", "-b", "/a,/b,1,extra"], 2, "needs src"),
    (["-v", "-b", "/a/../b"], 2, "canonical"),
    (["-v", "-P", "/var/empty", "x"], 2, "not supported"),
    (["--profile", "nope", "x"], 1, "unknown profile"),
    (["-q"], 0, "unknown option -q"),
    (["--bogus"], 0, "unknown option"),
    (["-v", "-k"], 1, "needs a value"),
])
def test_invalid(argv: list[str], position: int, reason: str) -> None:
    with pytest.raises(JailSpecError) as info:
        parse_jail_args(argv)
    assert info.value.position == position
    assert reason in info.value.reason


def test_traps_of_the_original_are_warned_about() -> None:
    store_k = "/run/daemon-store/foo,/run/daemon-store/foo,none,MS_BIND|MS_REC"
    profile_only = parse_jail_args(["--profile", "minimalistic-mountns", "-k", store_k, "x"])
    assert profile_only.remount_mode == "private"
    assert any("without -v" in w for w in profile_only.warnings)
    private = parse_jail_args(["-v", "-Kprivate", "-k", store_k, "x"])
    assert any("-Kprivate" in w for w in private.warnings)
    no_rec = parse_jail_args(["-v", "-k", "/run/daemon-store/foo,/x,none,MS_BIND", "x"])
    assert any("lacks MS_REC" in w for w in no_rec.warnings)
    b_store = parse_jail_args(["-v", "-b", "/run/daemon-store-cache/foo,,1", "x"])
    (m,) = b_store.mounts
    assert m.dest == m.src and not m.flags & mountflags.MS_FLAGS["MS_RDONLY"]
    assert any("not recursive" in w for w in b_store.warnings)


def test_b_is_read_only_unless_writable_and_round_trips() -> None:
    spec = parse_jail_args(["-v", "-b", "/etc", "-b", "/var,/v,1", "-u", "nobody", "-g", "65534",
                            "--enter", "/run/namespaces/mnt_chrome", "--", "sh"])
    ro, rw = spec.mounts
    assert ro.flags & mountflags.MS_FLAGS["MS_RDONLY"] and ro.to_arg() == "-b /etc,/etc"
    assert rw.to_arg() == "-b /var,/v,1"
    assert (spec.user, spec.group, spec.enter) == ("nobody", "65534", "/run/namespaces/mnt_chrome")
    k = parse_jail_args(DOC_FORM).mounts[1]
    assert k.to_arg() == "-k /run/daemon-store/foo,/run/daemon-store/foo,none,MS_BIND|MS_REC"


def test_flags_table() -> None:
    assert mountflags.parse("MS_BIND|ms_rec") == 0x5000
    assert mountflags.parse("0x5000") == mountflags.parse("20480") == 0x5000
    assert mountflags.to_string(0x5000) == "MS_BIND|MS_REC"
    assert mountflags.to_string(0) == "0"
    assert mountflags.options(mountflags.parse("MS_NOSUID|MS_RDONLY")) == {"nosuid", "ro"}
