"""records.fast_init: the direct ``__init__`` builds exactly what ``@dataclass``'s generated one
builds (same fields, same values, same errors), on every class that uses it and on the forms it
supports; the records stay frozen; what it cannot support is refused when it is made."""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import FrozenInstanceError, InitVar, dataclass, field
from typing import Any

import pytest

from daemonstore.boot.apply import TargetResult
from daemonstore.boot.plan import Target
from daemonstore.host import Propagation, Stat
from daemonstore.ops import Chown, MakeDir, SafeBind, SafeMake
from daemonstore.records import dataclass_init, fast_init


def _built_by(init: Any, cls: type, *args: Any, **kwargs: Any) -> Any:
    """An instance of ``cls`` built by ``init`` (either __init__), or the error it raised."""
    obj = object.__new__(cls)
    try:
        init(obj, *args, **kwargs)
    except Exception as exc:  # noqa: BLE001 -- the error itself is compared
        return (type(exc), str(exc).replace("dataclass_init", "__init__"))
    return (vars(obj), obj)


def _same(cls: type, *args: Any, **kwargs: Any) -> Any:
    fast = _built_by(cls.__init__, cls, *args, **kwargs)
    slow = _built_by(dataclass_init(cls), cls, *args, **kwargs)
    assert fast[0] == slow[0]
    return fast[1]


TARGET = Target("/run/daemon-store/d", "d", "missing", (), None, "/run/daemon-store")
CASES = [
    (Stat, (0o40755, 0, 0, 40, 7, 23), {}),
    (Stat, (0o40755, 0, 0, 40, 7, 23, 2, 99), {}),
    (Stat, (), {"mode": 1, "uid": 2, "gid": 3, "size": 4, "ino": 5, "dev": 6, "mnt_id": 8}),
    (MakeDir, ("/run/x",), {}),
    (MakeDir, ("/run/x", 0o700), {"safe": False, "line": 3}),
    (Chown, ("/run/x", 0, -1), {}),
    (SafeBind, ("/a", "/b"), {"recursive": True, "safe": False}),
    (SafeMake, ("/a", "shared"), {}),  # __post_init__ turns the word into the member
    (SafeMake, ("/a", Propagation.SLAVE, True), {"line": 2}),
    (Target, ("/p", None, "ready"), {}),
    (TargetResult, (TARGET, "ready", (MakeDir("/p"),)), {"reason": "r"}),
]


@pytest.mark.parametrize(("cls", "args", "kwargs"), CASES,
                         ids=[f"{c.__name__}-{i}" for i, (c, _, _) in enumerate(CASES)])
def test_fast_init_builds_what_the_dataclass_init_builds(cls: type, args: tuple[Any, ...],
                                                         kwargs: dict[str, Any]) -> None:
    obj = _same(cls, *args, **kwargs)
    assert obj == cls(*args, **kwargs) and hash(obj) == hash(cls(*args, **kwargs))
    assert dataclasses.replace(obj) == obj
    with pytest.raises(FrozenInstanceError):
        obj.line = 1


@pytest.mark.parametrize(("cls", "args", "kwargs"), [
    (Stat, (1, 2, 3), {}),                      # missing positional fields
    (MakeDir, ("/x", 0o755, True), {}),         # safe is keyword-only
    (Chown, ("/x", 0, 0), {"owner": 1}),        # no such field
    (SafeMake, ("/a", "sideways"), {}),         # __post_init__ refuses it
    (Target, (), {"path": "/p", "daemon": None, "state": "x", "path2": 1}),
])
def test_fast_init_refuses_what_the_dataclass_init_refuses(cls: type, args: tuple[Any, ...],
                                                          kwargs: dict[str, Any]) -> None:
    fast = _built_by(cls.__init__, cls, *args, **kwargs)
    slow = _built_by(dataclass_init(cls), cls, *args, **kwargs)
    assert fast[0] is slow[0] and issubclass(fast[0], Exception)
    if fast[0] is not TypeError:  # TypeError texts name the function differently
        assert fast == slow


def test_signatures_match() -> None:
    for cls in {c for c, _, _ in CASES}:
        fast = inspect.signature(cls.__init__)
        slow = inspect.signature(dataclass_init(cls))
        assert [(p.name, p.kind) for p in fast.parameters.values()][1:] == \
            [(p.name, p.kind) for p in slow.parameters.values()][1:]


def test_defaults_factories_and_fields_outside_init() -> None:
    @fast_init
    @dataclass(frozen=True)
    class Record:
        name: str
        tags: list[str] = field(default_factory=list)
        count: int = field(default=5, init=False)
        made: dict[str, int] = field(default_factory=dict, init=False, compare=False)
        flag: bool = field(default=False, kw_only=True)

    a, b = _same(Record, "a"), _same(Record, "b", ["x"], flag=True)
    assert (a.tags, a.count, a.made, a.flag) == ([], 5, {}, False)
    assert (b.tags, b.flag) == (["x"], True)
    assert Record("c").tags is not Record("c").tags  # a fresh list each time, as the factory


def test_what_it_cannot_do_is_refused_when_made() -> None:
    @dataclass
    class Mutable:
        x: int

    @dataclass(frozen=True, slots=True)
    class Slotted:
        x: int

    @dataclass(frozen=True)
    class WithInitVar:
        x: int
        y: InitVar[int] = 0

    @dataclass(frozen=True)
    class Clash:
        _fi_dict: int

    for cls in (Mutable, Slotted, WithInitVar, Clash, int):
        with pytest.raises(TypeError, match="fast_init"):
            fast_init(cls)
