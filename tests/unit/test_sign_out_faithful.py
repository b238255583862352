"""Sign-out leaves the empty per-user targets, as ChromeOS does (docs/chromeos.md §7 item 1), on
the model: a naive daemon's write after sign-out lands in /run's tmpfs (the bug is real here as
on a device), a daemon using store_check never writes there, the second sign-in reuses the
targets. The same stories run on the kernel in tests/kernel/test_sign_out_faithful_kernel.py."""

from __future__ import annotations

from typing import Any

from daemonstore import paths, session
from daemonstore.ops import GuardMountPoint, RenewDir
from daemonstore.ops.guard import GUARD_NAME, is_guard
from daemonstore.session.plan import TARGET_MODE
from daemonstore.world import World
from tests.sign_out_story import (
    DAEMONS,
    careful_story,
    check_left_empty,
    naive_story,
    private_copy_story,
    second_sign_in_story,
    tidy_story,
)


def model_world() -> World:
    world = World.model()
    for spec in DAEMONS:
        world.install_daemon(*spec)
    return world


def check_naive(out: dict[str, Any]) -> None:
    """Shared with the kernel test: the naive daemon's write after sign-out is lost to tmpfs."""
    assert out["in_session"] is True
    check_left_empty(out["left"])  # what it found: an empty directory, as on a device
    assert out["after"] is True  # so it wrote...
    assert out["in_daemon"] == b"after sign-out"  # ...into the tmpfs under the target,
    assert out["in_root"] == b"after sign-out"  # the same one in the root namespace,
    assert out["vault"] == b"in session"  # never into alice's vault
    assert out["status"][0] is False and "nothing is mounted" in out["status"][1]
    assert out["bob_after"] is True and out["bob_in_daemon"] == b"bob, after sign-out"
    assert out["bob_vault"] == "FileNotFoundError"  # read_vault raised: lost for bob
    # her next sign-in reports the stray file and hides it; she sees her vault's state
    assert any("written before the user's vault was mounted" in w
               for w in out["again_warnings"])
    assert out["again_seen"] == b"in session"
    assert out["again_after"] == b"after sign-out"  # never deleted, visible again,
    target = paths.user_store("foo", out["left"]["hash"])
    assert [w for w in out["again_signout_warnings"] if target in w] == [  # and said so
        f"left {target} in place: it holds files written while the user was not signed in "
        "(writes before mount); never deleted"]


def check_careful(out: dict[str, Any]) -> None:
    assert out["in_session"] is True
    assert out["after"] is False  # require_store refused: nothing is mounted there
    assert out["status"][0] is False and "nothing is mounted" in out["status"][1]
    assert out["in_daemon"] == []
    assert out["vault"] == b"in session"
    check_left_empty(out["left"])
    assert out["again"] is True and out["again_vault"] == b"second session"


def check_second_sign_in(out: dict[str, Any]) -> None:
    check_left_empty(out["left_first"])
    assert out["daemon_after_first"] == (False, [], False)  # the slave keeps nothing
    assert out["same_hash"] is True
    assert not any("written before" in w for w in out["second_warnings"])
    assert len(out["mounted_second"]) == 1 and out["seen_second"] is True
    assert out["attrs_second"] == (20101, 20102, 0o750)  # the template's, at the bind's root
    assert out["read_second"] == b"first"
    check_left_empty(out["left_second"])  # owner/mode re-applied: root 0700 again
    assert out["daemon_after_second"] == (False, [])
    assert out["vault"] == b"second"


def check_private_copy(out: dict[str, Any]) -> None:
    assert len(out["before"]) == 2 * len(DAEMONS)  # store and cache of each daemon, copied
    check_left_empty(out["left"])  # no mount at any target in any namespace, "private-late"
    assert any(k.startswith("private-late:") for k in out["left"]["mounted"])  # was looked at


def check_tidy(out: dict[str, Any]) -> None:
    assert set(out["targets"]) <= set(out["removed"])
    assert out["exists"] == [False] * len(out["targets"])
    assert out["daemon_sees"] == []
    assert out["naive"] is False  # the tidy option hides the bug: why it is not the default


def test_naive_daemon_writes_into_tmpfs_after_sign_out() -> None:
    check_naive(naive_story(model_world()))


def test_daemon_using_store_check_never_writes_to_tmpfs() -> None:
    check_careful(careful_story(model_world()))


def test_second_sign_in_reuses_the_targets_and_the_daemon_keeps_nothing() -> None:
    check_second_sign_in(second_sign_in_story(model_world()))


def test_a_private_namespace_made_mid_session_keeps_no_copy_of_the_stores() -> None:
    check_private_copy(private_copy_story(model_world()))


def test_remove_store_targets_is_the_tidy_option() -> None:
    check_tidy(tidy_story(model_world()))


def test_the_plan_says_what_stays() -> None:
    world = model_world()
    h = world.login("alice")
    faithful = session.plan_sign_out(world.host, h).to_lines()
    tidy = session.plan_sign_out(world.host, h, remove_store_targets=True).to_lines()
    targets = [f"rmdir {paths.user_store(d[0], h, c)}" for d in DAEMONS for c in (False, True)]
    assert [t for t in targets if t in faithful] == []
    assert sorted(t for t in targets if t in tidy) == sorted(targets)
    # the hardening removals are in both (issue 18): home and vault mount points
    for point in (paths.home_user(h), paths.vault_mount(h), paths.HOME_CHRONOS_USER):
        assert f"rmdir {point}" in faithful and f"rmdir {point}" in tidy
    assert TARGET_MODE == 0o700  # what check_left_empty expects a left target to have


def test_renewal_is_a_plain_rmdir_that_never_takes_a_guard_away() -> None:
    """Guards (ops/guard.py) go only into the home mount points in chronos-owned /home/chronos;
    a target in root-owned /run never gets one, and its renewal is a plain rmdir: a guard-shaped
    directory found in a target is content, kept and reported, never removed as RemoveDir
    removes a lone guard."""
    world = model_world()
    h = world.login("alice")
    world.logout("alice")
    target = paths.user_store("foo", h)
    assert world.host.listdir(target) == []  # renewed: no guard, nothing
    assert not world.host.exists(paths.home_chronos(h))  # the guarded homes went, guard and all
    GuardMountPoint(target).apply(world.host)  # root (a root daemon) made one there meanwhile
    assert is_guard(world.host, target)
    world.login("alice")
    plan = session.plan_sign_out(world.host, h)
    assert RenewDir(target, TARGET_MODE) in plan.steps
    result = plan.apply(world.host)
    assert world.host.listdir(target) == [GUARD_NAME] and is_guard(world.host, target)
    assert f"left {target} in place: it holds files written while the user was not signed " \
           "in (writes before mount); never deleted" in result.warnings
    assert not world.host.exists(paths.home_chronos(h))
