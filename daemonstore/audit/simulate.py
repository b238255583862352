"""``audit --simulate``: build a jail on the pure model and watch a sign-in (model layer only).

A booted world (``world.World`` on a ModelHost: the daemon's template installed and startup
run, so ``/run/daemon-store{,-cache}/<d>`` are shared self-binds) gets the jail the way
``daemonstore jail`` builds it (``jail.plan_jail`` / ``jail.apply_jail``: the same JailSpec the
audit parsed). Then:

1. before sign-in: what the daemon sees in its store;
2. after sign-in (``session.sign_in`` through the World): does ``<store>/<hash>`` in the jail
   lead into the user's vault? -> "sign-in propagates" or "never sees sign-ins";
3. a second jail started after the sign-in (a daemon restarted mid-session): is the signed-in
   user there? (``MS_REC`` copies existing per-user mounts; docs/chromeos.md §7 item 2);
4. the daemon mounts a tmpfs below each store bind and on its ``/run``: which of them appear in
   the root namespace ("leak out"; none with slave propagation).

Only what the model can express is simulated: the new mount namespace and its propagation, tmpfs
mounts and the store binds. Other mounts (``-b /proc``...), ``-P``/``--profile``'s pivot_root
and the other namespaces are left out and listed; ``-V`` (entering an existing namespace) is not
simulated at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from daemonstore import mountinfo, paths
from daemonstore.audit.rules import real_problems, store_daemons
from daemonstore.host import Stat
from daemonstore.jail.plan import apply_jail, plan_jail
from daemonstore.jail.spec import JailSpec
from daemonstore.world import World

PROPAGATES = "sign-in propagates"
NEVER = "never sees sign-ins"
USER = "alice@example.com"
PROBE = "audit-probe"


@dataclass
class Simulation:
    """The before/after of one jail; ``verdict`` is PROPAGATES, NEVER, or "not simulated"."""

    verdict: str
    lines: list[str] = field(default_factory=list)
    leaks: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {"verdict": self.verdict, "lines": self.lines, "leaks": self.leaks}


def simulate(spec: JailSpec) -> Simulation:
    """Build ``spec``'s jail on the model around a sign-in (module docstring)."""
    daemons = store_daemons(spec)
    if not daemons:
        return Simulation("not simulated: no daemon-store bind")
    bad = [d for d in daemons if not paths.is_daemon_name(d)]
    if bad:
        return Simulation(f"not simulated: store name {bad[0]!r} is not a daemon name "
                          "(a variable?)")
    refused = real_problems(spec)
    if refused:
        # minijail0 exits before making anything: the daemon never runs, let alone sees a user
        return Simulation(NEVER, ["minijail0 refuses to start: "
                                  + "; ".join(f"{p.arg}: {p.reason}" for p in refused)])
    if spec.problems:
        return Simulation("not simulated: a value depends on a variable "
                          f"({spec.problems[0].arg})")
    if not spec.new_mount_ns:
        return Simulation("not simulated: no new mount namespace (-V is not modelled)")
    kept = tuple(m for m in spec.mounts if (m.is_bind and _under_store(m.src))
                 or (not m.is_bind and m.fstype == "tmpfs"))
    left_out = [m.to_arg() for m in spec.mounts if m not in kept]
    sim_spec = replace(spec, mounts=kept, enter=None)
    world = World.model(seed=0)
    for i, daemon in enumerate(daemons):
        world.install_daemon(daemon, 20100 + i, 20100 + i, 0o700)
    out = Simulation(NEVER)
    out.lines.append(f"jail on the model: new mount namespace, propagation "
                     f"{spec.remount_mode or 'unchanged'}; " + ", ".join(
                         _short(m.to_arg()) for m in kept))
    if left_out or spec.pivot_root:
        skipped = left_out + ([f"pivot_root {spec.pivot_root}"] if spec.pivot_root else [])
        out.lines.append("not modelled: " + ", ".join(skipped))
    stores = [m.dest for m in kept if m.is_bind]
    error = _build(world, sim_spec, "jail")
    if error:
        out.lines.append(f"the jail cannot be built: {error} (minijail0 would fail too)")
        return out
    out.lines.append("before sign-in: " + _view(world, "jail", stores, None))
    user_hash = world.login(USER)
    after = _view(world, "jail", stores, user_hash)
    seen = _sees_all(world, "jail", stores, user_hash)
    out.verdict = PROPAGATES if seen else NEVER
    out.lines.append(f"after sign-in:  {after}  -> {out.verdict}")
    if _build(world, sim_spec, "restarted") is None:
        late = _sees_all(world, "restarted", stores, user_hash)
        out.lines.append("started after the sign-in: " + (
            "the signed-in user's store is there" if late
            else "the signed-in user's store is missing (no MS_REC?)"))
    out.leaks = _leaks(world, "jail", stores)
    out.lines.append("the daemon's own mounts leak out: "
                     + (", ".join(out.leaks) if out.leaks else "none"))
    return out


