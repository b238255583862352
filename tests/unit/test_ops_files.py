"""The one safe tree walker (ops.walk_tree) and RemoveTree on the model: post order, no symlink
followed, no mount crossed, and no recursion limit for a deep tree that someone else made."""

from __future__ import annotations

import errno
import sys

from daemonstore.model import ModelHost
from daemonstore.ops import RemoveTree, walk_tree


def _tree() -> ModelHost:
    host = ModelHost()
    host.mkdir("/t/a/b", 0o755, parents=True)
    host.write_file("/t/a/b/f", b"data")
    host.symlink("/etc", "/t/a/link")
    host.mkdir("/etc/keep", 0o755, parents=True)
    host.mkdir("/t/m", 0o755)
    host.mount_tmpfs("live", "/t/m")
    host.write_file("/t/m/keep", b"live")
    return host


def test_walk_is_post_order_and_stays_on_its_mount() -> None:
    host = _tree()
    items = list(walk_tree(host, "/t", host.lstat("/t").mnt_id))
    kinds = {item.path: item.kind for item in items}
    assert kinds == {"/t/a/b/f": "entry", "/t/a/b": "dir", "/t/a/link": "entry",
                     "/t/a": "dir", "/t/m": "mount"}
    order = [item.path for item in items]
    assert order.index("/t/a/b/f") < order.index("/t/a/b") < order.index("/t/a")
    assert all(item.stat is not None and item.error is None for item in items)


def test_a_directory_that_cannot_be_listed_is_an_error_item_not_a_dir() -> None:
    host = ModelHost()
    host.mkdir("/t/a", 0o755, parents=True)
    host.write_file("/t/a/f", b"x")
    host.mkdir("/t/b", 0o755)
    walk = walk_tree(host, "/t", host.lstat("/t").mnt_id)
    assert next(walk)[:2] == ("/t/a/f", "entry")  # /t/b is lstat'ed, not yet listed
    host.rmdir("/t/b")
    host.write_file("/t/b", b"a file now")
    rest = list(walk)
    assert [item[:2] for item in rest] == [("/t/a", "dir"), ("/t/b", "error")]
    assert rest[1].error is not None and rest[1].error.errno == errno.ENOTDIR


def test_remove_tree_deeper_than_the_recursion_limit() -> None:
    host = ModelHost()
    depth = sys.getrecursionlimit() + 100
    deepest = "/t" + "/d" * depth
    host.mkdir(deepest, 0o755, parents=True)
    host.write_file(deepest + "/f", b"x")
    host.symlink("/t", deepest + "/loop")  # removed as a link, never followed
    RemoveTree("/t", keep_top=True).apply(host)
    assert host.listdir("/t") == []
    RemoveTree("/t").apply(host)
    assert not host.exists("/t")


def test_remove_tree_stops_at_a_mount() -> None:
    host = _tree()
    try:
        RemoveTree("/t").apply(host)
    except OSError as exc:
        assert exc.errno == errno.EBUSY and exc.filename == "/t/m"
    else:
        raise AssertionError("EBUSY expected")
    assert host.read_file("/t/m/keep") == b"live" and host.exists("/etc/keep")
