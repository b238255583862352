"""Attacks on the real kernel, as root, in a private mount namespace; every victim is inside the
sandbox (a fake /etc/passwd and /etc/shadow, a canary directory). Each attack asserts: a clear
error naming the path (or, for tricks that are harmless by design, the harmless outcome),
nothing mounted where it should not be (every namespace's mounts and their options), the victims
unchanged -- and conftest.py checks that nothing outside the sandbox changed.

Where a user or a daemon can write (SECURITY.md, "Threat model"):

* the vault (the user, and daemons through their own store): ``root/<d>``, ``root/.cache/<d>``,
  ``root``, ``root/.cache``, ``user``, the vault itself, its mount point;
* ``/home/chronos`` (owned by chronos, uid 1000): ``u-<H>`` and ``user``;
* ``/run/daemon-store[-cache]/<d>/<H>`` (a daemon running as root in its jail);

and in each of them: a symlink (to /etc, to the canary, to /etc/shadow), a regular file, a fifo,
a device node, a hard link to /etc/shadow. Then bind tricks, odd names, bad hashes, a template
replaced by a symlink, device nodes where files are read, and writes before mount.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Any

import pytest

from daemonstore import mountinfo, paths, session
from daemonstore.boot import run_startup
from daemonstore.report import status
from daemonstore.session.repair import plan_repair, repair
from daemonstore.world import World, kernel_world
from tests.hardening.conftest import Figures
from tests.hardening.util import (
    KINDS,
    SHADOW_VICTIM,
    aside,
    guarded,
    mount_state,
    plant,
    real,
    restore,
    setup_victims,
    victims,
)

pytestmark = pytest.mark.kernel

FOO = ("foo", 20100, 20100, 0o700)
BAR = ("bar", 20101, 20102, 0o750)

#: (label, path with {h} for the user hash) of every place a user or daemon can write
PLACES = [
    ("vault root/<d>", "/home/.shadow/{h}/vault/root/foo"),
    ("vault root/.cache/<d>", "/home/.shadow/{h}/vault/root/.cache/foo"),
    ("vault root", "/home/.shadow/{h}/vault/root"),
    ("vault root/.cache", "/home/.shadow/{h}/vault/root/.cache"),
    ("vault user", "/home/.shadow/{h}/vault/user"),
    ("vault itself", "/home/.shadow/{h}/vault"),
    ("vault mount point", "/home/.shadow/{h}/mount"),
    ("/home/chronos/u-<H>", "/home/chronos/u-{h}"),
    ("/home/chronos/user", "/home/chronos/user"),
    ("store target", "/run/daemon-store/foo/{h}"),
    ("cache store target", "/run/daemon-store-cache/foo/{h}"),
]

Record = tuple[str, bool, int, str]  # (attack, refused cleanly, leaks, detail)


def _prepared(world: World) -> tuple[Any, str]:
    """alice signed in once (her vault holds data), signed out; foo's daemon running."""
    setup_victims(world)
    view = world.daemon("foo")
    h = world.login("alice")
    view.write("alice", "precious", b"alice's data")
    view.write("alice", "cached", b"cache", cache=True)
    world.logout("alice")
    return view, h


def _attempt(world: World, label: str, want_path: str | None,
             want_errnos: tuple[int, ...]) -> Record:
    """Sign alice in with something planted: refused with a named path, nothing changed."""
    before = (mount_state(world.host), victims(world))
    try:
        world.login("alice")
    except session.SignInError as exc:
        named = want_path is None or (exc.path == want_path and want_path in str(exc))
        ok_errno = exc.errno in want_errnos
        detail = f"{errno.errorcode.get(exc.errno or 0)} {exc.path}"
        # refused at plan time (nothing done), or at a step with a clean rollback
        clean_error = named and ok_errno and (exc.step is None or exc.rollback == [])
    else:
        world.logout("alice")
        clean_error, detail = False, "signed in"
    unchanged = (mount_state(world.host), victims(world)) == before
    return (label, bool(clean_error and unchanged), 0 if unchanged else 1, detail)


