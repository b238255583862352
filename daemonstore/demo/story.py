"""``daemonstore demo``: the daemon store end to end, narrated (orchestration layer: drives startup,
the jail planner, session and store_check on one Host; the model by default, the real kernel in a
``run_in_sandbox`` child with ``kernel=True``).

The story (each step: a heading, what happened, and a table of what every namespace sees):

1. templates for three daemons (made-up uids, written into the sandbox's /etc/passwd);
2. startup makes their stores shared self-binds;
3. each daemon is jailed with ``daemonstore jail``'s planner and the documented recipe
   (``jail.store_jail_argv``: ``-v -Kslave -k tmpfs,/run,... -k <store>,...,MS_BIND|MS_REC``);
4. alice signs in; 5. each daemon writes through its store, and the file lands in her vault;
6. alice signs out: her stores vanish in every daemon's namespace;
7. bob signs in (an empty store: alice's files are not there);
8. bob signs out while biod keeps a file open in his store: the holder is reported, the busy
   store is flushed and detached lazily, biod keeps its file on a mount nobody else sees until
   it closes it (``status`` says so meanwhile);
9. a guest signs in and out (ephemeral vault in mnt_chrome; a signer that cannot -- say a
   cryptohome_sim without guests -- is reported as such, never simulated);
10. alice signs in again: her files are back; then ``status`` and the propagation picture.

Whether a store is there is always asked the way a daemon should ask: ``store_check`` in the
daemon's own namespace (the mount reached at the path is the user's vault directory), never
"does the directory exist". The model run is deterministic (seeded salt, so the hashes and the
output are the same every time); the kernel run uses the same seed, so the hashes match too.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

from daemonstore import paths
from daemonstore.daemon import store_check
from daemonstore.demo.signers import GuestUnavailable, InProcess, Signer
from daemonstore.host import Host
from daemonstore.report import graph, status
from daemonstore.session import holders
from daemonstore.world import DaemonView, World

__all__ = ["DAEMONS", "DemoDaemon", "DemoResult", "GRAPH_PREFIXES", "USERS", "render",
           "run_demo"]


@dataclass(frozen=True)
class DemoDaemon:
    name: str
    uid: int
    mode: int
    #: a file it keeps per user, and what it writes there
    file: str
    data: bytes
    #: also writes a file into its cache store (``/run/daemon-store-cache/<d>/<hash>``)
    cache_file: str = ""
    #: the template's group, when it is not the daemon's own (crash: crash-user-access)
    gid: int | None = None


#: made-up system users in ChromeOS's daemon range 20100-29999 (not its real ids: boot/plan.py
#: accepts only system uids as template owners); install_daemon writes them into /etc/passwd
DAEMONS = (
    DemoDaemon("biod", 29282, 0o700, "fingerprints.dat", b"alice's fingerprint templates"),
    DemoDaemon("shill", 29104, 0o700, "wifi.profile", b"ssid=home psk=..."),
    # as ChromeOS installs it: 3770 crash:crash-user-access (setgid, sticky, group-writable)
    DemoDaemon("crash", 29150, 0o3770, "report.meta", b"crash report #1",
               cache_file="minidump.dmp", gid=29151),
)
USERS = ("alice@example.com", "bob@example.com")
SEED = 2024
#: the mounts the propagation picture shows (stores, and the vaults they come from)
GRAPH_PREFIXES = (paths.RUN_DAEMON_STORE, paths.RUN_DAEMON_STORE_CACHE, paths.SHADOW)


@dataclass
class DemoResult:
    """The narration (``lines``), the facts a test asserts, and the final mountinfo of every
    namespace (for the picture). Plain data: it crosses the sandbox child's pipe."""

    backend: str
    lines: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    namespaces: dict[str, str] = field(default_factory=dict)
    #: user hash -> short name, for display
    aliases: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def picture(self) -> graph.Picture:
        return graph.build_picture(self.namespaces, prefixes=GRAPH_PREFIXES)


# ---- the story -----------------------------------------------------------------------------


