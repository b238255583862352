"""The root of every error the product raises on purpose, and errno names (tier 0, pure).

``except DaemonStoreError`` catches any refusal of ours and nothing else. An error that is also
a built-in kind keeps that base, so callers that know the built-in still work: a bad name is a
``ValueError``, a refused sandbox a ``PermissionError``, a failed sign-in an ``OSError`` whose
``errno`` is the kernel's (host.py, "Errors"). The tree, with the module that raises each::

    DaemonStoreError
    ├── BadName (ValueError)                 paths: a daemon name or user hash breaks the rules
    ├── ScenarioSyntaxError (ValueError)     ops.scenario: a line of the scenario language
    ├── ScenarioFileError                    sim.files: a scenario file or its expected result
    ├── JailSpecError (ValueError)           jail.options: a minijail0 argument
    ├── InputError (ValueError)              audit.parse: an upstart job or minijail config
    ├── SaltMissing (LookupError)            daemon.salt: no system salt yet
    ├── NoPrimaryUser (LookupError)          daemon.client: nobody is signed in
    ├── StoreNotMounted (RuntimeError)       daemon.store_check: the store is not the vault's
    ├── SandboxRefused (PermissionError)     kernel.sandbox: not a safe place to change mounts
    ├── SignInError (OSError)                session: a sign-in or sign-out step, rolled back
    ├── JailError (OSError)                  jail.plan: a step of building the jail
    ├── BackendBroken (RuntimeError)         sim.fuzz: the kernel backend itself failed
    ├── WorldError (RuntimeError)            world: a simulated device used wrongly
    ├── GuestUnavailable                     demo.signers: no guest session on this backend
    ├── ClientError                          dbus.client: talking to cryptohome / session manager
    │   ├── BusUnavailable                   no system bus to talk to
    │   ├── CallError                        a D-Bus error (the bus or session_manager said no)
    │   └── CryptohomeRefused                a reply carrying a CryptohomeErrorCode
    ├── CryptohomeError                      cryptohome_sim.core: a refusal, sent as a reply code
    ├── SessionRefused                       cryptohome_sim.core: a session_manager D-Bus error
    ├── BadRequest (ValueError)              cryptohome_sim.core: a malformed argument (InvalidArgs)
    ├── ServiceError (RuntimeError)          cryptohome_sim.service: the service cannot start
    └── BusError (RuntimeError)              cryptohome_sim.bus: the private dbus-daemon failed

Command-line front ends turn these into one-line messages and exit codes (``command.CannotRun``).
"""

from __future__ import annotations

import errno


class DaemonStoreError(Exception):
    """Base of every error the product raises on purpose (the tree is in this module's doc)."""


def errname(code: int | None) -> str:
    """``ENOENT`` for 2: the symbolic name of an errno, as the kernel's headers spell it
    (``errno 4095`` for a number with no name)."""
    return errno.errorcode.get(code or 0, f"errno {code}")
