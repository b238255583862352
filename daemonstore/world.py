"""A booted simulated Chromebook (composition layer: drives boot, session, the jail planner and
a Host): the daemon-store machinery set up like a device, for daemon authors' tests, the demo and
``audit --simulate``. The pytest fixture that hands worlds out is :mod:`daemonstore.testing`.

A :class:`World` is a Host (the pure model by default; the real kernel inside a sandbox on
request) with:

* ``world.install_daemon("foo", uid, gid, 0o700)``: the template ``/etc/daemon-store/foo`` (what
  the daemon's ebuild does) and the boot step, so ``/run/daemon-store{,-cache}/foo`` are shared
  self-binds;
* ``world.daemon("foo")``: a :class:`DaemonView`, the daemon's mount namespace built by the
  namespace helper's planner the way minijail sets up a daemon (docs/chromeos.md §5): a slave
  clone of the root namespace, a private tmpfs on ``/run``, recursive binds of its stores only;
* ``world.login("alice")`` / ``world.logout("alice")``: sign-in and sign-out through
  :mod:`daemonstore.session` (``vault="loop"`` on the kernel: an ext4 image on a loop device);
  ``world.login_guest()`` / ``world.logout_guest()`` for the guest (user ``"$guest"``: an
  ephemeral tmpfs vault inside ``mnt_chrome``, :mod:`daemonstore.session.guest`); the hash is
  ``paths.sanitize_username`` with the salt at ``/home/.shadow/salt`` (16 bytes, created if
  missing: seeded random bytes on the model, ``os.urandom`` on the kernel).

On the kernel the body runs in ``run_in_sandbox``'s forked child (a private mount namespace on
a tmpfs sandbox): the pytest plugin runs a whole test there; :class:`KernelWorld` records set-up
and runs ``world.run(body)`` there (a model World has ``run`` too); :func:`kernel_world` is the
one-call form. The bus worlds (:mod:`daemonstore.testing.bus`) set ``bus`` and ``cryptohome``.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from daemonstore import mountinfo, paths
from daemonstore.boot.seed import install_template
from daemonstore.daemon.salt import load_or_create_salt
from daemonstore.daemon.store_check import StoreStatus, store_status
from daemonstore.errors import DaemonStoreError
from daemonstore.host import Host, OpenFile, Propagation, Stat, in_namespace
from daemonstore.session import (
    SessionResult,
    SignOutResult,
    guest,
    mounted_users,
    sign_in,
    sign_out,
)

__all__ = ["DaemonView", "KernelWorld", "World", "WorldError", "kernel_world", "snapshot"]

R = TypeVar("R")


class WorldError(DaemonStoreError, RuntimeError):
    """The world could not be set up as asked (e.g. startup refused a template)."""


class World:
    """A Host with daemon templates, stores, users and daemon namespaces (module docstring)."""

    def __init__(self, host: Host, *,
                 random_bytes: Callable[[int], bytes] = os.urandom) -> None:
        self.host = host
        #: the bus worlds attach a D-Bus client and the running cryptohome-sim (testing.bus);
        #: None: sign-in runs in-process
        self.bus: Any = None
        self.cryptohome: Any = None
        #: the namespace sign-in runs in (the root namespace of the simulated machine)
        self.namespace = host.current_namespace()
        self.users: dict[str, str] = {}            # username -> hash, once hashed
        self.sessions: dict[str, SessionResult] = {}
        self.sign_outs: list[SignOutResult] = []
        self._random_bytes = random_bytes
        self._salt: bytes | None = None
        self._views: list[DaemonView] = []
        #: the signed-in guest's hash, and the name of Chrome's namespace once it exists
        self.guest: str | None = None
        self.chrome_namespace: str | None = None
        with self.in_namespace(self.namespace):
            for path in ("/etc", paths.ETC_DAEMON_STORE, "/run", "/var"):
                if not host.exists(path):
                    host.mkdir(path, 0o755, safe=True)

    @classmethod
    def model(cls, *, seed: int = 0) -> World:
        """A world on a fresh pure model; ``seed`` fixes the salt, hence the user hashes."""
        from daemonstore.model import ModelHost

        return cls(ModelHost(), random_bytes=random.Random(seed).randbytes)

    @property
    def kind(self) -> str:
        return self.host.kind

    def run(self, fn: Callable[..., R], *args: Any) -> R:
        """``fn(self, *args)``: the same call a KernelWorld makes in its sandbox child."""
        return fn(self, *args)

    @contextmanager
    def in_namespace(self, name: str) -> Iterator[None]:
        """Make ``name`` current for the block, then restore the previous one."""
        with in_namespace(self.host, name):
            yield

    # -- daemons
    def install_daemon(self, name: str, uid: int, gid: int, mode: int = 0o700, *,
                       startup: bool = True) -> None:
        """Install ``/etc/daemon-store/<name>`` owned ``uid:gid`` with ``mode`` (what the
        daemon's ebuild does; a passwd line is added for a new uid, as the ebuild's user would
        exist) and, with ``startup``, run the boot step. ``startup=False`` models a template
        installed without a reboot: no store until :meth:`run_startup`."""
        with self.in_namespace(self.namespace):
            install_template(self.host, name, uid, gid, mode)
        if startup:
            problems = self.run_startup(name)
            if problems:
                raise WorldError(f"startup did not make the stores of {name!r}: "
                                 + "; ".join(problems)
                                 + " (start_stores() mounts them without startup's checks)")

    def run_startup(self, daemon: str | None = None) -> list[str]:
        """Run the boot step (``startup.run_startup``); the problems it reports (for
        ``daemon`` only, if given)."""
        from daemonstore.boot import run_startup

        with self.in_namespace(self.namespace):
            _plan, report = run_startup(self.host)
        if daemon is None:
            return report.problem_lines()
        template = paths.template(daemon)
        mine = [r for r in report.results if r.target.daemon == daemon]
        lines = [f"skipped {s.line()}" for s in report.skipped if s.path == template]
        lines += [r.line() for r in mine if r in report.problems]
        return lines if lines or mine else [f"startup planned no store for {daemon!r}"]

    def start_stores(self, daemon: str) -> None:
        """Mount ``/run/daemon-store{,-cache}/<daemon>`` exactly as chromeos_startup does, with
        none of startup's template checks: mkdir 0755, self-bind, make shared
        (docs/chromeos.md §1). For stores startup would not make: a template it refuses (a
        world-writable one), or none at all."""
        host = self.host
        with self.in_namespace(self.namespace):
            for cache in (False, True):
                store = paths.store(daemon, cache)
                host.mkdir(store, 0o755, parents=True, safe=True)
                host.bind(store, store, safe=True)
                host.make(store, Propagation.SHARED, safe=True)

    def daemon(self, name: str, *, missing_ok: bool = False) -> DaemonView:
        """Start a daemon's namespace now (see :class:`DaemonView`).

        A daemon with no store at all (``/run/daemon-store{,-cache}/<name>``) is a
        :class:`WorldError` naming what to call (a misspelt name must not give a view that
        silently never sees anything); ``missing_ok=True`` starts it anyway, as a daemon
        started before its store exists (a template installed without a reboot)."""
        paths.check_daemon_name(name)
        if not missing_ok:
            self._check_stores(name)
        taken = set(self.host.namespaces())
        ns, n = f"daemon-{name}", 1
        while ns in taken:
            n += 1
            ns = f"daemon-{name}-{n}"
        view = DaemonView(self, name, ns)
        self._views.append(view)
        return view

    def _check_stores(self, name: str) -> None:
        with self.in_namespace(self.namespace):
            if any(_is_dir(self.host, paths.store(name, c)) for c in (False, True)):
                return
            template = paths.template(name)
            fix = (f"call world.run_startup() or world.start_stores({name!r})"
                   if _is_dir(self.host, template) else
                   f"no template ({template}): call world.install_daemon({name!r}, uid, gid, "
                   "mode) or list it in @pytest.mark.daemonstore(daemons=[...])")
        raise WorldError(f"daemon {name!r} has no store ({paths.store(name, False)}): {fix} "
                         f"first, or world.daemon({name!r}, missing_ok=True) for a daemon "
                         "started without its store")

    # -- users
    @property
    def salt(self) -> bytes:
        if self._salt is None:
            with self.in_namespace(self.namespace):
                self._salt = load_or_create_salt(self.host, self._random_bytes)
        return self._salt

    def hash_of(self, user: str) -> str:
        """The user's hash: a known username's, else ``user`` itself if it is a hash, else
        computed (and remembered) from the salt."""
        if user in self.users:
            return self.users[user]
        try:
            return paths.check_hash(user)
        except paths.BadName:
            pass
        user_hash = paths.sanitize_username(self.salt, paths.check_username(user))
        self.users[user] = user_hash
        return user_hash

    def login(self, user: str, *, first_user: bool | None = None,
              fail_at: int | None = None, vault: str = "dir") -> str:
        """Sign ``user`` in (``session.sign_in``); returns the hash. The result is kept in
        ``sessions[user]``; SignInError propagates (after the rollback)."""
        user_hash = self.hash_of(user)
        with self.in_namespace(self.namespace):
            self.sessions[user] = sign_in(self.host, user_hash, first_user=first_user,
                                          fail_at=fail_at, vault=vault)
        return user_hash

    def login_guest(self, *, fail_at: int | None = None) -> str:
        """Sign the guest (``"$guest"``) in: ``guest.sign_in_guest`` from the root namespace
        (creating ``mnt_chrome`` when missing); returns the guest's hash."""
        user_hash = self.hash_of(paths.GUEST_USER)
        with self.in_namespace(self.namespace):
            plan = guest.plan_sign_in_guest(self.host, user_hash)
            self.chrome_namespace = plan.namespace
            self.sessions[paths.GUEST_USER] = plan.apply(self.host, fail_at=fail_at)
        self.guest = user_hash
        return user_hash

    def logout_guest(self, *, remove_store_targets: bool = False) -> SignOutResult:
        """Sign the guest out (``guest.sign_out_guest``): its vault goes; targets as logout's."""
        user_hash = self.hash_of(paths.GUEST_USER)
        with self.in_namespace(self.namespace):
            result = guest.sign_out_guest(self.host, user_hash,
                                          remove_store_targets=remove_store_targets)
        self.sessions.pop(paths.GUEST_USER, None)
        self.sign_outs.append(result)
        self.guest = None
        return result

    def logout(self, user: str, *, kill_holders: bool = False,
               remove_store_targets: bool = False) -> SignOutResult:
        """Sign one user out (``session.sign_out``), for tests. ChromeOS has no per-user
        sign-out: ``StopSession`` ends every session and ``Unmount{}`` unmounts everyone (what
        the bus worlds and ``daemonstore logout`` do); README "Known deviations".
        ``kill_holders`` ends whatever keeps the user's mounts busy first (``process_killer
        --mount_holders``; on the model a daemon's holds go). The empty store targets stay, as
        on a device (a naive daemon fails here too), unless ``remove_store_targets``."""
        user_hash = self.hash_of(user)
        with self.in_namespace(self.namespace):
            result = sign_out(self.host, user_hash, kill_holders=kill_holders,
                              remove_store_targets=remove_store_targets)
        self.sessions.pop(user, None)
        self.sign_outs.append(result)
        return result

    def signed_in(self) -> list[str]:
        """Hashes of the users signed in (from mountinfo)."""
        with self.in_namespace(self.namespace):
            return mounted_users(self.host)

    # -- looking at things from the root namespace
    def vault_path(self, user: str, daemon: str, relpath: str = "", *,
                   cache: bool = False) -> str:
        """Where a daemon's per-user data lives at rest: ``/home/.shadow/<H>/vault/root/<d>``
        (or ``root/.cache/<d>``), readable whether or not the user is signed in."""
        sub = f"root/{paths.CACHE_DIR}" if cache else "root"
        base = f"{paths.vault(self.hash_of(user))}/{sub}/{paths.check_daemon_name(daemon)}"
        return _join(base, relpath)

    def read_vault(self, user: str, daemon: str, relpath: str, *, cache: bool = False) -> bytes:
        with self.in_namespace(self.namespace):
            return self.host.read_file(self.vault_path(user, daemon, relpath, cache=cache),
                                       safe=True)

    def mountinfo(self, namespace: str | None = None) -> str:
        return self.host.mountinfo(namespace or self.namespace)

    def snapshot(self, top: str = "/", *, skip: Sequence[str] = ()) -> dict[str, tuple]:
        """:func:`snapshot` of the root namespace's view."""
        with self.in_namespace(self.namespace):
            return snapshot(self.host, top, skip=skip)


