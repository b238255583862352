"""The low-disk cleanup's acceptance story, written once against a World so it runs on the model
and (in run_in_sandbox's child) on the kernel: a 64 MiB tmpfs on /home, two users -- alice signed
in, bob signed out -- with persistent stores and caches, planted symlinks and mount points in the
caches; then one cleanup. Returns plain data (it crosses the sandbox's pipe)."""

from __future__ import annotations

import hashlib
from typing import Any

from daemonstore import paths
from daemonstore.cleanup import Thresholds, run_cleanup
from daemonstore.cleanup.plan import MiB
from daemonstore.world import World, snapshot

DAEMONS = [("bar", 20101, 20101, 0o700), ("baz", 20102, 20102, 0o700),
           ("foo", 20100, 20100, 0o700)]
#: scaled-down cryptohome thresholds for a 64 MiB disk
THRESHOLDS = Thresholds(target=36 * MiB, normal=32 * MiB, aggressive=28 * MiB,
                        critical=16 * MiB)
PERSISTENT = {  # user -> (daemon or "user/...", relative path, MiB)
    "alice": [("foo", "state", 4), ("bar", "db/state", 2), ("user", "Downloads/f", 2)],
    "bob": [("foo", "state", 4), ("bar", "state", 4)],
}
CACHES = {
    "alice": [("bar", "blob", 8), ("baz", "blob", 4), ("foo", "blob", 10)],
    "bob": [("bar", "blob", 8), ("foo", "big", 10), ("foo", "nested/deep/x", 2)],
}


def _mkparents(world: World, path: str) -> None:
    world.host.mkdir(path.rsplit("/", 1)[0], 0o700, parents=True, safe=True)


def _write(world: World, path: str, mib: int) -> None:
    _mkparents(world, path)
    world.host.write_file(path, bytes([len(path) % 251]) * (mib * MiB), safe=True)


def persistent_sums(world: World, user_hash: str) -> dict[str, str]:
    """sha256 of every file of the vault outside ``root/.cache`` (the persistent data)."""
    skip = [f"{paths.vault(user_hash)}/root/{paths.CACHE_DIR}"]
    out = {}
    for path, (kind, *_rest, content) in snapshot(world.host, paths.vault(user_hash),
                                                  skip=skip).items():
        if kind == 0o100000:
            out[path] = hashlib.sha256(content).hexdigest()
    return out


def story(world: World) -> dict[str, Any]:
    host = world.host
    if not host.exists("/home"):
        host.mkdir("/home", 0o755, safe=True)
    host.mount_tmpfs("small", "/home", data="size=64M", safe=True)
    a = world.login("alice")
    b = world.login("bob")
    world.logout("bob")
    for user, files in PERSISTENT.items():
        h = world.hash_of(user)
        for where, rel, mib in files:
            base = f"{paths.vault(h)}/user" if where == "user" else f"{paths.vault(h)}/root/{where}"
            _write(world, f"{base}/{rel}", mib)
    for user, files in CACHES.items():
        for daemon, rel, mib in files:
            _write(world, world.vault_path(user, daemon, rel, cache=True), mib)
    # planted in bob's caches (signed out: cleared through the vault directory)
    bob_foo = world.vault_path("bob", "foo", cache=True)
    host.symlink("/etc", f"{bob_foo}/etc")
    host.symlink(f"{paths.vault(a)}/root/foo/state", f"{bob_foo}/alice-state")
    host.symlink(f"{paths.vault(b)}/root", f"{bob_foo}/nested/bob-root")
    bob_bar = world.vault_path("bob", "bar", cache=True)
    host.mkdir(f"{bob_bar}/mnt", 0o700, safe=True)
    host.mount_tmpfs("planted", f"{bob_bar}/mnt", safe=True)
    host.write_file(f"{bob_bar}/mnt/keep", b"on another mount", safe=True)
    # planted in alice's cache (signed in: cleared through /run/daemon-store-cache/bar/<a>): her
    # own persistent store bound into it -- crossing that mount would delete persistent data
    alice_bar = paths.user_store("bar", a, cache=True)
    host.mkdir(f"{alice_bar}/bound", 0o700, safe=True)
    host.bind(f"{paths.vault(a)}/root/foo", f"{alice_bar}/bound", safe=True)

    sums = {u: persistent_sums(world, world.hash_of(u)) for u in ("alice", "bob")}
    etc = world.snapshot("/etc")
    before = host.statvfs(paths.SHADOW)
    report = run_cleanup(host, THRESHOLDS)
    after_sums = {u: persistent_sums(world, world.hash_of(u)) for u in ("alice", "bob")}
    cache_left = {
        (u, d): sorted(host.listdir(world.vault_path(u, d, cache=True), safe=True))
        for u in ("alice", "bob") for d in ("bar", "baz", "foo")}
    return {
        "hashes": {"alice": a, "bob": b},
        "total_free_before": before,
        "report": report.to_json(),
        "lines": report.lines(),
        "ok": report.ok,
        "persistent_files": sum(len(s) for s in sums.values()),
        "persistent_intact": sums == after_sums,
        "etc_intact": world.snapshot("/etc") == etc,
        "planted_mount": host.read_file(f"{bob_bar}/mnt/keep", safe=True),
        "bound_still_there": sorted(host.listdir(f"{alice_bar}/bound", safe=True)),
        "cache_left": cache_left,
        "statvfs_after": host.statvfs(paths.SHADOW),
    }
