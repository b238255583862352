"""Low-disk cleanup, pure part: thresholds, the free-space state, and the ordered plan of cache
clearings (no I/O; docs/chromeos.md §6).

Given what :mod:`daemonstore.cleanup.apply` measured -- the filesystem's size and free space,
and per user: signed in or not, last activity, the daemon caches and their sizes --
:func:`plan_cleanup` returns every cache that may be cleared, in cryptohome's order
(``DiskCleanup::FreeDiskSpaceInternal``):

1. the signed-out users (unmounted homes), least recently active first, each user's daemon
   caches ``root/.cache/<d>`` in name order (``RemoveDaemonStoreCache``, step 2.3);
2. then, only if the state is still aggressive or critical (< 768 MiB free by default), the
   signed-in users' ``/run/daemon-store-cache/<d>/<H>``, daemon by daemon as cryptohome
   enumerates them (``DeleteDaemonStoreCacheMountedUsers``, step 3).

:meth:`CleanupPlan.stop_reason` is the one gate the executor (and the dry-run prediction) asks
before each clearing: stop once the target is reached (cryptohome checks after each step; here
after each cache, the finest unit that leaves every daemon's cache either intact or empty), and
enter step 2 only in the aggressive or critical state. A plan is empty when the state is above
the normal threshold (``FreeDiskSpace`` returns early above 1 GiB free).

Not re-created (no counterpart in this project): ephemeral cryptohomes (step 1), browser and
GCache caches, dm-crypt cache vaults, Android caches and whole-profile removal (steps 2.1, 2.2,
2.4, 4, 5), and the "active since the last normal cleanup" filter of step 2.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30

#: cryptohome's defaults (disk_cleanup.h, docs/chromeos.md §6.1)
DEFAULT_TARGET = 2 * GiB          # kTargetFreeSpaceAfterCleanup
DEFAULT_NORMAL = 1 * GiB          # kFreeSpaceThresholdToTriggerCleanup
DEFAULT_AGGRESSIVE = 768 * MiB    # below: aggressive cleanup
DEFAULT_CRITICAL = 512 * MiB      # below: critical cleanup

_SIZE = re.compile(r"\s*(\d+)(?:\.(\d+))?\s*([kKmMgGtT]?)(i?)[bB]?\s*\Z")
_SHIFT = {"": 0, "k": 10, "m": 20, "g": 30, "t": 40}


def parse_size(text: str) -> int:
    """``64M`` -> 67108864: a number (a decimal fraction allowed) with an optional binary suffix
    K, M, G or T (``MiB``/``MB``/``m`` all mean 2**20, as cryptohome's sizes are binary); no
    suffix means bytes. ValueError with the reason otherwise."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"size {text!r} is not a number with an optional K/M/G/T suffix "
                         "(e.g. 512M, 2G, 1.5G)")
    whole, frac, unit, _ = match.groups()
    shift = _SHIFT[unit.lower()]
    value = int(whole) << shift
    if frac:
        value += (int(frac) << shift) // 10 ** len(frac)
    return value


def format_size(nbytes: int) -> str:
    """``67108864`` -> ``64.0 MiB`` (negative values keep their sign)."""
    sign, n = ("-", -nbytes) if nbytes < 0 else ("", nbytes)
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= size:
            return f"{sign}{n / size:.1f} {unit}"
    return f"{sign}{n} B"


class DiskState(StrEnum):
    """``DiskCleanup::FreeSpaceState`` (docs/chromeos.md §6.1), plus ``unknown``: the filesystem
    reports no size (an unlimited tmpfs), so no threshold can be applied and nothing is
    deleted (cryptohome would read 0 free as critical and clear everything)."""

    ABOVE_TARGET = "above-target"
    ABOVE_THRESHOLD = "above-threshold"
    NORMAL = "normal"
    AGGRESSIVE = "aggressive"
    CRITICAL = "critical"
    UNKNOWN = "unknown"


#: states in which FreeDiskSpace does any work
NEEDS_CLEANUP = frozenset({DiskState.NORMAL, DiskState.AGGRESSIVE, DiskState.CRITICAL})
#: states in which the signed-in users' caches are cleared too (step 3)
NEEDS_SIGNED_IN = frozenset({DiskState.AGGRESSIVE, DiskState.CRITICAL})