class DaemonView:
    """A daemon's mount namespace, built by the namespace helper itself (``jail.plan_jail`` /
    ``jail.apply_jail``, the one implementation of "how a daemon is jailed") from the documented
    recipe (docs/chromeos.md §4-5; ``jail.store_jail_argv``)::

        daemonstore jail -v -Kslave -k tmpfs,/run,tmpfs,MS_NODEV|MS_NOEXEC|MS_NOSUID
            -k /run/daemon-store/<d>,/run/daemon-store/<d>,none,MS_BIND|MS_REC  (and -cache)

    1. clone the root namespace and make every mount slave (``-v -Kslave``): mounts flow in,
       never out;
    2. pin the store binds (``open_tree``) before a fresh tmpfs covers ``/run``;
    3. attach them on the new ``/run``: a clone of a slave is a slave of the same master, so
       later sign-ins flow in.

    A store that does not exist (yet) is left out of the recipe: minijail would fail, the view
    just lacks it. ``user`` arguments take a username the world knows, or a hash.
    """

    def __init__(self, world: World, daemon: str, namespace: str) -> None:
        from daemonstore.jail.plan import apply_jail, plan_jail, store_jail_argv
        from daemonstore.jail.spec import parse_jail_args

        self.world = world
        self.daemon = daemon
        self.namespace = namespace
        host = world.host
        with world.in_namespace(world.namespace):
            stores = [s for s in (paths.store(daemon, c) for c in (False, True))
                      if _is_dir(host, s)]
            #: the ``daemonstore jail`` arguments this namespace was built from
            self.jail_argv = store_jail_argv(daemon, stores)
            self.steps = plan_jail(parse_jail_args(self.jail_argv), namespace)
            apply_jail(host, self.steps)

    def path(self, user: str, relpath: str = "", *, cache: bool = False) -> str:
        """``/run/daemon-store[-cache]/<d>/<H>[/relpath]`` (libbrillo ``GetDaemonStorePath``)."""
        return _join(paths.user_store(self.daemon, self.world.hash_of(user), cache), relpath)

    def sees_store(self, user: str, *, cache: bool = False) -> bool:
        """Does this daemon see ``user``'s store? Answered from the mount tables alone (never
        from the world's records of who signed in): :meth:`store_status`."""
        return self.store_status(user, cache=cache).mounted

    def store_status(self, user: str, *, cache: bool = False) -> StoreStatus:
        """``store_check.store_status`` in this namespace (the mount reached at the store path
        binds a vault's ``root[/.cache]/<d>``: not the empty target a sign-out leaves), and that
        vault is *this user's*: same device and root as a mount at the user's vault mount point
        in any namespace (a guest's is in mnt_chrome)."""
        world = self.world
        user_hash = world.hash_of(user)
        with world.in_namespace(self.namespace):
            status = store_status(world.host, self.daemon, user_hash, cache=cache)
        if not status.mounted or status.entry is None:
            return status
        sub = paths.store_in_vault(self.daemon, cache)
        vaults = _vault_mounts(world.host, user_hash)
        if any((status.entry.dev, status.entry.root) == (dev, _join(root, sub))
               for dev, root in vaults):
            return status
        why = ("no vault of this user is mounted" if not vaults
               else "the mount there is not a bind of this user's vault")
        return StoreStatus(status.path, False, f"{why} (the mount has root "
                           f"{status.entry.root!r} on {status.entry.dev})", status.entry)

    def read(self, user: str, relpath: str, *, cache: bool = False) -> bytes:
        with self.world.in_namespace(self.namespace):
            return self.world.host.read_file(self.path(user, relpath, cache=cache), safe=True)

    def write(self, user: str, relpath: str, data: bytes, *, cache: bool = False) -> None:
        with self.world.in_namespace(self.namespace):
            self.world.host.write_file(self.path(user, relpath, cache=cache), data, safe=True)

    def mkdir(self, user: str, relpath: str, mode: int = 0o700, *, cache: bool = False) -> None:
        with self.world.in_namespace(self.namespace):
            self.world.host.mkdir(self.path(user, relpath, cache=cache), mode, safe=True)

    def hold(self, user: str, relpath: str = "", *, cache: bool = False,
             name: str | None = None) -> str:
        """Keep ``relpath`` of the user's store open from this daemon's namespace, as a daemon
        with an open file does (``Host.hold``): the store bind, and through propagation the
        user's mounts, are busy until :meth:`release`. Returns the hold's name (by default
        ``<daemon>:<user hash>:<relpath>``)."""
        user_hash = self.world.hash_of(user)
        name = name or f"{self.daemon}:{user_hash}:{relpath.strip('/') or '.'}"
        with self.world.in_namespace(self.namespace):
            self.world.host.hold(name, self.path(user, relpath, cache=cache), safe=True)
        return name

    def release(self, name: str) -> None:
        """Close a file :meth:`hold` opened (``EBADF`` if it is not held, e.g. ended by a
        sign-out with ``kill_holders``)."""
        self.world.host.release(name)

    def holds(self) -> list[OpenFile]:
        """This daemon's holds still open (``attached`` False once sign-out detached them)."""
        return [f for f in self.world.host.open_files()
                if f.how == "hold" and f.namespace == self.namespace]

    def stat(self, user: str, relpath: str = "", *, cache: bool = False) -> Stat:
        with self.world.in_namespace(self.namespace):
            return self.world.host.stat(self.path(user, relpath, cache=cache), safe=True)

    def listdir(self, user: str | None = None, relpath: str = "", *,
                cache: bool = False) -> list[str]:
        """Entries of the daemon's store (the user hashes there), or of a user's store."""
        path = (paths.store(self.daemon, cache) if user is None
                else self.path(user, relpath, cache=cache))
        with self.world.in_namespace(self.namespace):
            return self.world.host.listdir(path, safe=True)

    def visible_users(self, *, cache: bool = False) -> list[str]:
        """Hashes whose store this daemon sees (:meth:`sees_store`), in mount order: the
        mounts at ``/run/daemon-store[-cache]/<d>/<H>`` in this namespace's table."""
        base = paths.store(self.daemon, cache) + "/"
        found: list[str] = []
        for e in mountinfo.parse(self.mountinfo()):
            name = e.mount_point[len(base):] if e.mount_point.startswith(base) else ""
            if paths.is_hash(name) and name not in found and self.sees_store(name, cache=cache):
                found.append(name)
        return found

    def mountinfo(self) -> str:
        return self.world.host.mountinfo(self.namespace)


