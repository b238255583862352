"""The pytest plugin (``daemonstore.testing``), used the way a daemon author would: the fixture
comes from the ``pytest11`` entry point, the assertions take a few lines."""

from __future__ import annotations

import textwrap

import pytest

from daemonstore import paths
from daemonstore.world import KernelWorld, World, WorldError, snapshot

pytest_plugins = ["pytester"]


def test_my_daemon_sees_its_store_after_sign_in_and_loses_it_after_sign_out(
        daemonstore_world: World) -> None:
    world = daemonstore_world
    world.install_daemon("mydaemon", 20100, 20100, 0o700)
    view = world.daemon("mydaemon")
    world.login("alice@example.com")
    assert view.sees_store("alice@example.com")
    view.write("alice@example.com", "state.json", b"{}")
    world.logout("alice@example.com")
    assert not view.sees_store("alice@example.com")
    assert world.read_vault("alice@example.com", "mydaemon", "state.json") == b"{}"


@pytest.mark.daemonstore(daemons=[("a", 20100, 20100, 0o700), ("b", 20101, 20101, 0o750)],
                         seed=7)
def test_marker_installs_daemons_and_seeds_the_salt(daemonstore_world: World) -> None:
    world = daemonstore_world
    assert world.kind == "model"
    assert sorted(world.host.listdir(paths.ETC_DAEMON_STORE)) == ["a", "b"]
    assert world.salt == World.model(seed=7).salt != World.model(seed=8).salt
    assert world.hash_of("Alice") == paths.sanitize_username(world.salt, "alice")
    assert world.host.read_file(paths.SALT) == world.salt and len(world.salt) == 16


def test_the_daemon_only_sees_its_own_users_store(daemonstore_world: World) -> None:
    world = daemonstore_world
    world.install_daemon("a", 20100, 20100)
    world.install_daemon("b", 20101, 20101)
    a, b = world.daemon("a"), world.daemon("b")
    ha = world.login("alice")
    hb = world.login("bob")
    assert sorted(a.visible_users()) == sorted([ha, hb])
    a.write("alice", "x", b"for a")
    with pytest.raises(FileNotFoundError):
        b.read("alice", "x")  # b's store for alice is b's directory, not a's
    with world.in_namespace(b.namespace):
        assert not world.host.exists("/run/daemon-store/a")


@pytest.mark.parametrize("daemonstore_world", ["model"], indirect=True)
def test_body_written_for_both_backends_runs_on_the_model(daemonstore_world: World) -> None:
    def body(world: World) -> tuple[str, bool]:
        world.install_daemon("d", 20100, 20100)
        view = world.daemon("d")
        world.login("alice")
        return world.kind, view.sees_store("alice")

    assert daemonstore_world.run(body) == ("model", True)


def test_startup_refusing_a_template_is_a_clear_error() -> None:
    world = World.model()
    with pytest.raises(WorldError, match="mode 0777 is world-writable"):
        world.install_daemon("open", 20100, 20100, 0o777)


def test_group_writable_template_gets_its_store_as_on_chromeos() -> None:
    world = World.model()
    world.install_daemon("pvm", 20100, 20101, 0o770)  # pluginvm:crosvm 0770 on ChromeOS
    world.login("alice")
    st = world.daemon("pvm").stat("alice")
    assert (st.perm, st.uid, st.gid) == (0o770, 20100, 20101)


def test_view_of_a_daemon_without_stores_sees_nothing() -> None:
    world = World.model()
    world.install_daemon("late", 20100, 20100, startup=False)
    view = world.daemon("late", missing_ok=True)
    world.login("alice")
    assert not view.sees_store("alice")
    assert world.mountinfo(view.namespace).count(" /run ") == 1


def test_kernel_world_refuses_to_be_used_outside_the_sandbox() -> None:
    world = KernelWorld([("d", 20100, 20100, 0o700)])
    with pytest.raises(AttributeError, match=r"world\.run\(body\)"):
        world.login("alice")


def test_snapshot_does_not_follow_symlinks() -> None:
    world = World.model()
    world.host.mkdir("/t")
    world.host.symlink("/etc", "/t/link")
    world.host.write_file("/t/f", b"data")
    snap = snapshot(world.host, "/t")
    assert snap["/t/link"][-1] == "/etc" and snap["/t/f"][-1] == b"data"
    assert "/t/link/daemon-store" not in snap


def test_plugin_is_registered_by_entry_point_and_works_for_a_daemon_author(
        pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_author=textwrap.dedent("""
        import pytest

        @pytest.mark.daemonstore(daemons=[("mydaemon", 20100, 20100, 0o700)])
        @pytest.mark.parametrize("daemonstore_world", ["model", "kernel"], indirect=True)
        def test_store_follows_sign_in(daemonstore_world):
            def body(world):
                view = world.daemon("mydaemon")
                world.login("alice")
                seen = view.sees_store("alice")
                view.write("alice", "f", b"1")
                world.logout("alice")
                return seen, view.sees_store("alice"), world.read_vault("alice", "mydaemon", "f")
            assert daemonstore_world.run(body) == (True, False, b"1")
        """))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs")
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) + outcomes.get("skipped", 0) == 2, result.stdout.str()
    assert outcomes.get("passed", 0) >= 1
    result.stdout.no_fnmatch_line("*PytestUnknownMarkWarning*")