class Story:
    """One run of the demo on one World; each ``step_*`` narrates into ``out.lines``."""

    def __init__(self, world: World, signer: Signer | None = None) -> None:
        self.world = world
        self.signer = signer or InProcess(world)
        self.out = DemoResult(world.kind)
        self.views: dict[str, DaemonView] = {}
        self.users: list[str] = []

    # -- narration helpers
    def say(self, text: str = "") -> None:
        self.out.lines.append(text)

    def heading(self, number: int, title: str) -> None:
        self.say()
        self.say(f"== {number}. {title} ==")

    def short(self, text: str) -> str:
        for user_hash, name in self.out.aliases.items():
            text = text.replace(user_hash, f"<{name}>")
        return text

    def name(self, user: str) -> str:
        return "guest" if user == paths.GUEST_USER else user.split("@")[0]

    def table(self) -> None:
        """Per namespace and daemon: which users' stores are really mounted there."""
        host, world = self.world.host, self.world
        rows = []
        where = [(world.namespace, d.name) for d in DAEMONS]
        where += [(v.namespace, d) for d, v in self.views.items()]
        for ns, daemon in where:
            with world.in_namespace(ns):
                cells = [_cell(host, daemon, world.hash_of(u)) for u in self.users]
            rows.append((ns, daemon, *cells))
        header = ("NAMESPACE", "DAEMON", *(self.name(u) for u in self.users))
        self.say("  what each namespace sees (store_check, in that namespace):")
        self.out.lines.extend(status.format_table(header, rows, "    "))

    # -- steps
    def step_templates(self) -> None:
        self.heading(1, "templates: /etc/daemon-store/<d> (what each daemon's ebuild installs)")
        host = self.world.host
        for d in DAEMONS:
            self.world.install_daemon(d.name, d.uid, d.uid if d.gid is None else d.gid,
                                      d.mode, startup=False)
        with self.world.in_namespace(self.world.namespace):  # shown as read back, not as meant
            passwd = host.read_file("/etc/passwd", safe=True).decode().splitlines()
            for d in DAEMONS:
                st = host.lstat(paths.template(d.name), safe=True)
                line = next((x for x in passwd if x.split(":")[2:3] == [str(st.uid)]), "-")
                self.say(f"  {paths.template(d.name):<24} {st.perm:04o} uid {st.uid} "
                         f"gid {st.gid}  /etc/passwd: {line}")

    def step_startup(self) -> None:
        self.heading(2, "startup: each store bound onto itself and made shared")
        problems = self.world.run_startup()
        report = status.status_of(self.world.host)
        self.say("  " + ("startup: all stores ready" if not problems
                         else "startup problems: " + "; ".join(problems)))
        rows = [(s.path, s.state, s.group or "-") for s in report.stores]
        self.out.lines.extend(status.format_table(("STORE", "STATE", "PEER GROUP"), rows, "    "))
        self.out.facts["startup_problems"] = problems

    def step_jail(self) -> None:
        self.heading(3, "each daemon starts in its own mount namespace (daemonstore jail)")
        for d in DAEMONS:
            self.views[d.name] = self.world.daemon(d.name)
        first = self.views[DAEMONS[0].name]
        argv = _argv_lines(first.jail_argv)
        argv[-1] += f" -- {first.daemon}"
        self.say(f"  $ daemonstore jail {argv[0]} \\")
        self.out.lines.extend(f"        {a}" + (" \\" if i < len(argv) - 2 else "")
                              for i, a in enumerate(argv[1:]))
        self.say(f"  {' and '.join(d.name for d in DAEMONS[1:])}: the same recipe with their "
                 f"own stores. The plan for {first.daemon} (the same steps on model and kernel):")
        self.out.lines.extend(f"    {s.to_line()}" for s in first.steps)
        host = self.world.host
        reach = status.status_of(host).reach
        for view in self.views.values():
            with self.world.in_namespace(view.namespace):
                seen = host.listdir(paths.RUN_DAEMON_STORE, safe=True)
            mine = [f"{r.store} {r.relation}" for r in reach if r.namespace == view.namespace]
            self.say(f"  {view.namespace}: /run/daemon-store holds {', '.join(seen)} only; "
                     + "; ".join(mine))

    def sign_in(self, number: int, user: str, title: str = "") -> None:
        user_hash = self.world.hash_of(user)
        self.out.aliases.setdefault(user_hash, self.name(user))
        if user not in self.users:
            self.users.append(user)
        self.heading(number, title or f"{self.name(user)} signs in")
        mounts = self.signer.login(user)
        self.say(f"  {self.signer.notes[-1]}")
        self.say(f"  {user} -> hash {user_hash} (SHA-1 of salt + name); {mounts} mounts, "
                 f"among them /run/daemon-store*/<d>/<{self.name(user)}>")
        self.table()

    def sign_out(self, number: int, user: str) -> None:
        self.heading(number, f"{self.name(user)} signs out")
        unmounted = self.signer.logout(user)
        self.say(f"  {self.signer.notes[-1]}")
        self.say(f"  {unmounted} mounts unmounted in the root namespace; the umounts "
                 "propagate to every slave copy")
        self.table()

    def step_write(self, number: int, user: str) -> None:
        self.heading(number, f"each daemon writes through its store; the files land in "
                             f"{self.name(user)}'s vault")
        landed: dict[str, bool] = {}
        for d in DAEMONS:
            for cache, fname in ((False, d.file), (True, d.cache_file)):
                if fname:
                    landed[d.name + ("-cache" if cache else "")] = self.write(d, user, fname,
                                                                              cache)
        self.out.facts["landed_in_vault"] = landed

    def write(self, d: DemoDaemon, user: str, fname: str, cache: bool) -> bool:
        """As a daemon should: ask store_check in its own namespace, then write; then read
        the file back from the vault at rest, in the root namespace."""
        view = self.views[d.name]
        with self.world.in_namespace(view.namespace):
            store_check.require_store(self.world.host, d.name, self.world.hash_of(user),
                                      cache=cache)
        view.write(user, fname, d.data, cache=cache)
        back = self.world.read_vault(user, d.name, fname, cache=cache)
        at_rest = self.world.vault_path(user, d.name, fname, cache=cache)
        self.say(f"  {view.namespace} writes {self.short(view.path(user, fname, cache=cache))} "
                 f"({len(d.data)} bytes)")
        self.say(f"    -> {self.short(at_rest)} reads back "
                 f"{'the same bytes' if back == d.data else 'OTHER bytes'}")
        return back == d.data

    def after_sign_out(self, user: str) -> None:
        """Nothing of ``user`` is reachable in any daemon's namespace; the vault keeps it all."""
        left: dict[str, list[str]] = {}
        for d, view in self.views.items():
            left[view.namespace] = [c for c in ("store", "cache")
                                    if view.sees_store(user, cache=c == "cache")]
            with self.world.in_namespace(view.namespace):
                st = store_check.store_status(self.world.host, d, self.world.hash_of(user))
            self.say(f"  {view.namespace}: store_check says {self.short(st.path)} "
                     f"{'is mounted' if st.mounted else 'is not mounted: ' + st.reason}")
        self.say("  (the empty directories stay, as on ChromeOS: existence proves nothing, a "
                 "daemon asks store_check)")
        kept = {d.name: self.world.read_vault(user, d.name, d.file) == d.data for d in DAEMONS}
        self.say(f"  the vault keeps her files at rest: "
                 f"{', '.join(k for k, ok in kept.items() if ok)}")
        self.out.facts["visible_after_sign_out"] = left

    def step_busy_sign_out(self, number: int, user: str) -> None:
        """A daemon holds a file in the user's store at sign-out (session/holders.py): what
        sign-out reports and does, and what the holder sees afterwards."""
        self.heading(number, f"{self.name(user)} signs out while biod keeps a file open in "
                             "the store")
        world, d = self.world, DAEMONS[0]
        view, user_hash = self.views[d.name], world.hash_of(user)
        view.write(user, d.file, f"{self.name(user)}'s templates".encode())
        name = view.hold(user, d.file)
        self.say(f"  {view.namespace} opens {self.short(view.path(user, d.file))} and keeps it "
                 "open (a daemon that does not watch for SessionStateChanged)")
        with world.in_namespace(world.namespace):
            pins = holders.user_pins(world.host, user_hash)
        self.say("  sign-out first looks for holders (process_killer --mount_holders would "
                 "end them; this sign-out does not):")
        self.out.lines.extend(f"    - {self.short(p.describe())}" for p in pins)
        removed = self.signer.logout(user)
        self.say(f"  {self.name(user)} signs out: {removed} mounts ({self.signer.notes[-1]}); "
                 "the store's umount propagates to biod's copy, which the open file pins: "
                 "EBUSY, so it was flushed (syncfs) and detached lazily (MNT_DETACH)")
        with world.in_namespace(world.namespace):
            held = status.status_of(world.host).held.get(user_hash, [])
        [mine] = [f for f in view.holds() if f.holder == name]
        sees = view.sees_store(user)
        self.say(f"  status: {len(held)} holder(s) keep a detached store of "
                 f"{self.name(user)} alive")
        self.say(f"  what biod sees: its file is still open "
                 f"({'attached' if mine.attached else 'on a detached mount'}), but "
                 f"{self.short(view.path(user))} {'still' if sees else 'no longer'} leads to "
                 f"{self.name(user)}'s vault; through the open file it still reads and writes "
                 f"{self.name(user)}'s data after the sign-out")
        view.release(name)
        with world.in_namespace(world.namespace):
            after = status.status_of(world.host).held
        self.say(f"  biod closes the file: the detached store is freed "
                 f"({'status still reports it' if after else 'status reports nothing held'})")
        self.out.facts["busy_sign_out"] = {"holders": len(pins), "held_after": len(held),
                                           "holder_attached": mine.attached,
                                           "holder_sees_store": sees,
                                           "held_after_release": len(after)}

    def step_guest(self, number: int) -> None:
        """A guest's ephemeral session, if the signer can make one (never simulated here)."""
        self.heading(number, "a guest signs in (ephemeral vault, mounted inside mnt_chrome)")
        user = paths.GUEST_USER
        user_hash = self.world.hash_of(user)
        try:
            mounts = self.signer.login_guest(user_hash)
        except GuestUnavailable as exc:
            self.say(f"  not available in this build: {exc}; this step is skipped, not "
                     "simulated")
            self.out.facts["guest"] = "not available"
            return
        self.out.aliases.setdefault(user_hash, "guest")
        self.users.append(user)
        self.say(f"  {self.signer.notes[-1]}")
        self.say(f"  {user} -> hash {user_hash}; {mounts} mounts, made in Chrome's namespace "
                 "mnt_chrome (its store copies are peers: the binds reach the root namespace)")
        self.table()
        seen = self.seen_in_daemons(user_hash)
        view = self.views[DAEMONS[0].name]
        view.write(user, "guest.txt", b"guest data")
        self.say(f"  {view.namespace} writes {self.short(view.path(user, 'guest.txt'))}")
        removed = self.signer.logout_guest(user_hash)
        left = self.seen_in_daemons(user_hash)
        with self.world.in_namespace(view.namespace):
            file_left = self.world.host.exists(view.path(user, "guest.txt"))
        self.say(f"  the guest signs out: {removed} mounts unmounted ({self.signer.notes[-1]}); "
                 f"its stores are {'STILL' if any(left.values()) else 'gone'} in every daemon's "
                 f"namespace and {view.namespace} finds "
                 f"{'the file STILL there' if file_left else 'no trace of the file'}")
        self.out.facts["guest"] = {"seen_while_signed_in": seen, "seen_after": left,
                                   "file_left": file_left}

    def seen_in_daemons(self, user_hash: str) -> dict[str, str]:
        """Daemon namespace -> the user's stores store_check finds mounted there."""
        seen = {}
        for d, view in self.views.items():
            with self.world.in_namespace(view.namespace):
                seen[view.namespace] = _cell(self.world.host, d, user_hash)
        return {ns: cell for ns, cell in seen.items() if cell != "-"}

    def step_back(self, number: int, user: str) -> None:
        self.sign_in(number, user, f"{self.name(user)} signs in again: her files are back")
        back: dict[str, bool] = {}
        for d in DAEMONS:
            got = self.views[d.name].read(user, d.file)
            back[d.name] = got == d.data
            self.say(f"  {self.views[d.name].namespace} reads "
                     f"{self.short(self.views[d.name].path(user, d.file))}: {got.decode()!r}")
        self.out.facts["files_back"] = back

    def step_status(self, number: int) -> None:
        self.heading(number, "daemonstore status: who receives what, and problems")
        report = status.status_of(self.world.host)
        rows = [(r.namespace, r.store, r.relation,
                 ",".join(self.out.aliases.get(h, h[:12]) for h in r.users) or "-")
                for r in report.reach]
        self.out.lines.extend(status.format_table(("NAMESPACE", "STORE", "RECEIVES FROM ROOT",
                                                   "USERS"), rows, "    "))
        self.say(f"  problems: {len(report.problems) or 'none'}")
        self.out.lines.extend(f"    - {self.short(p)}" for p in report.problems)
        self.out.facts["problems"] = report.problems

    def finish(self) -> DemoResult:
        self.out.namespaces = status.host_namespaces(self.world.host)
        return self.out