@dataclass(frozen=True)
class Thresholds:
    """Free-space thresholds in bytes (the setters of ``DiskCleanup``). ``normal``: below it a
    cleanup runs; ``aggressive``: below it the signed-in users' caches go too; ``critical``:
    below it the state is critical (same daemon-store-cache work as aggressive: the extra
    critical steps are not re-created); ``target``: a cleanup stops once this much is free."""

    target: int = DEFAULT_TARGET
    normal: int = DEFAULT_NORMAL
    aggressive: int = DEFAULT_AGGRESSIVE
    critical: int = DEFAULT_CRITICAL

    def __post_init__(self) -> None:
        values = (self.critical, self.aggressive, self.normal, self.target)
        if any(v < 0 for v in values):
            raise ValueError("thresholds must not be negative")
        if list(values) != sorted(values):
            raise ValueError(
                "thresholds must satisfy critical <= aggressive <= normal <= target, not "
                f"critical {format_size(self.critical)}, aggressive "
                f"{format_size(self.aggressive)}, normal {format_size(self.normal)}, target "
                f"{format_size(self.target)}")

    def state(self, total: int, free: int) -> DiskState:
        """``DiskCleanup::GetFreeDiskSpaceState`` for ``free`` bytes free of ``total``."""
        if total <= 0:
            return DiskState.UNKNOWN
        if free >= self.target:
            return DiskState.ABOVE_TARGET
        if free >= self.normal:
            return DiskState.ABOVE_THRESHOLD
        if free >= self.aggressive:
            return DiskState.NORMAL
        if free >= self.critical:
            return DiskState.AGGRESSIVE
        return DiskState.CRITICAL

    def to_json(self) -> dict[str, int]:
        return {"target": self.target, "normal": self.normal, "aggressive": self.aggressive,
                "critical": self.critical}


class Phase(StrEnum):
    SIGNED_OUT = "signed-out"   # step 2.3: unmounted homes, through the vault directory
    SIGNED_IN = "signed-in"     # step 3: mounted users, through /run/daemon-store-cache


# ---- facts (what the executor measured) ----------------------------------------------------------


@dataclass(frozen=True)
class CacheFacts:
    """One daemon's cache of one user: the directory whose *contents* may be cleared (never the
    directory itself), the mount it must be on (``mnt_id``), the bytes of regular-file data and
    the number of entries below it (symlinks, fifos and directories count; mounts do not)."""

    daemon: str
    path: str
    mnt_id: int
    data_bytes: int
    entries: int


@dataclass(frozen=True)
class UserFacts:
    user_hash: str
    signed_in: bool
    #: ns since the epoch (activity.py); None = unknown, sorts as the oldest
    last_activity: int | None
    caches: tuple[CacheFacts, ...] = ()


# ---- the plan ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClearCache:
    """Delete everything below ``path`` (one user's cache of one daemon), keep ``path`` itself.
    An Op-like record: ``to_line()`` is its dry-run line."""

    user_hash: str
    daemon: str
    path: str
    phase: Phase
    mnt_id: int
    data_bytes: int
    entries: int

    def to_line(self) -> str:
        return (f"clear-contents {self.path}  # {self.phase} user {self.user_hash}, daemon "
                f"{self.daemon}: {format_size(self.data_bytes)} in {self.entries} "
                f"entr{'y' if self.entries == 1 else 'ies'}")