def _attempt_replaced(world: World, label: str, path: str) -> Record:
    """A non-directory planted at a mount point in chronos-owned /home/chronos: sign-in removes
    it (never following it) and signs alice in there; nothing outside changes; sign-out leaves
    the mount table as before (SECURITY.md, "Planted mount points in /home/chronos")."""
    host = world.host
    before = (mount_state(host), victims(world))
    try:
        world.login("alice", first_user=True)
    except session.SignInError as exc:
        return (label, False, 0, f"refused: {exc}")
    st = host.stat(path, safe=True)
    mine = st.is_dir and host.stat(f"{paths.vault_mount(world.hash_of('alice'))}/user",
                                   safe=True).ino == st.ino
    warned = any(path in w and "removed, never followed" in w
                 for w in world.sessions["alice"].warnings)
    world.logout("alice")
    unchanged = (mount_state(host), victims(world)) == before
    ok = mine and warned and unchanged and not os.path.lexists(real(world, path))
    return (label, ok, 0 if unchanged else 1, f"home there {mine}, warned {warned}")


def _places_body(world: World) -> list[Record]:
    view, h = _prepared(world)
    records = []
    for label, template in PLACES:
        path = template.format(h=h)
        for kind in KINDS:
            moved = aside(world, path)
            try:
                plant(world, path, kind)
            except OSError as exc:  # a hard link cannot cross a mount (the stores): no attack
                assert exc.errno == errno.EXDEV and kind.startswith("hardlink"), exc
                restore(world, path, moved)
                continue
            want = (errno.ELOOP,) if kind.startswith("symlink") else (errno.ENOTDIR,)
            if label.startswith("/home/chronos/"):  # user-owned: replaced, not refused
                records.append(_attempt_replaced(world, f"{label}: {kind} replaced", path))
            else:
                records.append(_attempt(world, f"{label}: {kind}", path, want))
            restore(world, path, moved)
    # with everything put back, alice signs in again and her data is intact
    world.login("alice")
    ok = (view.read("alice", "precious") == b"alice's data"
          and view.read("alice", "cached", cache=True) == b"cache")
    records.append(("after all: data intact, sign-in works", ok, 0 if ok else 1, ""))
    return records


def _record(figures: Figures, records: list[Record]) -> None:
    figures.add(attacks=len(records), attacks_refused=sum(1 for r in records if r[1]),
                attack_leaks=sum(r[2] for r in records))
    bad = [r for r in records if not r[1]]
    assert bad == [], bad


def test_planted_entries_at_every_user_controlled_path(figures: Figures) -> None:
    records = kernel_world(guarded(_places_body), daemons=[FOO])
    # every kind at every place, but for hard links across a mount (the two store targets)
    assert len(records) == len(PLACES) * len(KINDS) - 2 + 1
    _record(figures, records)


# ---- hard links and device nodes inside an accepted store ---------------------------------------


def _inside_body(world: World) -> list[Record]:
    """Entries *inside* the daemon's directory are the daemon's business: sign-in never chowns,
    chmods or opens them. A hard link to /etc/shadow and a device node in root/foo survive a
    sign-in untouched (owner, mode, content of the victim), and safe access refuses them."""
    view, h = _prepared(world)
    src = f"/home/.shadow/{h}/vault/root/foo"
    os.link(real(world, SHADOW_VICTIM), real(world, f"{src}/shadow-link"))
    os.mknod(real(world, f"{src}/zero"), 0o666 | stat.S_IFCHR, os.makedev(1, 5))
    world.host.chmod(paths.template("foo"), 0o750)  # the next sign-in re-applies the template
    before = victims(world)
    world.login("alice")
    host = world.host
    target = paths.user_store("foo", h)
    records = [("sign-in with a hard link and a device in the store: victim untouched",
                victims(world) == before and host.stat(target, safe=True).perm == 0o750, 0,
                "")]
    for label, call, want in (
            ("safe chown of a hard link", lambda: host.chown(f"{target}/shadow-link", 20100,
                                                              20100, safe=True), errno.EPERM),
            ("safe chmod of a hard link", lambda: host.chmod(f"{target}/shadow-link", 0o666,
                                                              safe=True), errno.EPERM),
            ("safe chmod of a device node", lambda: host.chmod(f"{target}/zero", 0o600,
                                                                safe=True), errno.EPERM),
            ("safe read of a device node (/dev/zero's numbers)",
             lambda: host.read_file(f"{target}/zero", safe=True), errno.EACCES),
            ("safe write to a device node", lambda: host.write_file(f"{target}/zero", b"x",
                                                                     safe=True), errno.EACCES)):
        try:
            call()
        except OSError as exc:
            records.append((label, exc.errno == want and victims(world) == before, 0,
                            f"{errno.errorcode.get(exc.errno or 0)} {exc.strerror}"))
        else:
            records.append((label, False, 1, "allowed"))
    st = os.stat(real(world, SHADOW_VICTIM))
    records.append(("victim /etc/shadow keeps root 0600",
                    (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o600), 0, ""))
    return records


