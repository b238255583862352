"""How the demo signs users in and out (orchestration layer): :class:`InProcess` calls
``session`` and ``guest`` directly (through ``World``); ``demo_bus.OverBus`` goes through
cryptohome_sim on a private D-Bus bus. Both keep a line per call in ``notes`` for the narration.
A signer that cannot sign a guest in raises :class:`GuestUnavailable`, and the demo says so
instead of simulating one.
"""

from __future__ import annotations

from typing import Protocol

from daemonstore import paths
from daemonstore.errors import DaemonStoreError
from daemonstore.world import World

__all__ = ["GuestUnavailable", "InProcess", "Signer"]


class Signer(Protocol):
    """How sign-in and sign-out happen: in-process (``session``) or over D-Bus (demo_bus);
    ``login``/``logout`` return how many mounts they made or removed, and add a line to
    ``notes`` saying how it was done."""

    notes: list[str]

    def login(self, user: str) -> int: ...

    def logout(self, user: str) -> int: ...

    def login_guest(self, user_hash: str) -> int:
        """Sign the guest in; :class:`GuestUnavailable` if this build cannot."""
        ...

    def logout_guest(self, user_hash: str) -> int: ...


class GuestUnavailable(DaemonStoreError):
    """Guest sessions are not available this way; the message says why."""


class InProcess:
    """``World.login``/``logout`` (``session.sign_in``/``sign_out``) and ``World.login_guest``/
    ``logout_guest`` (``guest.sign_in_guest``/``sign_out_guest``), called directly."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.notes: list[str] = []

    def login(self, user: str) -> int:
        self.world.login(user)
        self.notes.append("in-process: session.sign_in (what PreparePersistentVault does)")
        return len(self.world.sessions[user].mounted)

    def logout(self, user: str) -> int:
        result = self.world.logout(user)
        self.notes.append("in-process: session.sign_out")
        return len(result.unmounted) + len(result.lazily_detached)

    def login_guest(self, user_hash: str) -> int:
        self.world.login_guest()
        self.notes.append("in-process: guest.sign_in_guest (cryptohome's ephemeral mount)")
        return len(self.world.sessions[paths.GUEST_USER].mounted)

    def logout_guest(self, user_hash: str) -> int:
        result = self.world.logout_guest()
        self.notes.append("in-process: guest.sign_out_guest")
        return len(result.unmounted) + len(result.lazily_detached)
