"""What a test asked of the plugin (testing layer): the ``daemonstore`` mark and the world
fixture's parameter read into one :class:`WorldSettings`, checked strictly.

Anything the plugin would otherwise ignore or guess is a :class:`PluginUsageError` naming the
test and what to change: an unknown backend or mark keyword, a mark on a test that uses no world
fixture, a parameter or a ``kernel`` mark that contradicts the mark, an ``async def`` test on the
synchronous ``daemonstore_world``, two worlds in one test. :func:`skip_or_fail` is the one rule
for a capability this machine lacks (skip with the reason; fail when ``CI`` is set).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from daemonstore.errors import DaemonStoreError

__all__ = ["ASYNC_WORLDS", "BACKENDS", "MARK_KWARGS", "SETTINGS", "SYNC_WORLDS",
           "PluginUsageError", "WorldSettings", "check_item", "skip_or_fail", "unwrap_test",
           "world_settings"]

BACKENDS = ("model", "kernel")
#: the keywords ``@pytest.mark.daemonstore(...)`` takes
MARK_KWARGS = ("backend", "daemons", "seed")
#: world fixtures a sync test uses / an ``async def`` test uses (a fixture module that adds a
#: world registers its name here, so the mark counts as used by it)
SYNC_WORLDS: set[str] = {"daemonstore_world", "daemonstore_system_world"}
#: worlds that are a real device in a container: the kernel always, never the model
SYSTEM_WORLDS = frozenset({"daemonstore_system_world"})
ASYNC_WORLDS: set[str] = {"bus_world"}
#: fixtures that would start a second, model-backed cryptohome beside a kernel bus_world
_MODEL_BUS_FIXTURES = ("private_bus", "cryptohome_service", "cryptohome_client",
                       "cryptohome_thread")


class PluginUsageError(DaemonStoreError, ValueError):
    """The test asked the plugin for something it cannot do, or would silently ignore."""


@dataclass(frozen=True)
class WorldSettings:
    """``backend`` ("model" or "kernel"), ``daemons`` (``install_daemon`` argument tuples) and
    ``seed`` (the salt's random bytes, hence the user hashes)."""

    backend: str = "model"
    daemons: tuple[tuple[Any, ...], ...] = ()
    seed: int = 0


#: where a world fixture leaves the settings it used, on the test item
SETTINGS = pytest.StashKey[WorldSettings]()


def skip_or_fail(what: str, reason: str) -> None:
    """Skip with ``reason``; under ``CI`` (which promises a machine that can) fail instead:
    a missing capability there is a failure, never a silent skip."""
    if "CI" in os.environ:
        pytest.fail(f"CI is set, so {what} tests must run, but they cannot: {reason}",
                    pytrace=False)
    pytest.skip(reason)


def require_kernel(what: str) -> None:
    """Skip (fail under ``CI``) when a kernel world cannot run here (not root, no mount
    namespaces): ``what`` names the world in the reason."""
    from daemonstore.kernel.sandbox import kernel_unavailable_reason

    reason = kernel_unavailable_reason()
    if reason is not None:
        skip_or_fail("kernel", f"{what}: {reason}")


def unwrap_test(obj: Callable[..., Any]) -> Callable[..., Any]:
    """The test function as written: pytest-asyncio hands a sync wrapper (``functools.wraps``,
    so ``__wrapped__``) to ``pytest_pyfunc_call``; unwrap to the coroutine function."""
    fn = obj
    while not inspect.iscoroutinefunction(fn) and hasattr(fn, "__wrapped__"):
        fn = fn.__wrapped__
    return fn if inspect.iscoroutinefunction(fn) else obj


def _worlds(item: pytest.Item) -> list[str]:
    names = getattr(item, "fixturenames", ())
    return [n for n in names if n in SYNC_WORLDS | ASYNC_WORLDS]


def _mark_kwargs(item: pytest.Item) -> dict[str, Any]:
    marks = list(item.iter_markers("daemonstore"))
    kwargs: dict[str, Any] = {}
    for mark in reversed(marks):  # the closest mark wins, keyword by keyword
        if mark.args:
            raise PluginUsageError(
                f"{item.nodeid}: @pytest.mark.daemonstore takes keywords only "
                f"({', '.join(MARK_KWARGS)}), not positional {mark.args!r}")
        unknown = sorted(set(mark.kwargs) - set(MARK_KWARGS))
        if unknown:
            raise PluginUsageError(
                f"{item.nodeid}: @pytest.mark.daemonstore has no keyword "
                f"{', '.join(map(repr, unknown))}; it takes {', '.join(MARK_KWARGS)}")
        kwargs.update(mark.kwargs)
    return kwargs


def _check_backend(item: pytest.Item, backend: object, where: str) -> str:
    if backend not in BACKENDS:
        raise PluginUsageError(f"{item.nodeid}: unknown daemonstore backend {backend!r} "
                               f"({where}); use one of {', '.join(map(repr, BACKENDS))}")
    return str(backend)


def world_settings(item: pytest.Item, param: object = None) -> WorldSettings:
    """The settings of ``item``'s world; ``param`` is the world fixture's ``request.param``
    (``indirect=True`` parametrization) if any. Raises :class:`PluginUsageError`."""
    kwargs = _mark_kwargs(item)
    chosen: dict[str, str] = {}
    if "backend" in kwargs:
        chosen["@pytest.mark.daemonstore(backend=...)"] = _check_backend(
            item, kwargs["backend"], "@pytest.mark.daemonstore(backend=...)")
    if param is not None:
        chosen["the fixture's parameter"] = _check_backend(item, param, "fixture parameter")
    if item.get_closest_marker("kernel") is not None:
        chosen["@pytest.mark.kernel"] = "kernel"
    if len(set(chosen.values())) > 1:
        said = "; ".join(f"{where} says {b!r}" for where, b in chosen.items())
        raise PluginUsageError(f"{item.nodeid}: contradictory daemonstore backends: {said}")
    backend = next(iter(chosen.values()), "model")
    daemons = kwargs.get("daemons", ())
    if isinstance(daemons, str | bytes) or not all(isinstance(d, tuple | list)
                                                   for d in daemons):
        raise PluginUsageError(f"{item.nodeid}: daemons= takes a list of (name, uid, gid, "
                               f"mode) tuples, not {daemons!r}")
    seed = kwargs.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise PluginUsageError(f"{item.nodeid}: seed= takes an int, not {seed!r}")
    return WorldSettings(backend, tuple(tuple(d) for d in daemons), seed)


def check_item(item: pytest.Item) -> None:
    """Refuse, before any fixture runs, what the plugin would otherwise ignore or get wrong."""
    worlds = _worlds(item)
    has_mark = item.get_closest_marker("daemonstore") is not None
    if has_mark:
        _mark_kwargs(item)
        if not worlds:
            raise PluginUsageError(
                f"{item.nodeid}: @pytest.mark.daemonstore is ignored: the test uses no world "
                f"fixture (one of {', '.join(sorted(SYNC_WORLDS | ASYNC_WORLDS))}); "
                "take one as an argument or remove the mark")
    if not worlds:
        return
    if len(worlds) > 1:
        raise PluginUsageError(f"{item.nodeid}: one world per test, not {', '.join(worlds)}")
    (world,) = worlds
    fn = unwrap_test(getattr(item, "obj", None) or (lambda: None))
    is_async = inspect.iscoroutinefunction(fn)
    if world in SYNC_WORLDS and is_async:
        raise PluginUsageError(
            f"{item.nodeid}: an async def test cannot use the synchronous {world}; use "
            f"bus_world (async, over D-Bus) or write the test as a plain def")
    callspec = getattr(item, "callspec", None)
    param = callspec.params.get(world) if callspec is not None else None
    settings = world_settings(item, param)
    if world in SYSTEM_WORLDS and settings.backend != "kernel" and (
            param is not None or "backend" in _mark_kwargs(item)):
        raise PluginUsageError(f"{item.nodeid}: {world} is a device in a container, always on "
                               f"the kernel: backend={settings.backend!r} contradicts it")
    if world in ASYNC_WORLDS and settings.backend == "kernel":
        if not is_async:
            raise PluginUsageError(f"{item.nodeid}: {world} on the kernel runs the test in the "
                                   "sandbox child's event loop: write it as async def")
        extra = [n for n in getattr(item, "fixturenames", ()) if n in _MODEL_BUS_FIXTURES]
        if extra:
            raise PluginUsageError(
                f"{item.nodeid}: {', '.join(extra)} would start a second, model-backed "
                f"cryptohome beside the kernel {world}; use {world}.bus and "
                f"{world}.cryptohome (the one in the sandbox child)")
