"""The pytest plugin for daemon authors' tests (front end). Installing the package registers it
as the ``pytest11`` entry point ``daemonstore``: no conftest line, no import.

What it registers
-----------------
* the mark ``@pytest.mark.daemonstore(backend="model"|"kernel", daemons=[(name, uid, gid,
  mode), ...], seed=0)``;
* ``daemonstore_world``: a :class:`~daemonstore.world.World` on the pure model (about a
  millisecond a sign-in), or on the real kernel when asked (below);
* the D-Bus fixtures of :mod:`daemonstore.testing.bus`: ``private_bus``, ``cryptohome_service``,
  ``cryptohome_client``, ``bus_world`` (model or kernel) and ``cryptohome_thread``; they start a
  private ``dbus-daemon`` only when used, and skip with the reason when it is not installed;
* two hooks: ``pytest_runtest_setup`` refuses what would be ignored or contradictory
  (:mod:`daemonstore.testing.settings`) and ``pytest_pyfunc_call`` runs a kernel world's test in
  the sandbox (:mod:`daemonstore.testing.sandboxed`).

A model test::

    @pytest.mark.daemonstore(daemons=[("mydaemon", 20100, 20100, 0o700)])
    def test_my_daemon_keeps_state_per_user(daemonstore_world):
        world = daemonstore_world
        view = world.daemon("mydaemon")          # started at boot, before anyone signs in
        world.login("alice@example.com")
        assert view.sees_store("alice@example.com")
        view.write("alice@example.com", "state.json", b"{}")
        world.logout("alice@example.com")
        assert not view.sees_store("alice@example.com")

The same test on the kernel: add ``backend="kernel"`` to the mark, or run it on both with
``@pytest.mark.parametrize("daemonstore_world", ["model", "kernel"], indirect=True)``. The body
does not change: the plugin runs the whole test function in ``run_in_sandbox``'s forked child (a
fresh private mount namespace on a tmpfs sandbox) with a real kernel World built there, and
brings back its outcome (a failing assertion's message and the child's traceback), and its log
records, re-emitted here so ``caplog`` and the report see them. Arguments reach the child as
copies (a fork): what the body changes in them stays there. Needs root; without it the test is
skipped with the reason (a failure when ``CI`` is set). ``world.run(body)`` still works on both.

A bus test (``@pytest.mark.asyncio``; the sign-in goes over D-Bus, ``started`` is emitted)::

    @pytest.mark.asyncio
    @pytest.mark.daemonstore(daemons=[("mydaemon", 20100, 20100, 0o700)])
    async def test_my_daemon_over_the_bus(bus_world):
        view = bus_world.daemon("mydaemon")
        await bus_world.bus.login("alice@example.com")
        assert view.sees_store("alice@example.com")

With ``backend="kernel"`` the ``async def`` test runs in the sandbox child's own event loop, with
a private ``dbus-daemon`` and cryptohome-sim serving the sandbox's kernel started there.

Refused with a clear error: an unknown backend or mark keyword, a ``daemonstore`` mark on a test
that uses no world, a fixture parameter or ``@pytest.mark.kernel`` that contradicts the mark, an
``async def`` test on ``daemonstore_world``, a sync test on the kernel ``bus_world``, and
``world.daemon(name)`` for a daemon with no store (``missing_ok=True`` to mean it).
"""

from __future__ import annotations

from typing import Any

import pytest

from daemonstore.testing.bus import (  # noqa: F401 - fixtures, registered by the import
    bus_world,
    cryptohome_client,
    cryptohome_service,
    cryptohome_thread,
    daemonstore_model_bus_world,
    private_bus,
)
from daemonstore.testing.settings import (
    ASYNC_WORLDS,
    SETTINGS,
    SYNC_WORLDS,
    PluginUsageError,
    check_item,
    require_kernel,
    unwrap_test,
    world_settings,
)
from daemonstore.testing.system import daemonstore_system_world  # noqa: F401 (issue 16)
from daemonstore.world import KernelWorld, World


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "daemonstore(backend='model'|'kernel', daemons=[(name, uid, gid, mode), ...], "
        "seed=0): configure the daemonstore_world and bus_world fixtures")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before any fixture: a mark or combination the plugin would ignore or get wrong fails
    the test with the reason (never a silent pass)."""
    try:
        check_item(item)
        return
    except PluginUsageError as exc:
        message = str(exc)
    pytest.fail(message, pytrace=False)  # outside the except: no "during handling" chain


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """A test whose world is on the kernel runs, whole, in the sandbox child."""
    __tracebackhide__ = True  # the report shows the child's traceback, not this frame
    names = [n for n in pyfuncitem.funcargs if n in SYNC_WORLDS | ASYNC_WORLDS
             and isinstance(pyfuncitem.funcargs[n], KernelWorld)]
    if not names:
        return None
    (name,) = names
    handle = pyfuncitem.funcargs[name]
    settings = pyfuncitem.stash[SETTINGS]
    fn = unwrap_test(pyfuncitem.obj)
    kwargs = {arg: pyfuncitem.funcargs[arg] for arg in pyfuncitem._fixtureinfo.argnames}
    from daemonstore.testing.sandboxed import build_world, run_test_in_sandbox

    if name in ASYNC_WORLDS:
        from daemonstore.testing.bus import kernel_bus_main

        run_test_in_sandbox(kernel_bus_main(settings, handle, fn, kwargs, name))
    else:
        def main(host: Any) -> None:
            fn(**{**kwargs, name: build_world(host, settings, handle)})

        run_test_in_sandbox(main)
    return True


@pytest.fixture
def daemonstore_world(request: pytest.FixtureRequest) -> World | KernelWorld:
    """A :class:`World` on the model, or on the kernel when asked (module docstring); the
    mark's daemons installed and its seed used for the salt."""
    settings = world_settings(request.node, getattr(request, "param", None))
    request.node.stash[SETTINGS] = settings
    if settings.backend == "kernel":
        require_kernel("kernel world")
        return KernelWorld(settings.daemons)
    world = World.model(seed=settings.seed)
    for spec in settings.daemons:
        world.install_daemon(*spec)
    return world
