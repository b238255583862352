"""Sign-out leaves the empty per-user targets on the real kernel too (docs/chromeos.md §7 item
1): the stories of tests/unit/test_sign_out_faithful.py, each in run_in_sandbox's child, checked
with the same assertions -- a naive daemon's write after sign-out lands in /run's tmpfs, a daemon
using store_check never writes there, the second sign-in reuses the targets."""

from __future__ import annotations

import pytest

from daemonstore.world import kernel_world
from tests.sign_out_story import (
    DAEMONS,
    careful_story,
    naive_story,
    private_copy_story,
    second_sign_in_story,
    tidy_story,
)
from tests.unit.test_sign_out_faithful import (
    check_careful,
    check_naive,
    check_private_copy,
    check_second_sign_in,
    check_tidy,
)

pytestmark = pytest.mark.kernel


def test_naive_daemon_writes_into_tmpfs_after_sign_out() -> None:
    check_naive(kernel_world(naive_story, daemons=DAEMONS))


def test_daemon_using_store_check_never_writes_to_tmpfs() -> None:
    check_careful(kernel_world(careful_story, daemons=DAEMONS))


def test_second_sign_in_reuses_the_targets_and_the_daemon_keeps_nothing() -> None:
    check_second_sign_in(kernel_world(second_sign_in_story, daemons=DAEMONS))


def test_a_private_namespace_made_mid_session_keeps_no_copy_of_the_stores() -> None:
    check_private_copy(kernel_world(private_copy_story, daemons=DAEMONS))


def test_remove_store_targets_is_the_tidy_option() -> None:
    check_tidy(kernel_world(tidy_story, daemons=DAEMONS))
