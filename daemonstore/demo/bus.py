"""``daemonstore demo --bus``: the demo's sign-ins and sign-outs over D-Bus (orchestration layer:
a private ``dbus-daemon``, cryptohome_sim serving the demo's Host on it, and the client that
``daemonstore login``/``logout`` use).

One thread, one asyncio loop (as the ``bus_world`` fixture of :mod:`daemonstore.testing.bus`):
the service is started on a private loop that only runs while a client call is awaited, so the
service and the story never touch the Host at the same time. The bus is private (a generated
configuration, a socket in a fresh temporary directory) and is stopped by the pid this module
started; the machine's own buses are never contacted (the address is passed explicitly,
``DBUS_SYSTEM_BUS_ADDRESS`` is not read).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from contextlib import contextmanager

from cryptohome_sim.bus import current_user, start_private_bus
from cryptohome_sim.core import Cryptohome
from cryptohome_sim.service import Service
from daemonstore import paths
from daemonstore.dbus.client import CallError, Client
from daemonstore.world import World

__all__ = ["OverBus", "over_bus", "private_bus"]


@contextmanager
def private_bus() -> Iterator[str]:
    """A private dbus-daemon for the demo; yields its address, stops exactly that pid."""
    privileged = "root" if os.geteuid() == 0 else current_user()
    with start_private_bus(privileged_user=privileged) as bus:
        yield bus.address


class OverBus:
    """Signer: ``MountEx`` + ``StartSession`` to sign in, ``StopSession`` + ``Unmount`` to sign
    out (chromeos-facts.md §4 order), each followed by what the session manager now reports."""

    def __init__(self, loop: asyncio.AbstractEventLoop, client: Client) -> None:
        self.loop = loop
        self.client = client
        #: one line per call, for the narration
        self.notes: list[str] = []

    def _state(self) -> str:
        state = self.loop.run_until_complete(self.client.session_state())
        primary, _hash = self.loop.run_until_complete(self.client.primary_session())
        return f"RetrieveSessionState={state!r}, RetrievePrimarySession={primary or '(none)'!r}"

    def login(self, user: str) -> int:
        result = self.loop.run_until_complete(self.client.login(user))
        self.notes.append(f"over D-Bus: MountEx({user!r}), StartSession -> {self._state()}")
        return len(result.mounted)

    def logout(self, user: str) -> int:
        result = self.loop.run_until_complete(self.client.logout(user))
        self.notes.append(f"over D-Bus: StopSession, Unmount({user!r}) -> {self._state()}")
        return len(result.unmounted)

    def login_guest(self, user_hash: str) -> int:
        """``MountEx("$guest", guest=true)``; a service without guest sessions says so."""
        from daemonstore.demo.signers import GuestUnavailable

        try:
            result = self.loop.run_until_complete(self.client.login(paths.GUEST_USER,
                                                                    guest=True))
        except CallError as exc:
            if exc.error_name.endswith(".NotSupported"):
                raise GuestUnavailable(f"cryptohome_sim refuses guests ({exc.text})") from None
            raise
        self.notes.append(f"over D-Bus: MountEx('$guest', guest=true), StartSession -> "
                          f"{self._state()}")
        return len(result.mounted)

    def logout_guest(self, user_hash: str) -> int:
        return self.logout(paths.GUEST_USER)


@contextmanager
def over_bus(world: World, address: str) -> Iterator[OverBus]:
    """cryptohome_sim serving ``world.host`` on ``address``, and a connected signer. The salt is
    the world's (read from /home/.shadow/salt by both), so hashes agree."""
    _ = world.salt  # create it first: the service then reads the same file
    loop = asyncio.new_event_loop()
    with world.in_namespace(world.namespace):  # the core keeps the namespace it is made in
        core = Cryptohome(world.host)
    service = loop.run_until_complete(Service.start(core, address))
    try:
        client = loop.run_until_complete(Client.connect(address))
        try:
            yield OverBus(loop, client)
        finally:
            loop.run_until_complete(client.close())
    finally:
        loop.run_until_complete(service.stop())
        loop.close()
