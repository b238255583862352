"""The loop device's uevent wait without a kernel: a fake monitor with pyudev's ``poll`` shape
stands in for the netlink socket (the real one is tests/kernel/test_loopvault_kernel.py)."""

from __future__ import annotations

import errno
from dataclasses import dataclass

import pytest

from daemonstore.kernel.loop import Uevent, wait_for_change


@dataclass
class FakeDevice:
    """The pyudev ``Device`` fields the wait reads."""

    action: str | None
    sys_name: str
    subsystem: str = "block"
    device_node: str | None = None
    sequence_number: int | None = None


class FakeMonitor:
    """Hands out ``events`` one per ``poll``, then None (a timeout), as pyudev's Monitor does."""

    def __init__(self, *events: FakeDevice) -> None:
        self.events = list(events)
        self.timeouts: list[float | None] = []

    def poll(self, timeout: float | None = None) -> FakeDevice | None:
        self.timeouts.append(timeout)
        return self.events.pop(0) if self.events else None


def test_the_change_of_that_device_ends_the_wait_with_its_events() -> None:
    monitor = FakeMonitor(FakeDevice("add", "loop3", device_node="/dev/loop3", sequence_number=7),
                          FakeDevice("change", "sda"),  # another disk
                          FakeDevice("change", "loop3", "bdi"),  # another subsystem
                          FakeDevice("change", "loop3", device_node="/dev/loop3",
                                     sequence_number=9),
                          FakeDevice("remove", "loop3"))  # after the change: never read
    events = wait_for_change(monitor, "loop3", 5.0)
    assert events == (Uevent("add", "loop3", "block", "/dev/loop3", 7),
                      Uevent("change", "loop3", "block", "/dev/loop3", 9))
    assert len(monitor.events) == 1
    assert all(t is not None and 0 < t <= 5.0 for t in monitor.timeouts)


def test_no_change_is_a_timeout_that_says_what_it_saw() -> None:
    monitor = FakeMonitor(FakeDevice("add", "loop3"), FakeDevice(None, "loop3"))
    with pytest.raises(TimeoutError) as info:
        wait_for_change(monitor, "loop3", 0.5)
    assert info.value.errno == errno.ETIMEDOUT
    assert info.value.filename == "/dev/loop3"
    assert info.value.strerror == "no change uevent for loop3 within 0.5 s (saw ['add', ''])"


def test_a_silent_monitor_times_out_saying_nothing_came() -> None:
    with pytest.raises(TimeoutError, match=r"within 0\.1 s \(saw nothing\)"):
        wait_for_change(FakeMonitor(), "loop0", 0.1)
