"""The session hook's converge pass (daemonstore.hook) on the model: what a cryptohome without
daemon-store support leaves undone, made by the hook with sign-in's own ops; idempotent where
cryptohome made the binds; per-user failure isolation; the unbind half; the CLI's --once and
--dry-run (the service loop is in test_hook_service.py, the real bus in tests/system)."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from daemonstore import command, mountinfo, paths
from daemonstore.cli import main
from daemonstore.hook import BIND, UNBIND, converge, plan_converge
from daemonstore.session.plan import BIND_FLAGS
from daemonstore.world import World

DAEMONS = (("crash", 20125, 419, 0o3770), ("debugd", 220, 220, 0o700))


@pytest.fixture
def world() -> World:
    w = World.model()
    for name, uid, gid, mode in DAEMONS:
        w.install_daemon(name, uid, gid, mode)  # crash's 3770 is valid, as ChromeOS ships it
    return w


def store_mounts(w: World, namespace: str | None = None) -> list[str]:
    return [e.mount_point for e in mountinfo.parse(w.mountinfo(namespace))
            if e.mount_point.startswith(paths.STORE_BASES)
            and e.mount_point.count("/") == 4]


def login_without_stores(w: World, user: str) -> str:
    """A sign-in by a cryptohome without daemon-store support: the vault and homes, no binds
    (sign-in, then its store binds unmounted)."""
    h = w.login(user)
    for target in [m for m in store_mounts(w) if m.endswith("/" + h)][::-1]:
        w.host.umount(target)
    return h


def test_the_hook_makes_the_binds_cryptohome_did_not(world: World) -> None:
    daemon = world.daemon("crash")  # a daemon started before the sign-in: its slave namespace
    h = login_without_stores(world, "alice@example.com")
    assert store_mounts(world) == []
    lines: list[str] = []
    report = converge(world.host, lines.append)
    assert report.ok and len(lines) == 1 and lines[0].startswith(f"bound 4 stores of {h}")
    want = sorted(paths.user_store(d, h, c) for d, *_ in DAEMONS for c in (False, True))
    assert sorted(store_mounts(world)) == want
    entries = {e.mount_point: e for e in mountinfo.parse(world.mountinfo())}
    for target in want:
        assert set(entries[target].options) >= BIND_FLAGS
    # owner and mode copied from the template, as sign-in does
    st = world.host.stat(paths.vault_store(h, "crash", False))
    assert (st.uid, st.gid, st.perm) == (20125, 419, 0o3770)
    # the daemon's namespace receives it (the store is shared, the daemon's copy a slave)
    assert daemon.sees_store("alice@example.com")
    daemon.write("alice@example.com", "dump", b"x")
    assert world.read_vault("alice@example.com", "crash", "dump") == b"x"


def test_idempotent_and_nothing_bound_twice_where_cryptohome_bound(world: World) -> None:
    world.login("alice@example.com")  # the default: cryptohome makes the binds
    before = world.mountinfo()
    assert plan_converge(world.host) == []
    assert converge(world.host).done == []
    assert world.mountinfo() == before
    login_without_stores(world, "bob@example.com")
    assert [a.kind for a in plan_converge(world.host)] == [BIND]
    converge(world.host)
    after = world.mountinfo()
    assert plan_converge(world.host) == []
    converge(world.host)
    assert world.mountinfo() == after
    points = store_mounts(world)
    assert len(points) == len(set(points)) == 8


def test_a_failed_user_never_stops_the_others(world: World) -> None:
    ha = login_without_stores(world, "alice@example.com")
    hb = login_without_stores(world, "bob@example.com")
    # alice's vault holds a symlink where the crash store's directory must be (attacker-made)
    world.host.rmdir(paths.vault_store(ha, "crash", False))
    world.host.symlink("/etc", paths.vault_store(ha, "crash", False))
    before_a = [m for m in store_mounts(world) if m.endswith(ha)]
    lines: list[str] = []
    report = converge(world.host, lines.append)
    assert len(report.failed) == 1 and report.failed[0].startswith(f"failed to bind the stores "
                                                                   f"of {ha}")
    assert "ELOOP" in report.failed[0] or "symbolic link" in report.failed[0]
    assert [m for m in store_mounts(world) if m.endswith(ha)] == before_a == []  # rolled back
    assert len([m for m in store_mounts(world) if m.endswith(hb)]) == 4
    assert world.host.lstat("/etc").is_dir  # nothing followed the link
    assert len(lines) == 2


def test_binds_of_users_no_longer_mounted_are_removed(world: World) -> None:
    daemon = world.daemon("crash")
    ha = login_without_stores(world, "alice@example.com")
    hb = login_without_stores(world, "bob@example.com")
    converge(world.host)
    # alice's vault and homes go (a cryptohome that knows nothing of the stores): her store
    # binds stay behind, still reaching her vault's files
    entries = mountinfo.parse(world.mountinfo())
    for e in reversed(entries):
        if e.mount_point.startswith((paths.shadow(ha), paths.home_user(ha),
                                     paths.home_root(ha), paths.home_chronos(ha),
                                     paths.HOME_CHRONOS_USER)):
            world.host.umount(e.mount_point)
    assert [a.kind for a in plan_converge(world.host)] == [UNBIND]
    lines: list[str] = []
    assert converge(world.host, lines.append).ok
    assert lines == [f"unbound 4 stores of {ha} (vault no longer mounted)"]
    assert not any(m.endswith(ha) for m in store_mounts(world))
    assert not daemon.sees_store("alice@example.com")
    # the empty targets stay, as cryptohome leaves them (docs/chromeos.md §7 item 1)
    assert world.host.listdir(paths.user_store("crash", ha)) == []
    assert daemon.listdir("alice@example.com") == []
    assert len([m for m in store_mounts(world) if m.endswith(hb)]) == 4
    assert plan_converge(world.host) == []


def test_a_guest_s_binds_are_left_alone(world: World) -> None:
    g = world.login_guest()
    assert any(m.endswith(g) for m in store_mounts(world))
    assert plan_converge(world.host) == []


@pytest.fixture
def cli_world(world: World, monkeypatch: pytest.MonkeyPatch) -> World:
    monkeypatch.setattr(command, "open_host", lambda root, **_: world.host)
    return world


def test_cli_dry_run_prints_the_plan_and_changes_nothing(cli_world: World) -> None:
    h = login_without_stores(cli_world, "alice@example.com")
    before = cli_world.mountinfo()
    res = CliRunner().invoke(main, ["hook", "--dry-run"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0] == f"# bind {h}"
    assert f"mount --bind {paths.vault_store(h, 'crash', False)} " \
           f"{paths.user_store('crash', h)}" in lines
    assert cli_world.mountinfo() == before


def test_cli_once_converges_and_logs_one_line_per_action(cli_world: World) -> None:
    h = login_without_stores(cli_world, "alice@example.com")
    res = CliRunner().invoke(main, ["hook", "--once"])
    assert res.exit_code == 0, res.output
    assert res.output.splitlines() == [
        f"daemonstore hook: bound 4 stores of {h}: " + ", ".join(
            paths.store(d, c) for c in (False, True) for d in ("crash", "debugd"))]
    res = CliRunner().invoke(main, ["hook", "--once"])
    assert (res.exit_code, res.output) == (0, "")


def test_cli_once_exits_1_when_a_user_failed(cli_world: World) -> None:
    h = login_without_stores(cli_world, "alice@example.com")
    cli_world.host.rmdir(paths.vault_store(h, "debugd", True))
    cli_world.host.symlink("/etc", paths.vault_store(h, "debugd", True))
    res: Any = CliRunner().invoke(main, ["hook", "--once"])
    assert res.exit_code == 1
    assert res.output.startswith(f"daemonstore hook: failed to bind the stores of {h}")


def test_ready_is_sent_to_systemd_s_notify_socket(tmp_path: Any,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """``Type=notify``: the hook tells systemd it is ready through ``$NOTIFY_SOCKET``."""
    import socket

    from daemonstore.cli.hook import notify_ready

    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        notify_ready()
        assert sock.recv(64) == b"READY=1"
    monkeypatch.delenv("NOTIFY_SOCKET")
    notify_ready()  # not under systemd: nothing to do, no error
