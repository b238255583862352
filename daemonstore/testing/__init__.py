"""The pytest plugin for daemon authors' tests (front end: registered as the ``pytest11`` entry
point ``daemonstore``, so installing the package makes the fixture available). The worlds it
hands out are :mod:`daemonstore.world`; the D-Bus fixtures are :mod:`daemonstore.testing.bus`.

So a daemon author's test reads::

    def test_my_daemon_keeps_state_per_user(daemonstore_world):
        world = daemonstore_world
        world.install_daemon("mydaemon", 20100, 20100, 0o700)
        view = world.daemon("mydaemon")          # started at boot, before anyone signs in
        world.login("alice@example.com")
        assert view.sees_store("alice@example.com")
        view.write("alice@example.com", "state.json", b"{}")
        world.logout("alice@example.com")
        assert not view.sees_store("alice@example.com")

The kernel: ask for a kernel world with
``@pytest.mark.parametrize("daemonstore_world", ["model", "kernel"], indirect=True)``, with
``@pytest.mark.daemonstore(backend="kernel")`` or (in this project) ``@pytest.mark.kernel``; the
fixture then gives a :class:`~daemonstore.world.KernelWorld`, and the body is written as a
function passed to ``world.run(body)`` -- which a model World also has, so one body serves both.
Without root a kernel world is skipped with the reason.
"""

from __future__ import annotations

import pytest

from daemonstore.testing.system import daemonstore_system_world  # noqa: F401 (issue 16)
from daemonstore.world import KernelWorld, World


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "daemonstore(backend='model'|'kernel', daemons=[(name, uid, gid, mode), ...], "
        "seed=0): configure the daemonstore_world fixture")


def _backend(request: pytest.FixtureRequest, marker: pytest.Mark | None) -> str:
    param = getattr(request, "param", None)
    if param is not None:
        backend = str(param)
    elif marker is not None and "backend" in marker.kwargs:
        backend = str(marker.kwargs["backend"])
    elif request.node.get_closest_marker("kernel") is not None:
        backend = "kernel"
    else:
        backend = "model"
    if backend not in ("model", "kernel"):
        raise ValueError(f"daemonstore_world backend must be 'model' or 'kernel', "
                         f"not {backend!r}")
    return backend


@pytest.fixture
def daemonstore_world(request: pytest.FixtureRequest) -> World | KernelWorld:
    """A :class:`World` on the model, or a :class:`KernelWorld` when asked (module docstring);
    daemons from ``@pytest.mark.daemonstore(daemons=[...])`` are installed."""
    marker = request.node.get_closest_marker("daemonstore")
    kwargs = marker.kwargs if marker is not None else {}
    daemons = list(kwargs.get("daemons", ()))
    if _backend(request, marker) == "kernel":
        from daemonstore.kernel.sandbox import kernel_unavailable_reason

        reason = kernel_unavailable_reason()
        if reason is not None:
            pytest.skip(f"kernel world: {reason}")
        return KernelWorld(daemons)
    world = World.model(seed=int(kwargs.get("seed", 0)))
    for spec in daemons:
        world.install_daemon(*spec)
    return world