def test_hard_links_and_device_nodes_are_never_trusted(figures: Figures) -> None:
    _record(figures, kernel_world(guarded(_inside_body), daemons=[FOO]))


# ---- bind tricks --------------------------------------------------------------------------------


def _binds_body(world: World) -> list[Record]:
    view, h = _prepared(world)
    host = world.host
    records: list[Record] = []

    # 1. /etc bound onto the vault's backing root/foo: the vault is bound without MS_REC, so
    #    the trick does not come along; the daemon's store is the real directory
    backing = f"/home/.shadow/{h}/vault/root/foo"
    real_dir = host.lstat(backing, safe=True)
    host.bind("/etc", backing)
    before = victims(world)
    world.login("alice")
    seen = view.stat("alice")
    view.write("alice", "probe", b"x")
    ok = ((seen.dev, seen.ino) == (real_dir.dev, real_dir.ino) and victims(world) == before
          and not host.exists("/etc/probe"))
    records.append(("/etc bound on the vault's root/<d>: not carried into the store", ok,
                    0 if ok else 1, ""))
    world.logout("alice")
    host.umount(backing)

    # 2.-4. a mount already on a path sign-in must mount: refused, nothing stacked
    for label, path in (("tmpfs on the store target", paths.user_store("foo", h)),
                        ("/etc bound on /home/user/<H>", paths.home_user(h)),
                        ("/etc bound on /home/root/<H>", paths.home_root(h)),
                        ("tmpfs on the vault mount point", paths.vault_mount(h))):
        host.mkdir(path, 0o700, parents=True, safe=True)
        if label.startswith("tmpfs"):
            host.mount_tmpfs("trick", path)
        else:
            host.bind("/etc", path)
        records.append(_attempt(world, label, path, (errno.EBUSY,)))
        host.umount(path)
        if host.exists(path) and not host.listdir(path, safe=True):
            host.rmdir(path, safe=True)

    # 5. a foreign mount on /home/chronos/user: alice is not given it and it is not touched
    # (her sign-out removed the empty mount point: it is made again, as sign-in would)
    if not host.exists(paths.HOME_CHRONOS_USER):
        host.mkdir(paths.HOME_CHRONOS_USER, 0o755, safe=True)
    host.mount_tmpfs("foreign", paths.HOME_CHRONOS_USER)
    before = (victims(world), [e for e in mountinfo.parse(host.mountinfo())
                               if e.mount_point == paths.HOME_CHRONOS_USER])
    world.login("alice")
    out = world.logout("alice")
    after = (victims(world), [e for e in mountinfo.parse(host.mountinfo())
                              if e.mount_point == paths.HOME_CHRONOS_USER])
    ok = after == before and out.ok
    records.append(("foreign mount on /home/chronos/user: left alone", ok, 0 if ok else 1, ""))
    host.umount(paths.HOME_CHRONOS_USER)
    return records


def test_bind_tricks(figures: Figures) -> None:
    _record(figures, kernel_world(guarded(_binds_body), daemons=[FOO]))


# ---- names and hashes ---------------------------------------------------------------------------

ODD_DAEMONS = ["..", "a..b", ".hidden", "-rf", "with space", "new\nline", "caf\udcff",
               "x" * 256]
BAD_HASHES = ["../../../etc", "A" * 40, "0" * 39, "0" * 41, "g" * 40, "0" * 40 + "\n", "",
              "0" * 20 + "/" + "0" * 19]
ODD_USERS = ["../../etc/passwd", "a/b/../../c", "ALICE", "caf\u00e9@example.com"]


