"""``daemonstore status``: the pure core (daemonstore.report.status.analyze) on model worlds and on
hand-written mountinfo, and the CLI through CliRunner with the backend swapped for a model (the
kernel runs, with a real second process's namespace found through /proc, are in
tests/kernel/test_demo_status_kernel.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from daemonstore import command
from daemonstore.cli import main
from daemonstore.jail.plan import apply_jail, plan_jail
from daemonstore.jail.spec import parse_jail_args
from daemonstore.report import status
from daemonstore.world import World

S, C = "/run/daemon-store", "/run/daemon-store-cache"


def booted() -> World:
    world = World.model(seed=1)
    world.install_daemon("foo", 20100, 20100)
    world.install_daemon("bar", 20200, 20200, 0o750)
    return world


def jail(world: World, argv: list[str], name: str) -> None:
    with world.in_namespace(world.namespace):
        apply_jail(world.host, plan_jail(parse_jail_args(argv), name))


def test_healthy_world() -> None:
    world = booted()
    world.daemon("foo")
    alice = world.login("alice")
    report = status.status_of(world.host)
    assert [(s.path, s.state, s.has_template, s.users) for s in report.stores] == [
        (f"{S}/bar", "shared", True, (alice,)), (f"{C}/bar", "shared", True, (alice,)),
        (f"{S}/foo", "shared", True, (alice,)), (f"{C}/foo", "shared", True, (alice,))]
    assert report.users == [alice]
    assert report.namespaces == ["init", "daemon-foo"]
    assert [(r.namespace, r.store, r.propagation, r.receives, r.users) for r in report.reach] == [
        ("daemon-foo", f"{S}/foo", "slave", True, (alice,)),
        ("daemon-foo", f"{C}/foo", "slave", True, (alice,))]
    assert report.reach[0].relation.startswith("slave of G")
    assert report.problems == []
    lines = report.to_lines()
    assert lines[-1] == "problems: none"
    assert any(line.split()[:4] == ["daemon-foo", f"{S}/foo", "slave", "yes,"] for line in lines)


def test_groups_match_the_propagation_picture() -> None:
    from daemonstore.report import graph

    world = booted()
    world.daemon("foo")
    report = status.status_of(world.host)
    pic = graph.build_picture(status.host_namespaces(world.host))
    for row in report.stores:
        assert [n.label() for n in pic.peers[row.group or ""]] == [f"init:{row.path}"]


def test_private_jail_is_a_problem_and_slave_jail_is_not() -> None:
    world = booted()
    store = f"{S}/foo,{S}/foo,none,MS_BIND|MS_REC"
    jail(world, ["-v", "-Kprivate", "-k", "tmpfs,/run,tmpfs", "-k", store], "private-jail")
    jail(world, ["-v", "-Kslave", "-k", "tmpfs,/run,tmpfs", "-k", store], "slave-jail")
    world.login("alice")
    report = status.status_of(world.host)
    got = {r.namespace: (r.receives, r.relation, r.users) for r in report.reach}
    assert got["private-jail"] == (False, "private", ())
    assert got["slave-jail"][0] is True and got["slave-jail"][2] == (world.hash_of("alice"),)
    assert report.problems == [f"namespace private-jail: its {S}/foo is private: it never sees a "
                               "sign-in (jail it with -v -Kslave and MS_BIND|MS_REC, "
                               "docs/chromeos.md §5)"]


def test_unmounted_store_and_private_store_are_problems() -> None:
    world = World.model()
    world.install_daemon("late", 0, 0, startup=False)  # template, no reboot yet
    world.install_daemon("flat", 0, 0, startup=False)
    host = world.host
    host.mkdir(f"{S}/flat", parents=True)
    host.bind(f"{S}/flat", f"{S}/flat")  # bound, never made shared
    report = status.status_of(host)
    states = {s.path: s.state for s in report.stores}
    assert states[f"{S}/late"] == "not mounted"
    assert states[f"{S}/flat"] == "its mount is private, not shared"
    assert len(report.problems) == 4  # both stores of "late", S/flat and C/flat
    assert all("never reach a daemon's namespace" in p for p in report.problems)


def test_directory_without_mount_is_the_writes_before_mount_trap() -> None:
    world = booted()
    alice = world.login("alice")
    world.logout("alice")  # sign-out leaves the empty targets, as ChromeOS: no problem...
    assert world.host.listdir(f"{S}/foo/{alice}") == []
    assert status.status_of(world.host).problems == []
    world.host.write_file(f"{S}/foo/{alice}/state", b"lost")  # ...a naive daemon writes: one
    problems = status.status_of(world.host).problems
    assert problems == [f"{S}/foo/{alice} holds files but nothing is mounted on it: a daemon "
                        "wrote into /run's tmpfs, seen by no user and lost at reboot (the "
                        "writes-before-mount trap; check store_check.store_status, not "
                        "existence)"]


def test_orphan_store_is_listed_without_template() -> None:
    world = World.model()
    world.start_stores("ghost")  # mounted, no template
    rows = status.status_of(world.host).stores
    assert [(r.path, r.has_template, r.state) for r in rows] == [
        (f"{S}/ghost", False, "shared"), (f"{C}/ghost", False, "shared")]


ROOT = "1 0 0:40 / / rw - tmpfs sandbox rw"
STORE = f"3 1 0:40 {S}/d {S}/d rw shared:5 - tmpfs sandbox rw"


@pytest.mark.parametrize(("line", "relation", "receives"), [
    (f"9 8 0:40 {S}/d {S}/d rw shared:5 - tmpfs sandbox rw", "peer of G1", True),
    (f"9 8 0:40 {S}/d {S}/d rw master:5 - tmpfs sandbox rw", "slave of G1", True),
    (f"9 8 0:40 {S}/d {S}/d rw master:7 - tmpfs sandbox rw", "slave of G1 via G2", True),
    (f"9 8 0:40 {S}/d {S}/d rw master:9 - tmpfs sandbox rw", "slave of G3, not of G1", False),
    (f"9 8 0:40 {S}/d {S}/d rw unbindable - tmpfs sandbox rw", "unbindable", False),
])
def test_relation_to_the_root_store_group(line: str, relation: str, receives: bool) -> None:
    chain = f"20 19 0:40 {S}/d /x rw shared:7 master:5 - tmpfs sandbox rw"  # G2, slave of G1
    namespaces = {"init": f"{ROOT}\n{STORE}", "other": f"{ROOT}\n{chain}",
                  "ns": "8 7 0:40 / / rw - tmpfs sandbox rw\n" + line}
    report = status.analyze(namespaces, status.Facts(templates=("d",)))
    reach = [r for r in report.reach if r.namespace == "ns"]
    assert [(r.relation, r.receives) for r in reach] == [(relation, receives)]


def test_hidden_copy_does_not_count() -> None:
    """A private copy covered by a tmpfs on /run is not what the daemon sees."""
    hidden = "\n".join(["8 7 0:40 / / rw - tmpfs sandbox rw",
                        f"9 8 0:40 {S}/d {S}/d rw - tmpfs sandbox rw",
                        "10 8 0:41 / /run rw - tmpfs tmpfs rw"])
    report = status.analyze({"init": f"{ROOT}\n{STORE}", "d": hidden},
                            status.Facts(templates=("d",)))
    assert report.reach == []
    assert [line for line in report.to_lines() if "holding no store" in line] == [
        "  holding no store: d"]


# ---- the CLI ------------------------------------------------------------------------------------


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> World:
    w = booted()
    monkeypatch.setattr(command, "open_host", lambda root, **_: w.host)
    return w


def test_cli_table_and_exit_codes(world: World) -> None:
    world.daemon("foo")
    res = CliRunner().invoke(main, ["status", "--root", "/r"])
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[0] == "stores (root namespace):"
    assert "problems: none" in res.output
    world.host.mkdir(f"{S}/foo/{'a' * 40}")  # empty and unmounted, as sign-out leaves it
    res = CliRunner().invoke(main, ["status", "--root", "/r"])
    assert res.exit_code == 0 and "problems: none" in res.output
    world.host.write_file(f"{S}/foo/{'a' * 40}/state", b"lost")
    res = CliRunner().invoke(main, ["status", "--root", "/r"])
    assert res.exit_code == 1
    assert "problems: 1" in res.output


def test_cli_json(world: World) -> None:
    world.daemon("bar")
    res = CliRunner().invoke(main, ["status", "--root", "/r", "--json"])
    out = json.loads(res.output)
    assert out["backend"] == "model" and out["problems"] == []
    assert [r["namespace"] for r in out["reach"]] == ["daemon-bar", "daemon-bar"]
    assert set(out) == {"root", "backend", "stores", "users", "namespaces", "reach", "held",
                        "problems"}
    assert out["held"] == {}


def test_cli_reads_the_real_root_without_system(tmp_path: Path) -> None:
    """status only reads: on "/" (the default) it runs wherever pytest runs, the initial
    namespace included, with no --system; a sandbox root that is not a tmpfs mount point is
    refused before anything is read, exit 2 and one line."""
    res = CliRunner().invoke(main, ["status", "--json"])
    assert res.exit_code in (0, 1), res.output
    assert json.loads(res.output)["backend"] == "kernel"
    res = CliRunner().invoke(main, ["status", "--root", str(tmp_path)])
    assert res.exit_code == 2
    assert res.output.startswith(f"Error: --root {tmp_path}: ")
    assert len(res.output.strip().splitlines()) == 1
