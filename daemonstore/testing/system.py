"""The system world: a whole simulated device in a container, where a daemon author's real,
unmodified daemon (C++, Rust, shell, Python with ``open()``) runs at the real paths
(fixture ``daemonstore_system_world``: kernel, root, dbus-daemon).

The container (:mod:`daemonstore.kernel.container`) is a forked child in new mount and PID
namespaces with a tmpfs as ``/``; the pytest process's own mounts are never touched. Inside, an
agent (:mod:`daemonstore.testing.system_agent`) boots the device with default paths only:
``daemonstore install`` (a daemon role grant for each template's owner), the daemons' templates,
``daemonstore-startup``, ``dbus-daemon --system`` on the installed policies, ``cryptohome-sim
--no-daemon-stores`` and ``daemonstore hook``. :class:`SystemWorld` drives it over a socket
(JSON lines) and reads the container's files through ``/proc/<agent>/root`` (confined: never an
absolute symlink resolved on the host).

``world.spawn(daemon, argv)`` starts any executable with ``daemonstore jail`` and the documented
recipe (``jail.plan.store_jail_argv``, ``-b /run/dbus`` for the system bus, ``-u``/``-g``: by
default the template's owner), so it sees ``/run/daemon-store/<d>/<hash>`` and
``/run/dbus/system_bus_socket`` where a device has them::

    SAMPLE = ("sample", 20200, 20200, 0o700)

    @pytest.mark.daemonstore(daemons=[SAMPLE])
    def test_my_daemon_writes_per_user(daemonstore_system_world):
        world = daemonstore_system_world
        daemon = world.spawn("sample", ["/usr/bin/my-daemon", "--foreground"])
        world.login("alice@example.com")            # over D-Bus, as Chrome signs in
        ...                                          # wait for the daemon's work
        assert world.read_vault("alice@example.com", "sample", "state") == b"..."
        world.logout()                               # StopSession, then Unmount{}
        assert not daemon.sees_store("alice@example.com")

A spawned process's output is in ``daemon.output()``; with a failing test it is added to the
report (a section per process), and it is logged when the world closes. At teardown every
spawned process is stopped by pid, then the services, then the container ends: its PID
namespace dies with its init, and :meth:`SystemWorld.close` checks that no process of it is left
and that the container's directory is still empty on the host.

A world per test is the fixture's; for one world per module use :func:`system_world` in a
module-scoped fixture (sign out at the end of each test).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import socket
import sys
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest

from daemonstore import paths
from daemonstore.errors import DaemonStoreError
from daemonstore.jail.plan import store_jail_argv
from daemonstore.kernel.container import (
    Container,
    ContainerSpec,
    interpreter_binds,
    start_container,
)
from daemonstore.kernel.readonly import ReadOnlyRoot
from daemonstore.session.queries import mounted_users

__all__ = ["SpawnedProcess", "SystemWorld", "SystemWorldError", "daemonstore_system_world",
           "require_system_world", "system_world", "system_world_unavailable_reason"]

AGENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "system_agent.py")
#: our packages, bound read-only into the container wherever they are installed
PACKAGES = ("daemonstore", "cryptohome_sim", "startup")
log = logging.getLogger(__name__)
_LIVE: weakref.WeakSet[SystemWorld] = weakref.WeakSet()


class SystemWorldError(DaemonStoreError, RuntimeError):
    """The system world could not do what was asked (the agent's reason, with the command)."""


def system_world_unavailable_reason() -> str | None:
    """Why a system world cannot run here (None: it can): the kernel's reasons, dbus-daemon."""
    from cryptohome_sim.bus import find_dbus_daemon
    from daemonstore.kernel.sandbox import kernel_unavailable_reason

    reason = kernel_unavailable_reason()
    if reason is None and find_dbus_daemon() is None:
        reason = "dbus-daemon is not installed (Debian package 'dbus')"
    return reason


class SystemWorld:
    """A booted device in a container (module docstring); close it (or use ``with``)."""

    kind = "system"

    def __init__(self, daemons: Sequence[tuple[Any, ...]] = (), *, boot: bool = True,
                 hook: bool = True, timeout: float = 60, binds: Sequence[str] = ()) -> None:
        """Start the container; install ``daemons`` (``(name, uid, gid[, mode])`` each) and,
        with ``boot``, boot the device. ``hook=False``: cryptohome-sim binds the stores itself
        (as ChromeOS's cryptohome), no ``daemonstore hook``. ``binds``: host paths bound
        read-only at their own paths (the daemon under test, when it lives outside /usr)."""
        self.timeout = timeout
        self.hook = hook
        self.daemons: dict[str, tuple[int, int, int]] = {}
        self.users: dict[str, str] = {}
        self.spawned: list[SpawnedProcess] = []
        self.booted = False
        self.closed = False
        here, there = socket.socketpair()
        try:
            origins = [importlib.util.find_spec(p).origin for p in PACKAGES]  # type: ignore
            spec = ContainerSpec(ro_binds=interpreter_binds(*[o for o in origins if o])
                                 + tuple(os.path.realpath(b) for b in binds))
            env = {"PATH": f"{os.path.dirname(sys.executable)}:/usr/sbin:/usr/bin:/sbin:/bin",
                   "HOME": "/root", "LANG": "C.UTF-8"}
            self.container: Container = start_container(
                spec, [sys.executable, "-I", AGENT, str(there.fileno())], env,
                pass_fds=[there.fileno()], log="/tmp/daemonstore-system-agent.log")
        except BaseException:
            here.close()
            raise
        finally:
            there.close()
        self._sock = here
        self._sock.settimeout(timeout)
        self._rfile = here.makefile("rb")
        _LIVE.add(self)
        try:
            self._reply("start")
            for spec_ in daemons:
                self.install_daemon(*spec_)
            if boot:
                self.boot()
        except BaseException:
            self.close()
            raise

    # ---- the channel -----------------------------------------------------------------------
    def _call(self, op: str, **args: Any) -> Any:
        if self.closed:
            raise SystemWorldError(f"{op}: the system world is closed")
        # a request that waits (wait, stop, spawn) gets its own time on top of the usual
        waits = "timeout" in args
        self._sock.settimeout(None if waits and args["timeout"] is None
                              else self.timeout + (args["timeout"] if waits else 0))
        self._sock.sendall(json.dumps({"op": op, **args}).encode() + b"\n")
        return self._reply(op)

    def _reply(self, op: str) -> Any:
        try:
            line = self._rfile.readline()
        except TimeoutError:
            raise SystemWorldError(f"{op}: no answer from the container's agent within "
                                   f"{self.timeout} s") from None
        if not line:
            raise SystemWorldError(f"{op}: the container's agent is gone")
        reply = json.loads(line)
        if not reply["ok"]:
            raise SystemWorldError(reply["error"])
        return reply["result"]

    # ---- the device --------------------------------------------------------------------------
    def boot(self) -> None:
        """install, startup, dbus-daemon, cryptohome-sim (and the hook): the device is up."""
        self.boot_report = self._call("boot", hook=self.hook)
        self.booted = True

    def install_daemon(self, name: str, uid: int, gid: int, mode: int = 0o700, *,
                       startup: bool = True) -> None:
        """``/etc/daemon-store/<name>`` owned ``uid:gid`` with ``mode`` and a passwd and group
        entry (what the daemon's ebuild installs), and the daemon role for that owner (but
        root): ``daemonstore install --daemon-user`` writes its grant file, so the daemon may
        ask session_manager who is signed in as its own user. After boot dbus-daemon
        (``ReloadConfig``) and cryptohome-sim (SIGHUP) re-read the grants before this returns,
        and, with ``startup``, ``daemonstore-startup`` runs again and must make its stores."""
        paths.check_daemon_name(name)
        self._call("install_daemon", name=name, uid=uid, gid=gid, mode=mode, startup=startup)
        self.daemons[name] = (uid, gid, mode)

    def run(self, *argv: str, user: int | None = None) -> dict[str, Any]:
        """Run a command inside (e.g. ``daemonstore status --json``): ``rc``, ``stdout``,
        ``stderr``."""
        return dict(self._call("run", argv=list(argv), user=user))

    # ---- users -------------------------------------------------------------------------------
    def login(self, user: str) -> str:
        """``daemonstore login USER`` (ChromeOS's calls over the system bus); returns once the
        store binds of every installed daemon are mounted. The user's hash."""
        user_hash = str(self._call("login", user=paths.check_username(user)))
        self.users[user] = user_hash
        return user_hash

    def login_guest(self) -> str:
        """``daemonstore login --guest``: the guest's ephemeral vault in mnt_chrome. With the
        hook no store is bound for a guest (the hook leaves guests alone); ``hook=False``
        binds them. The guest's hash."""
        user_hash = str(self._call("login", user=paths.GUEST_USER, guest=True))
        self.users[paths.GUEST_USER] = user_hash
        return user_hash

    def logout(self) -> None:
        """``daemonstore logout``: ``StopSession`` (everyone: ChromeOS has no per-user
        sign-out), then ``Unmount{}``; returns once no mount of those users is left."""
        self._call("logout")

    def hash_of(self, user: str) -> str:
        """The user's hash: a known user's, ``user`` itself if it is a hash, else
        ``GetSanitizedUsername`` over the bus (then remembered)."""
        if user not in self.users and paths.is_hash(user):
            return user
        if user not in self.users:
            self.users[user] = str(self._call("hash", user=paths.check_username(user)))
        return self.users[user]

    def signed_in(self) -> list[str]:
        """Hashes of the users whose vault is mounted, in sign-in order (from mountinfo)."""
        return mounted_users(_MountTable(self.mountinfo()))  # type: ignore[arg-type]

    def mountinfo(self) -> str:
        """The device's (root namespace's) mount table, as the agent sees it."""
        with open(f"/proc/{self.container.pid}/mountinfo") as f:
            return f.read()

    def vault_path(self, user: str, daemon: str, relpath: str = "", *,
                   cache: bool = False) -> str:
        """``/home/.shadow/<H>/vault/root[/.cache]/<d>/<relpath>``: the data at rest."""
        sub = f"root/{paths.CACHE_DIR}" if cache else "root"
        base = f"{paths.vault(self.hash_of(user))}/{sub}/{paths.check_daemon_name(daemon)}"
        return f"{base}/{relpath.strip('/')}" if relpath.strip("/") else base

    def read_vault(self, user: str, daemon: str, relpath: str, *, cache: bool = False) -> bytes:
        """A file of the user's vault, signed in or not (no symlink followed)."""
        with ReadOnlyRoot(self.container.root_path()) as root:
            return root.read_file(self.vault_path(user, daemon, relpath, cache=cache),
                                  safe=True)

    # ---- processes ---------------------------------------------------------------------------
    def jail_argv(self, daemon: str, uid: int | None = None,
                  gid: int | None = None) -> list[str]:
        """The ``daemonstore jail`` options :meth:`spawn` uses: the documented store recipe,
        ``-b /run/dbus`` (the system bus), ``-u``/``-g`` (default: the template's owner)."""
        if daemon not in self.daemons:
            raise SystemWorldError(f"spawn: daemon {daemon!r} is not installed here "
                                   f"(install_daemon first; installed: "
                                   f"{', '.join(self.daemons) or 'none'})")
        owner_uid, owner_gid, _mode = self.daemons[daemon]
        uid = owner_uid if uid is None else uid
        gid = owner_gid if gid is None else gid
        return [*store_jail_argv(daemon), "-b", "/run/dbus", "-u", str(uid), "-g", str(gid)]

    def spawn(self, daemon: str, argv: Sequence[str], *, uid: int | None = None,
              gid: int | None = None, env: dict[str, str] | None = None,
              timeout: float = 15) -> SpawnedProcess:
        """Start ``argv`` as ``daemon``'s process through ``daemonstore jail`` (see
        :meth:`jail_argv`); returns once it runs in its jail (it has exec'd ``argv``)."""
        if not self.booted:
            raise SystemWorldError("spawn: boot the world first")
        if not argv:
            raise SystemWorldError("spawn: no command")
        jail = self.jail_argv(daemon, uid, gid)
        got = self._call("spawn", argv=["daemonstore", "jail", *jail, "--", *argv],
                         exec_argv=list(argv), env=env, timeout=timeout)
        process = SpawnedProcess(self, int(got["id"]), int(got["pid"]), daemon, list(argv),
                                 jail)
        self.spawned.append(process)
        return process

    def _host_pid(self, inner: int) -> int | None:
        """The pytest process's pid for the container's pid ``inner`` (NSpid, proc(5))."""
        for pid in self.container.processes():
            try:
                with open(f"/proc/{pid}/status") as f:
                    nspid = next(ln for ln in f if ln.startswith("NSpid:")).split()[1:]
            except (OSError, StopIteration):
                continue
            if nspid and int(nspid[-1]) == inner:
                return pid
        return None

    # ---- teardown and reports ----------------------------------------------------------------
    def report_sections(self) -> list[tuple[str, str]]:
        """(title, output) of every spawned process, for a failing test's report."""
        sections = []
        for p in self.spawned:
            try:
                text = p.output()
            except (SystemWorldError, OSError) as exc:
                text = f"(output unavailable: {exc})"
            sections.append((f"daemonstore system world: {p}", text))
        return sections

    def close(self) -> None:
        """Stop every spawned process (by pid) and the services, end the container; raise
        if a process of it is left or its directory on the host is not empty."""
        if self.closed:
            return
        try:
            final = self._call("shutdown")
            for p in self.spawned:
                p.returncode, p.final_output = final["spawned"][str(p.id)]
                log.info("%s exited %s; its output:\n%s", p, p.returncode, p.final_output)
            for name, (code, text) in final["services"].items():
                log.debug("service %s exited %s; its log:\n%s", name, code, text)
        except (SystemWorldError, OSError) as exc:
            log.warning("system world: shutdown failed (%s); killing the container", exc)
            self.container.kill()
        finally:
            self.closed = True
            _LIVE.discard(self)
            self._rfile.close()
            self._sock.close()
        try:
            self.container.wait(self.timeout)
        except TimeoutError:
            self.container.kill()
            self.container.wait()
        left = self.container.processes()
        if left:
            raise SystemWorldError(f"processes left in the container after teardown: {left}")

    def __enter__(self) -> SystemWorld:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SpawnedProcess:
    """A process :meth:`SystemWorld.spawn` started: ``pid`` (as the pytest process sees it),
    ``inner_pid`` (inside the container), ``jail_argv`` (the jail options it got)."""

    def __init__(self, world: SystemWorld, id: int, inner_pid: int, daemon: str,
                 argv: list[str], jail_argv: list[str]) -> None:
        self.world = world
        self.id = id
        self.inner_pid = inner_pid
        #: None if it ended before it could be looked up
        self.pid: int | None = world._host_pid(inner_pid)
        self.daemon = daemon
        self.argv = argv
        self.jail_argv = jail_argv
        self.returncode: int | None = None
        self.final_output: str | None = None

    def __str__(self) -> str:
        return f"{self.daemon} pid {self.pid} ({' '.join(self.argv)[:60]})"

    def poll(self) -> int | None:
        if self.returncode is None and not self.world.closed:
            self.returncode = self.world._call("poll", id=self.id)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Its exit status; SystemWorldError if it still runs after ``timeout`` seconds."""
        if self.returncode is None:
            self.returncode = int(self.world._call("wait", id=self.id, timeout=timeout))
        return self.returncode

    def stop(self, timeout: float = 5) -> int:
        """SIGTERM (SIGKILL after ``timeout``), by pid; its exit status."""
        if not self.world.closed:  # the agent's stop is idempotent
            self.returncode = int(self.world._call("stop", id=self.id, timeout=timeout))
        return int(self.returncode if self.returncode is not None else -9)

    def output(self) -> str:
        """Its stdout and stderr so far (all of it once the world is closed)."""
        if self.world.closed:
            return self.final_output or ""
        return str(self.world._call("output", id=self.id))

    def read(self, path: str) -> bytes:
        """A file as the process sees it (its mount namespace; no symlink followed)."""
        with ReadOnlyRoot(f"/proc/{self.pid}/root") as root:
            return root.read_file(path, safe=True)

    def mountinfo(self) -> str:
        with open(f"/proc/{self.pid}/mountinfo") as f:
            return f.read()

    def sees_store(self, user: str, *, cache: bool = False) -> bool:
        """Does ``/run/daemon-store[-cache]/<d>/<H>``, in this process's namespace, lead into
        the user's mounted vault? (Not "does it exist": the empty target outlives a
        sign-out on ChromeOS.)"""
        user_hash = self.world.hash_of(user)
        sub = f"root/{paths.CACHE_DIR}" if cache else "root"
        target = paths.user_store(self.daemon, user_hash, cache)
        guest = user_hash == self.world.users.get(paths.GUEST_USER)
        # the guest's vault is a tmpfs inside mnt_chrome, out of the agent's sight: its store
        # bind, propagated to the device's root namespace, stands in for it there
        source = target if guest else f"{paths.vault_mount(user_hash)}/{sub}/{self.daemon}"
        try:
            with ReadOnlyRoot(self.world.container.root_path()) as root:
                want = root.stat(source, safe=True)
                store = root.stat(paths.store(self.daemon, cache), safe=True)
            with ReadOnlyRoot(f"/proc/{self.pid}/root") as root:
                got = root.stat(target, safe=True)
        except OSError:
            return False
        if guest and want.st_dev == store.st_dev:
            return False  # the empty target on the store's own tmpfs: nothing is bound there
        return (got.st_dev, got.st_ino) == (want.st_dev, want.st_ino)


class _MountTable:
    """The one Host method :func:`mounted_users` calls, over a mountinfo text."""

    def __init__(self, text: str) -> None:
        self._text = text

    def mountinfo(self, namespace: str | None = None) -> str:
        return self._text


# ---- pytest ------------------------------------------------------------------------------------


class _Reporter:
    """Adds the spawned processes' output of every live system world to a failing report."""

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item,
                                  call: pytest.CallInfo[None]) -> Iterator[Any]:
        report = yield
        if report.failed:
            for world in list(_LIVE):
                report.sections.extend(world.report_sections())
        return report


