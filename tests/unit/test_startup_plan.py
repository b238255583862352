"""daemonstore.boot.plan on the model: template validation (every skip reason), the plan for each
state
of a store, the mountinfo questions (MountView), and the plan_ops renderings. No root needed."""

from __future__ import annotations

import errno

import pytest

from daemonstore import mountinfo
from daemonstore.boot import seed as demo
from daemonstore.boot.apply import run_startup
from daemonstore.boot.plan import (
    BLOCKED,
    MISSING,
    NOT_SHARED,
    READY,
    UNMOUNTED,
    WRONG_ATTRIBUTES,
    MountView,
    check_template,
    is_system_uid,
    plan_startup,
    read_system_uids,
    show_path,
)
from daemonstore.host import Propagation, Stat
from daemonstore.model import ModelHost
from daemonstore.ops import Chmod, Chown, MakeDir, Op, SafeBind, SafeMake, parse_line

S = "/run/daemon-store"
C = "/run/daemon-store-cache"


def world(*entries: demo.Entry, users: tuple[tuple[str, int], ...] | None = (("root", 0),),
          run: bool = True) -> ModelHost:
    """A model with the given templates and, if ``run``, an empty /run (0755) as after boot."""
    h = ModelHost()
    demo.install(h, entries, users)
    if run:
        h.mkdir("/run", 0o755)
    return h


def by_path(plan):  # noqa: ANN001, ANN201 - a tiny test helper
    return {t.path: t for t in plan.targets}


def _create(path: str) -> list[Op]:
    return [MakeDir(path, 0o755), Chown(path, 0, 0)]


def _mount(path: str) -> list[Op]:
    return [SafeBind(path, path), SafeMake(path, Propagation.SHARED)]


# ---- the fresh plan ---------------------------------------------------------------------------


def test_fresh_plan_creates_bases_and_both_stores_in_chromeos_order() -> None:
    plan = plan_startup(world(demo.Entry("shill")))
    assert [t.path for t in plan.targets] == [S, f"{S}/shill", C, f"{C}/shill"]
    assert plan.steps == (_create(S) + _create(f"{S}/shill") + _mount(f"{S}/shill")
                          + _create(C) + _create(f"{C}/shill") + _mount(f"{C}/shill"))
    assert {t.state for t in plan.targets} == {MISSING}
    assert plan.templates == ("shill",) and not plan.skipped and not plan.orphans
    assert all(t.needs == S for t in plan.stores if t.path.startswith(S + "/"))


def test_missing_run_is_created_once_for_both_bases() -> None:
    plan = plan_startup(world(demo.Entry("a"), run=False))
    lines = [op.to_line() for op in plan.steps]
    assert lines.count("mkdir -m 0755 /run") == 1
    assert lines[:4] == ["mkdir -m 0755 /run", "chown 0:0 /run", f"mkdir -m 0755 {S}",
                         f"chown 0:0 {S}"]


def test_no_template_directory_means_nothing_to_do() -> None:
    h = ModelHost()
    plan = plan_startup(h)
    assert plan.targets == () and plan.skipped == () and plan.steps == []


def test_empty_template_directory_plans_nothing_and_reports_orphans() -> None:
    h = world()
    h.mkdir(S, 0o755)
    h.mkdir(f"{S}/gone", 0o755)
    plan = plan_startup(h)
    assert plan.steps == []
    assert [(o.path, o.mounted) for o in plan.orphans] == [(f"{S}/gone", False)]


# ---- template validation: every reason ----------------------------------------------------------


def _stat(mode: int, uid: int = 0) -> Stat:
    return Stat(mode=mode, uid=uid, gid=0, size=0, ino=1, dev=1)


