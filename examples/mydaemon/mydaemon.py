"""mydaemon: a minimal daemon with a per-user store. In each user's store it counts how often it
has seen that user (a sign-in, or the daemon starting while they are signed in), and it writes
only while the client says the user's vault is really mounted there."""

import asyncio
import logging
import os

from daemonstore import DaemonStoreClient

log = logging.getLogger("mydaemon")


def load(client: DaemonStoreClient, path: str) -> bytes:
    """The file's bytes (b"" if there is none): through a test world's Host, else open()."""
    try:
        if client.host is not None:
            return client.host.read_file(path, safe=True)
        with open(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb") as f:
            return f.read()
    except FileNotFoundError:
        return b""


def save(client: DaemonStoreClient, path: str, data: bytes) -> None:
    if client.host is not None:
        return client.host.write_file(path, data, mode=0o600, safe=True)
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600),
              "wb") as f:
        f.write(data)


async def serve(client: DaemonStoreClient) -> None:
    """One session at a time: count the user, then wait for the session's end (sign-out, or
    the store gone from this daemon's view) before touching any store again."""
    log.info("waiting for sign-ins")
    async for session in client.sessions():
        count = int(load(client, f"{session.path}/count") or b"0") + 1
        save(client, f"{session.path}/count", b"%d\n" % count)
        log.info("%s seen %d time(s)", session.username, count)
        log.info("%s: session over: %s", session.username, await session.ended())


async def main() -> None:
    async with await DaemonStoreClient.connect("mydaemon") as client:  # the system bus
        await serve(client)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    asyncio.run(main())
