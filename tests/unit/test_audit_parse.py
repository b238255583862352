"""Reading upstart jobs and minijail config files into minijail0 argv with positions."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemonstore.audit.parse import (
    InputError,
    read_config,
    read_inputs,
    read_upstart,
    shell_words,
)
from daemonstore.jail.spec import parse_jail_args

JOB = """\
description "x"
env FLAGS=1
# exec minijail0 -this-is-a-comment

pre-start exec /sbin/minijail0 -u a -- /bin/true
exec minijail0 -v -Kslave \\
  -k '/run/daemon-store/foo,/run/daemon-store/foo,none,MS_BIND|MS_REC' \\
  -u "${USER}" -- /usr/bin/foo --flags=${FLAGS} || logger failed
script
  echo not minijail0 here
  VAR=1 exec minijail0 -n -- /bin/sh -c 'a b'
end script
"""


def test_upstart_invocations_with_lines_and_variables_kept() -> None:
    pre, main, scripted = read_upstart("job.conf", JOB)
    assert pre.argv == ("-u", "a", "--", "/bin/true") and pre.line == 5
    assert main.line == 6 and main.argv == (
        "-v", "-Kslave", "-k",
        "/run/daemon-store/foo,/run/daemon-store/foo,none,MS_BIND|MS_REC",
        "-u", "${USER}", "--", "/usr/bin/foo", "--flags=${FLAGS}")
    assert [line for _, line in main.where] == [6, 6, 7, 7, 8, 8, 8, 8, 8]
    assert scripted.argv == ("-n", "--", "/bin/sh", "-c", "a b") and scripted.line == 11
    spec = parse_jail_args(list(main.argv), audit=True)
    assert spec.user == "${USER}" and spec.command[-1] == "--flags=${FLAGS}"


def test_minijail0_only_in_command_position() -> None:
    assert read_upstart("j", "exec logger minijail0 -v\necho minijail0\n") == []
    (inv,) = read_upstart("j", "test -x /sbin/minijail0 && exec /sbin/minijail0 -n -- x\n")
    assert inv.argv == ("-n", "--", "x")


def test_shell_words_quotes_and_operators() -> None:
    words = [w for w, _ in shell_words(r"""a 'b c' "d \"e\" $f" g\ h i;j # k""")]
    assert words == ["a", "b c", 'd "e" $f', "g h", "i", ";", "j"]
    with pytest.raises(ValueError, match="unterminated"):
        shell_words("minijail0 -k 'oops")


def test_unterminated_quote_is_an_input_error() -> None:
    with pytest.raises(InputError, match="job.conf:2: unterminated single quote"):
        read_upstart("job.conf", "start on x\nexec minijail0 -k 'a,b\n")


CONFIG = """\
% minijail-config-file v0

# comment
ns-mount
K = slave
uts = host
mount = tmpfs,/run,tmpfs,MS_NODEV,mode=755,size=10M
bind-mount = /run/dbus
c = cap_chown+e
S = /usr/share/policy/x.policy
u = \\
  x
net
u2f = 1
"""


def test_config_file_keys_become_argv() -> None:
    inv = read_config("x.conf", CONFIG)
    assert inv.argv == ("--ns-mount", "-Kslave", "--uts=host",
                        "--mount", "tmpfs,/run,tmpfs,MS_NODEV,mode=755,size=10M",
                        "--bind-mount", "/run/dbus", "-c", "cap_chown+e",
                        "-S", "/usr/share/policy/x.policy", "-u", "x")
    assert [line for _, line in inv.where][:3] == [4, 5, 6]
    assert inv.where[-1] == ("x.conf", 11)  # the continuation starts on line 11
    assert inv.unknown_keys == (("net", "x.conf", 13), ("u2f", "x.conf", 14))
    spec = parse_jail_args(list(inv.argv), audit=True)
    assert spec.v_given and spec.remount_mode == "slave" and spec.mounts[0].data == (
        "mode=755,size=10M") and spec.user == "x" and not spec.problems


@pytest.mark.parametrize(("text", "reason"), [
    ("% minijail-config-file v1\nn\n", "first line must be"),
    ("n\n", "first line must be"),
    ("% minijail-config-file v0\nu =\n", "cannot parse"),
    ("% minijail-config-file v0\n= x\n", "cannot parse"),
])
def test_config_files_minijail_cannot_parse(text: str, reason: str) -> None:
    with pytest.raises(InputError, match=reason):
        read_config("x.conf", text)


def test_config_key_without_its_value_is_kept_as_bad() -> None:
    inv = read_config("x.conf", "% minijail-config-file v0\nmount\nn\n")
    assert inv.argv == ("-n",) and inv.bad_entries == (("mount needs a value", "x.conf", 2),)


def test_config_is_spliced_where_config_stands(tmp_path: Path) -> None:
    conf = tmp_path / "d.conf"
    conf.write_text("% minijail-config-file v0\nns-mount\nK = slave\n")
    job = tmp_path / "d-job.conf"
    job.write_text("exec minijail0 -n --config /usr/share/minijail/d.conf -u d -- /bin/d\n")
    job_input, conf_input = read_inputs([str(job), str(conf)])
    (inv,) = job_input.invocations
    assert inv.argv == ("-n", "--ns-mount", "-Kslave", "-u", "d", "--", "/bin/d")
    assert inv.where[1] == (str(conf), 2) and inv.where[0] == (str(job), 1)
    assert conf_input.used_by == str(job)
    (alone,) = read_inputs([str(job)])[0].invocations
    assert alone.unresolved_config == "/usr/share/minijail/d.conf"


def test_unreadable_inputs_carry_their_error(tmp_path: Path) -> None:
    binary = tmp_path / "bin.conf"
    binary.write_bytes(b"\xff\xfe exec minijail0")
    missing, undecodable = read_inputs([str(tmp_path / "nope.conf"), str(binary)])
    assert missing.error and "No such file" in missing.error
    assert undecodable.error and "cannot read" in undecodable.error


def test_directories_give_their_conf_files(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for name in ("b.conf", "a.conf", "sub/c.conf", "notes.txt"):
        (tmp_path / name).write_text("exec minijail0 -n -- x\n")
    assert [Path(i.path).name for i in read_inputs([str(tmp_path)])] == ["a.conf", "b.conf",
                                                                         "c.conf"]
