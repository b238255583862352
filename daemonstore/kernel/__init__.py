"""Kernel backend: the real kernel behind the Host interface, and the only area that imports
ctypes and pyudev (docs/architecture.md §1). By job:

* :mod:`~daemonstore.kernel.uapi`: include/uapi constants (the ``MS_*`` flags are
  :mod:`daemonstore.mountflags`);
* :mod:`~daemonstore.kernel.syscalls`: the ctypes table, its wrappers, and the one place an
  errno becomes ``OSError``;
* :mod:`~daemonstore.kernel.host`: :class:`KernelHost`, with its methods by concern in
  :mod:`~daemonstore.kernel.resolve` (confined path resolution), :mod:`~daemonstore.kernel.files`,
  :mod:`~daemonstore.kernel.mounts` and :mod:`~daemonstore.kernel.namespaces`;
* :mod:`~daemonstore.kernel.guards`: the safety checks KernelHost makes before it mounts;
* :mod:`~daemonstore.kernel.sandbox`: :func:`run_in_sandbox` (a forked child in a private
  namespace on a tmpfs) and :func:`kernel_unavailable_reason`;
* :mod:`~daemonstore.kernel.loop`: loop devices (ioctls, image, uevent wait, attach, detach);
* :mod:`~daemonstore.kernel.readonly`: :class:`ReadOnlyRoot`, confined reads without a sandbox.
"""

from daemonstore.kernel.guards import SandboxRefused, check_private_namespace
from daemonstore.kernel.host import KernelHost
from daemonstore.kernel.readonly import ReadOnlyRoot
from daemonstore.kernel.sandbox import kernel_unavailable_reason, run_in_sandbox
from daemonstore.kernel.syscalls import set_no_new_privs

__all__ = [
    "KernelHost",
    "ReadOnlyRoot",
    "SandboxRefused",
    "check_private_namespace",
    "kernel_unavailable_reason",
    "run_in_sandbox",
    "set_no_new_privs",
]
