"""The TOCTOU race: a separate process keeps swapping entries of the vault with symlinks (to
/etc, the canary, /etc/shadow), a hard link to /etc/shadow and a decoy directory -- atomically,
``renameat2(RENAME_EXCHANGE)``, so the name is never missing -- while sign-in runs again and
again. The template's mode changes every round, so every sign-in really chmods the vault's
``root/<d>`` (the step a swapped-in hard link would turn against /etc/shadow).

Every sign-in must either succeed cleanly (each store mount is one of the vault's own
directories, never anything the symlinks point at) or fail cleanly (a SignInError, a rollback
without problems, the mount table exactly as before). Throughout, nothing outside the vault
changes: /etc (but for the template whose mode the test itself flips) and a canary directory,
by content, owner and mode. The swapper is stopped (SIGSTOP) while the test looks, and killed
by its pid at the end.
"""

from __future__ import annotations

import errno
import mmap
import os
import random
import signal
import stat
from typing import Any

import pytest

from daemonstore import mountinfo, paths, session
from daemonstore.world import World, kernel_world
from tests.hardening.conftest import FULL, Figures
from tests.hardening.util import (
    CANARY,
    SHADOW_VICTIM,
    exchange_at,
    guarded,
    mount_state,
    real,
    setup_victims,
    victims,
)

pytestmark = pytest.mark.kernel

ROUNDS = 1000 if FULL else 200
FOO = ("foo", 20100, 20100, 0o700)

#: (parent inside the vault, entry, what is swapped in for it)
PAIRS = [
    ("root", "foo", "symlink:/etc"),
    ("root", "foo", f"hardlink:{SHADOW_VICTIM}"),
    ("root", "foo", "decoy"),
    ("root/.cache", "foo", f"symlink:{CANARY}"),
    ("", "root", "symlink:/etc"),
    ("", "user", f"symlink:{SHADOW_VICTIM}"),
]


def _swapper(pairs: list[tuple[int, str, str]], counter: mmap.mmap, seed: int) -> None:
    """The attacker (a forked child): swap forever; count the swaps that happened."""
    rng = random.Random(seed)
    n = 0
    parent = os.getppid()
    try:
        while os.getppid() == parent:  # never outlives the test body that forked it
            dirfd, a, b = rng.choice(pairs)
            try:  # in, and straight back out: short windows, so sign-ins get past the plan
                exchange_at(dirfd, a, b)
                n += 1
                exchange_at(dirfd, a, b)
            except OSError:
                pass  # e.g. EBUSY: the name is a mount point right now
            if n % 16 == 0:
                counter[:8] = n.to_bytes(8, "little")
    finally:
        os._exit(0)


def _prepare(world: World, h: str) -> tuple[list[tuple[int, str, str]], dict[str, Any]]:
    """Plant the swap partners next to each entry; return (dirfd, name, partner) triples and
    what the real directories are (their inodes), with the dir fds to close."""
    host = world.host
    vault = paths.vault(h)
    dirfds: dict[str, int] = {}
    triples = []
    for k, (parent, name, what) in enumerate(PAIRS):
        pdir = f"{vault}/{parent}".rstrip("/")
        if parent not in dirfds:
            dirfds[parent] = os.open(real(world, pdir), os.O_PATH | os.O_DIRECTORY
                                     | os.O_NOFOLLOW | os.O_CLOEXEC)
        partner = f"{name}.swap{k}"
        kind, _, arg = what.partition(":")
        if kind == "symlink":
            host.symlink(arg, f"{pdir}/{partner}")
        elif kind == "hardlink":
            os.link(real(world, arg), real(world, f"{pdir}/{partner}"))
        else:
            host.mkdir(f"{pdir}/{partner}", 0o700, safe=True)
        triples.append((dirfds[parent], name, partner))
    inos = {rel: host.lstat(f"{vault}/{rel}", safe=True).ino
            for rel in ("root", "root/foo", "root/.cache/foo", "user")}
    decoy = host.lstat(f"{vault}/root/foo.swap2", safe=True).ino
    return triples, {"dirfds": dirfds, "inos": inos, "decoy": decoy}