@dataclass(frozen=True)
class CleanupPlan:
    """Every cache that may be cleared, in order; the executor asks :meth:`stop_reason` before
    each. ``reason``: why the plan is empty, when it is."""

    thresholds: Thresholds
    total: int
    free: int
    steps: tuple[ClearCache, ...]
    reason: str = ""

    @property
    def state(self) -> DiskState:
        return self.thresholds.state(self.total, self.free)

    def stop_reason(self, index: int, total: int, free: int) -> str | None:
        """Why not to run step ``index`` with ``free`` bytes free now (None: run it)."""
        t = self.thresholds
        if free >= t.target:
            return f"target reached: {format_size(free)} free >= {format_size(t.target)}"
        step = self.steps[index]
        entering = step.phase is Phase.SIGNED_IN and (
            index == 0 or self.steps[index - 1].phase is not Phase.SIGNED_IN)
        state = t.state(total, free)
        if entering and state not in NEEDS_SIGNED_IN:
            return (f"state {state} ({format_size(free)} free, not below the aggressive "
                    f"threshold {format_size(t.aggressive)}): signed-in users' caches kept")
        return None

    def predict(self) -> list[ClearCache]:
        """The steps a run would take if clearing each cache freed exactly its data bytes (the
        dry run's guess: tmpfs frees whole pages, other filesystems whole blocks)."""
        free, chosen = self.free, []
        for index, step in enumerate(self.steps):
            if self.stop_reason(index, self.total, free) is not None:
                break
            chosen.append(step)
            free += step.data_bytes
        return chosen

    def header(self) -> str:
        t = self.thresholds
        return (f"cleanup: {format_size(self.free)} free of {format_size(self.total)}: "
                f"{self.state} (target {format_size(t.target)}, normal below "
                f"{format_size(t.normal)}, aggressive below {format_size(t.aggressive)}, "
                f"critical below {format_size(t.critical)})")

    def to_lines(self) -> list[str]:
        """The dry run: a ``#`` header, then each step, ``+`` if the prediction runs it, ``-``
        if a run would most likely stop before it."""
        lines = [f"# {self.header()}"]
        if self.reason:
            lines.append(f"# {self.reason}")
        predicted = len(self.predict())
        for index, step in enumerate(self.steps):
            lines.append(f"{'+' if index < predicted else '-'} {step.to_line()}")
        return lines


def _signed_out_key(user: UserFacts) -> tuple[int, str]:
    # oldest first; an unknown activity counts as the oldest; the hash breaks ties
    return (-1 if user.last_activity is None else user.last_activity, user.user_hash)


def plan_cleanup(thresholds: Thresholds, total: int, free: int,
                 users: Sequence[UserFacts]) -> CleanupPlan:
    """The ordered clearings for this state (module docstring). ``users``: signed-in ones in
    sign-in order. Caches with no entries are left out (nothing to clear)."""
    state = thresholds.state(total, free)
    if state not in NEEDS_CLEANUP:
        why = ("the filesystem reports no size (unlimited): thresholds do not apply"
               if state is DiskState.UNKNOWN else
               f"{format_size(free)} free is not below the normal threshold "
               f"{format_size(thresholds.normal)}: nothing to do")
        return CleanupPlan(thresholds, total, free, (), why)
    steps: list[ClearCache] = []
    for user in sorted((u for u in users if not u.signed_in), key=_signed_out_key):
        for cache in sorted(user.caches, key=lambda c: c.daemon):
            steps.append(_step(user, cache, Phase.SIGNED_OUT))
    signed_in = [u for u in users if u.signed_in]
    for daemon in sorted({c.daemon for u in signed_in for c in u.caches}):
        for user in signed_in:
            steps += [_step(user, c, Phase.SIGNED_IN) for c in user.caches if c.daemon == daemon]
    steps = [s for s in steps if s.entries > 0]
    return CleanupPlan(thresholds, total, free, tuple(steps),
                       "" if steps else "no cache has anything to clear")


def _step(user: UserFacts, cache: CacheFacts, phase: Phase) -> ClearCache:
    return ClearCache(user.user_hash, cache.daemon, cache.path, phase, cache.mnt_id,
                      cache.data_bytes, cache.entries)


# ---- results -----------------------------------------------------------------------------------


