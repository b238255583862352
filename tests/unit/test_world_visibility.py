"""``DaemonView.sees_store`` / ``visible_users`` answer from the mount tables, never from the
world's records (``world.guest``, ``chrome_namespace``, ``sessions``): each test makes the records
and the mounts disagree, by acting on the host behind the world's back, and the answer follows
the mounts."""

from __future__ import annotations

import pytest

from daemonstore import paths, session
from daemonstore.session import guest
from daemonstore.world import World, WorldError

FOO = ("foo", 20100, 20100, 0o700)


@pytest.fixture
def world() -> World:
    world = World.model(seed=3)
    world.install_daemon(*FOO)
    return world


def test_a_guest_signed_in_on_the_host_directly_is_seen(world: World) -> None:
    view = world.daemon("foo")
    h = world.hash_of(paths.GUEST_USER)
    with world.in_namespace(world.namespace):
        guest.sign_in_guest(world.host, h)  # not world.login_guest: no record of it
    assert world.guest is None and world.chrome_namespace is None
    assert view.sees_store(h) and view.sees_store(h, cache=True)
    assert view.visible_users() == [h]
    view.write(h, "f", b"guest data")
    with world.in_namespace(world.namespace):
        guest.sign_out_guest(world.host, h)
    assert not view.sees_store(h) and view.visible_users() == []


def test_a_sign_out_on_the_host_directly_is_seen(world: World) -> None:
    view = world.daemon("foo")
    a, b = world.login("alice"), world.login("bob")
    with world.in_namespace(world.namespace):
        session.sign_out(world.host, a)  # not world.logout: world.sessions still has alice
    assert "alice" in world.sessions
    assert not view.sees_store("alice") and view.sees_store("bob")
    assert view.visible_users() == [b]


def test_a_store_bind_detached_in_the_daemon_namespace_is_not_seen(world: World) -> None:
    view, other = world.daemon("foo"), world.daemon("foo")
    h = world.login("alice")
    target = paths.user_store("foo", h)
    with world.in_namespace(view.namespace):
        world.host.umount(target)  # behind the world's back; the directory stays
        assert world.host.exists(target)
    status = view.store_status("alice")
    assert not status.mounted and "nothing is mounted" in status.reason
    assert view.visible_users() == []
    assert other.sees_store("alice") and other.visible_users() == [h]  # its own table


def test_another_users_vault_at_the_store_path_is_not_this_users_store(world: World) -> None:
    """The guest's store bound over alice's in the daemon's namespace: root ``/root/foo`` (the
    guest's tmpfs), which ``store_check.store_status`` alone accepts for any user."""
    view = world.daemon("foo")
    a = world.login("alice")
    g = world.login_guest()
    with world.in_namespace(view.namespace):
        world.host.umount(paths.user_store("foo", a))
        world.host.bind(paths.user_store("foo", g), paths.user_store("foo", a))
    status = view.store_status("alice")
    assert not status.mounted and "not a bind of this user's vault" in status.reason
    assert status.entry is not None and status.entry.root == "/root/foo"
    assert view.sees_store(g) and view.visible_users() == [g]


def test_view_of_an_unknown_daemon_is_refused_with_what_to_call(world: World) -> None:
    with pytest.raises(WorldError, match=r"'fooo' has no store .*no template "
                       r"\(/etc/daemon-store/fooo\): call world\.install_daemon\('fooo'"):
        world.daemon("fooo")
    world.install_daemon("late", 20101, 20101, startup=False)
    with pytest.raises(WorldError, match=r"call world\.run_startup\(\) or "
                       r"world\.start_stores\('late'\).*missing_ok=True"):
        world.daemon("late")
    view = world.daemon("late", missing_ok=True)
    world.run_startup()
    world.login("alice")
    assert not view.sees_store("alice")  # started before its store: no bind in its namespace
    assert world.daemon("late").sees_store("alice")
