"""The daemon role's grant files (daemonstore.dbus.grants): what install writes is what
cryptohome-sim takes, and only that: a file edited, planted as a symlink, owned by someone else,
writable by others or named for a user that cannot be is skipped with the reason. The uid map
(cryptohome_sim.callers.CallerIds) gives the daemon role to exactly those users."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from cryptohome_sim.callers import CallerIds
from daemonstore.dbus.callers import CHRONOS, DAEMON, ROOT
from daemonstore.dbus.grants import (
    BadDaemonUser,
    Grants,
    check_daemon_user,
    grant_file_name,
    read_grants,
    render_grant,
)


def _grant(directory: Path, user: str, text: str | None = None, mode: int = 0o644) -> Path:
    path = directory / grant_file_name(user)
    path.write_text(render_grant(user) if text is None else text)
    path.chmod(mode)
    return path


def test_what_install_writes_is_read_back(tmp_path: Path) -> None:
    for user in ("u2f", "biod", "20100"):
        _grant(tmp_path, user)
    (tmp_path / "org.chromium.SessionManager.conf").write_text("<busconfig/>")  # not a grant
    assert read_grants(str(tmp_path)) == Grants(("20100", "biod", "u2f"))
    assert read_grants(str(tmp_path / "missing")) == Grants(())


def test_anything_else_is_skipped_with_the_reason(tmp_path: Path) -> None:
    _grant(tmp_path, "biod")
    edited = _grant(tmp_path, "u2f", render_grant("u2f").replace(
        "RetrieveSessionState", "StartSession"))
    other = _grant(tmp_path, "dlp", render_grant("biod"))  # biod's text under dlp's name
    writable = _grant(tmp_path, "crash", mode=0o666)
    planted = tmp_path / grant_file_name("power")
    planted.symlink_to(_grant(tmp_path, "biod"))
    bad_name = tmp_path / "daemonstore-Evil User.conf"
    bad_name.write_text("x")
    a_dir = tmp_path / grant_file_name("kerberosd")
    a_dir.mkdir()
    got = read_grants(str(tmp_path))
    assert got.users == ("biod",)
    reasons = dict(got.skipped)
    assert reasons[str(edited)] == "not what daemonstore install writes for that user"
    assert reasons[str(other)] == "not what daemonstore install writes for that user"
    assert reasons[str(writable)] == "writable by others (mode 0666)"
    assert reasons[str(planted)].startswith("cannot open it")  # O_NOFOLLOW: ELOOP
    assert "not a user name" in reasons[str(bad_name)]
    assert reasons[str(a_dir)] == "not a regular file"
    assert len(got.skipped) == 6


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_a_grant_owned_by_another_user_is_skipped(tmp_path: Path) -> None:
    path = _grant(tmp_path, "biod")
    os.chown(path, 65534, 65534)
    assert read_grants(str(tmp_path)).skipped == ((str(path), "owned by uid 65534, not root"),)


@pytest.mark.parametrize("user", ["root", "0", "000", "", "Biod", "a/b", "a b", "x" * 33,
                                  '"><policy context="mandatory', "-biod"])
def test_a_bad_daemon_user_is_refused(user: str) -> None:
    with pytest.raises(BadDaemonUser, match="daemon user"):
        check_daemon_user(user)
    with pytest.raises(BadDaemonUser):
        render_grant(user)


def test_the_uid_map_gives_the_daemon_role_to_the_granted_users(tmp_path: Path) -> None:
    bin_uid = pwd.getpwnam("bin").pw_uid
    for user in ("bin", "20100", "no-such-user-here"):
        _grant(tmp_path, user)
    ids = CallerIds(0, 1000).with_grants(str(tmp_path))
    # a user without a passwd entry is ignored, as dbus-daemon ignores its <policy user=...>
    assert ids == CallerIds(0, 1000, frozenset({bin_uid, 20100}))
    assert [ids.role_of(u) for u in (0, 1000, bin_uid, 20100, 20101, None)] == [
        ROOT, CHRONOS, DAEMON, DAEMON, None, None]
    assert CallerIds(0, 1000, frozenset({0, 1000})).role_of(1000) == CHRONOS  # chronos wins
    assert ids.with_grants(None) == CallerIds(0, 1000)  # a reload can take the role away
