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
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from cryptohome_sim.bus import current_user, start_private_bus
from cryptohome_sim.core import Cryptohome
from cryptohome_sim.service import Service
from daemonstore import paths
from daemonstore.dbus.client import Client, CryptohomeRefused
from daemonstore.world import World

__all__ = ["OverBus", "over_bus", "private_bus"]
T = TypeVar("T")


@contextmanager
def private_bus() -> Iterator[str]:
    """A private dbus-daemon for the demo; yields its address, stops exactly that pid."""
    privileged = "root" if os.geteuid() == 0 else current_user()
    with start_private_bus(privileged_user=privileged) as bus:
        yield bus.address


class OverBus:
    """Signer over ChromeOS's calls: ``StartAuthSession`` ... ``PreparePersistentVault`` then
    ``StartSession`` to sign in; ``StopSession`` then ``Unmount{}`` to sign out (everyone, as
    ChromeOS: the story has one user signed in at a time), each followed by what the session
    manager now reports. Mounts are counted from cryptohome-sim's mountinfo (control
    interface) before and after, since ChromeOS's replies do not list them."""

    def __init__(self, loop: asyncio.AbstractEventLoop, client: Client) -> None:
        self.loop = loop
        self.client = client
        #: one line per call, for the narration
        self.notes: list[str] = []

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def _mounts(self) -> set[str]:
        """Mount ids of the root namespace."""
        text = self._run(self.client.mountinfo())
        return {line.split()[0] for line in text.splitlines() if line.strip()}  # mount ids

    def _state(self) -> str:
        state = self._run(self.client.session_state())
        primary, _hash = self._run(self.client.primary_session())
        return f"RetrieveSessionState={state!r}, RetrievePrimarySession={primary or '(none)'!r}"

    def login(self, user: str) -> int:
        before = self._mounts()
        result = self._run(self.client.login(user))
        how = "CreatePersistentUser" if result.created else "AuthenticateAuthFactor"
        self.notes.append(f"over D-Bus: StartAuthSession({user!r}), {how}, "
                          f"PreparePersistentVault, StartSession -> {self._state()}")
        return len(self._mounts() - before)

    def logout(self, user: str) -> int:
        before = self._mounts()
        self._run(self.client.logout())
        self.notes.append(f"over D-Bus: StopSession, Unmount{{}} (everyone) -> {self._state()}")
        return len(before - self._mounts())

    def login_guest(self, user_hash: str) -> int:
        """``PrepareGuestVault`` + ``StartSession("$guest")``; a refusal says why."""
        from daemonstore.demo.signers import GuestUnavailable

        before = self._mounts()
        try:
            self._run(self.client.login(paths.GUEST_USER, guest=True))
        except CryptohomeRefused as exc:
            raise GuestUnavailable(f"cryptohome refused the guest ({exc.code_name})") from None
        self.notes.append(f"over D-Bus: PrepareGuestVault, StartSession('$guest') -> "
                          f"{self._state()}, IsGuestSessionActive="
                          f"{self._run(self.client.is_guest_session_active())}")
        return len(self._mounts() - before)

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
