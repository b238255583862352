"""Helpers shared by the kernel tests (importable from a sandbox child: plain functions only)."""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from typing import Any

from daemonstore.host import Host
from daemonstore.mountinfo import MountInfoEntry, parse


def errname(call: Callable[..., Any], *args: Any, **kwargs: Any) -> str | None:
    """The errno name ``call`` fails with (``None`` if it succeeds): tests compare errnos."""
    try:
        call(*args, **kwargs)
    except OSError as exc:
        return errno.errorcode[exc.errno or 0]
    return None


def mounts_at(host: Host, mount_point: str, namespace: str | None = None) -> list[MountInfoEntry]:
    """The mounts of a namespace at ``mount_point``, in creation order (bottom of a stack first)."""
    return [e for e in parse(host.mountinfo(namespace)) if e.mount_point == mount_point]


def mount_points(host: Host, namespace: str | None = None) -> list[str]:
    return [e.mount_point for e in parse(host.mountinfo(namespace))]


Step = tuple[str, tuple[Any, ...], dict[str, Any], str | None]


def outcome(host: Host, steps: list[Step]) -> dict[str, Any]:
    """Run ``(method, args, kwargs, save_as)`` steps on a host like the scenario runner does (a
    failing step records its errno and the run goes on); a step's result is kept under
    ``save_as`` and an argument ``"$name"`` stands for it (handles are opaque per backend).
    Returns errors and every namespace's mountinfo."""
    saved: dict[str, Any] = {}
    errors = []
    for number, (method, args, kwargs, save_as) in enumerate(steps, start=1):
        real = tuple(saved.get(a[1:], a) if isinstance(a, str) and a[:1] == "$" else a
                     for a in args)
        try:
            result = getattr(host, method)(*real, **kwargs)
        except OSError as exc:
            errors.append([number, errno.errorcode[exc.errno or 0]])
            continue
        if save_as:
            saved[save_as] = result
    return {"errors": errors, "namespaces": {n: host.mountinfo(n) for n in host.namespaces()}}


def spawn_holder(prepare: Callable[[], None]) -> int:
    """Fork a stand-in daemon that runs ``prepare`` (enter a namespace, chdir into a store...)
    and then sleeps holding whatever it holds; return its pid once ``prepare`` is done. The
    caller ends it by pid (it is the caller's own child)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            prepare()
            os.write(write_end, b"x")
            while True:
                time.sleep(1)
        finally:
            os._exit(1)
    os.close(write_end)
    os.read(read_end, 1)
    os.close(read_end)
    return pid
