"""D-Bus names of cryptohome and session_manager (constants; a contract: docs/chromeos.md §8),
and where the system bus is.

Service names, object paths, interfaces, members and signal names are ChromeOS's
(docs/chromeos.md §4, §8; ``system_api/dbus/cryptohome/dbus-constants.h``,
``system_api/dbus/login_manager/dbus-constants.h``). The control interface is ours, for tests
only (python-dbusmock's ``org.freedesktop.DBus.Mock``, docs/architecture.md §7), on its own path.
"""

from __future__ import annotations

import os

# ---- the system bus (dbus's compiled-in default when $DBUS_SYSTEM_BUS_ADDRESS is unset) -------
SYSTEM_BUS_SOCKET = "/run/dbus/system_bus_socket"
ENV_BUS_ADDRESS = "DBUS_SYSTEM_BUS_ADDRESS"


def system_bus_address(address: str | None = None, root: str = "/") -> str:
    """The system bus (docs/architecture.md §7): ``address`` if given, else
    ``$DBUS_SYSTEM_BUS_ADDRESS``, else the socket at ``/run/dbus/system_bus_socket`` under
    ``root``. Here, not in dbus/client.py, so the commands that only need the address do not
    load dbus_fast."""
    if address:
        return address
    env = os.environ.get(ENV_BUS_ADDRESS)
    if env:
        return env
    return "unix:path=" + os.path.join(root, SYSTEM_BUS_SOCKET.lstrip("/"))

# ---- cryptohome ------------------------------------------------------------------------------
CRYPTOHOME_NAME = "org.chromium.UserDataAuth"
CRYPTOHOME_PATH = "/org/chromium/UserDataAuth"
MISC_IFACE = "org.chromium.CryptohomeMiscInterface"
USERDATAAUTH_IFACE = "org.chromium.UserDataAuthInterface"
LOW_DISK_SIGNAL = "LowDiskSpace"

# ---- the test control interface (not ChromeOS; served by cryptohome-sim on its connection) ----
CONTROL_IFACE = "org.daemonstore.Control"
CONTROL_PATH = "/org/daemonstore/Control"
CONTROL_ERROR = CONTROL_IFACE + ".Error"

# ---- session manager -------------------------------------------------------------------------
SESSION_NAME = "org.chromium.SessionManager"
SESSION_PATH = "/org/chromium/SessionManager"
SESSION_IFACE = "org.chromium.SessionManagerInterface"
SESSION_SIGNAL = "SessionStateChanged"

# ---- session states (SessionManagerImpl::kStarted / kStopping / kStopped) ----------------------
STARTED = "started"
STOPPING = "stopping"
STOPPED = "stopped"

# ---- error names -----------------------------------------------------------------------------
INVALID_ARGS = "org.freedesktop.DBus.Error.InvalidArgs"
ACCESS_DENIED = "org.freedesktop.DBus.Error.AccessDenied"
SERVICE_UNKNOWN = "org.freedesktop.DBus.Error.ServiceUnknown"
#: session_manager's errors are flat: ``org.chromium.SessionManagerInterface.SessionExists``
#: (login_manager/dbus_error_types.h). cryptohome answers refusals inside its protobuf reply
#: (field ``error``, a CryptohomeErrorCode), never as D-Bus errors.
SESSION_ERROR = SESSION_IFACE