# ---- the kernel --------------------------------------------------------------------------------


def _in_kernel_world(host: Host, handle: KernelWorld, fn: Callable[..., R],
                     args: tuple[Any, ...]) -> R:
    return fn(handle.replay(World(host)), *args)


def kernel_world(fn: Callable[..., R], *args: Any,
                 daemons: Sequence[tuple[Any, ...]] = ()) -> R:
    """Run ``fn(world, *args)`` in ``run_in_sandbox``'s child with a kernel World on a fresh
    tmpfs sandbox, after ``world.install_daemon(*spec)`` for each of ``daemons``; returns its
    (picklable) result or re-raises its exception. Needs root."""
    return KernelWorld(daemons).run(fn, *args)


class KernelWorld:
    """The parent's handle on a kernel world: set-up calls are recorded and replayed in the
    sandbox child, and :meth:`run` runs the test body there. Anything else is refused with the
    reason (a real mount namespace cannot be reached from the pytest process)."""

    kind = "kernel"

    def __init__(self, daemons: Sequence[tuple[Any, ...]] = ()) -> None:
        self._setup: list[tuple[str, tuple, dict]] = []
        for spec in daemons:
            self.install_daemon(*spec)

    def install_daemon(self, *args: Any, **kwargs: Any) -> None:
        self._setup.append(("install_daemon", args, kwargs))

    def start_stores(self, daemon: str) -> None:
        self._setup.append(("start_stores", (daemon,), {}))

    def replay(self, world: World) -> World:
        """Make the recorded set-up calls on ``world`` (a kernel World in the sandbox child)."""
        for method, args, kwargs in self._setup:
            getattr(world, method)(*args, **kwargs)
        return world

    def run(self, fn: Callable[..., R], *args: Any) -> R:
        from daemonstore.kernel.sandbox import run_in_sandbox

        return run_in_sandbox(_in_kernel_world, self, fn, args)

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(
            f"KernelWorld has no {name!r} in the pytest process: a kernel world lives in the "
            "sandbox child, where the plugin runs a daemonstore_world test's whole body; "
            "elsewhere put the body in a function body(world) and call world.run(body)")


