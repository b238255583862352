"""What every ``--root`` command shares: the kernel host for a sandbox root, closing it, and the
exit-2 error for "cannot run here" (design.md: a one-line reason, non-zero exit).

Each command module binds :func:`open_host` to a module-level name, so its tests can replace that
name with a model host without touching the others.
"""

from __future__ import annotations

from collections.abc import Callable

import click

from daemonstore.host import Host


class CannotRun(click.ClickException):
    """One-line reason, exit 2."""

    exit_code = 2


def open_host(root: str) -> Host:
    """The backend for ``--root``: the real kernel (it refuses anything but a tmpfs sandbox root
    in a private mount namespace)."""
    from daemonstore.kernel import KernelHost  # only the kernel path needs ctypes

    return KernelHost(root)


def step_logger(verbose: bool, *, err: bool) -> Callable[[str], None] | None:
    """``-v``: each step as ``+ LINE`` (to stderr when stdout carries JSON), else None."""
    if not verbose:
        return None

    def log(line: str) -> None:
        click.echo(f"+ {line}", err=err)

    return log


def close_host(host: object) -> None:
    close = getattr(host, "close", None)
    if close is not None:
        close()
