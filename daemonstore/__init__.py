"""daemonstore: ChromeOS daemon-store machinery on a verified model of mount propagation.

The public API, importable from the package itself (``from daemonstore import World``). Each
name is loaded from its home module on first use (PEP 562), so ``import daemonstore.model``
stays pure and a daemon that links ``daemonstore.daemon`` does not load the kernel backend.

==========  ==================================================================================
layer       names
==========  ==================================================================================
errors      DaemonStoreError, errname
interface   Host, Stat, Propagation, NamespaceView, in_namespace
backends    ModelHost, KernelHost, run_in_sandbox, SandboxRefused
scenarios   run_scenario, ScenarioSyntaxError
boot        run_startup, plan_startup, StartupPlan, StartupReport
sign-in     sign_in, sign_out, plan_sign_in, plan_sign_out, SignInPlan, SignOutPlan,
            SessionResult, SignOutResult, SignInError, mounted_users
jail        parse_jail_args, plan_jail, apply_jail, exec_jail, store_jail_argv, JailSpec,
            JailSpecError, JailError
daemons     DaemonStoreClient, PrimaryStore, StoreSession, NoPrimaryUser, store_status,
            require_store, store_status_here, require_store_here, StoreStatus,
            StoreNotMounted, user_store_path, load_or_create_salt, read_salt, SaltMissing
testing     World, KernelWorld, DaemonView, WorldError, kernel_world
==========  ==================================================================================

``DaemonStoreError`` is the root of every error of ours (its module draws the tree);
``ModelHost`` is pure, ``KernelHost`` needs root and a tmpfs sandbox (``run_in_sandbox``).
Modules are part of the API too: ``daemonstore.paths`` (ChromeOS paths and name rules),
``daemonstore.mountinfo`` (parse, render, the canonical form), ``daemonstore.ops`` (every plan
step), ``daemonstore.testing`` (the pytest plugin).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_HOMES: dict[str, tuple[str, ...]] = {
    "daemonstore.errors": ("DaemonStoreError", "errname"),
    "daemonstore.host": ("Host", "NamespaceView", "Propagation", "Stat", "in_namespace"),
    "daemonstore.model": ("ModelHost",),
    "daemonstore.kernel": ("KernelHost", "SandboxRefused", "run_in_sandbox"),
    "daemonstore.ops": ("ScenarioSyntaxError", "run_scenario"),
    "daemonstore.boot": ("StartupPlan", "StartupReport", "plan_startup", "run_startup"),
    "daemonstore.session": ("SessionResult", "SignInError", "SignInPlan", "SignOutPlan",
                            "SignOutResult", "mounted_users", "plan_sign_in", "plan_sign_out",
                            "sign_in", "sign_out"),
    "daemonstore.jail.spec": ("JailSpec", "parse_jail_args"),
    "daemonstore.jail.options": ("JailSpecError",),
    "daemonstore.jail.plan": ("JailError", "apply_jail", "exec_jail", "plan_jail",
                              "store_jail_argv"),
    "daemonstore.daemon.client": ("DaemonStoreClient", "NoPrimaryUser", "PrimaryStore",
                                  "StoreSession"),
    "daemonstore.daemon.store_check": ("StoreNotMounted", "StoreStatus", "require_store",
                                       "require_store_here", "store_status",
                                       "store_status_here"),
    "daemonstore.daemon.salt": ("SaltMissing", "load_or_create_salt", "read_salt",
                                "user_store_path"),
    "daemonstore.world": ("DaemonView", "KernelWorld", "World", "WorldError", "kernel_world"),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = sorted(_HOME_OF)


def __getattr__(name: str) -> Any:
    module = _HOME_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'daemonstore' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
