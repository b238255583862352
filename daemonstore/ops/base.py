"""The Op base of every plan step (plan layer, pure: an op only calls the Host it is given).

Components build their plans as lists of ops and carry them out afterwards (docs/architecture.md §3:
the plan as data, then apply). An op knows how to ``apply`` itself to a Host and how to render
itself as one line (``to_line``) for dry runs and error messages.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field

from daemonstore.host import Host

__all__ = ["Op", "flatten", "op_path", "quote", "to_text", "undo_of"]


def quote(word: str) -> str:
    """A path or name as one word of a plan line (``shlex.quote``): a scenario line parses back
    to the same op, and a dry-run line pastes into a shell."""
    return shlex.quote(word)


@dataclass(frozen=True)
class Op:
    """One plan step. ``line`` is where it came from in a scenario (0 for built plans); it takes
    no part in equality, so a plan can be compared with a list of expected ops."""

    line: int = field(default=0, kw_only=True, compare=False)

    def apply(self, host: Host) -> None:
        raise NotImplementedError(type(self).__name__)

    def to_line(self) -> str:
        raise NotImplementedError(type(self).__name__)

    def parts(self) -> tuple[Op, ...]:
        """The single steps this op stands for, in the order it applies them: the op itself;
        a composite (:class:`~daemonstore.ops.mounts.MakeStore`) its parts, each printed and
        reported as a step of its own (:func:`flatten`)."""
        return (self,)

    def __str__(self) -> str:
        return self.to_line()


def flatten(ops: Iterable[Op]) -> list[Op]:
    """``ops`` with every composite replaced by its parts: the steps as a dry run prints them
    and a report lists them."""
    return [part for op in ops for part in op.parts()]


def to_text(ops: Iterable[Op]) -> str:
    """Ops as text, one line each (the dry-run and shrinker form; a composite one line per
    part)."""
    return "".join(op.to_line() + "\n" for op in flatten(ops))


def undo_of(op: Op) -> Op | None:
    """The step that reverses ``op`` after it succeeded (its ``undo()``), or None when nothing
    needs undoing (a propagation change or remount dies with its mount; a chmod/chown re-applies
    intended values; a directory inside the vault is kept)."""
    undo = getattr(op, "undo", None)
    return undo() if callable(undo) else None


def op_path(op: Op) -> str:
    """The path a step acts on, for error messages (its target, else its path)."""
    for attr in ("target", "path"):
        value = getattr(op, attr, None)
        if isinstance(value, str):
            return value
    paths = getattr(op, "paths", None)
    return paths[0] if paths else ""
