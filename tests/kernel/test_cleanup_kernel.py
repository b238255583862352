"""The low-disk cleanup on the real kernel: the acceptance story on a 64 MiB sandbox tmpfs (two
users, one signed in; planted symlinks and mount points; persistent data checksummed), the same
figures as the model, statvfs equal on both backends, and ``daemonstore cleanup --root``.

Every body runs in run_in_sandbox's forked child (a private mount namespace on a tmpfs sandbox)."""

from __future__ import annotations

import errno
import json
import os
from typing import Any

import pytest
from click.testing import CliRunner

from daemonstore.cleanup.plan import MiB
from daemonstore.cli import main
from daemonstore.host import Host
from daemonstore.kernel import KernelHost, run_in_sandbox
from daemonstore.model import ModelHost
from daemonstore.world import World, kernel_world
from tests.cleanup_story import DAEMONS, THRESHOLDS, story
from tests.kernel.util import errname

pytestmark = pytest.mark.kernel


def _named(out: dict[str, Any]) -> dict[str, Any]:
    """The story's result with user hashes replaced by names (the salt differs per run)."""
    text = json.dumps({"report": out["report"], "lines": out["lines"]})
    for name, h in out["hashes"].items():
        text = text.replace(h, name)
    return json.loads(text)


@pytest.fixture(scope="module")
def kernel_story() -> dict[str, Any]:
    return kernel_world(story, daemons=DAEMONS)


def test_story_on_a_64m_tmpfs(kernel_story: dict[str, Any]) -> None:
    out = kernel_story
    a, b = out["hashes"]["alice"], out["hashes"]["bob"]
    report = out["report"]
    assert out["total_free_before"][0] == 64 * MiB
    assert report["state_before"] == "critical" and report["free_before"] < 8 * MiB
    # signed-out bob first (through his vault directory), then signed-in alice (through
    # /run/daemon-store-cache), daemon by daemon, until the target; alice's foo is kept
    assert [(s["user"], s["daemon"], s["phase"], s["path"]) for s in report["steps"]] == [
        (b, "bar", "signed-out", f"/home/.shadow/{b}/vault/root/.cache/bar"),
        (b, "foo", "signed-out", f"/home/.shadow/{b}/vault/root/.cache/foo"),
        (a, "bar", "signed-in", f"/run/daemon-store-cache/bar/{a}"),
        (a, "baz", "signed-in", f"/run/daemon-store-cache/baz/{a}")]
    assert report["freed"] == {b: {"bar": 8 * MiB, "foo": 12 * MiB},
                               a: {"bar": 8 * MiB, "baz": 4 * MiB}}
    assert report["freed_bytes"] == 32 * MiB
    assert report["target_met"] and report["free_after"] >= THRESHOLDS.target
    assert report["stopped"].startswith("target reached")
    assert out["statvfs_after"] == (64 * MiB, report["free_after"])
    # every persistent file intact, nothing outside the caches touched
    assert out["persistent_files"] == 5 and out["persistent_intact"] and out["etc_intact"]
    # planted symlinks unlinked, planted mounts neither crossed nor removed
    assert out["cache_left"][("bob", "foo")] == []
    assert out["cache_left"][("bob", "bar")] == ["mnt"]
    assert out["cache_left"][("alice", "bar")] == ["bound"]
    assert out["cache_left"][("alice", "foo")] == ["blob"]
    assert out["planted_mount"] == b"on another mount"
    assert out["bound_still_there"] == ["state"]
    skipped = [s["skipped"] for s in report["steps"]]
    assert skipped == [[f"/home/.shadow/{b}/vault/root/.cache/bar/mnt: mount point (another "
                        "mount), not crossed"], [],
                       [f"/run/daemon-store-cache/bar/{a}/bound: mount point (another mount), "
                        "not crossed"], []]


def test_story_figures_equal_the_models(kernel_story: dict[str, Any]) -> None:
    world = World.model()
    for spec in DAEMONS:
        world.install_daemon(*spec)
    assert _named(story(world)) == _named(kernel_story)


# ---- statvfs: kernel == model ----------------------------------------------------------------


STATVFS_CASES = ["size=64M", "size=100k", "size=50000", "nr_blocks=10", "size=0x100000",
                 "size=0", "size=1M,size=2M"]


def _statvfs_story(host: Host, data: str) -> list[Any]:
    host.mkdir("/t", 0o755)
    host.mount_tmpfs("t", "/t", data=data)
    out: list[Any] = [host.statvfs("/t")]
    host.write_file("/t/a", b"x")
    host.write_file("/t/b", b"x" * 4097)
    host.mkdir("/t/d", 0o755)
    host.symlink("short", "/t/d/s")
    host.symlink("l" * 200, "/t/d/long")
    host.mkfifo("/t/f")
    out.append(host.statvfs("/t/d"))
    host.unlink("/t/b")
    out.append(host.statvfs("/t"))
    host.symlink("/t", "/link")
    out.append(errname(host.statvfs, "/link/d", safe=True))
    out.append(host.statvfs("/link/d"))
    return out