def _names_body(world: World) -> list[Record]:
    view, h = _prepared(world)
    host = world.host
    records: list[Record] = []
    # every path builder refuses them (what D-Bus InstallDaemon and the CLIs go through)
    for name in ODD_DAEMONS:
        refused = 0
        for build in (paths.template, paths.store, lambda n: paths.user_store(n, h),
                      lambda n: paths.vault_store(h, n)):
            try:
                build(name)
            except paths.BadName:
                refused += 1
        records.append((f"daemon name {name[:20]!r}: every path builder refuses it",
                        refused == 4, 0, ""))
    # and as directory names in /etc/daemon-store (all but '..', which names the parent, and
    # the one longer than NAME_MAX): skipped by startup with the name in the reason
    creatable = [n for n in ODD_DAEMONS if n != ".." and len(n) <= 255]
    for name in creatable:
        os.mkdir(real(world, f"{paths.ETC_DAEMON_STORE}/{name}"), 0o700)
    before = mount_state(host)
    _plan, report = run_startup(host)
    skipped = {s.path.rsplit("/", 1)[1] for s in report.skipped}
    stores = set(host.listdir(paths.RUN_DAEMON_STORE, safe=True))
    for name in creatable:
        ok = name in skipped and name not in stores
        records.append((f"template directory {name!r}: skipped by startup, no store", ok, 0,
                        ""))
    ok = mount_state(host) == before
    records.append(("startup with odd names: no mount made", ok, 0 if ok else 1, ""))
    # sign-in ignores them too (its own template enumeration), and mounts nothing odd
    world.login("alice")
    odd_mounts = [e.mount_point for e in mountinfo.parse(host.mountinfo())
                  if any(f"/{n}/" in e.mount_point + "/" for n in ODD_DAEMONS[:7])]
    records.append(("sign-in with odd template names: nothing mounted for them",
                    odd_mounts == [], len(odd_mounts), str(odd_mounts)))
    world.logout("alice")
    for name in creatable:
        os.rmdir(real(world, f"{paths.ETC_DAEMON_STORE}/{name}"))
    # hashes that are not 40 lowercase hex: refused before anything is read or changed
    before = (mount_state(host), victims(world))
    for bad in BAD_HASHES:
        for label, call in (("sign_in", session.sign_in), ("sign_out", session.sign_out),
                            ("plan_sign_in", session.plan_sign_in)):
            try:
                call(host, bad)
            except paths.BadName as exc:
                ok = repr(bad) in str(exc)
            else:
                ok = False
            records.append((f"{label}({bad!r})", ok, 0, ""))
    unchanged = (mount_state(host), victims(world)) == before
    records.append(("bad hashes: nothing changed", unchanged, 0 if unchanged else 1, ""))
    # user names are hashed, never used as paths: '..' or '/' in one is just bytes
    for user in ODD_USERS:
        uh = world.login(user)
        target = paths.user_store("foo", uh)
        ok = (paths.check_hash(uh) == uh and view.sees_store(user)
              and all(e.mount_point.count("/") <= 5 for e in mountinfo.parse(host.mountinfo())))
        world.logout(user)
        records.append((f"user name {user!r}: hashed to {uh[:8]}..., store {target[-12:]}",
                        ok and victims(world) == before[1], 0, ""))
    try:
        world.login("a\nb")
    except paths.BadName:
        records.append(("user name with a control character: refused", True, 0, ""))
    else:
        records.append(("user name with a control character: refused", False, 1, "accepted"))
    # entries under a store that are not hashes: repair leaves them alone and says so
    for odd in ("...", "ZZZZ", "0" * 39):
        os.mkdir(real(world, f"{paths.store('foo')}/{odd}"), 0o700)
    plan = plan_repair(host)
    kept = " ".join(plan.kept)
    ok = all(odd in kept for odd in ("...", "ZZZZ", "0" * 39)) and plan.empty
    records.append(("non-hash entries in a store: repair keeps them, reports them", ok, 0, kept))
    return records


def test_odd_names_and_bad_hashes(figures: Figures) -> None:
    _record(figures, kernel_world(guarded(_names_body), daemons=[FOO]))


# ---- templates, devices where files are read, writes before mount -----------------------------