@pytest.mark.parametrize("name, st, reason", [
    ("shill", _stat(0o040700), None),
    ("a_b.c-d", _stat(0o040755), None),
    ("crosvm", _stat(0o040750, uid=299), None),
    (".hidden", _stat(0o040700), "does not match"),
    ("-dash", _stat(0o040700), "does not match"),
    ("a..b", _stat(0o040700), "contains '..'"),
    ("sp ace", _stat(0o040700), "does not match"),
    ("x" * 256, _stat(0o040700), "longer than 255 bytes"),
    ("link", _stat(0o120777), "is a symlink"),
    ("fifo", _stat(0o010644), "is not a directory"),
    ("ghost", _stat(0o040700, uid=4242), "owned by uid 4242, which is neither root nor a user"),
    ("ww", _stat(0o040777), "mode 0777 is world-writable"),
    ("ow", _stat(0o040702), "mode 0702 is world-writable"),
    ("sticky-ww", _stat(0o041777), "mode 1777 is world-writable"),
    # group-writable is accepted, as ChromeOS ships it (pvm 0770, debugd 0660, crash and
    # fbpreprocessord 3770: docs/chromeos.md §1.6)
    ("pvm", _stat(0o040770, uid=299), None),
    ("debugd", _stat(0o040660, uid=299), None),
    ("crash", _stat(0o043770, uid=299), None),
    ("gone", OSError(2, "No such file or directory"), "cannot inspect: ENOENT"),
])
def test_check_template(name: str, st: Stat | OSError, reason: str | None) -> None:
    got = check_template(name, st, {0, 299})
    assert (got is None) if reason is None else (got is not None and reason in got)


def test_sample_tree_skips_exactly_the_bad_entries_with_one_line_reasons() -> None:
    h = ModelHost()
    demo.install(h)
    plan = plan_startup(h)
    assert plan.templates == tuple(sorted(demo.SAMPLE_VALID))
    skipped = {s.path.rsplit("/", 1)[1]: s for s in plan.skipped}
    assert set(skipped) == set(demo.SAMPLE_SKIPPED)
    for s in plan.skipped:
        line = s.line()
        assert line.startswith(f"/etc/daemon-store/{s.path.rsplit('/', 1)[1]}: ")
        assert "\n" not in line
    assert "symlink" in skipped["linked"].reason
    assert "world-writable" in skipped["everyone"].reason
    assert "pvm" in plan.templates  # group-writable 0770, as on ChromeOS
    assert "uid 4242" in skipped["ghost"].reason
    assert "does not match" in skipped[".hidden"].reason
    assert "README" not in skipped  # a regular file: ignored, not a problem


def test_a_name_with_a_newline_is_reported_on_one_line() -> None:
    h = world()
    h.mkdir("/etc/daemon-store/evil\nname", 0o700)
    (s,) = plan_startup(h).skipped
    assert "\n" not in s.line() and "evil\\nname" in s.line()
    assert show_path("/a\nb") == repr("/a\nb") and show_path("/ok") == "/ok"


@pytest.mark.parametrize("passwd, uids", [
    (b"root:x:0:0::/root:/bin/sh\nshill:x:20104:20104::/:/bin/false\n", {0, 20104}),
    (b"# comment:x:5\nbroken\nbad:x:notanumber:0::/:\n\nbiod:x:282:282::/:\n", {0, 282}),
    (None, {0}),
])
def test_read_system_uids(passwd: bytes | None, uids: set[int]) -> None:
    h = ModelHost()
    h.mkdir("/etc")
    if passwd is not None:
        h.write_file("/etc/passwd", passwd)
    assert read_system_uids(h) == uids


def test_passwd_symlink_is_not_followed_so_only_root_counts() -> None:
    h = ModelHost()
    h.mkdir("/etc")
    h.mkdir("/elsewhere")
    h.write_file("/elsewhere/passwd", b"evil:x:4242:4242::/:/bin/sh\n")
    h.symlink("/elsewhere/passwd", "/etc/passwd")
    assert read_system_uids(h) == {0}


def test_template_owned_by_a_passwd_user_is_valid_and_unknown_owner_is_not() -> None:
    h = world(demo.Entry("shill", uid=20104), demo.Entry("ghost", uid=4242),
              users=(("root", 0), ("shill", 20104)))
    plan = plan_startup(h)
    assert plan.templates == ("shill",)
    assert [s.path for s in plan.skipped] == ["/etc/daemon-store/ghost"]


def test_a_regular_file_among_templates_is_ignored_without_failing_startup() -> None:
    h = world(demo.Entry("shill", uid=20104), demo.Entry("NOTES", demo.FILE, mode=0o644),
              users=demo.SAMPLE_USERS)
    plan = plan_startup(h)
    assert plan.templates == ("shill",)
    assert plan.skipped == ()
    _plan, report = run_startup(h)
    assert report.complete  # startup exits 0: the file is no template and no problem


def test_without_passwd_only_root_owned_templates_are_valid() -> None:
    h = world(demo.Entry("shill", uid=20104), demo.Entry("rooted"), users=None)
    assert plan_startup(h).templates == ("rooted",)


