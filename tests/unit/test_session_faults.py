"""A failure injected before every step of a 3-store sign-in (``fail_at``): the rollback leaves
every namespace's mountinfo exactly as before, touches nothing outside the user's shadow
directory, loses no vault data, and the next sign-in works."""

from __future__ import annotations

import errno
from collections.abc import Callable

import pytest

from daemonstore import paths, session
from daemonstore.world import World

DAEMONS = (("foo", 20100, 20100, 0o700), ("bar", 20101, 20102, 0o750),
           ("baz", 20103, 20103, 0o700))


def new_user_first() -> tuple[World, str]:
    """A brand-new user signing in first (every directory still to be created)."""
    world = World.model()
    for spec in DAEMONS:
        world.install_daemon(*spec)
    world.daemon("foo")
    world.daemon("baz")
    return world, "alice"


def returning_user_second() -> tuple[World, str]:
    """A returning user with data, signing in while another user is signed in."""
    world, _ = new_user_first()
    view = world.daemon("bar")
    world.login("alice")
    for d in ("foo", "bar", "baz"):
        for cache in (False, True):
            world.host.write_file(world.vault_path("alice", d, "data", cache=cache),
                                  f"{d} {cache}".encode())
    view.write("alice", "from-the-daemon", b"x")
    world.logout("alice")
    world.login("carol")
    return world, "alice"


WORLDS: dict[str, Callable[[], tuple[World, str]]] = {
    "new-first-user": new_user_first,
    "returning-second-user": returning_user_second,
}


def step_count(make: Callable[[], tuple[World, str]]) -> int:
    world, user = make()
    return len(session.plan_sign_in(world.host, world.hash_of(user)).steps)


CASES = [(name, step) for name, make in WORLDS.items() for step in range(step_count(make))]


def state(world: World, user_hash: str) -> tuple[object, ...]:
    host = world.host
    mounts = {ns: host.mountinfo(ns) for ns in host.namespaces()}
    with world.in_namespace(world.namespace):
        outside = world.snapshot(skip=[paths.shadow(user_hash)])
        vault = (world.snapshot(paths.vault(user_hash))
                 if host.exists(paths.vault(user_hash)) else {})
    return mounts, outside, vault


def test_the_cases_cover_a_three_store_sign_in() -> None:
    world, user = new_user_first()
    plan = session.plan_sign_in(world.host, world.hash_of(user))
    assert len(plan.stores) == 6  # 3 daemons x (daemon-store, daemon-store-cache)
    assert len(CASES) == step_count(new_user_first) + step_count(returning_user_second)


@pytest.mark.parametrize(("world_name", "fail_at"), CASES,
                         ids=[f"{n}-step{s}" for n, s in CASES])
def test_failure_before_every_step_rolls_back_completely(world_name: str, fail_at: int) -> None:
    world, user = WORLDS[world_name]()
    h = world.hash_of(user)
    plan = session.plan_sign_in(world.host, h)
    mounts, outside, vault = state(world, h)

    with pytest.raises(session.SignInError) as info:
        world.login(user, fail_at=fail_at)
    exc = info.value
    assert (exc.errno, exc.step, exc.rollback) == (errno.EIO, fail_at, [])
    assert f"step {fail_at} ({plan.steps[fail_at].to_line()})" in exc.reason
    assert "injected failure" in exc.reason

    after_mounts, after_outside, after_vault = state(world, h)
    assert after_mounts == mounts  # no mount leaked, in any namespace
    assert after_outside == outside  # nothing outside the user's shadow dir touched
    # no user data lost (a new user's vault may have gained its empty directory structure)
    assert {k: v for k, v in after_vault.items() if k in vault} == vault
    assert h not in session.mounted_users(world.host)

    # and nothing left behind blocks the next sign-in
    world.login(user)
    for view_daemon in ("foo", "baz"):
        assert world.daemon(view_daemon).sees_store(user)
    world.logout(user)


def test_rollback_of_a_real_failure_half_way(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not injected: the kernel refuses the 4th bind (say ENOSPC, the mount limit)."""
    world, user = returning_user_second()
    h = world.hash_of(user)
    mounts, outside, _vault = state(world, h)
    real_bind = world.host.bind
    calls = {"n": 0}

    def bind(*args: object, **kwargs: object) -> None:
        calls["n"] += 1
        if calls["n"] == 4:
            raise OSError(errno.ENOSPC, "No space left on device", args[1])
        real_bind(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(world.host, "bind", bind)
    with pytest.raises(session.SignInError) as info:
        world.login(user)
    # binds: vault, user/ and root/ self-binds, then (second user: no /home/chronos/user)
    # /home/chronos/u-<H>, so three mounts were up when the fourth failed
    assert (info.value.errno, info.value.path) == (errno.ENOSPC, paths.home_chronos(h))
    monkeypatch.undo()
    assert state(world, h)[:2] == (mounts, outside)