def _templates_body(world: World) -> list[Record]:
    view, h = _prepared(world)
    host = world.host
    records: list[Record] = []
    # a template replaced by a symlink (to /etc, then to another template): skipped by startup
    # and by sign-in; the other daemon's store still works
    template = paths.template("bar")
    moved = aside(world, template)
    for target in ("/etc", paths.template("foo")):
        os.symlink(target, real(world, template))
        before = victims(world)
        _plan, report = run_startup(host)
        skipped = [s.reason for s in report.skipped if s.path == template]
        world.login("alice")
        got = [e.mount_point for e in mountinfo.parse(host.mountinfo())
               if e.mount_point.startswith("/run/daemon-store/bar/")]
        ok = (skipped == ["is a symlink; templates must be real directories"] and got == []
              and view.sees_store("alice") and victims(world) == before)
        records.append((f"template replaced by a symlink to {target}", ok, len(got), ""))
        world.logout("alice")
        os.unlink(real(world, template))
    restore(world, template, moved)
    # /etc/passwd as a device node (/dev/zero's numbers): startup does not read forever
    passwd_moved = aside(world, "/etc/passwd")
    os.mknod(real(world, "/etc/passwd"), 0o644 | stat.S_IFCHR, os.makedev(1, 5))
    try:
        _plan, report = run_startup(host)
        ok = any(s.path == template and "neither root nor a user" in s.reason
                 for s in report.skipped)
        records.append(("/etc/passwd is /dev/zero: not read, only root trusted", ok, 0,
                        "; ".join(s.line() for s in report.skipped)))
    except OSError as exc:
        records.append(("/etc/passwd is /dev/zero", False, 1, str(exc)))
    restore(world, "/etc/passwd", passwd_moved)
    # the salt as a device node: refused by safe reads and writes (EACCES), never opened
    salt_moved = aside(world, paths.SALT)
    os.mknod(real(world, paths.SALT), 0o644 | stat.S_IFCHR, os.makedev(1, 5))
    for label, call in (("read", lambda: host.read_file(paths.SALT, safe=True)),
                        ("write", lambda: host.write_file(paths.SALT, b"x", safe=True))):
        try:
            call()
        except OSError as exc:
            records.append((f"salt is /dev/zero: safe {label} refused", exc.errno == errno.EACCES,
                            0, exc.strerror or ""))
        else:
            records.append((f"salt is /dev/zero: safe {label} refused", False, 1, "allowed"))
    restore(world, paths.SALT, salt_moved)
    # a store path that is a device node at boot (a daemon installed since): blocked by
    # startup, neither followed nor opened nor removed
    world.install_daemon("baz", 20103, 20103, 0o700, startup=False)
    store = paths.store("baz")
    os.mknod(real(world, store), 0o644 | stat.S_IFCHR, os.makedev(1, 3))
    _plan, report = run_startup(host)
    blocked = [r for r in report.problems if r.path == store]
    still = stat.S_ISCHR(os.lstat(real(world, store)).st_mode)
    records.append(("a store path that is a device node: blocked by startup, left alone",
                    len(blocked) == 1 and still, 0, blocked[0].line() if blocked else ""))
    os.unlink(real(world, store))
    run_startup(host)
    return records


def test_templates_and_device_nodes_where_files_are_read(figures: Figures) -> None:
    _record(figures, kernel_world(guarded(_templates_body), daemons=[FOO, BAR]))


def _writes_before_mount_body(world: World) -> list[Record]:
    """crash_reporter's old bug (docs/chromeos.md §7 item 1): a daemon writes to its store path
    before the user's vault is there -- into the empty target the last sign-out left, as on a
    device. Reported at sign-in, kept (hidden) while mounted, reported at sign-out, left alone by
    repair (it is no crash leftover) and listed by status; never deleted."""
    view, h = _prepared(world)
    host = world.host
    target = paths.user_store("foo", h)
    host.write_file(f"{target}/early.log", b"written before mount", safe=True)
    records: list[Record] = []
    world.login("alice")
    warned = [w for w in world.sessions["alice"].warnings if target in w and "before" in w]
    ok = bool(warned) and view.read("alice", "precious") == b"alice's data"
    records.append(("writes before mount: reported at sign-in", ok, 0, "; ".join(warned)))
    out = world.logout("alice")
    kept = host.read_file(f"{target}/early.log", safe=True) == b"written before mount"
    warned_out = [w for w in out.warnings if target in w and "never deleted" in w]
    records.append(("writes before mount: reported at sign-out, kept", kept and bool(warned_out),
                    0 if kept else 1, "; ".join(warned_out)))
    plan, _report = repair(host)
    again = host.read_file(f"{target}/early.log", safe=True) == b"written before mount"
    listed = [p for p in status.status_of(host).problems if p.startswith(target)]
    records.append(("writes before mount: kept by repair, listed by status",
                    again and plan.empty and bool(listed), 0 if again else 1, "; ".join(listed)))
    return records


def test_writes_before_mount_are_reported_never_deleted(figures: Figures) -> None:
    _record(figures, kernel_world(guarded(_writes_before_mount_body), daemons=[FOO]))


