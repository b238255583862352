"""What the command-line front ends share (composition layer): the one exit-2 error, the backend
for ``--root`` and its life cycle (:func:`host_for`), the ``--system`` interlock, the system bus
address, and the ``-v`` step log.

docs/architecture.md §10: every command's root is ``/`` by default; a command that
changes mounts refuses the machine's *initial* mount namespace unless given ``--system`` (init
scripts pass it; tests never do). Anywhere else (a container, a test namespace) no flag is
needed. :func:`check_interlock` is that rule; it asks :func:`in_initial_namespace`, looked up
here at call time so a test injects the answer without touching any namespace.

docs/architecture.md §9: every non-zero exit prints a one-line reason -- 2 for bad input
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

from daemonstore.dbus import names
from daemonstore.host import Host


class CannotRun(click.ClickException):
    """Bad input, or an environment the command cannot run in: a one-line reason, exit 2
    (click's own usage errors exit 2 too)."""

    exit_code = 2


#: the system bus: one rule, in dbus/names.py (``bus_address`` is its name for the commands)
SYSTEM_BUS_SOCKET = names.SYSTEM_BUS_SOCKET
ENV_BUS_ADDRESS = names.ENV_BUS_ADDRESS
bus_address = names.system_bus_address

SYSTEM_HELP = ("Allow the machine's initial mount namespace (init scripts pass it; without it "
               "the command refuses to change the mounts everyone sees).")


#: ``--system`` for every command that changes mounts (click option, shared)
system_option = click.option("--system", is_flag=True, help=SYSTEM_HELP)

ROOT_HELP = "Root of the system to act on: / (default) or a sandbox (a private tmpfs mount point)."


def in_initial_namespace() -> bool:
    """Is this process in the machine's initial mount namespace (PID 1's)? Reads two nsfs
    inodes (:func:`daemonstore.kernel.guards.in_initial_namespace`); OSError when unknowable."""
    from daemonstore.kernel.guards import in_initial_namespace as probe

    return probe()


def check_interlock(system: bool, what: str = "this command") -> None:
    """The ``--system`` interlock: :class:`CannotRun` (exit 2, one line) when a command that
    changes mounts would act on the initial mount namespace without ``--system``."""
    if system:
        return
    try:
        initial = in_initial_namespace()
    except OSError as exc:
        raise CannotRun(f"{what}: {one_line(exc)}; pass --system to act anyway") from None
    if initial:
        raise CannotRun(f"{what} changes mounts: refusing the machine's initial mount "
                        "namespace without --system (init scripts pass it); or run it in a "
                        "container or a private mount namespace")


def open_host(root: str, *, system: bool = False) -> Host:
    """The backend for ``--root``: the real kernel, on ``/`` or on a sandbox (a private tmpfs
    mount point); ``system`` lets it run in the initial mount namespace."""
    from daemonstore.kernel import KernelHost  # only the kernel path needs ctypes

    return KernelHost(root, system=system)


def open_reader(root: str) -> Any:
    """A read-only view of ``--root`` for commands that only read files (``path``): any
    directory will do, no sandbox needed."""
    from daemonstore.kernel.readonly import ReadOnlyRoot

    return ReadOnlyRoot(root)


def one_line(exc: BaseException) -> str:
    """An error as one line: its strerror, else the first line of its message."""
    text = getattr(exc, "strerror", None) or str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


def open_root(root: str, *, read_only: bool = False, system: bool = False) -> Any:
    """:func:`open_reader` or :func:`open_host` for ``root``; an OSError (SandboxRefused is a
    PermissionError) becomes :class:`CannotRun` naming ``--root``."""
    try:
        if read_only:
            return open_reader(root)
        return open_host(root, system=system)
    except OSError as exc:
        raise CannotRun(f"--root {root}: {one_line(exc)}") from None


@contextmanager
def host_for(root: str, *, read_only: bool = False, system: bool = False,
             changes_mounts: bool = True, what: str = "this command",
             explain: Callable[[OSError], str] = str) -> Iterator[Any]:
    """The backend for ``--root`` (:func:`open_root`) for the block, closed afterwards; an
    OSError in the block becomes :class:`CannotRun` with ``explain(exc)`` as the reason.

    ``changes_mounts``: the ``--system`` interlock applies (:func:`check_interlock`); a command
    that only reads (``status``) passes False and may look at the initial namespace."""
    if changes_mounts and not read_only:
        check_interlock(system, what)
    host = open_root(root, read_only=read_only,
                     system=system or not (changes_mounts and not read_only))
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
