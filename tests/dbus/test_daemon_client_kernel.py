"""The Host-less client on the real kernel: a daemon process in its jailed namespace, with
plain paths, statx and /proc/self/mountinfo, served by cryptohome_sim (the same process, in its
own root namespace) over a private bus.

Everything runs in run_in_sandbox's forked child. The process enters the daemon's namespace
(``host.use_namespace``) as a jailed daemon lives in it; the service switches to the root
namespace for each call and back (cryptohome_sim's ``_rooted``). The sandbox's ``/run`` is
``<sandbox>/run``, so the client gets ``root=host.root`` (the tests-only prefix)."""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Any

import pytest

from cryptohome_sim.bus import PrivateBus
from cryptohome_sim.core import Cryptohome
from cryptohome_sim.service import Service
from daemonstore import paths
from daemonstore.daemon.client import DaemonStoreClient
from daemonstore.dbus.client import Client
from daemonstore.host import in_namespace
from daemonstore.world import World

pytestmark = [pytest.mark.kernel, pytest.mark.dbus]
GUARD = 10.0  # a guard against a hang, not a speed goal


def _daemon_without_host(host: Any, address: str) -> dict[str, Any]:
    world = World(host, random_bytes=random.Random(0).randbytes)
    world.install_daemon("foo", 20100, 20100, 0o700)
    view = world.daemon("foo")
    core = Cryptohome(host, random_bytes=random.Random(1).randbytes)

    async def go() -> dict[str, Any]:
        service = await Service.start(core, address)
        chrome = await Client.connect(address)
        host.use_namespace(view.namespace)  # from here on this process is the daemon
        client = DaemonStoreClient("foo", await Client.connect(address), root=host.root)
        out: dict[str, Any] = {}
        try:
            waiter = asyncio.create_task(client.wait_for_store())
            login = await chrome.login("alice@example.com")
            async with asyncio.timeout(GUARD):
                store = await waiter
            out["hash"], out["path"] = login.user_hash, store.path
            with open(store.path + "/state", "wb") as f:  # plain open(), as any daemon
                f.write(b"daemon data")
            with in_namespace(host, world.namespace):
                out["vault"] = host.read_file(f"{paths.vault(login.user_hash)}/root/foo/state")

            async with contextlib.aclosing(client.sessions()) as sessions:
                async with asyncio.timeout(GUARD):
                    session = await anext(sessions)
                # the daemon's copy of the bind goes (no signal): POLLPRI tells the client
                with in_namespace(host, view.namespace):
                    host.umount(paths.user_store("foo", login.user_hash))
                async with asyncio.timeout(GUARD):
                    out["ended"] = await session.ended()

            await chrome.logout()
            async with asyncio.timeout(GUARD):
                await client.wait_for_sign_out(login.user_hash)
            out["after"] = client.status(login.user_hash)
        finally:
            await client.close()
            await chrome.close()
            await service.stop()
            host.use_namespace(world.namespace)
        return out

    return asyncio.run(go())


def test_a_daemon_without_a_host_gets_its_store_at_a_plain_path(private_bus: PrivateBus) -> None:
    from daemonstore.kernel.sandbox import run_in_sandbox

    out = run_in_sandbox(_daemon_without_host, private_bus.address)
    assert out["path"].endswith(paths.user_store("foo", out["hash"]))
    assert out["path"] != paths.user_store("foo", out["hash"])  # below the sandbox root
    assert out["vault"] == b"daemon data"
    assert out["ended"].startswith("the store is no longer mounted here")
    assert not out["after"].mounted and out["after"].path == out["path"]
