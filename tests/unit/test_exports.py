"""The public API: ``daemonstore.__all__`` is what the package's docstring lists, every name
resolves to the object its home module defines, and the facade loads nothing until asked."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys

import pytest

import daemonstore


def _documented() -> list[str]:
    """Names in the right-hand column of the docstring's table (the body between its rules)."""
    doc = daemonstore.__doc__ or ""
    body = re.compile(r"^=+  =+$", re.M).split(doc)[2]  # before, the header row, the body
    return [name.strip() for line in body.strip().splitlines()
            for name in line[12:].split(",") if name.strip()]


def test_all_is_sorted_unique_and_public() -> None:
    assert daemonstore.__all__ == sorted(set(daemonstore.__all__))
    assert not [n for n in daemonstore.__all__ if n.startswith("_")]


def test_docstring_lists_exactly_the_exports() -> None:
    assert sorted(_documented()) == daemonstore.__all__


@pytest.mark.parametrize("name", daemonstore.__all__)
def test_each_export_is_its_home_modules_object(name: str) -> None:
    value = getattr(daemonstore, name)
    home = importlib.import_module(daemonstore._HOME_OF[name])
    assert value is getattr(home, name)
    assert getattr(value, "__module__", "daemonstore").startswith("daemonstore")


def test_star_import_gives_all() -> None:
    namespace: dict[str, object] = {}
    exec("from daemonstore import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(daemonstore.__all__)


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        daemonstore.Nope  # noqa: B018


def test_importing_the_model_loads_no_kernel_and_no_bus() -> None:
    code = ("import sys, daemonstore.model, daemonstore.paths; "
            "print(sorted(m for m in sys.modules if m.startswith(('daemonstore.kernel', "
            "'dbus_fast', 'daemonstore.world', 'click'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
