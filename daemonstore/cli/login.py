"""``daemonstore login USER [--guest]`` / ``daemonstore logout USER``: sign in and out through the
cryptohome and session manager services on a bus (thin click commands over
:class:`daemonstore.dbus.client.Client`; registered in ``cli/__init__.py``).

login  = cryptohome ``MountEx``, then ``StartSession`` (emits ``started``);
logout = ``StopSession`` (emits ``stopping``, ``stopped``), then cryptohome ``Unmount``
(the order of chromeos-facts.md §4).

The bus is ``--address`` or ``$DBUS_SYSTEM_BUS_ADDRESS``; with neither the command refuses
rather than fall back to the machine's own system bus. Exit codes: 0 done, 1 the bus or the
service said no (unreachable, AccessDenied, sign-in failed: the service's reason is printed),
2 bad input (no address, malformed user name).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click

from daemonstore import paths
from daemonstore.command import CannotRun
from daemonstore.dbus.client import Client, ClientError

ENV_ADDRESS = "DBUS_SYSTEM_BUS_ADDRESS"
T = TypeVar("T")


def _address(address: str | None) -> str:
    found = address or os.environ.get(ENV_ADDRESS)
    if not found:
        raise CannotRun(f"no bus: pass --address or set {ENV_ADDRESS}")
    return found


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
    "--address", default=None, help=f"Bus address (default ${ENV_ADDRESS}).")


@click.command("login")
@click.argument("user")
@click.option("--guest", is_flag=True,
              help="A guest (ephemeral) session, in mnt_chrome; USER must be $guest.")
@_address_option
def login(user: str, guest: bool, address: str | None) -> None:
    """Sign USER in: mount the cryptohome and daemon stores, then start the session."""
    user = _user(user)
    result = _run(_address(address), f"login {user}",
                  lambda client: client.login(user, guest=guest))
    click.echo(f"{user} signed in: hash {result.user_hash}, {len(result.mounted)} mounts; "
               "session started")


@click.command("logout")
@click.argument("user")
@_address_option
def logout(user: str, address: str | None) -> None:
    """Sign USER out: stop the session (stopping, stopped), then unmount."""
    user = _user(user)
    result = _run(_address(address), f"logout {user}", lambda client: client.logout(user))
    stopped = "session stopped" if result.had_session else "no session was started"
    click.echo(f"{user} signed out: {stopped}, {len(result.unmounted)} mounts removed")
