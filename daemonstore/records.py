"""Records, built fast (tier 0, pure: no I/O): :func:`fast_init` gives a frozen dataclass an
``__init__`` that fills the new instance's ``__dict__`` directly.

Records are frozen dataclasses (docs/architecture.md §3: plans are data). The ``__init__``
``@dataclass(frozen=True)`` generates must get past the class's own ``__setattr__`` (which raises
FrozenInstanceError), so it stores every field through ``object.__setattr__(self, name, value)``:
about 0.15 us a field on the machine the benchmarks run on, 0.7 us for a four-field op, as much as
a system call. Startup builds four ops, a Target and a TargetResult per store, and KernelHost a
Stat per lstat (issue 14 item 6: startup at most 1.3x its syscall floor; ``python -m bench.boot``),
so the records built per store or per call take this ``__init__``, which writes the same values
into the same ``__dict__`` in half the time. Everything else stays the dataclass's own: equality,
hash, repr, ``replace()``, and the frozen ``__setattr__``/``__delattr__``.

What the replacement supports is checked when it is made (TypeError otherwise): a frozen
dataclass without ``__slots__`` or InitVar fields; positional and keyword-only fields, defaults,
default factories, ``init=False`` fields and ``__post_init__`` behave as the generated
``__init__`` has them (tests/unit/test_records.py compares the two on every decorated class).
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

__all__ = ["dataclass_init", "fast_init"]

T = TypeVar("T")

#: the default of a parameter whose field has a default_factory (as the generated __init__)
_FACTORY = object()


def fast_init(cls: type[T]) -> type[T]:
    """Class decorator, written above ``@dataclass(frozen=True)``: replace the generated
    ``__init__`` (kept as :func:`dataclass_init`) with the direct one (module docstring)."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or not cls.__dictoffset__:
        raise TypeError(f"fast_init: {cls.__qualname__} is not a frozen dataclass with a __dict__")
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    if len(fields) != len(cls.__dataclass_fields__):  # type: ignore[attr-defined]
        raise TypeError(f"fast_init: {cls.__qualname__} has InitVar or ClassVar pseudo-fields")
    if any(f.name.startswith(("_fi_", "_d_", "_f_", "_FACTORY")) for f in fields):
        raise TypeError(f"fast_init: a field name of {cls.__qualname__} clashes with its names")
    namespace: dict[str, Any] = {"_FACTORY": _FACTORY}
    positional: list[str] = []
    keyword: list[str] = []
    body: list[str] = []
    for f in fields:
        if f.default is not dataclasses.MISSING:
            namespace[f"_d_{f.name}"] = f.default
            value = f"_d_{f.name}"
        elif f.default_factory is not dataclasses.MISSING:
            namespace[f"_f_{f.name}"] = f.default_factory
            value = f"_f_{f.name}()"
        else:
            value = ""
        if not f.init:
            # as the generated __init__: only a factory is called; a plain default stays the
            # class attribute dataclass leaves it as
            if f.default_factory is not dataclasses.MISSING:
                body.append(f"    _fi_dict[{f.name!r}] = {value}")
            continue
        if f.default_factory is not dataclasses.MISSING:
            param = f"{f.name}=_FACTORY"
            body.append(f"    _fi_dict[{f.name!r}] = "
                        f"{value} if {f.name} is _FACTORY else {f.name}")
        else:
            param = f"{f.name}={value}" if value else f.name
            body.append(f"    _fi_dict[{f.name!r}] = {f.name}")
        (keyword if f.kw_only else positional).append(param)
    signature = ", ".join(["_fi_self", *positional, *(["*", *keyword] if keyword else [])])
    if hasattr(cls, "__post_init__"):
        body.append("    _fi_self.__post_init__()")
    source = (f"def __init__({signature}):\n    _fi_dict = _fi_self.__dict__\n"
              + "\n".join(body) + "\n")
    exec(source, namespace)  # noqa: S102 -- the source is built above from field names only
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.dataclass_init = cls.__init__  # type: ignore[misc]
    cls.__init__ = init  # type: ignore[misc]
    return cls


def dataclass_init(cls: type) -> Any:
    """The ``__init__`` ``@dataclass`` generated for a :func:`fast_init` class (for tests)."""
    return cls.__init__.dataclass_init  # type: ignore[misc]
