"""The one top-of-stack rule (daemonstore.mounttree): the mount a path lookup lands on, not the
last mountinfo line at that mount point."""

from __future__ import annotations

import pytest

from daemonstore import mountinfo
from daemonstore.model import ModelHost
from daemonstore.mounttree import MountView, MountViewOnDemand


def _last_line_at(host: ModelHost, path: str) -> mountinfo.MountInfoEntry:
    return [e for e in mountinfo.parse(host.mountinfo()) if e.mount_point == path][-1]


def test_a_propagated_copy_tucked_beneath_a_mount_is_not_the_top() -> None:
    # scenario SC29: the copy that reaches /S/x is tucked beneath "old", which stays on top
    h = ModelHost()
    h.mkdir("/M")
    h.mkdir("/S")
    h.mount_tmpfs("m", "/M")
    h.mkdir("/M/x")
    h.make("/M", "shared")
    h.bind("/M", "/S")
    h.make("/S", "slave")
    h.mount_tmpfs("old", "/S/x")
    h.mount_tmpfs("new", "/M/x")
    view = MountView.from_host(h)
    assert _last_line_at(h, "/S/x").source == "new"  # the newest line is the hidden copy
    assert [e.source for e in view.stack("/S/x")] == ["new", "old"]
    top = view.top("/S/x")
    assert top is not None and top.source == "old"


def test_a_mount_under_an_overmounted_parent_has_no_top() -> None:
    h = ModelHost()
    h.mkdir("/run/a", parents=True)
    h.mount_tmpfs("store", "/run/a")
    h.mount_tmpfs("cover", "/run")
    view = MountView.from_host(h)
    assert _last_line_at(h, "/run/a").source == "store"
    assert view.top("/run/a") is None
    top = view.top("/run")
    assert top is not None and top.source == "cover"


def test_top_of_a_plain_stack_is_the_last_mount_made_there() -> None:
    h = ModelHost()
    h.mkdir("/x")
    h.mount_tmpfs("one", "/x")
    h.mount_tmpfs("two", "/x")
    view = MountView.from_host(h)
    assert [e.source for e in view.stack("/x")] == ["one", "two"]
    top = view.top("/x")
    assert top is not None and top.source == "two"
    assert view.top("/nowhere") is None


def test_mount_view_on_demand_reads_once_on_first_use_and_answers_as_mount_view() -> None:
    class Counting(ModelHost):
        reads = 0

        def mountinfo(self) -> str:
            self.reads += 1
            return super().mountinfo()

    h = Counting()
    h.mkdir("/run")
    h.mount_tmpfs("tmpfs", "/run")
    view = MountViewOnDemand(h)
    assert h.reads == 0
    eager = MountView(mountinfo.parse(h.mountinfo()))
    h.reads = 0
    assert [e.mount_point for e in view.stack("/run")] == ["/run"]
    assert view.stack("/run") == eager.stack("/run") and view.entries == eager.entries
    assert view.store_problem("/run") == eager.store_problem("/run")
    assert h.reads == 1
    with pytest.raises(AttributeError):
        view.no_such_attribute  # noqa: B018