@pytest.mark.parametrize("setup, reason", [
    ("symlink", "is a symlink"),
    ("world-writable", "mode 0777"),
    ("user-owned", "owned by uid 1000, not root"),
    ("file", "is not a directory"),
])
def test_an_untrustworthy_template_directory_skips_everything(setup: str, reason: str) -> None:
    h = ModelHost()
    h.mkdir("/etc")
    if setup == "symlink":
        h.mkdir("/real")
        h.mkdir("/real/shill", 0o700)
        h.symlink("/real", "/etc/daemon-store")
    elif setup == "file":
        h.write_file("/etc/daemon-store", b"")
    else:
        h.mkdir("/etc/daemon-store", 0o777 if setup == "world-writable" else 0o755)
        h.mkdir("/etc/daemon-store/shill", 0o700)
        if setup == "user-owned":
            h.chown("/etc/daemon-store", 1000, 1000)
    plan = plan_startup(h)
    assert plan.templates == () and plan.steps == []
    (s,) = plan.skipped
    assert s.path == "/etc/daemon-store" and reason in s.reason


def test_a_symlinked_etc_is_refused_too() -> None:
    # a symlink *component* above the template directory: ELOOP with safe resolution
    h = ModelHost()
    h.mkdir("/realetc")
    h.mkdir("/realetc/daemon-store", 0o755)
    h.mkdir("/realetc/daemon-store/shill", 0o700)
    h.symlink("/realetc", "/etc")
    plan = plan_startup(h)
    (s,) = plan.skipped
    assert s.path == "/etc/daemon-store" and "ELOOP" in s.reason
    assert plan.steps == []


# ---- the states of a store -----------------------------------------------------------------


def test_half_done_directory_without_mount_gets_bind_and_make_shared_only() -> None:
    h = world(demo.Entry("a"))
    h.mkdir(S, 0o755)
    h.mkdir(f"{S}/a", 0o755)
    t = by_path(plan_startup(h))
    assert t[S].state == READY and t[S].steps == ()
    assert t[f"{S}/a"].state == UNMOUNTED and list(t[f"{S}/a"].steps) == _mount(f"{S}/a")


@pytest.mark.parametrize("propagation", ["private", "slave", "unbindable"])
def test_mounted_but_not_shared_gets_make_shared_only(propagation: str) -> None:
    h = world(demo.Entry("a"))
    h.mkdir(f"{S}/a", 0o755, parents=True)
    h.mkdir(f"{C}/a", 0o755, parents=True)
    h.bind(f"{S}/a", f"{S}/a")
    if propagation == "slave":  # a slave needs a master: make it shared, bind, enslave the copy
        h.make(f"{S}/a", "shared")
        h.mkdir("/elsewhere")
        h.bind(f"{S}/a", "/elsewhere")
    h.make(f"{S}/a", propagation)
    t = by_path(plan_startup(h))[f"{S}/a"]
    assert t.state == NOT_SHARED
    assert list(t.steps) == [SafeMake(f"{S}/a", Propagation.SHARED)]


def test_wrong_mode_and_owner_are_repaired_on_store_and_base() -> None:
    h = world(demo.Entry("a"))
    h.mkdir(S, 0o1777)
    h.chown(S, 1000, 1000)
    h.mkdir(f"{S}/a", 0o700)
    h.bind(f"{S}/a", f"{S}/a")
    h.make(f"{S}/a", "shared")
    h.chown(f"{S}/a", 0, 5)
    t = by_path(plan_startup(h))
    assert t[S].state == WRONG_ATTRIBUTES
    assert list(t[S].steps) == [Chmod(S, 0o755), Chown(S, 0, 0)]
    assert t[f"{S}/a"].state == WRONG_ATTRIBUTES
    assert list(t[f"{S}/a"].steps) == [Chmod(f"{S}/a", 0o755), Chown(f"{S}/a", 0, 0)]


@pytest.mark.parametrize("planted", ["symlink-to-etc", "symlink-to-template", "dangling",
                                     "file", "fifo"])