def _put_back(world: World, h: str, triples: list[tuple[int, str, str]],
              info: dict[str, Any]) -> None:
    """After the swapper is dead: every real directory back under its own name (found by inode
    through the pinned parent fds, never by following a path), partners removed."""
    vault = paths.vault(h)
    parents = {"root": "", "root/foo": "root", "root/.cache/foo": "root/.cache", "user": ""}
    for _round in range(3):  # a parent put back first makes its children findable
        for rel, ino in info["inos"].items():
            parent, name = parents[rel], rel.rsplit("/", 1)[-1]
            dirfd = info["dirfds"].get(parent)
            if dirfd is None:
                continue
            readable = os.open(f"/proc/self/fd/{dirfd}", os.O_RDONLY | os.O_DIRECTORY)
            try:
                entries = os.listdir(readable)
            finally:
                os.close(readable)
            for entry in entries:
                st = os.stat(entry, dir_fd=dirfd, follow_symlinks=False)
                if st.st_ino == ino and entry != name:
                    exchange_at(dirfd, entry, name)
    for dirfd, _name, partner in triples:
        st = os.stat(partner, dir_fd=dirfd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            os.rmdir(partner, dir_fd=dirfd)
        else:
            os.unlink(partner, dir_fd=dirfd)
    for dirfd in info["dirfds"].values():
        os.close(dirfd)
    assert world.host.lstat(f"{vault}/root/foo", safe=True).ino == info["inos"]["root/foo"]


def _race_body(world: World, rounds: int, seed: int) -> dict[str, Any]:
    setup_victims(world)
    view = world.daemon("foo")
    h = world.login("alice")
    view.write("alice", "precious", b"alice's data")
    world.logout("alice")
    host = world.host
    triples, info = _prepare(world, h)
    allowed = {info["inos"]["root/foo"], info["decoy"], info["inos"]["root/.cache/foo"]}
    outside = victims(world, skip=(paths.ETC_DAEMON_STORE,))
    counter = mmap.mmap(-1, 8)
    out: dict[str, Any] = {"ok": 0, "refused": 0, "escapes": [], "errnos": {}}
    pid = os.fork()
    if pid == 0:
        _swapper(triples, counter, seed)
    try:
        for i in range(rounds):
            # the template changes every round: sign-in chmods root/<d> (and .cache) each time
            host.chmod(paths.template("foo"), 0o750 if i % 2 else 0o700, safe=True)
            before = mount_state(host)
            try:
                world.login("alice")
            except session.SignInError as exc:
                os.kill(pid, signal.SIGSTOP)
                os.waitpid(pid, os.WUNTRACED)
                name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
                name += "" if exc.step is None else " during apply"
                out["errnos"][name] = out["errnos"].get(name, 0) + 1
                if exc.rollback or mount_state(host) != before:
                    out["escapes"].append(f"round {i}: unclean failure {exc}")
                else:
                    out["refused"] += 1
            else:
                os.kill(pid, signal.SIGSTOP)
                os.waitpid(pid, os.WUNTRACED)
                problems = []
                for e in mountinfo.parse(host.mountinfo()):
                    if e.mount_point.endswith("/" + h) and e.mount_point.startswith("/run/"):
                        st = host.stat(e.mount_point, safe=True)
                        if st.ino not in allowed or not e.root.startswith(paths.vault(h)):
                            problems.append(f"{e.mount_point} shows {e.root} (ino {st.ino})")
                result = world.logout("alice")
                if not result.ok or mount_state(host) != before:
                    problems.append(f"sign-out: {result.warnings}")
                if problems:
                    out["escapes"].append(f"round {i}: {problems}")
                else:
                    out["ok"] += 1
            if victims(world, skip=(paths.ETC_DAEMON_STORE,)) != outside:
                out["escapes"].append(f"round {i}: something outside the vault changed")
            os.kill(pid, signal.SIGCONT)
    finally:
        os.kill(pid, signal.SIGKILL)  # the swapper this body forked, by its pid
        os.waitpid(pid, 0)
    out["swaps"] = int.from_bytes(counter[:8], "little")
    _put_back(world, h, triples, info)
    world.login("alice")
    out["data"] = view.read("alice", "precious")
    return out


def test_sign_in_against_a_symlink_swapper(figures: Figures) -> None:
    out = kernel_world(guarded(_race_body), ROUNDS, 1234, daemons=[FOO])
    figures.add(race_signins=ROUNDS, race_swaps=out["swaps"], race_ok=out["ok"],
                race_refused=out["refused"], race_escapes=len(out["escapes"]))
    figures.note("race", ", ".join(f"{k} {v}" for k, v in sorted(out["errnos"].items())))
    assert out["escapes"] == []
    assert out["ok"] + out["refused"] == ROUNDS
    assert out["swaps"] > ROUNDS  # the attacker really ran alongside
    assert out["refused"] > 0  # and really got in the way
    assert out["data"] == b"alice's data"
