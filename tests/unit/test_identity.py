"""A user's mounts by identity (session/queries.py), on the model: the same rules the kernel
hardening suite (tests/hardening/test_identity.py) proves against real attacks."""

from __future__ import annotations

import errno
from typing import Any

import pytest

from daemonstore import mountinfo, paths, session
from daemonstore.ops import ForceUmount, RemoveDir
from daemonstore.session.queries import stray_mounts, user_mounts, vault_identity
from daemonstore.session.repair import repair
from daemonstore.world import World


@pytest.fixture
def world() -> World:
    w = World.model()
    w.install_daemon("foo", 20100, 20100, 0o700)
    w.run_startup()
    return w


def _entries(world: World) -> list[mountinfo.MountInfoEntry]:
    return mountinfo.parse(world.mountinfo())


def test_identity_is_the_shadow_directory_on_its_filesystem(world: World) -> None:
    h = world.login("alice")
    ident = vault_identity(_entries(world), h)
    assert ident.root == paths.shadow(h)
    assert ident.devices == frozenset()  # a directory vault: no device of its own
    mine = user_mounts(_entries(world), h)
    assert all(e.root.startswith(paths.shadow(h) + "/") for e in mine)
    assert stray_mounts(_entries(world), h) == []  # everything where sign-in put it
    other = world.login("bob")
    assert not set(e.mount_id for e in mine) & {e.mount_id for e in
                                                user_mounts(_entries(world), other)}


def test_a_mount_away_from_its_place_is_found_unmounted_and_its_point_removed(
        world: World) -> None:
    h = world.login("alice")
    host = world.host
    host.mkdir("/home/chronos/decoy", 0o755)
    host.bind(f"{paths.vault_mount(h)}/user", "/home/chronos/decoy")  # as if it landed there
    assert [e.mount_point for e in stray_mounts(_entries(world), h)] == ["/home/chronos/decoy"]
    plan = session.plan_sign_out(host, h)
    assert ForceUmount("/home/chronos/decoy") in plan.steps
    assert RemoveDir("/home/chronos/decoy") in plan.steps
    assert any("away from where sign-in puts them" in w for w in plan.warnings)
    result = world.logout("alice")
    assert result.ok
    assert user_mounts(_entries(world), h) == []
    assert not host.exists("/home/chronos/decoy")


def test_repair_tears_down_a_session_with_a_stray_mount(world: World) -> None:
    h = world.login("alice")
    host = world.host
    host.mkdir(f"{paths.store('foo')}/{h}.keep", 0o700)
    host.bind(f"{paths.vault_mount(h)}/root/foo", f"{paths.store('foo')}/{h}.keep")
    plan, report = repair(host)
    assert report.ok
    assert any(u.user_hash == h and u.kind == "tear-down" for u in plan.users)
    assert user_mounts(_entries(world), h) == []


def test_a_failed_sign_in_detaches_a_bind_that_landed_elsewhere(world: World) -> None:
    """The model's version of the RENAME_EXCHANGE race: the bind onto u-<H> lands on a decoy;
    the step's re-check fails (ESTALE) and the rollback finds the mount by identity."""
    h = world.hash_of("alice")
    host = world.host
    host.mkdir("/home/chronos", 0o755, parents=True)
    host.mkdir("/home/chronos/decoy", 0o755)
    real_bind = host.bind

    def bind(source: str, target: str, **kwargs: Any) -> None:
        if target == paths.home_chronos(h):
            target = "/home/chronos/decoy"  # what the kernel does after the exchange
        real_bind(source, target, **kwargs)

    host.bind = bind  # type: ignore[method-assign]
    before = world.mountinfo()
    try:
        with pytest.raises(session.SignInError) as caught:
            session.sign_in(host, h)
    finally:
        del host.bind
    assert caught.value.errno == errno.ESTALE
    assert caught.value.rollback == []
    assert user_mounts(_entries(world), h) == []
    assert world.mountinfo() == before


def test_planted_entries_in_home_chronos_are_replaced(world: World) -> None:
    h = world.hash_of("alice")
    host = world.host
    host.mkdir("/home/chronos", 0o755, parents=True)
    host.mkdir("/etc/victim", 0o700)
    host.symlink("/etc/victim", paths.HOME_CHRONOS_USER)
    host.write_file(paths.home_chronos(h), b"not a directory")
    plan = session.plan_sign_in(host, h)
    assert sum("removed, never followed" in w for w in plan.warnings) == 2
    assert any(op.to_line().startswith("rm -f /home/chronos/user") for op in plan.steps)
    world.login("alice")
    assert host.lstat(paths.HOME_CHRONOS_USER).is_dir
    assert host.lstat(paths.home_chronos(h)).is_dir
    assert host.lstat("/etc/victim").perm == 0o700