# ---- helpers -----------------------------------------------------------------------------------


def snapshot(host: Host, top: str = "/", *, skip: Sequence[str] = ()) -> dict[str, tuple]:
    """Everything below ``top`` in the current namespace, for "nothing was touched" checks:
    path -> (type bits, mode, uid, gid, content) with a file's bytes or a symlink's target.
    Symlinks are never followed; ``skip`` prunes those paths and everything below them."""
    out: dict[str, tuple] = {}
    pending = [top]
    while pending:
        path = pending.pop()
        if any(path == s or path.startswith(s.rstrip("/") + "/") for s in skip):
            continue
        st = host.lstat(path, safe=True)
        content: object = None
        if st.is_symlink:
            content = host.readlink(path)
        elif st.is_file:
            content = host.read_file(path, safe=True)
        elif st.is_dir:
            pending.extend(_join(path, name) for name in host.listdir(path, safe=True))
        out[path] = (st.mode & 0o170000, st.perm, st.uid, st.gid, content)
    return out


def _join(base: str, relpath: str) -> str:
    relpath = relpath.strip("/")
    if not relpath:
        return base
    return f"{base.rstrip('/')}/{relpath}"


def _vault_mounts(host: Host, user_hash: str) -> list[tuple[str, str]]:
    """(dev, root) of every mount at the user's vault mount point (a persistent user's, or a
    guest's ephemeral one) in any namespace of the host: where the user's vault is mounted."""
    points = {paths.vault_mount(user_hash), paths.ephemeral_mount(user_hash)}
    return [(e.dev, e.root) for ns in host.namespaces()
            for e in mountinfo.parse(host.mountinfo(ns)) if e.mount_point in points]


def _is_dir(host: Host, path: str) -> bool:
    try:
        return host.stat(path, safe=True).is_dir
    except OSError:
        return False
