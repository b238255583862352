"""What sign-in and sign-out hand back (plan layer, pure records): :class:`SessionResult`,
:class:`SignOutResult`, and :class:`SignInError` for a sign-in refused or rolled back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from daemonstore.errors import DaemonStoreError

__all__ = ["SessionResult", "SignInError", "SignOutResult"]


class SignInError(DaemonStoreError, OSError):
    """Sign-in refused or failed, after rolling back. ``reason`` tells the whole story (which
    step, which path, why); ``path`` is the path involved, ``errno`` the kernel's (or the
    injected EIO; None for a refusal that had none). ``step`` is the plan index that failed
    (None when refused at plan time), ``op`` that step's line, ``rollback`` what went wrong
    while rolling back (empty when the rollback was clean)."""

    def __init__(self, reason: str, path: str, err: int | None = None, *,
                 step: int | None = None, op: str | None = None,
                 rollback: Sequence[str] = ()) -> None:
        super().__init__(err, reason, path)
        self.reason = reason
        self.path = path
        self.step = step
        self.op = op
        self.rollback = list(rollback)

    def __str__(self) -> str:
        if not self.rollback:
            return self.reason
        return f"{self.reason}; rollback problems: {'; '.join(self.rollback)}"

    def __reduce__(self) -> tuple[object, ...]:
        # OSError pickles as cls(errno, strerror, filename); ours takes (reason, path, errno)
        return (type(self), (self.reason, self.path, self.errno),
                {"step": self.step, "op": self.op, "rollback": self.rollback})


@dataclass
class SessionResult:
    """A completed sign-in. ``mounted``: every mount point this sign-in mounted, in order;
    ``stores``: the stores (``/run/daemon-store[-cache]/<d>``) that got the user's mount."""

    user_hash: str
    first_user: bool
    mounted: list[str] = field(default_factory=list)
    stores: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class SignOutResult:
    """A sign-out. ``unmounted``: plain umounts; ``lazily_detached``: mount points that were
    busy and were detached with MNT_DETACH (not repeated in ``unmounted``); ``failed``: could
    not be unmounted at all (see ``warnings``); ``holders``: the references that kept the
    user's mounts busy when the sign-out began (session/holders.py), ``ended``: the holders
    made to let go first (``kill_holders``)."""

    user_hash: str
    unmounted: list[str] = field(default_factory=list)
    holders: list[str] = field(default_factory=list)
    ended: list[str] = field(default_factory=list)
    #: the holders were looked for (sign_out.py: once, first or at the first EBUSY)
    holders_checked: bool = False
    lazily_detached: list[str] = field(default_factory=list)
    removed_dirs: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed
