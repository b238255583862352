"""``daemonstore login USER [--guest | --ephemeral]`` / ``daemonstore logout``: sign in and end
the session through cryptohome and the session manager on the system bus (thin click commands
over :class:`daemonstore.dbus.client.Client`; registered in ``cli/__init__.py``).

login  = ``StartAuthSession``, ``CreatePersistentUser`` (first time) or
         ``AuthenticateAuthFactor``, ``PreparePersistentVault``, then ``StartSession``
         (``started``); ``--guest``: ``PrepareGuestVault``; ``--ephemeral``:
         ``PrepareEphemeralVault``;
logout = ``StopSession`` (ends every session: ``stopping``, ``stopped``), then cryptohome's
         ``Unmount{}`` (every user), the order of docs/chromeos.md §4. ChromeOS has no
         per-user sign-out, so neither has this command.

The bus is ``--address``, else ``$DBUS_SYSTEM_BUS_ADDRESS``, else the system bus socket
``/run/dbus/system_bus_socket`` under ``--root`` (docs/architecture.md §7). Exit codes: 0 done,
1 the bus or the service said no (unreachable, AccessDenied, a CryptohomeErrorCode: the reason is
printed), 2 bad input (malformed user name, conflicting options).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click

from daemonstore import paths
from daemonstore.command import ENV_BUS_ADDRESS, CannotRun, bus_address
from daemonstore.dbus.client import Client, ClientError

T = TypeVar("T")



def _user(username: str) -> str:
    try:
        return paths.check_username(username)
    except paths.BadName as exc:
        raise CannotRun(str(exc)) from None


def _run(address: str, what: str, call: Callable[[Client], Awaitable[T]]) -> T:
    """Connect, run one flow, disconnect; a client error becomes exit 1 with one line."""

    async def go() -> T:
        client = await Client.connect(address)
        async with client:
            return await call(client)

    try:
        return asyncio.run(go())
    except ClientError as exc:
        raise click.ClickException(f"{what} failed: {exc}") from None


_address_option = click.option(
    "--address", default=None,
    help=f"Bus address (default ${ENV_BUS_ADDRESS}, else the system bus socket under --root).")
_root_option = click.option(
    "--root", type=click.Path(file_okay=False), default="/", show_default=True,
    help="Root whose /run/dbus/system_bus_socket is used when no address is given.")


@click.command("login")
@click.argument("user", required=False)
@click.option("--guest", is_flag=True,
              help="A guest session (PrepareGuestVault; USER is $guest, may be left out).")
@click.option("--ephemeral", is_flag=True,
              help="An ephemeral user (PrepareEphemeralVault): nothing kept after sign-out.")
@_address_option
@_root_option
def login(user: str | None, guest: bool, ephemeral: bool, address: str | None,
          root: str) -> None:
    """Sign USER in: mount the cryptohome and daemon stores, then start the session."""
    if guest and ephemeral:
        raise CannotRun("--guest and --ephemeral exclude each other")
    if guest:
        user = user or paths.GUEST_USER
        if user != paths.GUEST_USER:
            raise CannotRun(f"a guest signs in as {paths.GUEST_USER}, not {user!r}")
    elif user is None:
        raise CannotRun("give USER (or --guest)")
    user = _user(user)
    result = _run(bus_address(address, root), f"login {user}",
                  lambda client: client.login(user, guest=guest, ephemeral=ephemeral))
    created = ", account created" if result.created else ""
    click.echo(f"{user} signed in: hash {result.user_hash}{created}; session started")


@click.command("logout")
@_address_option
@_root_option
def logout(address: str | None, root: str) -> None:
    """End the session (everyone: stopping, stopped), then unmount every user."""
    result = _run(bus_address(address, root), "logout", lambda client: client.logout())
    stopped = "session stopped" if result.had_session else "no session was started"
    click.echo(f"signed out: {stopped}, every cryptohome unmounted")
