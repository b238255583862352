"""``daemonstore install`` (daemonstore.install) under a temporary prefix: every system file,
idempotent, DESTDIR-style, never through a planted symlink; the split D-Bus policies carry
exactly the rules of cryptohome_sim's single policy file."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

from daemonstore.cli import main
from daemonstore.install import install, system_files

ROOT = Path(__file__).resolve().parents[2]
EXPECTED = [
    "etc/dbus-1/system.d/org.chromium.SessionManager.conf",
    "etc/dbus-1/system.d/org.chromium.UserDataAuth.conf",
    "etc/tmpfiles.d/daemonstore.conf",
    "etc/init/daemonstore-startup.conf",
    "etc/init/daemonstore-hook.conf",
    "etc/systemd/system/daemonstore-startup.service",
    "etc/systemd/system/daemonstore-hook.service",
]


def test_install_writes_every_file_then_changes_nothing(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["install", "--prefix", str(tmp_path), "--bindir", "/opt/b"])
    assert res.exit_code == 0, res.output
    assert res.output.splitlines() == [f"wrote {tmp_path}/{p}" for p in EXPECTED]
    for p in EXPECTED:
        assert (tmp_path / p).stat().st_mode & 0o7777 == 0o644
    stamps = {p: (tmp_path / p).stat().st_mtime_ns for p in EXPECTED}
    res = CliRunner().invoke(main, ["install", "--prefix", str(tmp_path), "--bindir", "/opt/b"])
    assert res.output.splitlines() == [f"unchanged {tmp_path}/{p}" for p in EXPECTED]
    assert stamps == {p: (tmp_path / p).stat().st_mtime_ns for p in EXPECTED}
    assert sorted(os.listdir(tmp_path / "etc/init")) == ["daemonstore-hook.conf",
                                                         "daemonstore-startup.conf"]


def test_the_units_run_the_commands_with_system(tmp_path: Path) -> None:
    install(str(tmp_path), bindir="/opt/b")
    unit = (tmp_path / "etc/systemd/system/daemonstore-startup.service").read_text()
    assert "Type=oneshot" in unit and "ExecStart=/opt/b/daemonstore-startup --system" in unit
    assert "display-manager.service" in unit.split("Before=")[1].splitlines()[0]
    hook = (tmp_path / "etc/systemd/system/daemonstore-hook.service").read_text()
    assert "Type=notify" in hook and "ExecStart=/opt/b/daemonstore hook --system" in hook
    job = (tmp_path / "etc/init/daemonstore-startup.conf").read_text()
    assert "start on starting boot-services" in job and "\ntask\n" in job
    assert "exec /opt/b/daemonstore-startup --system" in job
    tmpfiles = (tmp_path / "etc/tmpfiles.d/daemonstore.conf").read_text().splitlines()
    assert [ln for ln in tmpfiles if not ln.startswith("#")] == [
        "d /run/daemon-store 0755 root root -", "d /run/daemon-store-cache 0755 root root -"]


def test_a_changed_file_is_replaced_and_a_planted_symlink_is_not_followed(
        tmp_path: Path) -> None:
    install(str(tmp_path), bindir="/opt/b")
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    hook = tmp_path / "etc/systemd/system/daemonstore-hook.service"
    hook.unlink()
    hook.symlink_to(victim)
    tmpfiles = tmp_path / "etc/tmpfiles.d/daemonstore.conf"
    tmpfiles.write_text("d /run/daemon-store 0777 root root -\n")
    done = dict(install(str(tmp_path), bindir="/opt/b"))
    assert done[str(hook)] == "wrote" and done[str(tmpfiles)] == "wrote"
    assert victim.read_text() == "keep me"
    assert not hook.is_symlink() and "Type=notify" in hook.read_text()
    assert "0755" in tmpfiles.read_text()
    assert [p for p in os.listdir(hook.parent) if p.endswith(".daemonstore-new")] == []


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["install", "--prefix", str(tmp_path), "--dry-run"])
    assert res.exit_code == 0
    assert res.output.splitlines()[0].startswith("would write ")
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_prefix_exits_1_naming_the_path(tmp_path: Path) -> None:
    (tmp_path / "etc").write_text("a file where a directory must be")
    res = CliRunner().invoke(main, ["install", "--prefix", str(tmp_path)])
    assert res.exit_code == 1
    assert res.output.startswith(f"Error: cannot write {tmp_path}/etc")


def _rules(text: str) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    out = set()
    for policy in ET.fromstring(text).iter("policy"):
        who = policy.get("user") or policy.get("context") or ""
        for rule in policy:
            out.add((who + ":" + rule.tag, tuple(sorted(rule.attrib.items()))))
    return out


def test_install_writes_exactly_the_shipped_policies() -> None:
    shipped = {p.name: p.read_text() for p in (ROOT / "daemonstore/dbus/policy").glob("*.conf")}
    assert set(shipped) == {"org.chromium.UserDataAuth.conf", "org.chromium.SessionManager.conf"}
    written = {f.path.rsplit("/", 1)[1]: f.content for f in system_files("/x")
               if f.path.startswith("/etc/dbus-1/system.d/")}
    assert written == shipped
    for file_name, content in written.items():
        name = file_name.removesuffix(".conf")
        rules = _rules(content)
        assert rules, f"{file_name} has no rules"
        # every rule of a file is about its own name
        assert all(dict(attrs).get("own", dict(attrs).get("send_destination")) == name
                   for _, attrs in rules)


def test_daemon_users_get_a_grant_file_each_idempotently(tmp_path: Path) -> None:
    """``--daemon-user`` (repeatable; a repeat is one file): daemonstore-USER.conf with the
    daemon role, written once, then unchanged; read back as a grant by cryptohome-sim."""
    from daemonstore.dbus.grants import read_grants, render_grant

    args = ["install", "--prefix", str(tmp_path), "--bindir", "/opt/b",
            "--daemon-user", "mydaemon", "--daemon-user", "20200", "--daemon-user", "mydaemon"]
    grants = [f"etc/dbus-1/system.d/daemonstore-{u}.conf" for u in ("mydaemon", "20200")]
    want = EXPECTED[:2] + grants + EXPECTED[2:]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert res.output.splitlines() == [f"wrote {tmp_path}/{p}" for p in want]
    assert (tmp_path / grants[0]).read_text() == render_grant("mydaemon")
    assert (tmp_path / grants[0]).stat().st_mode & 0o7777 == 0o644
    stamp = (tmp_path / grants[0]).stat().st_mtime_ns
    res = CliRunner().invoke(main, args)
    assert res.output.splitlines() == [f"unchanged {tmp_path}/{p}" for p in want]
    assert (tmp_path / grants[0]).stat().st_mtime_ns == stamp
    assert read_grants(str(tmp_path / "etc/dbus-1/system.d")).users == ("20200", "mydaemon")
    # a later install without them leaves their grants alone (their package removes them)
    res = CliRunner().invoke(main, ["install", "--prefix", str(tmp_path), "--bindir", "/opt/b"])
    assert res.exit_code == 0 and all((tmp_path / g).exists() for g in grants)


@pytest.mark.parametrize("user", ["root", "../x", "Mallory"])
def test_a_bad_daemon_user_exits_2_writing_nothing(tmp_path: Path, user: str) -> None:
    res = CliRunner().invoke(main, ["install", "--prefix", str(tmp_path), "--daemon-user", user])
    assert res.exit_code == 2
    assert f"daemon user {user!r}" in res.output
    assert list(tmp_path.iterdir()) == []
