"""Detached trees (open_tree/move_mount) and pinned namespace files on the kernel, checked against
the model step by step (docs/propagation.md §2.9; the jail pins bind sources this way)."""

from __future__ import annotations

import os
from typing import Any

import pytest

from daemonstore.kernel import KernelHost, run_in_sandbox
from daemonstore.model import ModelHost
from daemonstore.mountinfo import canonical, canonical_diff, parse
from tests.kernel.util import Step, errname, outcome

pytestmark = pytest.mark.kernel


def _step(method: str, *args: Any, save_as: str | None = None, **kwargs: Any) -> Step:
    return method, args, kwargs, save_as


def _assert_same(steps: list[Step]) -> dict[str, Any]:
    model = outcome(ModelHost(), steps)
    kernel = run_in_sandbox(outcome, steps)
    diffs = canonical_diff(canonical(model["namespaces"], model["errors"]),
                           canonical(kernel["namespaces"], kernel["errors"]))
    assert not diffs, "\n".join(diffs)
    return kernel


def test_detached_clones_pin_sources_before_a_tmpfs_covers_them() -> None:
    kernel = _assert_same([
        _step("mkdir", "/A/sub", parents=True), _step("mkdir", "/B"), _step("mkdir", "/C"),
        _step("mount_tmpfs", "a", "/A"), _step("mkdir", "/A/sub"),
        _step("mount_tmpfs", "s", "/A/sub"), _step("make", "/A", "shared"),
        _step("clone_detached", "/A", save_as="one"),  # just /A (a peer of it)
        _step("clone_detached", "/A", recursive=True, save_as="tree"),  # /A and /A/sub
        _step("mount_tmpfs", "cover", "/A"),  # the sources are covered now
        _step("mkdir", "/A/late"),
        _step("attach_detached", "$one", "/B"),
        _step("attach_detached", "$tree", "/C"),
        _step("attach_detached", "$one", "/C"),  # used up: EBADF
        _step("attach_detached", "@no-such-handle", "/C"),  # unknown: EBADF
    ])
    assert kernel["errors"] == [[14, "EBADF"], [15, "EBADF"]]
    points = [(e.mount_point, e.source) for e in parse(kernel["namespaces"]["init"])]
    assert ("/B", "a") in points and ("/C/sub", "s") in points and ("/B/sub", "s") not in points


def test_detached_tree_errnos_and_drop() -> None:
    _assert_same([
        _step("mkdir", "/U"), _step("mkdir", "/D"), _step("mount_tmpfs", "u", "/U"),
        _step("make", "/U", "unbindable"),
        _step("clone_detached", "/U"),  # EINVAL: unbindable source
        _step("clone_detached", "/missing"),  # ENOENT
        _step("clone_detached", "/D", save_as="d"),  # a plain dir of the sandbox root's mount
        _step("attach_detached", "$d", "/nowhere"),  # ENOENT, handle kept
        _step("attach_detached", "$d", "/D"),
        _step("clone_detached", "/D", save_as="dropped"),
        _step("drop_detached", "$dropped"), _step("drop_detached", "$dropped"),  # no-op
        _step("attach_detached", "$dropped", "/D"),  # EBADF
    ])


def test_pin_namespace_and_open_it_again() -> None:
    def body(h: Any) -> Any:
        h.write_file("/nsfile", b"")
        h.write_file("/plain", b"")
        h.mkdir("/dir")
        h.new_namespace("kid", "private")
        h.use_namespace("init")
        errs = [errname(h.pin_namespace, "nobody", "/nsfile"),
                errname(h.pin_namespace, "init", "/nsfile"),  # not newer than current
                errname(h.pin_namespace, "kid", "/dir"),
                errname(h.pin_namespace, "kid", "/nsfile"),
                errname(h.open_pinned_namespace, "/plain", "x"),
                errname(h.open_pinned_namespace, "/nsfile", "init"),
                errname(h.open_pinned_namespace, "/nsfile", "kid"),  # same namespace: fine
                errname(h.open_pinned_namespace, "/nsfile", "again")]
        h.use_namespace("again")
        h.mkdir("/only-in-kid")
        h.use_namespace("kid")
        pinned = [e for e in parse(h.mountinfo("init")) if e.mount_point == "/nsfile"]
        return (errs, h.namespaces(), h.current_namespace(), h.exists("/only-in-kid"),
                [(e.fstype, e.root.startswith("mnt:[")) for e in pinned])

    want = (["ENOENT", "EINVAL", "ENOTDIR", None, "EINVAL", "EEXIST", None, None],
            ["init", "kid", "again"], "kid", True, [("nsfs", True)])
    assert body(ModelHost()) == want
    assert run_in_sandbox(body) == want


def test_pinned_namespace_of_a_dead_name_still_enters_the_same_namespace() -> None:
    def body(h: KernelHost) -> Any:
        h.write_file("/nsfile", b"")
        h.new_namespace("kid")
        kid_ino = os.stat("/proc/self/ns/mnt").st_ino
        h.use_namespace("init")
        h.pin_namespace("kid", "/nsfile")
        h.open_pinned_namespace("/nsfile", "alias")
        h.use_namespace("alias")
        return os.stat("/proc/self/ns/mnt").st_ino == kid_ino

    assert run_in_sandbox(body)
