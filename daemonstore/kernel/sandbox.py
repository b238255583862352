"""Kernel layer, running safely: :func:`run_in_sandbox` runs a function against a KernelHost in a
forked child inside a throw-away private mount namespace, and :func:`kernel_unavailable_reason`
says whether that can work here (the one place that asks).

The pattern is systemd's privileged tests (test-mount-util.c: ``safe_fork(FORK_NEW_MOUNTNS|...)``):
the child unshares, makes ``/`` recursively private so nothing it mounts can propagate back to the
host's peer groups, mounts a tmpfs ``sandbox`` on a fresh directory and works only below it. The
caller's own mount namespace is never touched; nothing here runs unshare in the calling process.
The guards KernelHost itself checks are :mod:`daemonstore.kernel.guards`.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import tempfile
import traceback
from collections.abc import Callable
from typing import Any, Concatenate, NoReturn, ParamSpec, TypeVar

from daemonstore.errors import errname
from daemonstore.kernel.guards import SandboxRefused, check_private_namespace
from daemonstore.kernel.host import KernelHost
from daemonstore.kernel.syscalls import mount, openat2, unshare
from daemonstore.kernel.uapi import AT_FDCWD, CLONE_NEWNS, O_PATH
from daemonstore.mountflags import MS_FLAGS as MS

__all__ = ["SANDBOX_SOURCE", "kernel_unavailable_reason", "run_in_sandbox"]

P = ParamSpec("P")
R = TypeVar("R")

#: tmpfs source of the sandbox root, as mountinfo shows it (docs/architecture.md §4: "a private
#: tmpfs whose mountinfo source is sandbox")
SANDBOX_SOURCE = "sandbox"

# ---- availability ------------------------------------------------------------------------------


def kernel_unavailable_reason() -> str | None:
    """Why kernel runs cannot happen here (``None`` if they can): euid 0, and unshare(CLONE_NEWNS)
    plus openat2 work -- probed in a forked child, never in this process."""
    if os.geteuid() != 0:
        return "needs root (euid 0) for unshare(CLONE_NEWNS) and mount(2)"
    pid = os.fork()
    if pid == 0:  # child: probe, report an errno as the exit status, never return
        code = 0
        try:
            unshare(CLONE_NEWNS)
            os.close(openat2(AT_FDCWD, "/", O_PATH))
        except OSError as exc:
            code = exc.errno or 255
        except BaseException:
            code = 255
        finally:
            os._exit(min(code, 255))
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if code:
        name = errname(code)  # the child exits with the errno
        return f"unshare(CLONE_NEWNS) or openat2(2) fails in a forked child: {name}"
    return None


# ---- run_in_sandbox ----------------------------------------------------------------------------


def run_in_sandbox(fn: Callable[Concatenate[KernelHost, P], R], *args: P.args,
                   **kwargs: P.kwargs) -> R:
    """Call ``fn(host, *args, **kwargs)`` in a forked child, in a fresh private mount namespace,
    with ``host`` a KernelHost on a fresh tmpfs; return its result or re-raise its exception
    (same type; the child's traceback is appended to the message, or added as a note where the
    args must stay intact, e.g. OSError's errno/filename).

    The temporary directory is created and removed here, in the parent: on the host it stays an
    empty directory (the tmpfs exists only in the child's namespace), and it is cleaned up even
    if the child is killed. ``RuntimeError`` if the child dies from a signal.
    """
    sandbox_dir = tempfile.mkdtemp(prefix="daemonstore-sandbox-")
    try:
        payload, status = _fork_and_run(sandbox_dir, fn, args, kwargs)
    finally:
        _remove_sandbox_dir(sandbox_dir)
    return _unpack(payload, status)


def _flush_std_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass


def _fork_and_run(sandbox_dir: str, fn: Callable[..., Any], args: tuple[Any, ...],
                  kwargs: dict[str, Any]) -> tuple[bytes, int]:
    read_fd, write_fd = os.pipe()
    _flush_std_streams()  # or buffered output would be written twice, by parent and child
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _child_main(write_fd, sandbox_dir, fn, args, kwargs)
    os.close(write_fd)
    try:
        with os.fdopen(read_fd, "rb") as pipe:
            payload = pipe.read()  # read to EOF before waitpid: a big result must not deadlock
    except BaseException:
        os.kill(pid, signal.SIGKILL)  # our own child, by pid
        os.waitpid(pid, 0)
        raise
    return payload, os.waitpid(pid, 0)[1]


def _child_main(write_fd: int, sandbox_dir: str, fn: Callable[..., Any],
                args: tuple[Any, ...], kwargs: dict[str, Any]) -> NoReturn:
    """The forked child: never returns into the caller's stack, whatever happens."""
    code = 1
    try:
        outcome = _call_in_sandbox(sandbox_dir, fn, args, kwargs)
        data = _pickle_outcome(outcome)
        with os.fdopen(write_fd, "wb") as pipe:
            pipe.write(data)
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        _flush_std_streams()
        os._exit(code)


def _call_in_sandbox(sandbox_dir: str, fn: Callable[..., Any], args: tuple[Any, ...],
                     kwargs: dict[str, Any]) -> tuple[Any, ...]:
    try:
        host = _enter_sandbox(sandbox_dir)
        try:
            return ("ok", fn(host, *args, **kwargs))
        finally:
            host.close()
    except BaseException as exc:
        return ("raise", exc, traceback.format_exc())


def _enter_sandbox(sandbox_dir: str) -> KernelHost:
    """In the child: new mount namespace, "/" rprivate, tmpfs ``sandbox`` on ``sandbox_dir``."""
    # One CPU for the child (and what it spawns): Linux 6.18 hands out namespace ids in per-CPU
    # batches, so a namespace made later on another CPU can get a *smaller* id, and binding a
    # namespace file (pin_namespace, how session_manager keeps mnt_chrome) is EINVAL when the
    # pinned namespace's id is not larger than the caller's (fs/namespace.c mnt_ns_loop()). On
    # one CPU the ids of every namespace this child makes increase, as creation order does.
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    before = os.stat("/proc/self/ns/mnt").st_ino
    unshare(CLONE_NEWNS)
    # belt and braces before the first mount: we really are in a new, non-initial namespace
    if os.stat("/proc/self/ns/mnt").st_ino == before:
        raise SandboxRefused("unshare(CLONE_NEWNS) did not change the mount namespace")
    check_private_namespace()
    # rprivate: mounts made below must not propagate to the host's peers (and vice versa)
    mount(None, "/", None, MS["MS_REC"] | MS["MS_PRIVATE"])
    mount(SANDBOX_SOURCE, sandbox_dir, "tmpfs", 0)
    return KernelHost(sandbox_dir)


def _pickle_outcome(outcome: tuple[Any, ...]) -> bytes:
    """Pickle the outcome, degrading to a RuntimeError/TypeError that surely pickles when the
    result or the exception does not survive a round trip."""
    try:
        data = pickle.dumps(outcome)
        pickle.loads(data)  # exceptions whose __init__ differs from .args fail only here
        return data
    except Exception as exc:
        if outcome[0] == "ok":
            err: BaseException = TypeError(
                f"sandbox result of type {type(outcome[1]).__qualname__} cannot be pickled: "
                f"{exc}")
            return pickle.dumps(("raise", err, ""))
        orig = outcome[1]
        err = RuntimeError(f"{type(orig).__module__}.{type(orig).__qualname__}: {orig}")
        return pickle.dumps(("raise", err, outcome[2]))


def _unpack(payload: bytes, status: int) -> Any:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        raise RuntimeError(f"sandbox child was killed by signal {signal.Signals(sig).name} "
                           f"({sig})")
    if not payload:
        raise RuntimeError(f"sandbox child exited with status "
                           f"{os.waitstatus_to_exitcode(status)} without sending a result")
    kind, *rest = pickle.loads(payload)
    if kind == "ok":
        return rest[0]
    exc, child_tb = rest
    raise _with_child_traceback(exc, child_tb)


def _with_child_traceback(exc: BaseException, child_tb: str) -> BaseException:
    if not child_tb:
        return exc
    text = "traceback in the sandbox child:\n" + child_tb.rstrip()
    plain_message = (type(exc).__str__ is BaseException.__str__ and len(exc.args) == 1
                     and isinstance(exc.args[0], str))
    if plain_message:
        exc.args = (f"{exc.args[0]}\n\n{text}",)
    else:
        exc.add_note(text)
    return exc


def _remove_sandbox_dir(path: str) -> None:
    """rmdir, never rm -r: the directory must be empty on the host, because the tmpfs lived only
    in the child's namespace. If it is not, something escaped the sandbox: say so loudly."""
    try:
        os.rmdir(path)
    except OSError as exc:
        raise RuntimeError(f"sandbox directory {path!r} could not be removed on the host "
                           f"({exc.strerror}); something was written outside the tmpfs") from exc