def _under_store(path: str) -> bool:
    return any(path.rstrip("/") == base or path.startswith(base + "/")
               for base in paths.STORE_BASES)


def _short(arg: str) -> str:
    return arg.replace(",none,MS_BIND|MS_REC", " (rbind)").replace(",none,MS_BIND", " (bind)")


def _build(world: World, spec: JailSpec, name: str) -> str | None:
    """Apply the jail plan as namespace ``name``; the error text if a step fails."""
    with world.in_namespace(world.namespace):
        try:
            apply_jail(world.host, plan_jail(spec, name))
        except OSError as exc:
            return str(exc)
    return None


def _stat(world: World, ns: str, path: str) -> Stat | None:
    with world.in_namespace(ns):
        try:
            return world.host.stat(path)
        except OSError:
            return None


def _sees(world: World, ns: str, store: str, user_hash: str) -> bool:
    """Does ``<store>/<hash>`` in ``ns`` lead into the user's vault (not just exist)?"""
    daemon = store.rstrip("/").rsplit("/", 1)[1]
    cache = store.startswith(paths.RUN_DAEMON_STORE_CACHE + "/")
    want = _stat(world, world.namespace, world.vault_path(user_hash, daemon, cache=cache))
    got = _stat(world, ns, f"{store}/{user_hash}")
    return want is not None and got is not None and (got.dev, got.ino) == (want.dev, want.ino)


def _sees_all(world: World, ns: str, stores: list[str], user_hash: str) -> bool:
    return bool(stores) and all(_sees(world, ns, s, user_hash) for s in stores)


def _view(world: World, ns: str, stores: list[str], user_hash: str | None) -> str:
    parts = []
    for store in stores:
        if user_hash is None:
            with world.in_namespace(ns):
                try:
                    entries = world.host.listdir(store)
                except OSError as exc:
                    entries = [f"<{exc.strerror}>"]
            parts.append(f"{store}: " + ("no user store" if not entries else ", ".join(entries)))
        else:
            ok = _sees(world, ns, store, user_hash)
            parts.append(f"{store}/<hash>: " + ("the user's store" if ok else "missing"))
    return "; ".join(parts)


def _leaks(world: World, ns: str, stores: list[str]) -> list[str]:
    """Mount a tmpfs below each store bind and on /run inside ``ns``; the ones the root
    namespace then has. A probe the jail cannot even make (read-only bind) is skipped."""
    host = world.host
    probes = [f"{s}/{PROBE}" for s in stores] + [f"/run/{PROBE}"]
    with world.in_namespace(ns):
        for path in probes:
            try:
                host.mkdir(path, 0o755, parents=True)
                host.mount_tmpfs(f"{PROBE}:{path}", path)
            except OSError:
                continue
    outside = mountinfo.parse(host.mountinfo(world.namespace))
    return sorted({e.mount_point for e in outside if e.source.startswith(PROBE + ":")})
