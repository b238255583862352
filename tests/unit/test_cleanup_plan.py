"""The low-disk cleanup's pure part: sizes, thresholds and states (docs/chromeos.md §6), and the
order and gates of the plan -- no backend at all."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from daemonstore.cleanup.plan import (
    CacheFacts,
    ClearCache,
    DiskState,
    GiB,
    MiB,
    Phase,
    Thresholds,
    UserFacts,
    format_size,
    parse_size,
    plan_cleanup,
)

A, B, C, D = ("a" * 40, "b" * 40, "c" * 40, "d" * 40)
T = Thresholds(target=40 * MiB, normal=32 * MiB, aggressive=24 * MiB, critical=16 * MiB)
TOTAL = 64 * MiB


@pytest.mark.parametrize(("text", "value"), [
    ("0", 0), ("4096", 4096), ("64M", 64 * MiB), ("64m", 64 * MiB), ("64MiB", 64 * MiB),
    ("64MB", 64 * MiB), ("2G", 2 * GiB), ("1.5G", 3 * GiB // 2), ("768 M", 768 * MiB),
    ("1K", 1024), ("1T", 1 << 40), ("10B", 10),
])
def test_parse_size(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "M", "-1M", "1X", "1.G", "0x10", "1e6", "64 MiBs"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="K/M/G/T"):
        parse_size(text)


def test_format_size() -> None:
    assert [format_size(n) for n in (0, 1023, 1024, 64 * MiB, 3 * GiB // 2, -MiB)] == [
        "0 B", "1023 B", "1.0 KiB", "64.0 MiB", "1.5 GiB", "-1.0 MiB"]


def test_defaults_are_cryptohomes() -> None:
    t = Thresholds()
    assert (t.target, t.normal, t.aggressive, t.critical) == (2 << 30, 1 << 30, 768 << 20,
                                                              512 << 20)


@pytest.mark.parametrize(("free", "state"), [
    (3 * GiB, DiskState.ABOVE_TARGET), (2 * GiB, DiskState.ABOVE_TARGET),
    (2 * GiB - 1, DiskState.ABOVE_THRESHOLD), (1 * GiB, DiskState.ABOVE_THRESHOLD),
    (1 * GiB - 1, DiskState.NORMAL), (768 * MiB, DiskState.NORMAL),
    (768 * MiB - 1, DiskState.AGGRESSIVE), (512 * MiB, DiskState.AGGRESSIVE),
    (512 * MiB - 1, DiskState.CRITICAL), (0, DiskState.CRITICAL),
])
def test_state_table(free: int, state: DiskState) -> None:
    assert Thresholds().state(16 * GiB, free) is state


def test_no_size_is_unknown_and_plans_nothing() -> None:
    assert Thresholds().state(0, 0) is DiskState.UNKNOWN
    plan = plan_cleanup(Thresholds(), 0, 0, [user(A, False, 1, foo=1)])
    assert plan.steps == () and "no size" in plan.reason


@pytest.mark.parametrize("kwargs", [
    {"target": MiB, "normal": 2 * MiB}, {"aggressive": 2 * GiB},
    {"critical": 800 * MiB}, {"critical": -1, "aggressive": -1, "normal": -1, "target": -1},
])
def test_thresholds_must_be_ordered(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="thresholds must"):
        Thresholds(**kwargs)


def user(h: str, signed_in: bool, activity: int | None, **caches: int) -> UserFacts:
    return UserFacts(h, signed_in, activity, tuple(
        CacheFacts(d, f"/c/{h[0]}/{d}", 7, size, 1 if size else 0)
        for d, size in caches.items()))


def order(steps: Sequence[ClearCache]) -> list[tuple[str, str, str]]:
    return [(s.user_hash[0], s.daemon, str(s.phase)) for s in steps]


USERS = [
    user(A, True, 50, foo=MiB, bar=MiB),              # signed in first
    user(D, True, 60, foo=MiB),                       # signed in second
    user(B, False, 30, foo=MiB, bar=MiB, empty=0),    # signed out, newer
    user(C, False, 10, foo=MiB),                      # signed out, older
]


def test_order_signed_out_lru_first_then_signed_in_daemon_by_daemon() -> None:
    plan = plan_cleanup(T, TOTAL, 0, USERS)
    assert order(plan.steps) == [
        ("c", "foo", "signed-out"), ("b", "bar", "signed-out"), ("b", "foo", "signed-out"),
        ("a", "bar", "signed-in"), ("a", "foo", "signed-in"), ("d", "foo", "signed-in")]


def test_unknown_activity_is_the_oldest_and_ties_go_by_hash() -> None:
    users = [user(B, False, None, foo=1), user(A, False, None, foo=1), user(C, False, 5, foo=1),
             user(D, False, 5, foo=1)]
    assert [s[0] for s in order(plan_cleanup(T, TOTAL, 0, users).steps)] == ["a", "b", "c", "d"]


@pytest.mark.parametrize("free", [40 * MiB, 33 * MiB, 32 * MiB])
def test_above_the_normal_threshold_nothing_is_planned(free: int) -> None:
    plan = plan_cleanup(T, TOTAL, free, USERS)
    assert plan.steps == () and "nothing to do" in plan.reason
    assert plan.predict() == []


def test_gates_target_and_aggressive() -> None:
    plan = plan_cleanup(T, TOTAL, 0, USERS)
    first_in = [s.phase for s in plan.steps].index(Phase.SIGNED_IN)
    assert plan.stop_reason(0, TOTAL, 10 * MiB) is None
    assert plan.stop_reason(1, TOTAL, 40 * MiB).startswith("target reached")
    # entering the signed-in phase needs aggressive or critical ...
    assert plan.stop_reason(first_in, TOTAL, 23 * MiB) is None
    assert "signed-in users' caches kept" in plan.stop_reason(first_in, TOTAL, 24 * MiB)
    # ... once in it, only the target stops it
    assert plan.stop_reason(first_in + 1, TOTAL, 30 * MiB) is None


def test_predict_uses_data_bytes() -> None:
    users = [user(B, False, 1, foo=10 * MiB), user(C, False, 2, foo=10 * MiB),
             user(A, True, 3, foo=10 * MiB, bar=10 * MiB)]
    # 15 -> 25 (normal: signed-in kept)
    assert order(_predicted(users, 15 * MiB)) == [("b", "foo", "signed-out"),
                                                  ("c", "foo", "signed-out")]
    # 1 -> 11 -> 21 (aggressive) -> 31 -> 41 >= target
    assert order(_predicted(users, 1 * MiB)) == [
        ("b", "foo", "signed-out"), ("c", "foo", "signed-out"), ("a", "bar", "signed-in"),
        ("a", "foo", "signed-in")]
    # 31 -> 41: the target is met by the first user
    assert order(_predicted(users, 31 * MiB)) == [("b", "foo", "signed-out")]


def _predicted(users: list[UserFacts], free: int) -> list[ClearCache]:
    return plan_cleanup(T, TOTAL, free, users).predict()


def test_dry_run_lines_mark_the_prediction() -> None:
    users = [user(B, False, 1, foo=30 * MiB), user(C, False, 2, foo=MiB)]
    lines = plan_cleanup(T, TOTAL, 20 * MiB, users).to_lines()
    assert lines[0].startswith("# cleanup: 20.0 MiB free of 64.0 MiB: aggressive (target")
    assert lines[1].startswith("+ clear-contents /c/b/foo  # signed-out user bbbb")
    assert lines[1].endswith("daemon foo: 30.0 MiB in 1 entry")
    assert lines[2].startswith("- clear-contents /c/c/foo")
