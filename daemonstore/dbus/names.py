"""D-Bus names of the simulated services (pure constants; design.md "D-Bus", a contract).

The service and object names and ``CryptohomeMiscInterface`` / ``SessionManagerInterface`` are
the ChromeOS ones (chromeos-facts.md §3, §4). The mount interface and the control interface are
ours: real cryptohome mounts through ``org.chromium.UserDataAuthInterface`` with protobuf
requests, which a simulation has no use for.
"""

from __future__ import annotations

# ---- cryptohome ------------------------------------------------------------------------------
CRYPTOHOME_NAME = "org.chromium.UserDataAuth"
CRYPTOHOME_PATH = "/org/chromium/UserDataAuth"
MISC_IFACE = "org.chromium.CryptohomeMiscInterface"
MOUNT_IFACE = "org.chromium.CryptohomeMountInterface"
#: python-dbusmock's ``org.freedesktop.DBus.Mock`` in our namespace (style.md §0 item 8)
CONTROL_IFACE = "org.daemonstore.Control"

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
#: cryptohome reports errors inside its protobuf replies; ours are D-Bus errors named
#: ``<interface>.Error.<Kind>``
MOUNT_ERROR = MOUNT_IFACE + ".Error"
CONTROL_ERROR = CONTROL_IFACE + ".Error"
#: session_manager's own errors are flat: ``org.chromium.SessionManagerInterface.SessionExists``
#: (login_manager/dbus_error_types.h)
SESSION_ERROR = SESSION_IFACE
