"""``cryptohome-sim``: serve the simulated cryptohome + session manager on a bus (thin click
front end; the services are :mod:`cryptohome_sim.service`, the state :mod:`cryptohome_sim.core`).

Exit codes: 0 stopped by SIGTERM/SIGINT, 1 the service failed (bus refused the names, bus went
away), 2 bad input or an environment it must not run in (no bus address, KernelHost refused).

The daemon role's users are read from the grant files ``daemonstore install --daemon-user``
writes into the bus's policy directory (``/etc/dbus-1/system.d``), the files dbus-daemon reads:
one source of truth for both layers, which a running service re-reads on SIGHUP (as dbus-daemon
re-reads its own on ``ReloadConfig``), so a daemon installed after boot is granted without a
restart that would lose every session.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

import click

from cryptohome_sim import bus as private_bus
from cryptohome_sim.callers import CallerIds, UnknownUser
from cryptohome_sim.core import Cryptohome
from cryptohome_sim.service import Service, ServiceError
from daemonstore.command import (
    ENV_BUS_ADDRESS,
    CannotRun,
    bus_address,
    check_interlock,
    open_root,
    system_option,
)
from daemonstore.dbus.grants import BadDaemonUser, check_daemon_user, read_grants
from daemonstore.host import Host
from daemonstore.install import DBUS_DIR


def _host(root: str | None, model: bool, system: bool) -> Host:
    if model and root is not None:
        raise CannotRun("give one of --model (a fresh model) or --root DIR (the kernel; / by "
                        "default)")
    if model:
        from daemonstore.model import ModelHost

        return ModelHost()
    check_interlock(system, "cryptohome-sim")  # it mounts vaults: the --system interlock
    return open_root(root or "/", system=system)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--root", type=click.Path(file_okay=False), default=None,
              help="Root for KernelHost: / by default, or a sandbox (a private tmpfs mount "
                   "point).")
@system_option
@click.option("--model", is_flag=True, help="Serve a fresh pure-model host instead.")
@click.option("--address", default=None,
              help=f"Bus address (default ${ENV_BUS_ADDRESS}, else the system bus socket under "
                   "--root).")
@click.option("--spawn-bus", is_flag=True,
              help="Start a private dbus-daemon and print its address first.")
@click.option("--vault", type=click.Choice(["dir", "loop"]), default="dir", show_default=True,
              help="Users' vault: a directory, or (kernel only) an ext4 image on a loop device.")
@click.option("--no-daemon-stores", "no_stores", is_flag=True,
              help="Mount vaults and home binds only; the session hook (daemonstore hook) "
                   "makes the daemon-store binds.")
@click.option("--root-user", default=None, metavar="USER",
              help="Who the service's own caller check treats as root (a name or uid; "
                   "default: the user running cryptohome-sim). With --spawn-bus, also the "
                   "private bus policy's root.")
@click.option("--chronos-user", default=None, metavar="USER",
              help="Who the caller check treats as chronos, i.e. Chrome (a name or uid; "
                   "default: the chronos account, if any). With --spawn-bus, also the "
                   "private bus policy's chronos.")
@click.option("--grants", "grants_dir", default=None, metavar="DIR",
              type=click.Path(file_okay=False),
              help="Where the daemon role's grant files (daemonstore-USER.conf) are: "
                   f"default {DBUS_DIR} under --root, the private bus's with --spawn-bus, "
                   "none with --model. Re-read on SIGHUP.")
@click.option("--daemon-user", "daemon_users", multiple=True, metavar="USER",
              help="With --spawn-bus: give USER the daemon role (a grant file in the private "
                   "bus's policy directory, which the service reads too). Repeatable.")
@click.option("--remove-store-targets", is_flag=True,
              help="Unmount also removes the emptied /run/daemon-store{,-cache}/<d>/<hash> "
                   "(ChromeOS leaves them; so does the default).")
@click.option("-v", "--verbose", is_flag=True, help="Log every call to stderr.")
def main(root: str | None, system: bool, model: bool, address: str | None, spawn_bus: bool,
         vault: str, no_stores: bool, root_user: str | None, chronos_user: str | None,
         grants_dir: str | None, daemon_users: tuple[str, ...], remove_store_targets: bool,
         verbose: bool) -> None:
    """Serve org.chromium.UserDataAuth and org.chromium.SessionManager on a D-Bus bus.

    Who may call what is checked by the bus policy and again by the service itself, from one
    table: root everything, chronos Chrome's methods, the daemon users of the grant files the
    session queries, nobody else (AccessDenied)."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="cryptohome-sim: %(message)s")
    if spawn_bus and address:
        raise CannotRun("--spawn-bus and --address exclude each other")
    if daemon_users and not spawn_bus:
        raise CannotRun("--daemon-user needs --spawn-bus; for a system bus, grant with "
                        "daemonstore install --daemon-user USER (then SIGHUP cryptohome-sim)")
    try:
        daemon_users = tuple(check_daemon_user(u) for u in daemon_users)
    except BadDaemonUser as exc:
        raise CannotRun(str(exc)) from None
    if model and not (spawn_bus or address or os.environ.get(ENV_BUS_ADDRESS)):
        raise CannotRun(f"no bus address: --model has no system bus socket; pass --address, "
                        f"set ${ENV_BUS_ADDRESS} or use --spawn-bus")
    user = root_user or private_bus.current_user()
    try:  # a user named explicitly must exist; the default chronos need not (nobody is it)
        ids = CallerIds.named(user, chronos_user or "chronos", strict=chronos_user is not None)
    except UnknownUser as exc:
        raise CannotRun(str(exc)) from None
    if not spawn_bus:  # docs/architecture.md §7: $DBUS_SYSTEM_BUS_ADDRESS, else the root's socket
        address = bus_address(address, root or "/")
    host = _host(root, model, system)  # before any bus: a refused host must leave no bus behind
    if vault == "loop":
        _check_loop_vault(host)
    spawned = None
    # until the loop installs its own handlers, a SIGTERM must still reach the finally below
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_on_signal)
    if spawn_bus:
        try:
            spawned = private_bus.start_private_bus(privileged_user=user,
                                                    chronos=chronos_user or "chronos",
                                                    daemon_users=daemon_users)
        except private_bus.BusError as exc:
            raise click.ClickException(str(exc)) from None
        address = spawned.address
        grants_dir = grants_dir or str(spawned.policy_dir)
        click.echo(f"{ENV_BUS_ADDRESS}={address}")
        click.echo(f"dbus-daemon pid {spawned.pid}, privileged user {user}")
    try:
        core = Cryptohome(host, vault=vault, daemon_stores=not no_stores,
                          remove_store_targets=remove_store_targets)
        if grants_dir is None and not model:
            grants_dir = os.path.join(root or "/", DBUS_DIR.lstrip("/"))
        code = asyncio.run(_serve(core, address, host.kind, ids,  # type: ignore[arg-type]
                                  grants_dir))
    finally:
        # a second signal (Ctrl-C, or `timeout` signalling the whole process group) must not
        # cut the clean-up short and leave the private bus's directory behind
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
        if spawned is not None:
            spawned.stop()
    sys.exit(code)