@dataclass
class StepResult:
    """What clearing one cache did. ``freed_bytes``: free space gained, measured with statvfs
    around the step (what the thresholds see; others writing meanwhile shift it);
    ``removed_bytes``: data of the regular files unlinked. ``skipped``: entries left alone on
    purpose (mount points, paths that turned into symlinks); ``vanished``: entries gone before
    we got to them; ``kept_dirs``: directories not removed because something remained or
    appeared in them."""

    step: ClearCache
    freed_bytes: int = 0
    removed_bytes: int = 0
    removed_files: int = 0
    removed_dirs: int = 0
    kept_dirs: int = 0
    vanished: int = 0
    skipped: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def line(self) -> str:
        s = self.step
        extra = "".join([f", {len(self.skipped)} skipped" if self.skipped else "",
                         f", {self.vanished} vanished" if self.vanished else "",
                         f", {len(self.errors)} errors" if self.errors else ""])
        return (f"freed {format_size(self.freed_bytes)}: {s.phase} user {s.user_hash} daemon "
                f"{s.daemon} ({self.removed_files} files, {self.removed_dirs} dirs, "
                f"{format_size(self.removed_bytes)} of data{extra}) {s.path}")

    def to_json(self) -> dict[str, object]:
        s = self.step
        return {"user": s.user_hash, "daemon": s.daemon, "phase": str(s.phase), "path": s.path,
                "freed_bytes": self.freed_bytes, "removed_bytes": self.removed_bytes,
                "removed_files": self.removed_files, "removed_dirs": self.removed_dirs,
                "kept_dirs": self.kept_dirs, "vanished": self.vanished,
                "skipped": list(self.skipped), "errors": list(self.errors)}


@dataclass
class CleanupReport:
    """One cleanup pass: the plan, the steps run, the free space before and after."""

    plan: CleanupPlan
    dry_run: bool = False
    steps: list[StepResult] = field(default_factory=list)
    total_after: int = 0
    free_after: int = 0
    stopped: str = ""
    warnings: list[str] = field(default_factory=list)

    @property
    def state_before(self) -> DiskState:
        return self.plan.state

    @property
    def state_after(self) -> DiskState:
        return self.plan.thresholds.state(self.total_after, self.free_after)

    @property
    def freed_bytes(self) -> int:
        return sum(r.freed_bytes for r in self.steps)

    @property
    def target_met(self) -> bool:
        return self.free_after >= self.plan.thresholds.target

    @property
    def ok(self) -> bool:
        """Nothing to do, or done: the state is above the normal threshold and nothing failed
        (a dry run is ok). Else the target was missed with every cache cleared, or a step
        had errors."""
        if self.dry_run:
            return True
        if any(r.errors for r in self.steps):
            return False
        return self.state_after not in NEEDS_CLEANUP or self.target_met

    def freed(self) -> dict[str, dict[str, int]]:
        """Freed bytes per user hash, then per daemon."""
        out: dict[str, dict[str, int]] = {}
        for r in self.steps:
            per = out.setdefault(r.step.user_hash, {})
            per[r.step.daemon] = per.get(r.step.daemon, 0) + r.freed_bytes
        return out

    def summary(self) -> str:
        return (f"cleanup: {self.state_before} -> {self.state_after}, freed "
                f"{format_size(self.freed_bytes)} in {len(self.steps)} caches, "
                f"{format_size(self.free_after)} free of {format_size(self.total_after)}"
                + (f"; stopped: {self.stopped}" if self.stopped else ""))

    def lines(self) -> list[str]:
        if self.dry_run:
            return self.plan.to_lines() + [f"# warning: {w}" for w in self.warnings]
        out = [self.plan.header()]
        out += [f"warning: {w}" for w in self.warnings]
        for r in self.steps:
            out.append(r.line())
            out += [f"  skipped {s}" for s in r.skipped]
            out += [f"  error {e}" for e in r.errors]
        out.append(self.summary())
        return out

    def to_json(self) -> dict[str, object]:
        plan = self.plan
        return {
            "dry_run": self.dry_run, "thresholds": plan.thresholds.to_json(),
            "total_bytes": plan.total, "free_before": plan.free,
            "state_before": str(self.state_before),
            "free_after": self.free_after, "state_after": str(self.state_after),
            "target_met": self.target_met, "freed_bytes": self.freed_bytes,
            "freed": self.freed(), "stopped": self.stopped,
            "steps": [r.to_json() for r in self.steps],
            "plan": [s.to_line() for s in plan.steps],
            "predicted": [s.to_line() for s in plan.predict()] if self.dry_run else None,
            "warnings": list(self.warnings),
        }
