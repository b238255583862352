"""What the command-line front ends share (composition layer): the one exit-2 error, the backend
for ``--root`` and its life cycle (:func:`host_for`), and the ``-v`` step log.

design.md: "every command exits non-zero with a one-line reason on bad input" -- 2 for bad input
or an environment the command cannot run in, 1 for a finding or a failure of the work itself.

The backends are opened through :func:`open_host` and :func:`open_reader`, looked up here at
call time: a test replaces them once (``monkeypatch.setattr(command, "open_host", ...)``) to run
every command on a model host.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from daemonstore.host import Host


class CannotRun(click.ClickException):
    """Bad input, or an environment the command cannot run in: a one-line reason, exit 2
    (click's own usage errors exit 2 too)."""

    exit_code = 2


def open_host(root: str) -> Host:
    """The backend for ``--root``: the real kernel (it refuses anything but a tmpfs sandbox root
    in a private mount namespace)."""
    from daemonstore.kernel import KernelHost  # only the kernel path needs ctypes

    return KernelHost(root)


def open_reader(root: str) -> Any:
    """A read-only view of ``--root`` for commands that only read files (``path``): any
    directory will do, no sandbox needed."""
    from daemonstore.kernel.readonly import ReadOnlyRoot

    return ReadOnlyRoot(root)


def one_line(exc: BaseException) -> str:
    """An error as one line: its strerror, else the first line of its message."""
    text = getattr(exc, "strerror", None) or str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


def open_root(root: str, *, read_only: bool = False) -> Any:
    """:func:`open_reader` or :func:`open_host` for ``root``; an OSError (SandboxRefused is a
    PermissionError) becomes :class:`CannotRun` naming ``--root``."""
    try:
        return open_reader(root) if read_only else open_host(root)
    except OSError as exc:
        raise CannotRun(f"--root {root}: {one_line(exc)}") from None


@contextmanager
def host_for(root: str, *, read_only: bool = False,
             explain: Callable[[OSError], str] = str) -> Iterator[Any]:
    """The backend for ``--root`` (:func:`open_root`) for the block, closed afterwards; an
    OSError in the block becomes :class:`CannotRun` with ``explain(exc)`` as the reason."""
    host = open_root(root, read_only=read_only)
    try:
        yield host
    except OSError as exc:
        raise CannotRun(f"--root {root}: {explain(exc)}") from None
    finally:
        close = getattr(host, "close", None)
        if close is not None:
            close()


def step_logger(verbose: bool, *, err: bool) -> Callable[[str], None] | None:
    """``-v``: each step as ``+ LINE`` (to stderr when stdout carries JSON), else None."""
    if not verbose:
        return None

    def log(line: str) -> None:
        click.echo(f"+ {line}", err=err)

    return log
