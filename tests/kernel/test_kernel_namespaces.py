"""KernelHost namespaces: unshare/setns bookkeeping, per-namespace views, and propagation across
namespaces (docs/propagation.md §2.8, mount_namespaces(7))."""

from __future__ import annotations

import os
from typing import Any

import pytest

from daemonstore.host import Propagation
from daemonstore.kernel import KernelHost, run_in_sandbox
from tests.kernel.util import errname, mount_points, mounts_at

pytestmark = pytest.mark.kernel


def _shared_a(h: KernelHost) -> None:
    h.mkdir("/A")
    h.mount_tmpfs("a", "/A")
    h.make("/A", "shared")


def test_bookkeeping_and_errnos() -> None:
    def body(h: KernelHost) -> Any:
        out: list[Any] = [h.namespaces(), h.current_namespace()]
        h.new_namespace("kid")
        out += [h.namespaces(), h.current_namespace(),
                errname(h.new_namespace, "kid"), errname(h.new_namespace, "init"),
                errname(h.use_namespace, "nobody"), errname(h.mountinfo, "nobody")]
        with pytest.raises(ValueError, match="unknown propagation"):
            h.new_namespace("bad", "sideways")
        h.use_namespace("init")
        out += [h.current_namespace(), h.namespaces()]
        return out

    assert run_in_sandbox(body) == [
        ["init"], "init", ["init", "kid"], "kid", "EEXIST", "EEXIST", "ENOENT", "ENOENT",
        "init", ["init", "kid"]]


def test_each_namespace_is_a_real_mount_namespace() -> None:
    def body(h: KernelHost) -> Any:
        first = os.stat("/proc/self/ns/mnt").st_ino
        h.new_namespace("kid")
        second = os.stat("/proc/self/ns/mnt").st_ino
        h.use_namespace("init")
        return first, second, os.stat("/proc/self/ns/mnt").st_ino

    first, second, back = run_in_sandbox(body)
    assert first != second and back == first


def test_slave_namespace_receives_but_never_sends() -> None:
    # `unshare -m --propagation slave` (SC37): init -> kid propagates, kid -> init does not
    def body(h: KernelHost) -> Any:
        _shared_a(h)
        h.mkdir("/A/frominit")
        h.mkdir("/A/fromkid")
        h.new_namespace("kid", Propagation.SLAVE)
        h.mount_tmpfs("k", "/A/fromkid")
        h.use_namespace("init")
        h.mount_tmpfs("i", "/A/frominit")
        return (mount_points(h, "init"), mount_points(h, "kid"),
                mounts_at(h, "/A", "kid")[0].propagation)

    init, kid, prop = run_in_sandbox(body)
    assert init == ["/", "/A", "/A/frominit"]
    assert kid == ["/", "/A", "/A/fromkid", "/A/frominit"]
    assert prop == "slave"


def test_unchanged_namespace_shares_both_ways_and_private_shares_nothing() -> None:
    def body(h: KernelHost) -> Any:
        _shared_a(h)
        for d in ("/A/p", "/A/two"):
            h.mkdir(d)
        h.new_namespace("two", "unchanged")
        h.mount_tmpfs("t", "/A/two")
        h.use_namespace("init")
        h.new_namespace("priv", "private")
        h.use_namespace("init")
        h.mount_tmpfs("p", "/A/p")
        return {name: mount_points(h, name) for name in h.namespaces()}

    assert run_in_sandbox(body) == {
        "init": ["/", "/A", "/A/two", "/A/p"],
        "two": ["/", "/A", "/A/two", "/A/p"],
        "priv": ["/", "/A", "/A/two"],
    }


def test_mountinfo_of_another_namespace_leaves_the_current_one() -> None:
    def body(h: KernelHost) -> Any:
        h.mkdir("/A")
        h.new_namespace("kid")
        h.mount_tmpfs("k", "/A")
        before = os.stat("/proc/self/ns/mnt").st_ino
        init_view = mount_points(h, "init")
        return (init_view, h.current_namespace(),
                os.stat("/proc/self/ns/mnt").st_ino == before, mount_points(h))

    assert run_in_sandbox(body) == (["/"], "kid", True, ["/", "/A"])


def test_file_operations_follow_the_current_namespace() -> None:
    def body(h: KernelHost) -> Any:
        h.mkdir("/A")
        h.new_namespace("kid", "private")
        h.mount_tmpfs("k", "/A")
        h.write_file("/A/only-in-kid", b"k")
        in_kid = h.listdir("/A")
        h.use_namespace("init")
        return in_kid, h.listdir("/A")

    assert run_in_sandbox(body) == (["only-in-kid"], [])


def test_new_namespace_keeps_the_sandbox_root_even_when_overmounted() -> None:
    # the root fd of the copy comes from the cwd that copy_mnt_ns() moved, so a mount stacked on
    # the sandbox root does not become the new namespace's "/"
    def body(h: KernelHost) -> Any:
        h.mkdir("/marker")
        h.mount_tmpfs("over", "/")
        h.new_namespace("kid")
        return h.exists("/marker"), [e.source for e in mounts_at(h, "/")]

    assert run_in_sandbox(body) == (True, ["sandbox", "over"])


def test_propagation_applies_to_the_sandbox_root_only() -> None:
    def body(h: KernelHost) -> Any:
        h.new_namespace("kid", "shared")
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            outside = [ln for ln in f if f" {h.root} " not in ln and f" {h.root}/" not in ln]
        return mounts_at(h, "/")[0].propagation, [ln for ln in outside if "shared:" in ln]

    root_prop, shared_outside = run_in_sandbox(body)
    assert root_prop == "shared"
    assert shared_outside == []