def require_system_world() -> None:
    """Skip the test with the reason when a system world cannot run here -- fail instead when
    ``$CI`` is set (CI promises a machine that can, as for the kernel tests)."""
    reason = system_world_unavailable_reason()
    if reason is not None:
        if "CI" in os.environ:
            pytest.fail(f"CI is set, so the system world must run, but it cannot: {reason}",
                        pytrace=False)
        pytest.skip(f"system world: {reason}")


@contextmanager
def system_world(config: pytest.Config | None, daemons: Sequence[tuple[Any, ...]] = (),
                 **kwargs: Any) -> Iterator[SystemWorld]:
    """A :class:`SystemWorld` for a fixture of any scope; with ``config`` the spawned
    processes' output goes into failing reports."""
    if config is not None and not config.pluginmanager.has_plugin(_REPORTER):
        config.pluginmanager.register(_Reporter(), _REPORTER)
    with SystemWorld(daemons, **kwargs) as world:
        yield world


_REPORTER = "daemonstore-system-world-report"


@pytest.fixture
def daemonstore_system_world(request: pytest.FixtureRequest) -> Iterator[SystemWorld]:
    """A booted :class:`SystemWorld` for one test, with the daemons of
    ``@pytest.mark.daemonstore(daemons=[(name, uid, gid, mode), ...])``; the test's directory
    is bound read-only at its own path, so a daemon kept next to the test can be spawned.
    Skipped with the reason without root or dbus-daemon -- a failure when ``$CI`` is set."""
    require_system_world()
    marker = request.node.get_closest_marker("daemonstore")
    daemons = list(marker.kwargs.get("daemons", ())) if marker is not None else []
    with system_world(request.config, daemons, binds=[str(request.path.parent)]) as world:
        yield world