def test_something_planted_at_the_store_path_is_blocked_not_followed(planted: str) -> None:
    h = world(demo.Entry("a"))
    h.mkdir(S, 0o755)
    p = f"{S}/a"
    if planted == "symlink-to-etc":
        h.symlink("/etc", p)
    elif planted == "symlink-to-template":
        h.symlink("../../etc/daemon-store/a", p)
    elif planted == "dangling":
        h.symlink("/nowhere", p)
    elif planted == "file":
        h.write_file(p, b"")
    else:
        h.mkfifo(p)
    t = by_path(plan_startup(h))[p]
    assert t.state == BLOCKED and t.steps == ()
    assert ("symlink" if planted.startswith(("symlink", "dangling")) else "not a directory") \
        in (t.problem or "")


def test_symlinked_base_blocks_its_stores_only() -> None:
    h = world(demo.Entry("a"))
    h.mkdir("/elsewhere")
    h.symlink("/elsewhere", S)
    t = by_path(plan_startup(h))
    assert t[S].state == BLOCKED and "symlink" in (t[S].problem or "")
    assert t[f"{S}/a"].state == BLOCKED and "parent" in (t[f"{S}/a"].problem or "")
    assert t[C].state == MISSING and t[f"{C}/a"].state == MISSING


def test_stacked_self_binds_are_reported_and_not_stacked_again() -> None:
    h = world(demo.Entry("a"))
    h.mkdir(f"{S}/a", 0o755, parents=True)
    h.bind(f"{S}/a", f"{S}/a")
    h.bind(f"{S}/a", f"{S}/a")  # the naive script run twice
    t = by_path(plan_startup(h))[f"{S}/a"]
    assert t.state == BLOCKED and t.steps == ()
    assert "2 mounts are stacked" in (t.problem or "")


def test_a_foreign_mount_at_the_store_path_is_reported_not_covered() -> None:
    h = world(demo.Entry("a"))
    h.mkdir(f"{S}/a", 0o755, parents=True)
    h.mount_tmpfs("intruder", f"{S}/a")
    h.make(f"{S}/a", "shared")
    t = by_path(plan_startup(h))[f"{S}/a"]
    assert t.state == BLOCKED and "another mount covers it (tmpfs intruder" in (t.problem or "")


def test_orphans_are_reported_with_their_mount_state_and_get_no_steps() -> None:
    h = world(demo.Entry("kept"), demo.Entry("bad", mode=0o777))
    for name in ("kept", "gone", "bad"):
        h.mkdir(f"{S}/{name}", 0o755, parents=True)
    h.bind(f"{S}/gone", f"{S}/gone")
    h.make(f"{S}/gone", "shared")
    plan = plan_startup(h)
    orphans = {o.path: o for o in plan.orphans}
    assert set(orphans) == {f"{S}/gone", f"{S}/bad"}
    assert orphans[f"{S}/gone"].mounted and not orphans[f"{S}/bad"].mounted
    assert "no template /etc/daemon-store/gone" in orphans[f"{S}/gone"].line()
    assert "its template was skipped" in orphans[f"{S}/bad"].reason
    assert all(f"{S}/gone" not in op.to_line() for op in plan.steps)


# ---- MountView -----------------------------------------------------------------------------


def _view(h: ModelHost) -> MountView:
    return MountView(mountinfo.parse(h.mountinfo()))


def test_self_bind_on_a_separate_run_tmpfs_is_recognised() -> None:
    # on a real system /run is its own tmpfs: the store's root is /daemon-store/<d> there
    h = world(demo.Entry("a"))
    h.mount_tmpfs("run", "/run")
    h.mkdir(f"{S}/a", 0o755, parents=True)
    h.bind(f"{S}/a", f"{S}/a")
    h.make(f"{S}/a", "shared")
    (e,) = _view(h).stack(f"{S}/a")
    assert e.root == "/daemon-store/a" and _view(h).is_self_bind(e)
    assert _view(h).store_problem(f"{S}/a") is None
    assert by_path(plan_startup(h))[f"{S}/a"].state == READY


def test_a_bind_from_elsewhere_is_not_a_self_bind() -> None:
    h = world()
    h.mkdir(f"{S}/a", 0o755, parents=True)
    h.mkdir("/src")
    h.bind("/src", f"{S}/a")
    (e,) = _view(h).stack(f"{S}/a")
    assert not _view(h).is_self_bind(e)


