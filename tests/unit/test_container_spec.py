"""The system world's container spec (daemonstore.kernel.container), the parts that need no
root: which host paths get bound read-only into the container."""

from __future__ import annotations

import os
import sys

from daemonstore.kernel.container import BASE_PASSWD, ContainerSpec, _outermost, interpreter_binds


def test_outermost_drops_usr_and_paths_under_another() -> None:
    assert _outermost(["/usr/lib/python3", "/opt/venv/lib", "/opt/venv", "/usr", "/srv/x",
                       "/srv/xy", "/opt/venv"]) == ("/opt/venv", "/srv/x", "/srv/xy")


def test_interpreter_binds_cover_this_python_and_the_package() -> None:
    import daemonstore

    binds = interpreter_binds(daemonstore.__file__)
    needed = [os.path.realpath(p) for p in (sys.prefix, sys.base_prefix,
                                            os.path.dirname(daemonstore.__file__))]
    for path in needed:
        assert path.startswith("/usr/") or any(
            path == b or path.startswith(b + "/") for b in binds), (path, binds)
    assert not any(b == "/usr" or b.startswith("/usr/") for b in binds)


def test_the_base_accounts_are_the_ones_the_device_needs() -> None:
    names = {line.split(":")[0]: int(line.split(":")[2]) for line in ContainerSpec().passwd}
    assert names == {"root": 0, "messagebus": 100, "chronos": 1000, "nobody": 65534}
    assert ContainerSpec().passwd == BASE_PASSWD
