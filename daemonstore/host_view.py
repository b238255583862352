"""A Host pinned to one namespace: every call runs there and the previous namespace is restored.

The model keeps one "current namespace" per world, shared by everyone holding the ModelHost
(cryptohome_sim, the demo, several daemons). A daemon-side view must not move the others, and
must not be moved by them: :class:`NamespaceView` switches for the duration of each call only.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from .host import Host


class NamespaceView:
    """``NamespaceView(host, "d-biod")`` behaves like ``host`` seen from namespace d-biod."""

    def __init__(self, host: Host, namespace: str) -> None:
        self._host = host
        self.namespace = namespace
        self.kind = host.kind

    def current_namespace(self) -> str:
        return self.namespace

    def mountinfo(self, namespace: str | None = None) -> str:
        return self._host.mountinfo(namespace or self.namespace)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._host, name)
        if not callable(attr):
            return attr
        return self._pinned(attr)

    def _pinned(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            previous = self._host.current_namespace()
            if previous != self.namespace:
                self._host.use_namespace(self.namespace)
            try:
                return fn(*args, **kwargs)
            finally:
                if self._host.current_namespace() != previous:
                    self._host.use_namespace(previous)

        return call
