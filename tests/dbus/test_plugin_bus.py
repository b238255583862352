"""The plugin registers the D-Bus fixtures: a daemon author's suite with no conftest (no import)
uses ``private_bus``, ``cryptohome_service``, ``cryptohome_client``, ``bus_world`` and
``cryptohome_thread`` (``pytester`` in a subprocess, through the installed entry point); and
``bus_world`` on the kernel runs the async test in the sandbox child with its own bus."""

from __future__ import annotations

import textwrap

import pytest

pytestmark = pytest.mark.dbus
pytest_plugins = ["pytester"]

INI = "[pytest]\nasyncio_default_fixture_loop_scope = function\n"

MODEL_SUITE = textwrap.dedent("""
    import os

    import pytest

    FOO = ("mydaemon", 20100, 20100, 0o700)

    def test_private_bus(private_bus):
        assert os.environ["DBUS_SYSTEM_BUS_ADDRESS"] == private_bus.address
        assert "DBUS_SESSION_BUS_ADDRESS" not in os.environ

    @pytest.mark.asyncio
    async def test_service_and_client(cryptohome_service, cryptohome_client):
        result = await cryptohome_service.login("alice@example.com")
        assert await cryptohome_client.sanitized_username("alice@example.com") == result.user_hash

    @pytest.mark.asyncio
    @pytest.mark.daemonstore(daemons=[FOO], seed=5)
    async def test_bus_world(bus_world):
        assert bus_world.kind == "model" and bus_world.cryptohome is not None
        view = bus_world.daemon("mydaemon")
        result = await bus_world.bus.login("alice@example.com")
        assert view.sees_store(result.user_hash)
        await bus_world.bus.logout()
        assert not view.sees_store(result.user_hash)

    def test_thread(cryptohome_thread):
        assert cryptohome_thread.call(lambda: cryptohome_thread.core.host.kind) == "model"
""")

KERNEL_SUITE = textwrap.dedent("""
    import logging
    import os

    import pytest

    FOO = ("mydaemon", 20100, 20100, 0o700)

    @pytest.fixture
    def parent_caplog(caplog):
        yield caplog
        assert [r.getMessage() for r in caplog.get_records("call")] == ["signed in over the bus"]

    @pytest.mark.daemonstore(backend="kernel", daemons=[FOO])
    async def test_kernel_bus_world(bus_world, parent_caplog):
        assert bus_world.kind == "kernel" and bus_world.cryptohome.host is bus_world.host
        assert os.environ["DBUS_SYSTEM_BUS_ADDRESS"] == bus_world.cryptohome.address
        view = bus_world.daemon("mydaemon")
        result = await bus_world.bus.login("alice@example.com")
        logging.getLogger("mydaemon").warning("signed in over the bus")
        assert view.sees_store(result.user_hash)
        view.write(result.user_hash, "state", b"kept")
        await bus_world.bus.logout()
        assert not view.sees_store(result.user_hash)
        assert bus_world.read_vault(result.user_hash, "mydaemon", "state") == b"kept"

    @pytest.mark.daemonstore(backend="kernel")
    async def test_kernel_bus_world_failing(bus_world):
        result = await bus_world.bus.login("bob@example.com")
        assert result.user_hash == "not bob's hash"
""")


def test_bus_fixtures_are_registered_by_the_plugin(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(test_author=MODEL_SUITE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA")
    assert result.parseoutcomes() == {"passed": 4}, result.stdout.str()
    result.stdout.no_fnmatch_line("*fixture * not found*")


@pytest.mark.kernel
def test_bus_world_on_the_kernel_runs_in_the_sandbox_child(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(test_author=KERNEL_SUITE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA")
    assert result.parseoutcomes() == {"passed": 1, "failed": 1}, result.stdout.str()
    result.stdout.fnmatch_lines(["PASSED test_author.py::test_kernel_bus_world",
                                 "FAILED test_author.py::test_kernel_bus_world_failing*"])
    failure = result.stdout.str().split(" test_kernel_bus_world_failing ", 1)[1]
    assert "== \"not bob's hash\"" in failure and "traceback in the sandbox child:" in failure
    assert 'assert result.user_hash == "not bob' in failure  # the failing line, from the child
