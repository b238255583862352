"""``LowDiskSpace`` from ``daemonstore cleanup --watch`` (docs/chromeos.md §6: cryptohome's
``LowDiskSpaceCheck`` emits ``LowDiskSpace{disk_free_bytes}`` on ``UserDataAuthInterface`` when
the state is normal, aggressive or critical).

A signal is only believed from the owner of ``org.chromium.UserDataAuth`` (clients match on the
sender), so the watcher does not send it from its own connection: it asks cryptohome-sim, which
owns the name, to emit it (the control interface's ``EmitLowDiskSpace``, root only). On ChromeOS
cryptohomed runs this check itself; there the request finds no control interface and the
watcher says so once.
"""

from __future__ import annotations

import asyncio

from daemonstore.dbus.client import Client, ClientError


class LowDiskNotifier:
    """Asks cryptohome on ``address`` to emit ``LowDiskSpace``; remembers the first failure so
    a watch loop reports it once, not every pass."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.emitted = 0
        self.failed: str | None = None

    def __call__(self, free_bytes: int) -> str | None:
        """Emit; None when done, else a one-line reason (only the first time it fails)."""
        try:
            asyncio.run(self._emit(free_bytes))
        except ClientError as exc:
            first = self.failed is None
            self.failed = str(exc)
            return f"LowDiskSpace not emitted: {exc}" if first else None
        self.emitted += 1
        return None

    async def _emit(self, free_bytes: int) -> None:
        client = await Client.connect(self.address)
        async with client:
            await client.emit_low_disk_space(free_bytes)
