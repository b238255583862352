"""A whole test function run in ``run_in_sandbox``'s child (testing layer): what the plugin does
for a test whose world is on the kernel, so the body reads exactly like a model test.

The child is a fork of the pytest process inside a fresh private mount namespace on a tmpfs
sandbox (:func:`daemonstore.kernel.sandbox.run_in_sandbox`); there a real kernel
:class:`~daemonstore.world.World` is built (``world_main``: the daemons of the mark installed, the
set-up calls a fixture made on the parent's :class:`~daemonstore.world.KernelWorld` replayed) and
the test function is called with it in place of the parent's handle. What comes back:

* the outcome: nothing, or the test's exception -- the same type when it pickles (an
  ``AssertionError`` keeps pytest's rewritten message), the child's traceback added as a note so
  the report shows the failing line; ``pytest.skip``/``fail``/``xfail`` are re-raised as such;
* the log records the child emitted (every record that reached the root logger), re-emitted in
  the parent through their logger, so ``caplog`` and the report's "Captured log" see them.
"""

from __future__ import annotations

import logging
import pickle
import random
import traceback
from collections.abc import Callable
from typing import Any

import pytest

from daemonstore.host import Host
from daemonstore.testing.settings import WorldSettings
from daemonstore.world import KernelWorld, World

__all__ = ["KernelBusWorld", "build_world", "run_test_in_sandbox"]

#: pytest's outcome exceptions, re-raised in the parent by kind (they do not pickle)
_OUTCOMES: dict[str, type[BaseException]] = {
    "skip": pytest.skip.Exception,
    "xfail": pytest.xfail.Exception,
    "fail": pytest.fail.Exception,
}


class KernelBusWorld(KernelWorld):
    """The parent's handle on a kernel ``bus_world``: set-up calls are recorded like
    :class:`KernelWorld`'s; the plugin runs the ``async def`` test in the sandbox child, where
    the world is a real kernel World with ``world.bus`` and ``world.cryptohome``."""

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(
            f"the kernel bus_world has no {name!r} in the pytest process: the plugin runs the "
            "async test in the sandbox child; use the world there, as the test's argument")


def build_world(host: Host, settings: WorldSettings, handle: KernelWorld) -> World:
    """The child's World: seeded as the model's (same hashes on both backends), the mark's
    daemons installed, then whatever fixtures recorded on ``handle``."""
    return handle.replay(World(host, random_bytes=random.Random(settings.seed).randbytes))


# ---- the child ---------------------------------------------------------------------------------


class _Collector(logging.Handler):
    """Every record that reaches the root logger in the child, made picklable."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.records: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        fields = dict(record.__dict__)
        fields["msg"], fields["args"] = record.getMessage(), None
        if record.exc_info and not record.exc_text:
            fields["exc_text"] = logging.Formatter().formatException(record.exc_info)
        fields["exc_info"] = None
        for key, value in list(fields.items()):
            try:
                pickle.dumps(value)
            except Exception:  # an ``extra=`` object that cannot travel: keep its repr
                fields[key] = repr(value)
        self.records.append(fields)


def _picklable(exc: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(exc))  # exceptions whose __init__ differs from .args fail here
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}")


def _outcome(exc: BaseException) -> tuple[Any, ...]:
    for kind, cls in _OUTCOMES.items():
        if isinstance(exc, cls):
            return (kind, str(getattr(exc, "msg", exc)), getattr(exc, "pytrace", True))
    return ("raise", _picklable(exc), traceback.format_exc())


def _child(host: Host, main: Callable[[Host], None]) -> tuple[list[dict[str, Any]], tuple]:
    collector = _Collector()
    root = logging.getLogger()
    root.addHandler(collector)
    try:
        main(host)
        outcome: tuple[Any, ...] = ("ok",)
    except BaseException as exc:  # noqa: BLE001 - every outcome goes back to the parent
        outcome = _outcome(exc)
    finally:
        root.removeHandler(collector)
    return collector.records, outcome


# ---- the parent --------------------------------------------------------------------------------


def run_test_in_sandbox(main: Callable[[Host], None]) -> None:
    """Run ``main(host)`` in the sandbox child; re-emit its log records here, then return or
    raise what it raised (module docstring)."""
    __tracebackhide__ = True  # the report shows the child's traceback, not this frame
    from daemonstore.kernel.sandbox import run_in_sandbox

    records, outcome = run_in_sandbox(_child, main)
    for fields in records:
        record = logging.makeLogRecord(fields)
        logging.getLogger(record.name).handle(record)
    kind, *rest = outcome
    if kind == "ok":
        return
    if kind == "raise":
        exc, child_tb = rest
        exc.add_note("traceback in the sandbox child:\n" + child_tb.rstrip())
        raise exc
    message, pytrace = rest
    if kind == "skip":  # reported at the test, as a skip in its body is
        raise pytest.skip.Exception(message, _use_item_location=True)
    if kind == "xfail":
        pytest.xfail(message)
    pytest.fail(message, pytrace=pytrace)