@pytest.mark.parametrize("data", STATVFS_CASES)
def test_statvfs_model_equals_kernel(data: str) -> None:
    kernel = run_in_sandbox(_statvfs_story, data)
    assert kernel == _statvfs_story(ModelHost(), data)
    assert kernel[3] == "ELOOP"


# ---- the command on the kernel ---------------------------------------------------------------


def _cli(world: World) -> dict[str, Any]:
    out = story(world)  # cleans once, to above the target
    root = world.host.root  # type: ignore[attr-defined]
    host = world.host
    h = out["hashes"]["bob"]
    cache = f"/home/.shadow/{h}/vault/root/.cache/baz/blob"
    host.write_file(cache, b"z" * (30 * MiB), safe=True)  # below the thresholds again
    runner = CliRunner()
    sizes = ["--target", "36M", "--normal", "32M", "--aggressive", "28M", "--critical", "16M"]
    dry = runner.invoke(main, ["cleanup", "--root", root, "--dry-run", *sizes])
    real = runner.invoke(main, ["cleanup", "--root", root, "--json", *sizes])
    refused = runner.invoke(main, ["cleanup", "--root", "/"])
    return {"bob": h, "dry": (dry.exit_code, dry.output), "real": (real.exit_code, real.output),
            "refused": (refused.exit_code, refused.output),
            "left": host.listdir(cache.rsplit("/", 1)[0], safe=True)}


def test_cli_on_the_kernel() -> None:
    out = kernel_world(_cli, daemons=DAEMONS)
    code, text = out["dry"]
    assert code == 0, text
    assert text.splitlines()[1].startswith(f"+ clear-contents /home/.shadow/{out['bob']}/vault/"
                                           "root/.cache/baz  # signed-out user")
    code, text = out["real"]
    assert code == 0, text
    report = json.loads(text)
    assert report["backend"] == "kernel"
    assert report["freed"] == {out["bob"]: {"baz": 30 * MiB}} and report["target_met"]
    assert out["left"] == []
    assert out["refused"][0] == 2 and "--root /" in out["refused"][1]


def test_kernel_host_statvfs_names_the_sandbox_path() -> None:
    def body(host: KernelHost) -> tuple[int | None, str | None]:
        try:
            host.statvfs("/missing/path")
        except OSError as exc:
            return exc.errno, exc.filename
        return None, None

    assert run_in_sandbox(body) == (errno.ENOENT, "/missing/path")


# ---- loop vaults (session vault="loop") -------------------------------------------------------


def _loop_vaults(world: World) -> dict[str, Any]:
    from daemonstore import paths, session
    from daemonstore.cleanup import Thresholds, run_cleanup
    from daemonstore.kernel import loop as kernel_loop

    out: dict[str, Any] = {}
    try:
        b = world.login("bob", vault="loop")
        world.logout("bob")
        a = world.login("alice", vault="loop")
        host = world.host
        for daemon in ("bar", "foo"):
            host.write_file(f"{paths.user_store(daemon, a, cache=True)}/blob", b"c" * (4 * MiB),
                            safe=True)
        host.write_file(f"{paths.vault_mount(a)}/root/foo/state", b"p" * MiB, safe=True)
        free = host.statvfs(paths.SHADOW)[1]
        t = Thresholds(target=free + 64 * MiB, normal=free + 32 * MiB,
                       aggressive=free + 16 * MiB, critical=0)
        report = run_cleanup(host, t)
        out["steps"] = [(r.step.user_hash, r.step.daemon, r.step.path, r.removed_bytes)
                        for r in report.steps]
        out["warnings"] = report.warnings
        out["left"] = {d: host.listdir(paths.user_store(d, a, cache=True), safe=True)
                       for d in ("bar", "foo")}
        out["state"] = len(host.read_file(f"{paths.vault_mount(a)}/root/foo/state", safe=True))
        out["hashes"] = (a, b)
    finally:
        for user in ("alice", "bob"):
            h = world.hash_of(user)
            session.sign_out(world.host, h)
            if world.host.exists(paths.vault_image(h)):
                kernel_loop.detach_image(world.host, paths.vault_image(h))
    return out


def test_loop_vaults_signed_in_through_the_store_signed_out_left_alone() -> None:
    from daemonstore.kernel import loop as kernel_loop

    if kernel_loop.mkfs_command() is None or not os.path.exists(kernel_loop.LOOP_CONTROL):
        pytest.skip("needs mkfs.ext4 (Debian: e2fsprogs) and /dev/loop-control")
    out = kernel_world(_loop_vaults, daemons=DAEMONS)
    a, b = out["hashes"]
    assert out["steps"] == [(a, "bar", f"/run/daemon-store-cache/bar/{a}", 4 * MiB),
                            (a, "foo", f"/run/daemon-store-cache/foo/{a}", 4 * MiB)]
    assert out["left"] == {"bar": [], "foo": []} and out["state"] == MiB
    assert out["warnings"] == [f"/home/.shadow/{b}/vault.img: a signed-out user's loop vault "
                               "is not attached, so its caches cannot be reached: left alone"]
