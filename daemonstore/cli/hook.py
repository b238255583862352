"""``daemonstore hook [--root DIR] [--system] [--address A] [--once] [--dry-run]``: the session
hook as a service (thin click front end over :mod:`daemonstore.hook`).

It runs in the mount namespace cryptohome mounts in (the root namespace), on the system bus
(``--address``, else ``$DBUS_SYSTEM_BUS_ADDRESS``, else ``/run/dbus/system_bus_socket`` under the
root). One log line per action on stdout, flushed (the journal under systemd); ``READY=1`` to
``$NOTIFY_SOCKET`` once it listens (systemd ``Type=notify``). ``--once`` converges and exits
(no bus); ``--dry-run`` prints what a pass would do.

Exit codes: 0 stopped by SIGTERM/SIGINT (or ``--once`` with every user done); 1 the bus went
away or could not be reached (or ``--once`` with a user that failed); 2 bad input or cannot run
here (the initial mount namespace without ``--system``, ``--root`` unusable).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys

import click

from daemonstore.command import ROOT_HELP, bus_address, host_for, system_option
from daemonstore.dbus.client import Client, ClientError
from daemonstore.hook import converge, plan_converge
from daemonstore.host import Host


def _log(line: str) -> None:
    click.echo(f"daemonstore hook: {line}")
    sys.stdout.flush()


def notify_ready() -> None:
    """sd_notify(READY=1) when started by systemd (``$NOTIFY_SOCKET``; ``@`` is abstract)."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    address = "\0" + path[1:] if path.startswith("@") else path
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.sendto(b"READY=1", address)
        except OSError as exc:
            _log(f"cannot notify systemd at {path}: {exc.strerror}")


@click.command("hook", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--root", default="/", show_default=True, metavar="DIR", help=ROOT_HELP)
@system_option
@click.option("--address", default=None,
              help="Bus address (default $DBUS_SYSTEM_BUS_ADDRESS, else the root's "
                   "/run/dbus/system_bus_socket).")
@click.option("--once", is_flag=True, help="Converge once with what is mounted, then exit.")
@click.option("--dry-run", is_flag=True, help="Print what one pass would do; change nothing.")
@click.option("--no-watch-mounts", is_flag=True,
              help="Do not react to mount-table changes (signals and start only).")
def hook_command(root: str, system: bool, address: str | None, once: bool, dry_run: bool,
                 no_watch_mounts: bool) -> None:
    """Make each signed-in user's daemon-store binds on SessionStateChanged (and remove those of
    users signed out), for a cryptohome that mounts vaults without them. Idempotent: where
    cryptohome made the binds already, nothing changes."""
    with host_for(root, system=system, changes_mounts=not dry_run,
                  what="daemonstore hook") as host:
        if dry_run:
            for action in plan_converge(host):
                for line in action.to_lines():
                    click.echo(line)
            return
        if once:
            report = converge(host, _log)
            sys.exit(0 if report.ok else 1)
        sys.exit(_serve(host, bus_address(address, root), not no_watch_mounts))


def _serve(host: Host, address: str, watch_mounts: bool) -> int:
    from daemonstore.hook.service import HookService

    async def go() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            client = await Client.connect(address)
        except ClientError as exc:
            _log(str(exc))
            return 1
        async with client:
            service = HookService(host, client, _log, watch_mounts)

            def ready() -> None:
                _log(f"listening on {address}")
                notify_ready()

            try:
                code = await service.run(stop, ready)
            except ClientError as exc:
                _log(f"bus error: {exc}")
                return 1
        if code:
            _log("the bus connection was lost")
        else:
            _log("stopped")
        return code

    return asyncio.run(go())