def test_a_mount_hidden_under_an_overmounted_parent_is_not_visible() -> None:
    h = world(demo.Entry("a"))
    h.mkdir(f"{S}/a", 0o755, parents=True)
    h.bind(f"{S}/a", f"{S}/a")
    h.make(f"{S}/a", "shared")
    h.mount_tmpfs("cover", S)  # hides the store mount below it
    view = _view(h)
    assert view.stack(f"{S}/a") == []
    assert [e.source for e in view.stack(S)] == ["cover"]
    t = by_path(plan_startup(h))[f"{S}/a"]
    assert t.state == MISSING  # the visible /run/daemon-store is the empty cover


def test_stack_of_root_and_of_a_non_mount_point() -> None:
    h = ModelHost()
    h.mkdir("/x")
    view = _view(h)
    assert [e.mount_point for e in view.stack("/")] == ["/"]
    assert view.stack("/x") == []
    assert MountView([]).stack("/x") == []


# ---- plan_ops renderings, and the dry-run text -----------------------------------------------


def test_plan_ops_render_shell_like_lines() -> None:
    assert MakeDir("/run/daemon-store/foo").to_line() == "mkdir -m 0755 /run/daemon-store/foo"
    assert MakeDir("/p", 0o1777).to_line() == "mkdir -m 1777 /p"
    assert Chmod("/p", 0o755).to_line() == "chmod 0755 /p"
    assert Chown("/p", 0, 0).to_line() == "chown 0:0 /p"
    assert Chown("/p", -1, 5).to_line() == "chown :5 /p"
    assert Chmod("/a b", 0o700).to_line() == "chmod 0700 '/a b'"
    assert str(MakeDir("/p")) == "mkdir -m 0755 /p"


def test_safe_mount_steps_are_valid_scenario_lines() -> None:
    for op in (SafeBind("/a b", "/a b"), SafeMake("/x", "shared")):
        back = parse_line(op.to_line())
        assert back is not None and back.to_line() == op.to_line()
        assert type(back).__name__ in ("Bind", "Make")


def test_plan_ops_use_safe_resolution() -> None:
    h = ModelHost()
    h.mkdir("/real")
    h.symlink("/real", "/link")
    for op in (MakeDir("/link/new"), Chmod("/link", 0o700), Chown("/link", 1, 1),
               SafeBind("/real", "/link"), SafeMake("/link", "shared")):
        with pytest.raises(OSError) as info:
            op.apply(h)
        assert info.value.errno == errno.ELOOP, op  # never the directory behind the link
    assert h.stat("/real").perm == 0o755 and h.stat("/real").uid == 0


def test_dry_run_lines_mention_every_step_and_every_finding() -> None:
    h = ModelHost()
    demo.install(h)
    h.mkdir(f"{S}/orphaned", 0o755, parents=True)
    plan = plan_startup(h)
    text = "\n".join(plan.to_lines())
    for op in plan.steps:
        assert op.to_line() in text
    for s in plan.skipped:
        assert f"# skip {s.path}" in text
    assert f"# orphan {S}/orphaned" in text


# ---- the template's owner must be a system user (SECURITY.md, "Templates") ----------------


@pytest.mark.parametrize("uid, system", [
    (0, True), (1, True), (282, True), (299, True), (999, True),      # below 1000
    (20100, True), (20125, True), (29999, True),                    # the daemon range
    (1000, False), (1001, False), (5000, False), (20099, False),     # chronos, chronos-access,
    (30000, False), (65534, False), (655360, False),                # login users, nobody, ARC
])
def test_is_system_uid(uid: int, system: bool) -> None:
    assert is_system_uid(uid) is system


@pytest.mark.parametrize("uid", [1000, 1001, 5000, 65534])
def test_a_template_owned_by_a_non_system_user_in_passwd_is_skipped_naming_the_rule(
        uid: int) -> None:
    h = world(demo.Entry("shill", uid=20104), demo.Entry("mine", uid=uid),
              users=(("root", 0), ("shill", 20104), ("someone", uid)))
    plan = plan_startup(h)
    assert plan.templates == ("shill",)
    (skipped,) = plan.skipped
    line = skipped.line()
    assert line.startswith("/etc/daemon-store/mine: owned by uid ")
    assert f"uid {uid}, which is not a system user" in line
    assert "1-999 or 20100-29999" in line  # the rule, in the problem line


def test_crash_as_chromeos_ships_it_is_accepted() -> None:
    h = world(demo.Entry("crash", mode=0o3770, uid=20125, gid=419),
              users=(("root", 0), ("crash", 20125)))
    assert plan_startup(h).templates == ("crash",)
