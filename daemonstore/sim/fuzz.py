"""Random scenarios, model-vs-kernel comparison and shrinking (sim layer; pure generation: the
runners are passed in, so the loop itself does no I/O).

The generator writes scenarios in the language of scenario.py that make the interesting structures
actually arise: peer groups spanning binds and namespaces, slaves of slaves, unbindable trees,
tucked copies, lazy umounts, files held open on mounts and their copies (``hold``/``release``:
busy umounts, detached mounts kept alive). It never makes "/" the target of umount, move or
mount-on, because the two backends root their sandboxes differently (the model's "/" is a
namespace root, the kernel's is a tmpfs mounted inside a bigger tree); make-* on "/" and binds
*of* "/" are fine.

A divergence is shrunk by delta debugging (drop chunks, then single lines, then single mkdir
operands, while it still diverges the same way), so the report is a minimal scenario.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from daemonstore.errors import DaemonStoreError
from daemonstore.host import Propagation
from daemonstore.mountinfo import canonical_diff
from daemonstore.ops import (
    Bind,
    Hold,
    Make,
    Mkdir,
    MountTmpfs,
    Move,
    NewNamespace,
    Op,
    Release,
    Umount,
    UseNamespace,
    canonical_result,
    to_text,
)

Runner = Callable[[Sequence[Op]], dict[str, Any]]

_TOP = ("/A", "/B", "/C", "/D")
_SUB = ("x", "y")
#: level 1, level 2 and a few level-3 directories: deep enough for "mountpoint visible to the
#: receiver" (docs/propagation.md §6 item 13) and for moves into one's own subtree (ELOOP)
POOL: tuple[str, ...] = (_TOP + tuple(f"{t}/{s}" for t in _TOP for s in _SUB)
                         + ("/A/x/z", "/B/y/z", "/C/x/z"))
MAX_EXTRA_NAMESPACES = 3

#: op kind -> weight. make-shared / bind / tmpfs dominate so that peer groups exist for the
#: slave, move and umount ops to act on.
WEIGHTS: dict[str, int] = {
    "mkdir": 4,
    "tmpfs": 14,
    "bind": 14,
    "rbind": 5,
    "move": 5,
    "make-shared": 16,
    "make-slave": 9,
    "make-private": 2,
    "make-unbindable": 2,
    "make-rshared": 3,
    "make-rslave": 3,
    "make-rprivate": 1,
    "make-runbindable": 1,
    "umount": 5,
    "umount-l": 4,
    "ns": 5,
    "use": 4,
    "hold": 10,
    "release": 2,
}


@dataclass
class _Gen:
    """Generator state: a rough guess of which pool directories are visible and what is mounted
    where (one saved "what was underneath" per stacked mount), so that most ops aim at existing
    directories and mount roots; the rest hit missing paths and plain directories and exercise the
    ENOENT / EINVAL paths. The guess ignores propagation and namespaces: it only steers.

    Sets are always sorted before ``rng.choice`` so the output does not depend on hash order.
    """

    rng: random.Random
    exists: set[str] = field(default_factory=set)
    stacks: dict[str, list[frozenset[str]]] = field(default_factory=dict)
    shared: set[str] = field(default_factory=set)  # made shared, or a bind of something shared
    namespaces: list[str] = field(default_factory=lambda: ["init"])
    current: str = "init"
    tmpfs_count: int = 0
    held: list[str] = field(default_factory=list)
    held_paths: dict[str, str] = field(default_factory=dict)  # name -> the path it holds
    hold_count: int = 0

    # ---- the guess ---------------------------------------------------------------------------
    def _below(self, path: str) -> set[str]:
        prefix = path.rstrip("/") + "/"
        return {p for p in self.exists if p.startswith(prefix)}

    def _moved(self, paths: set[str], src: str, dst: str) -> set[str]:
        """``paths`` under ``src`` as seen under ``dst`` (only those that are pool paths)."""
        cut = len(src.rstrip("/"))
        return {dst + p[cut:] for p in paths} & set(POOL)

    def _cover(self, path: str, below: set[str]) -> None:
        if path not in self.exists:
            return  # the op will fail with ENOENT
        self.stacks.setdefault(path, []).append(frozenset(self._below(path)))
        self.exists -= self._below(path)
        self.exists |= below

    def _uncover(self, path: str) -> None:
        stack = self.stacks.get(path)
        if not stack:
            return
        saved = stack.pop()
        if not stack:
            del self.stacks[path]
        for sub in [m for m in self.stacks if m.startswith(path + "/")]:
            del self.stacks[sub]  # gone with it (umount -l) or it was EBUSY: a guess either way
        self.exists -= self._below(path)
        self.exists |= saved

    def _mkdir(self, path: str) -> None:
        while path != "/":
            self.exists.add(path)
            path = path.rpartition("/")[0] or "/"

    # ---- picking -----------------------------------------------------------------------------
    def pick_dir(self) -> str:
        """Usually an existing directory, sometimes any pool path (maybe missing: ENOENT)."""
        present = sorted(self.exists)
        if present and self.rng.random() < 0.9:
            return self.rng.choice(present)
        return self.rng.choice(POOL)

    def pick_mount(self, allow_root: bool = False) -> str:
        """Mostly a mount root we made; sometimes a plain directory (or "/" when allowed)."""
        roll = self.rng.random()
        if allow_root and roll < 0.12:
            return "/"
        mounts = sorted(self.stacks)
        if mounts and roll < 0.85:
            return self.rng.choice(mounts)
        return self.pick_dir()

    def children(self, path: str) -> list[str]:
        return [p for p in POOL if p.rpartition("/")[0] == path]

    # ---- ops ---------------------------------------------------------------------------------
    def op(self, kind: str) -> list[Op]:
        if kind.startswith("make-"):
            return self._make(kind[len("make-"):])
        if kind in ("bind", "rbind"):
            return self._bind(recursive=kind == "rbind")
        if kind in ("umount", "umount-l"):
            return self._umount(detach=kind == "umount-l")
        simple = {"mkdir": self._mkdir_op, "tmpfs": self._tmpfs, "move": self._move,
                  "ns": self._ns, "use": self._use, "hold": self._hold, "release": self._release}
        if kind not in simple:
            raise ValueError(kind)
        return simple[kind]()

    def _mkdir_op(self) -> list[Op]:
        # prefer directories that are missing but whose parent is there: they get used
        wanted = [p for p in POOL if p not in self.exists
                  and (p.rpartition("/")[0] or "/") in self.exists | {"/"}]
        pool = wanted if wanted and self.rng.random() < 0.8 else list(POOL)
        paths = sorted(self.rng.sample(pool, min(len(pool), self.rng.randint(1, 3))))
        for p in paths:
            self._mkdir(p)
        return [Mkdir(tuple(paths))]

    def _bind(self, recursive: bool) -> list[Op]:
        source = "/" if self.rng.random() < 0.06 else self.pick_mount()
        target = self.pick_dir()
        if source in self.exists | {"/"}:
            self._cover(target, self._moved(self._below(source), source, target))
            if source in self.shared:
                self.shared.add(target)  # a bind of a shared mount is its peer
        return [Bind(source, target, recursive=recursive)]

    def _move(self) -> list[Op]:
        source, target = self.pick_mount(), self.pick_dir()
        if source in self.stacks:
            below = self._moved(self._below(source), source, target)
            self._uncover(source)
            self._cover(target, below)
        return [Move(source, target)]

    def _make(self, word: str) -> list[Op]:
        # none of the kernel words starts with "r", so a leading "r" means recursive
        recursive = word.startswith("r")
        prop = Propagation(word[1:] if recursive else word)
        target = self.pick_mount(allow_root=True)
        if prop is Propagation.SLAVE and self.shared and self.rng.random() < 0.7:
            # a slave needs a master: aim at something that is probably in a peer group
            target = self.rng.choice(sorted(self.shared))
        if prop is Propagation.SHARED:
            self.shared.add(target)
        else:
            self.shared.discard(target)
        return [Make(target, prop, recursive=recursive)]

    def _umount(self, detach: bool) -> list[Op]:
        target = self.pick_mount()
        if self.held_paths and self.rng.random() < 0.5:
            # aim at what is held (or its parent mount): the busy checks and detached mounts
            target = self.rng.choice(sorted(self.held_paths.values()))
        self._uncover(target)
        return [Umount(target, detach=detach)]

    def _hold(self) -> list[Op]:
        """Hold a mount root or a directory in one (a name already held now and then: EEXIST)."""
        if self.held and self.rng.random() < 0.05:
            return [Hold(self.rng.choice(self.held), self.pick_dir())]
        self.hold_count += 1
        name = f"h{self.hold_count}"
        self.held.append(name)
        path = self.pick_mount() if self.rng.random() < 0.8 else self.pick_dir()
        self.held_paths[name] = path
        return [Hold(name, path)]

    def _release(self) -> list[Op]:
        """Release a held name, mostly; sometimes one that is not held (EBADF)."""
        if not self.held or self.rng.random() < 0.1:
            return [Release(f"h{self.hold_count + 1}")]
        name = self.rng.choice(self.held)
        self.held.remove(name)
        del self.held_paths[name]
        return [Release(name)]

    def _use(self) -> list[Op]:
        others = [n for n in self.namespaces if n != self.current]
        if not others:
            return self._ns()
        self.current = self.rng.choice(others)
        return [UseNamespace(self.current)]

    def _tmpfs(self) -> list[Op]:
        self.tmpfs_count += 1
        target = self.pick_dir()
        ops: list[Op] = [MountTmpfs(f"t{self.tmpfs_count}", target)]
        self._cover(target, set())
        # a fresh tmpfs is empty: fill in the pool's subdirectories so later ops can use them
        kids = self.children(target)
        if kids and self.rng.random() < 0.75:
            ops.append(Mkdir(tuple(kids)))
            for k in kids:
                self._mkdir(k)
        return ops

    def _ns(self) -> list[Op]:
        if len(self.namespaces) > MAX_EXTRA_NAMESPACES:
            others = [n for n in self.namespaces if n != self.current]
            self.current = self.rng.choice(others)
            return [UseNamespace(self.current)]
        name = f"n{len(self.namespaces)}"
        prop = self.rng.choice(("slave", "slave", "private", "shared", "unchanged"))
        self.namespaces.append(name)
        self.current = name
        return [NewNamespace(name, prop)]


def generate(seed: int, index: int = 0, ops_min: int = 10, ops_max: int = 30) -> list[Op]:
    """Scenario number ``index`` of seed ``seed``: between ``ops_min`` and ``ops_max`` ops (the
    opening mkdir included), line numbers 1..n. Same arguments, same scenario (a string seed is
    hashed with SHA-512 by ``random.Random``, so it does not depend on PYTHONHASHSEED)."""
    if not 1 <= ops_min <= ops_max:
        raise ValueError(f"need 1 <= ops_min <= ops_max, got {ops_min}, {ops_max}")
    rng = random.Random(f"daemonstore-fuzz:{seed}:{index}")
    gen = _Gen(rng)
    n = rng.randint(ops_min, ops_max)
    level2 = [p for p in POOL[len(_TOP):] if p.count("/") == 2]
    ops: list[Op] = [Mkdir(_TOP + tuple(sorted(rng.sample(level2, 4))))]
    for path in ops[0].paths:  # type: ignore[attr-defined]
        gen._mkdir(path)
    if rng.random() < 0.4:
        # like a systemd host (and ChromeOS after startup): "/" shared, so every new mount
        # joins a peer group and binds, namespaces and make-slave have something to act on
        ops.append(Make("/", Propagation.SHARED))
        gen.shared.add("/")
    kinds, weights = list(WEIGHTS), list(WEIGHTS.values())
    while len(ops) < n:
        kind = rng.choices(kinds, weights)[0]
        if not gen.stacks and kind.startswith(("make-", "umount", "move")) and rng.random() < 0.8:
            kind = "tmpfs"  # nothing mounted yet: mostly mount something first
        ops.extend(gen.op(kind))
    return [replace(op, line=i) for i, op in enumerate(ops[:n], start=1)]


# ---- comparing and shrinking ----------------------------------------------------------------


def _renumber(ops: Sequence[Op]) -> list[Op]:
    return [replace(op, line=i) for i, op in enumerate(ops, start=1)]


def compare(ops: Sequence[Op], run_a: Runner, run_b: Runner,
            names: tuple[str, str] = ("model", "kernel")) -> list[str]:
    """Differences between two backends on one scenario (empty = same canonical form). An
    exception other than the recorded OSErrors is a difference too ("<name> raised ...")."""
    results = []
    for run, name in ((run_a, names[0]), (run_b, names[1])):
        try:
            results.append(canonical_result(run(ops)))
        except Exception as exc:  # noqa: BLE001 - any crash is a finding to report and shrink
            return [f"{name} raised {type(exc).__name__}: {exc}"]
    return canonical_diff(results[0], results[1], *names)


def _signature(diffs: list[str]) -> str:
    """What kind of divergence: shrinking keeps this fixed so it cannot drift to another bug."""
    if not diffs:
        return ""
    head = diffs[0]
    if " raised " in head:
        return head.split(":", 1)[0]
    return "diff"


def shrink(ops: Sequence[Op], still_fails: Callable[[list[Op]], bool]) -> list[Op]:
    """Delta debugging: drop chunks of lines (halves down to single lines) while ``still_fails``;
    then drop single operands of ``mkdir``. Returns a 1-minimal list (no single line can go)."""
    cur = _renumber(ops)
    chunk = max(1, len(cur) // 2)
    while True:
        removed = False
        i = 0
        while i < len(cur):
            cand = _renumber(cur[:i] + cur[i + chunk:])
            if cand and still_fails(cand):
                cur, removed = cand, True
            else:
                i += chunk
        if chunk > 1:
            chunk //= 2
        elif not removed:
            break
    for i, op in enumerate(list(cur)):
        if not isinstance(op, Mkdir):
            continue
        paths = list(op.paths)
        for path in list(paths):
            if len(paths) == 1:
                break
            trial = [p for p in paths if p != path]
            cand = cur[:i] + [replace(op, paths=tuple(trial))] + cur[i + 1:]
            if still_fails(cand):
                paths, cur = trial, cand
    return cur


class BackendBroken(DaemonStoreError, RuntimeError):
    """A backend fails on every scenario, so comparing is pointless (environment, not model)."""


@dataclass(frozen=True)
class Divergence:
    """One scenario on which the backends disagree: the original, the shrunk form and its diff."""

    seed: int
    index: int
    original: str
    text: str
    diffs: tuple[str, ...]

    def report(self) -> str:
        body = "\n".join(f"  {d}" for d in self.diffs)
        return (f"divergence: seed {self.seed} scenario {self.index} "
                f"(shrunk to {self.text.count(chr(10))} lines)\n{self.text}{body}")

    def file_text(self) -> str:
        """The shrunk scenario with the differences as comments: a ready-made scenario file."""
        head = f"# fuzz seed {self.seed} scenario {self.index}: model and kernel diverge\n"
        notes = "".join(f"# {d}\n" for d in self.diffs)
        return head + notes + self.text


@dataclass
class FuzzReport:
    scenarios: int = 0
    ops: int = 0
    divergences: list[Divergence] = field(default_factory=list)

    def summary(self) -> str:
        return (f"fuzz: {self.scenarios} scenarios, {self.ops} ops, "
                f"{len(self.divergences)} divergences")


def find_divergence(seed: int, index: int, ops: Sequence[Op], run_a: Runner, run_b: Runner,
                    *, do_shrink: bool = True) -> Divergence | None:
    """Compare one scenario; if it diverges, shrink it (keeping the kind of divergence)."""
    diffs = compare(ops, run_a, run_b)
    if not diffs:
        return None
    if " raised " in diffs[0] and compare([], run_a, run_b):
        # a backend that cannot even run the empty scenario (no root, no sandbox, an import
        # error) says nothing about this scenario: stop instead of "shrinking" every one of them
        raise BackendBroken(f"a backend fails even on the empty scenario: {diffs[0]}")
    small = list(ops)
    if do_shrink:
        sig = _signature(diffs)
        small = shrink(ops, lambda cand: _signature(compare(cand, run_a, run_b)) == sig)
        diffs = compare(small, run_a, run_b)
    return Divergence(seed, index, to_text(ops), to_text(small), tuple(diffs))


def fuzz(seed: int, count: int, run_a: Runner, run_b: Runner, *, start: int = 0,
         ops_min: int = 10, ops_max: int = 30,
         do_shrink: bool = True) -> Iterator[tuple[FuzzReport, Divergence | None]]:
    """Generate and compare scenarios ``start`` .. ``start+count-1`` of ``seed``; yields (running
    report, divergence or None) after each one so a caller can print progress. The last report is
    the final one."""
    report = FuzzReport()
    for index in range(start, start + count):
        ops = generate(seed, index, ops_min, ops_max)
        div = find_divergence(seed, index, ops, run_a, run_b, do_shrink=do_shrink)
        report.scenarios += 1
        report.ops += len(ops)
        if div is not None:
            report.divergences.append(div)
        yield report, div