def _cell(host: Host, daemon: str, user_hash: str) -> str:
    got = [kind for kind, cache in (("store", False), ("cache", True))
           if store_check.store_status(host, daemon, user_hash, cache=cache).mounted]
    return "+".join(got) or "-"


def _argv_lines(argv: list[str]) -> list[str]:
    """``-k SPEC`` pairs on lines of their own, SPECs quoted for a shell (``|``)."""
    lines: list[str] = []
    for arg in argv:
        if lines and lines[-1] == "-k":
            lines[-1] += f" '{arg}'"
        elif arg == "-k" or not lines:
            lines.append(arg)
        else:
            lines[-1] += f" {arg}"
    return lines


def tell(world: World, signer: Signer | None = None) -> DemoResult:
    """Run the whole story on ``world`` (a fresh one)."""
    start = time.monotonic()
    story = Story(world, signer)
    alice, bob = USERS
    story.step_templates()
    story.step_startup()
    story.step_jail()
    story.sign_in(4, alice)
    story.step_write(5, alice)
    story.sign_out(6, alice)
    story.after_sign_out(alice)
    story.sign_in(7, bob)
    story.say(f"  {story.views['biod'].namespace} lists bob's store: "
              f"{story.views['biod'].listdir(bob) or 'empty'} (alice's files are not there)")
    story.step_busy_sign_out(8, bob)
    story.step_guest(9)
    story.step_back(10, alice)
    story.step_status(11)
    result = story.finish()
    result.seconds = time.monotonic() - start
    return result