def _check_loop_vault(host: Host) -> None:
    """``--vault loop`` needs the kernel host, the loop driver and mkfs.ext4 (e2fsprogs)."""
    from daemonstore.kernel import loop
    from daemonstore.session import loop_vault as loopvault

    reason = loopvault.unavailable_reason(host)
    if reason is None and loop.mkfs_command() is None:
        reason = "mkfs.ext4 not found (install e2fsprogs)"
    if reason is not None:
        raise CannotRun(f"--vault loop: {reason}")


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def _granted(ids: CallerIds, grants_dir: str | None) -> CallerIds:
    """``ids`` with the daemon users of ``grants_dir``; says who they are (and what was
    skipped, why) on stdout, the line a reload is waited for by."""
    grants = read_grants(grants_dir) if grants_dir is not None else None
    out = ids.with_grants(grants)
    for path, reason in grants.skipped if grants is not None else ():
        click.echo(f"cryptohome-sim: {path}: not a grant: {reason}", err=True)
    users = ", ".join(grants.users) if grants is not None and grants.users else "none"
    click.echo(f"cryptohome-sim: daemon users from {grants_dir or '(no directory)'}: {users}")
    sys.stdout.flush()
    return out


async def _serve(core: Cryptohome, address: str, kind: str, ids: CallerIds,
                 grants_dir: str | None = None) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    service: Service | None = None

    def reload() -> None:  # SIGHUP: the grant files again (module docstring)
        nonlocal ids
        ids = _granted(ids, grants_dir)
        if service is not None:
            service.set_caller_ids(ids)

    # before the first read: a SIGHUP from then on is never lost (nor, by default, fatal)
    loop.add_signal_handler(signal.SIGHUP, reload)
    ids = _granted(ids, grants_dir)
    try:
        service = await Service.start(core, address, ids)
    except ServiceError as exc:
        click.echo(f"cryptohome-sim: {exc}", err=True)
        return 1
    service.set_caller_ids(ids)  # a reload during the start
    click.echo(f"cryptohome-sim: serving org.chromium.UserDataAuth and "
               f"org.chromium.SessionManager on {address} ({kind} host)")
    sys.stdout.flush()  # the line tests and scripts wait for
    closed = asyncio.ensure_future(service.wait_closed())
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait([closed, stopped], return_when=asyncio.FIRST_COMPLETED)
    lost = closed.done()
    closed.cancel()
    stopped.cancel()
    await service.stop()
    if lost:
        click.echo("cryptohome-sim: the bus connection was lost", err=True)
        return 1
    return 0
