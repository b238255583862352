"""``daemonstore demo --kernel`` and ``daemonstore status`` on the real kernel, each in a sandbox
child (private mount namespace, tmpfs root), never in the pytest process.

status scans /proc: a real second (and third) process is forked inside the sandbox, enters a jail
built by ``apply_jail`` on a KernelHost, and sleeps until it is killed by its pid at the end."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import pytest
from click.testing import CliRunner

from daemonstore import paths
from daemonstore.cli import main
from daemonstore.demo import story as demo
from daemonstore.jail.plan import apply_jail, plan_jail, store_jail_argv
from daemonstore.jail.spec import parse_jail_args
from daemonstore.kernel import KernelHost, run_in_sandbox
from daemonstore.report import status
from daemonstore.world import World

pytestmark = pytest.mark.kernel

S = paths.RUN_DAEMON_STORE


def test_demo_kernel_cli_tells_the_same_story_as_the_model() -> None:
    start = time.monotonic()
    res = CliRunner().invoke(main, ["demo", "--kernel"])
    took = time.monotonic() - start
    assert res.exit_code == 0, res.output
    kernel_lines = res.output.splitlines()
    assert kernel_lines[0].startswith("daemonstore demo on the real kernel")
    # same seed, same story: every line but the first is identical (group ids are relabelled,
    # so even the propagation picture matches)
    assert kernel_lines[1:] == demo.render(demo.run_demo())[1:]
    assert took < 15


def test_demo_kernel_facts() -> None:
    result = demo.run_demo(kernel=True)
    assert result.backend == "kernel"
    assert result.facts == demo.run_demo().facts
    assert result.facts["visible_after_sign_out"] == {"daemon-biod": [], "daemon-shill": [],
                                                      "daemon-crash": []}
    assert all(result.facts["files_back"].values())


# ---- status with real processes in real namespaces ------------------------------------------


def _jailed_child(host: KernelHost, argv: list[str], name: str) -> int:
    """Fork a process that builds a jail with the planner and sleeps in it until killed."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child never returns into the sandbox machinery
        code = 1
        try:
            os.close(read_fd)
            apply_jail(host, plan_jail(parse_jail_args(argv), name))
            os.write(write_fd, b"ready")
            code = 0
            while True:
                signal.pause()
        finally:
            os._exit(code)
    os.close(write_fd)
    try:
        ready = os.read(read_fd, 5)  # not read-to-EOF: the child keeps its end open, sleeping
    finally:
        os.close(read_fd)
    if ready != b"ready":  # it exited (EOF) without building the jail
        os.waitpid(pid, 0)
        raise RuntimeError(f"jailed child {pid} failed to build its jail")
    return pid


def _status_with_processes(host: KernelHost) -> dict[str, Any]:
    world = World(host)
    world.install_daemon("foo", 20100, 20100)
    world.install_daemon("bar", 20200, 20200)
    alice = world.login("alice")
    pids = []
    try:
        pids.append(_jailed_child(host, store_jail_argv("foo"), "good"))
        store = f"{S}/bar,{S}/bar,none,MS_BIND|MS_REC"
        pids.append(_jailed_child(host, ["-v", "-Kprivate", "-k", "tmpfs,/run,tmpfs",
                                         "-k", store], "bad"))
        bob = world.login("bob")  # after the jails: only propagation can bring bob in
        host.mkdir(f"{S}/bar/{'e' * 40}", 0o700)  # the writes-before-mount trap (empty: no
        host.write_file(f"{S}/bar/{'e' * 40}/state", b"lost")  # problem; with a file: one)
        report = status.status_of(host, scan_processes=True)
        res = CliRunner().invoke(main, ["status", "--root", host.root, "--json"])
        text = CliRunner().invoke(main, ["status", "--root", host.root])
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGKILL)  # our own children, by pid
            os.waitpid(pid, 0)
    return {"pids": pids, "alice": alice, "bob": bob, "report": report.to_json(),
            "cli": (res.exit_code, res.output), "text": text.output}


def test_status_finds_real_namespaces_through_proc() -> None:
    out = run_in_sandbox(_status_with_processes)
    good, bad = out["pids"]
    report = out["report"]
    labels = report["namespaces"]
    assert labels[0] == "init" and len(labels) == 3
    good_label, bad_label = (next(x for x in labels if x.startswith(f"pid {p} (")) for p in (good,
                                                                                            bad))
    reach = {(r["namespace"], r["store"]): r for r in report["reach"]}
    mine = reach[(good_label, f"{S}/foo")]
    assert mine["propagation"] == "slave" and mine["receives"] is True
    assert mine["users"] == [out["alice"], out["bob"]]  # bob signed in after the jail was made
    theirs = reach[(bad_label, f"{S}/bar")]
    assert theirs["receives"] is False and theirs["relation"] == "private"
    assert theirs["users"] == [out["alice"]]  # copied by MS_REC at jail time, bob never came
    problems = report["problems"]
    trap = f"{S}/bar/{'e' * 40} holds files but nothing is mounted"
    assert any(p.startswith(trap) for p in problems)
    assert any(p.startswith(f"namespace {bad_label}: its {S}/bar is private") for p in problems)
    code, cli_out = out["cli"]
    assert code == 1
    assert json.loads(cli_out)["problems"] == problems
    assert "RECEIVES SIGN-INS" in out["text"]
