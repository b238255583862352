"""Files held open on the model (model/busy.py): the scenario ops, what a hold pins, how a
detached mount lives on until its last hold is released, and the holder API sign-out uses."""

from __future__ import annotations

import errno

import pytest

from daemonstore.model import ModelHost
from daemonstore.ops import Hold, Release, ScenarioSyntaxError, parse, to_text


def _host_with_mount() -> ModelHost:
    host = ModelHost()
    host.mkdir("/a")
    host.mount_tmpfs("ta", "/a")
    host.mkdir("/a/d")
    return host


def test_hold_and_release_parse_and_render_back() -> None:
    ops = parse("hold F /a/d\nrelease F\nhold 'G.1' '/odd dir'\n")
    assert ops[0] == Hold("F", "/a/d", line=1)
    assert ops[1] == Release("F", line=2)
    assert parse(to_text(ops)) == [*ops[:2], Hold("G.1", "/odd dir", line=3)]


@pytest.mark.parametrize(("line", "reason"), [
    ("hold F", "missing arguments"),
    ("hold F /a /b", "too many arguments"),
    ("hold F a", "must be absolute"),
    ("hold ../x /a", "bad hold name"),
    ("release", "missing arguments"),
    ("release F G", "too many arguments"),
])
def test_bad_hold_lines_are_syntax_errors(line: str, reason: str) -> None:
    with pytest.raises(ScenarioSyntaxError, match=reason):
        parse(line)


def test_a_held_file_makes_umount_busy_until_released() -> None:
    host = _host_with_mount()
    host.hold("F", "/a/d")
    with pytest.raises(OSError) as busy:
        host.umount("/a")
    assert busy.value.errno == errno.EBUSY and busy.value.filename == "/a"
    host.release("F")
    host.umount("/a")
    assert "/a " not in host.mountinfo()


def test_hold_names_are_unique_and_release_of_an_unknown_name_is_ebadf() -> None:
    host = _host_with_mount()
    host.hold("F", "/a/d")
    with pytest.raises(OSError) as again:
        host.hold("F", "/missing")  # the name is checked first
    assert again.value.errno == errno.EEXIST
    with pytest.raises(OSError) as missing:
        host.hold("G", "/missing")
    assert missing.value.errno == errno.ENOENT
    with pytest.raises(OSError) as unknown:
        host.release("G")
    assert unknown.value.errno == errno.EBADF


def test_a_lazily_detached_held_mount_keeps_its_id_until_the_last_release() -> None:
    host = _host_with_mount()
    held_id = host.stat("/a/d").mnt_id
    host.hold("F", "/a/d")
    host.hold("G", "/a")
    host.umount("/a", detach=True)
    [f, g] = host.open_files()
    assert (f.holder, f.mnt_id, f.attached, f.namespace) == ("F", held_id, False, "init")
    assert "detached" in g.describe()
    host.mount_tmpfs("other", "/a")
    assert host.stat("/a").mnt_id != held_id  # the id is still taken
    host.release("F")
    host.mount_tmpfs("third", "/a")
    assert host.stat("/a").mnt_id != held_id  # G still holds it
    host.release("G")
    host.mount_tmpfs("fourth", "/a")
    assert host.stat("/a").mnt_id == held_id  # freed: the lowest free id is reused


def test_end_holder_releases_the_hold_and_then_says_esrch() -> None:
    host = _host_with_mount()
    host.hold("F", "/a/d")
    [found] = host.open_files()
    host.end_holder(found)
    assert host.open_files() == []
    host.umount("/a")
    with pytest.raises(OSError) as gone:
        host.end_holder(found)
    assert gone.value.errno == errno.ESRCH


def test_syncfs_checks_the_path() -> None:
    host = _host_with_mount()
    host.syncfs("/a/d")
    with pytest.raises(OSError) as missing:
        host.syncfs("/a/nope")
    assert missing.value.errno == errno.ENOENT