def _setuid_body(world: World) -> list[Record]:
    """The per-user directory gets exactly the template's mode: setgid and sticky reproduced
    (fbpreprocessord's 3770), bits a daemon added (setuid, world-writable) taken away again."""
    world.install_daemon("fbp", 20300, 20301, 0o3750)
    setup_victims(world)
    view = world.daemon("fbp")
    world.login("alice")
    st = view.stat("alice")
    records = [("setgid+sticky template reproduced exactly",
                (st.perm, st.uid, st.gid) == (0o3750, 20300, 20301), 0, f"{st.perm:o}")]
    with world.in_namespace(view.namespace):
        world.host.chmod(view.path("alice"), 0o4777)  # the daemon widens its own directory
    world.logout("alice")
    world.login("alice")
    st = view.stat("alice")
    records.append(("bits a daemon added are taken away at the next sign-in",
                    st.perm == 0o3750, 0, f"{st.perm:o}"))
    opts = set(mountinfo.parse(world.mountinfo())[-1].options)
    records.append(("every store bind is nosuid,nodev,noexec,nosymfollow",
                    opts >= session.BIND_FLAGS, 0, ",".join(sorted(opts))))
    return records


def test_store_modes_are_exactly_the_templates(figures: Figures) -> None:
    _record(figures, kernel_world(guarded(_setuid_body)))


# ---- deterministic TOCTOU: the swap lands exactly between the check and the act ----------------


class _SwapBefore:
    """A Host that runs ``swap()`` once, right before the first ``method`` call whose first
    argument ends with ``suffix`` -- after sign-in's own type check, before the act."""

    def __init__(self, host: Any, method: str, suffix: str, swap: Any) -> None:
        self._host, self._method, self._suffix, self._swap = host, method, suffix, swap
        self.fired = False

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._host, name)
        if name != self._method:
            return attr

        def hooked(*args: Any, **kwargs: Any) -> Any:
            if not self.fired and str(args[0]).endswith(self._suffix):
                self.fired = True
                self._swap()
            return attr(*args, **kwargs)

        return hooked


def _toctou_body(world: World) -> list[Record]:
    from tests.hardening.util import exchange_at

    view, h = _prepared(world)
    host = world.host
    rootdir = os.open(real(world, f"{paths.vault(h)}/root"), os.O_PATH | os.O_DIRECTORY)
    os.link(real(world, SHADOW_VICTIM), real(world, f"{paths.vault(h)}/root/foo.link"))
    host.mkdir(f"{paths.vault(h)}/root/foo.decoy", 0o700, safe=True)
    records: list[Record] = []
    cases = (
        # a hard link to /etc/shadow swapped in after expect_dir, before the chmod: the fd-level
        # nlink rule refuses (without it /etc/shadow would become 0750)
        ("hard link swapped in between the type check and the chmod", "chmod", "/root/foo",
         "foo.link", errno.EPERM),
        ("hard link swapped in between the type check and the chown", "chown", "/root/foo",
         "foo.link", errno.EPERM),
        # another directory swapped in between the source check and the bind: the re-check
        # after the bind sees the mount is not the directory checked, takes it off, refuses
        ("directory swapped in between the source check and the bind", "bind", "/root/foo",
         "foo.decoy", errno.ESTALE),
    )
    for n, (label, method, suffix, partner, want) in enumerate(cases):
        # the template's owner and mode change, so sign-in chowns and chmods root/foo
        host.chown(paths.template("foo"), 20110 + n, 20100, safe=True)
        host.chmod(paths.template("foo"), (0o750, 0o710, 0o700)[n], safe=True)
        before = (mount_state(host), victims(world, skip=(paths.ETC_DAEMON_STORE,)))
        swapper = _SwapBefore(host, method, suffix,
                              lambda p=partner: exchange_at(rootdir, "foo", p))
        try:
            session.sign_in(swapper, h)
        except session.SignInError as exc:
            ok = (swapper.fired and exc.errno == want and exc.rollback == []
                  and (mount_state(host), victims(world, skip=(paths.ETC_DAEMON_STORE,)))
                  == before)
            records.append((label, ok, 0 if ok else 1, str(exc)))
        else:
            records.append((label, False, 1, f"signed in (fired={swapper.fired})"))
            session.sign_out(host, h)
        if swapper.fired:
            exchange_at(rootdir, "foo", partner)  # put the real directory back
    st = os.stat(real(world, SHADOW_VICTIM))
    records.append(("victim /etc/shadow still root 0600 after the swaps",
                    (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o600), 0, ""))
    os.unlink(real(world, f"{paths.vault(h)}/root/foo.link"))
    host.rmdir(f"{paths.vault(h)}/root/foo.decoy", safe=True)
    os.close(rootdir)
    world.login("alice")
    ok = view.read("alice", "precious") == b"alice's data"
    records.append(("after the swaps: data intact, sign-in works", ok, 0, ""))
    return records


def test_toctou_swaps_at_the_worst_moment(figures: Figures) -> None:
    _record(figures, kernel_world(guarded(_toctou_body), daemons=[FOO]))
