"""A sign-in as data and how it is carried out (plan layer: ``apply`` only calls the Host given):
:class:`SignInPlan`, its step-by-step apply with the LIFO rollback, and :func:`plan_lines`, the
dry-run text of every session plan."""

from __future__ import annotations

import errno
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from daemonstore import mountinfo
from daemonstore.errors import errname
from daemonstore.host import Host
from daemonstore.ops import ForceUmount, Op, op_path, undo_of
from daemonstore.session.activity import record_activity
from daemonstore.session.detach import detach_found, left_note
from daemonstore.session.queries import user_mounts
from daemonstore.session.results import SessionResult, SignInError

__all__ = ["SignInPlan", "plan_lines"]

#: what a failed step's errno means for sign-in, added to the reason
_HINTS = {
    errno.ELOOP: "a symbolic link is in the path; it was not followed",
    errno.ENOTDIR: "something that is not a directory is where a directory must be",
    errno.EBUSY: "already mounted or in use",
}


def plan_lines(header: str, warnings: Sequence[str], steps: Sequence[Op],
               numbered: bool) -> list[str]:
    """The dry run of a plan: ``# header``, ``# warning: ...`` lines, then one line per step
    (``N: `` prefixed, right-aligned, with ``numbered``)."""
    lines = [f"# {header}"] + [f"# warning: {w}" for w in warnings]
    width = len(str(max(len(steps) - 1, 0)))
    for index, op in enumerate(steps):
        lines.append(f"{index:>{width}}: {op.to_line()}" if numbered else op.to_line())
    return lines


@dataclass(frozen=True)
class SignInPlan:
    """What a sign-in will do, as data (``steps``); ``apply`` carries it out."""

    user_hash: str
    first_user: bool
    steps: tuple[Op, ...]
    stores: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    #: write the activity record after a successful apply (activity.py; a guest's ephemeral
    #: session has no /home/.shadow/<H> to keep it in)
    records_activity: ClassVar[bool] = True

    def header(self) -> str:
        who = "first user" if self.first_user else "additional user"
        return (f"sign-in of {self.user_hash} ({who}): {len(self.steps)} steps, "
                f"{len(self.stores)} stores")

    def to_lines(self, *, numbered: bool = False) -> list[str]:
        """The dry run: a ``#`` header and warnings, then one line per step (``N: `` prefixed
        with ``numbered``, N being what ``fail_at`` takes)."""
        return plan_lines(self.header(), self.warnings, self.steps, numbered)

    def apply(self, host: Host, *, fail_at: int | None = None) -> SessionResult:
        """Run the steps in order. A step that fails undoes what the earlier ones did (LIFO)
        and raises SignInError; ``fail_at=N`` injects EIO before step N."""
        if fail_at is not None and fail_at < 0:
            raise ValueError(f"fail_at must be a step index >= 0, not {fail_at}")
        undo: list[Op] = []
        mounted: list[str] = []
        # the mount table before the first step, for the sweep after a failure; parsed only
        # then (a successful apply never needs it)
        before = host.mountinfo()
        for index, op in enumerate(self.steps):
            try:
                if index == fail_at:
                    raise OSError(errno.EIO, f"injected failure before step {index}", op_path(op))
                op.apply(host)
            except OSError as exc:
                notes = _rollback(host, undo) + self._sweep(host, before)
                raise self._failure(index, op, exc, notes) from exc
            except BaseException:
                _rollback(host, undo)  # a bug or an interrupt: still leave no mount behind
                self._sweep(host, before)
                raise
            step_undo = undo_of(op)
            if step_undo is not None:
                undo.append(step_undo)
            if isinstance(step_undo, ForceUmount):  # a bind, the loop vault, a guest's tmpfs
                mounted.append(step_undo.target)
        if self.records_activity:
            record_activity(host, self.user_hash)  # LRU order of the low-disk cleanup
        return SessionResult(self.user_hash, self.first_user, mounted, list(self.stores),
                             list(self.warnings))

    def identity_vault_mount(self) -> str | None:
        """Where this plan mounts the vault: None for ``/home/.shadow/<H>/mount`` (a guest's
        plan: its ephemeral tmpfs)."""
        return None

    def _identity_mounts(self, entries: list[mountinfo.MountInfoEntry]) -> set[int]:
        """Ids of the user's mounts by identity (queries.py: device and root, not path)."""
        return {e.mount_id for e in user_mounts(entries, self.user_hash,
                                                self.identity_vault_mount())}

    def _sweep(self, host: Host, before: str) -> list[str]:
        """After the rollback: detach every mount of the user this sign-in made that the LIFO
        undo did not reach because it is not where the step put it -- a bind that landed on a
        directory swapped in (``renameat2(RENAME_EXCHANGE)`` in chronos-owned /home/chronos)
        between resolution and mount(2), or a mount point renamed from another namespace.
        Found by identity (SECURITY.md, "mounts by identity"); ``before``: the mountinfo text
        read before the first step, whose mounts of the user are not this sign-in's."""
        had = self._identity_mounts(mountinfo.parse(before))

        def made_here(entries: object) -> list[mountinfo.MountInfoEntry]:
            found = user_mounts(entries, self.user_hash,  # type: ignore[arg-type]
                                self.identity_vault_mount())
            return [e for e in found if e.mount_id not in had]

        try:
            _done, left = detach_found(host, made_here)
        except OSError as exc:
            return [f"could not look for mounts that landed elsewhere: "
                    f"{exc.strerror or errname(exc.errno)}"]
        # detaching a mount that landed elsewhere is part of a clean refusal, not a problem:
        # the error itself (ESTALE from the re-check) already says the bind did not land
        return [left_note(p) for p in left]

    def _failure(self, index: int, op: Op, exc: OSError, notes: list[str]) -> SignInError:
        """The error for step ``index`` failing with ``exc``, after a rollback that left
        ``notes``."""
        path = exc.filename if isinstance(exc.filename, str) else op_path(op)
        hint = _HINTS.get(exc.errno or 0)
        reason = (f"sign-in of {self.user_hash} failed at step {index} ({op.to_line()}) on "
                  f"{path}: {exc.strerror or errname(exc.errno)}"
                  + (f" ({hint})" if hint else "") + "; rolled back")
        return SignInError(reason, path, exc.errno, step=index, op=op.to_line(), rollback=notes)


def _rollback(host: Host, undo: list[Op]) -> list[str]:
    """Undo in LIFO order (``Mounter::UnmountAll`` pops its stack the same way); returns what
    did not go cleanly. Keeps going after a failure: every later undo is still worth doing."""
    notes = []
    for op in reversed(undo):
        try:
            if isinstance(op, ForceUmount):
                if op.unmount(host):
                    notes.append(f"{op.target} was busy: lazily detached")
            else:
                op.apply(host)
        except OSError as exc:
            notes.append(f"{op.to_line()} failed: {exc.strerror or errname(exc.errno)}")
    return notes