def _tell_on(world: World, bus_address: str | None) -> DemoResult:
    if bus_address is None:
        return tell(world)
    from daemonstore.demo.bus import over_bus

    with over_bus(world, bus_address) as signer:
        return tell(world, signer)


def _on_kernel(host: Host, bus_address: str | None) -> DemoResult:
    return _tell_on(World(host, random_bytes=random.Random(SEED).randbytes), bus_address)


def run_demo(*, kernel: bool = False, bus: bool = False) -> DemoResult:
    """The story on a fresh seeded model World or, ``kernel``, in a forked ``run_in_sandbox``
    child (private mount namespace, tmpfs sandbox; needs root). ``bus``: sign-ins go over a
    private D-Bus bus to cryptohome_sim (started here, stopped by its pid afterwards)."""
    start = time.monotonic()
    if bus:
        from daemonstore.demo.bus import private_bus

        with private_bus() as address:
            result = _run(kernel, address)
    else:
        result = _run(kernel, None)
    result.seconds = time.monotonic() - start
    return result


def _run(kernel: bool, bus_address: str | None) -> DemoResult:
    if kernel:
        from daemonstore.kernel.sandbox import run_in_sandbox

        return run_in_sandbox(_on_kernel, bus_address)
    return _tell_on(World.model(seed=SEED), bus_address)


def render(result: DemoResult) -> list[str]:
    """The narration plus the propagation picture (the picture is drawn here, from the final
    mountinfo, so the kernel child only has to send plain data)."""
    where = ("the model (pure Python: no root, no mounts)" if result.backend == "model"
             else "the real kernel (a tmpfs sandbox in a private mount namespace of a forked "
                  "child)")
    lines = [f"daemonstore demo on {where}"]
    lines += result.lines
    lines += ["", "== 12. the propagation picture (stores and vaults, visible mounts) =="]
    lines += graph.render_text(result.picture(), result.aliases).splitlines()
    return lines
