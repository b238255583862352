"""The real-root path, end to end, in a container (docs/architecture.md §10).

The package's container builder (daemonstore.kernel.container, the system world's): a forked child
in new mount and PID namespaces, ``/`` made private recursively, a tmpfs becomes ``/`` by
pivot_root, with /usr, the repository (its venv) and the interpreter's prefix bound read-only,
fresh /run, /home, /tmp, /var, /proc mounted and an /etc with passwd and group. Inside,
tests/system/inside.py uses default paths only (no ``--root``, no ``--system``): ``daemonstore
install``; templates (crash ``3770 crash:crash-user-access`` and ``sample 0700``);
``daemonstore-startup``; ``dbus-daemon --system`` reading the installed policies; ``cryptohome-sim
--no-daemon-stores`` and ``daemonstore hook``, which binds the stores on ``started``; a daemon
jailed as ChromeOS's init scripts do; ``daemonstore login`` / ``status`` / ``logout``; uid 65534
refused by the policy; a vault unmounted behind the bus losing its store binds; then cryptohome-sim
in its default mode (it binds the stores itself) with the hook still running: nothing bound twice.
It prints its facts as JSON; they are checked here. Nothing touches the host's root: the tmpfs and
every mount exist only in the child's namespace, which dies with it. """

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

import cryptohome_sim
import daemonstore
import startup
from daemonstore.boot import run_startup, seed
from daemonstore.kernel.container import (
    BASE_GROUP,
    BASE_PASSWD,
    ContainerSpec,
    interpreter_binds,
    start_container,
)
from daemonstore.model import ModelHost

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.kernel, pytest.mark.dbus]


@pytest.fixture(scope="module")
def facts() -> dict[str, Any]:
    """Build the container with the package's own builder (daemonstore.kernel.container, as the
    system world does) and run inside.py in it; its facts come back through a pipe."""
    spec = ContainerSpec(
        ro_binds=interpreter_binds(*(m.__file__ or "" for m in (daemonstore, cryptohome_sim,
                                                                 startup))) + (str(REPO),),
        passwd=BASE_PASSWD + ("crash:x:20125:419::/nonexistent:/usr/sbin/nologin",
                              "sample:x:20200:20200::/nonexistent:/usr/sbin/nologin"),
        group=BASE_GROUP + ("daemon-store:x:400:", "crash-user-access:x:419:",
                            "sample:x:20200:"))
    env = {"PATH": f"{os.path.dirname(sys.executable)}:/usr/sbin:/usr/bin:/sbin:/bin",
           "HOME": "/root", "LANG": "C.UTF-8"}
    read_fd, write_fd = os.pipe()
    try:
        container = start_container(
            spec, [sys.executable, str(REPO / "tests/system/inside.py"), str(write_fd)], env,
            pass_fds=[write_fd], log="/tmp/inside.log")
    finally:
        os.close(write_fd)
    with os.fdopen(read_fd) as pipe:  # EOF once inside.py has ended
        text = pipe.read()
    code = container.wait(120)
    assert not os.path.exists(container.root_dir), "the container's root leaked onto the host"
    assert text.strip().startswith("{"), f"no facts (exit {code})"
    out = json.loads(text)
    assert code == 0 and "error" not in out, json.dumps(out, indent=1)[-6000:]
    return out


def model_startup() -> dict[str, Any]:
    """The same templates through the model: which stores startup makes, which it skips."""
    host = ModelHost()
    seed.install(host, [seed.Entry("crash", mode=0o3770, uid=20125, gid=419),
                        seed.Entry("sample", mode=0o700, uid=20200, gid=20200)],
                 [("root", 0), ("crash", 20125), ("sample", 20200)])
    return run_startup(host)[1].to_json()


def test_install_writes_the_system_files(facts: dict[str, Any]) -> None:
    code, lines = facts["install"]
    assert code == 0
    assert "wrote /etc/dbus-1/system.d/org.chromium.UserDataAuth.conf" in lines
    assert "wrote /etc/systemd/system/daemonstore-hook.service" in lines


def test_startup_on_slash_makes_what_the_model_makes(facts: dict[str, Any]) -> None:
    code, report, _err = facts["startup"]
    model = model_startup()
    assert code == (0 if model["complete"] else 1)
    assert [(t["path"], t["outcome"]) for t in report["targets"]] == \
        [(t["path"], t["outcome"]) for t in model["targets"]]
    assert report["skipped"] == model["skipped"]
    assert ("/run/daemon-store/sample", "ready") in [(t["path"], t["outcome"])
                                                     for t in report["targets"]]
    assert "changed 0" in facts["startup_again"][1]  # idempotent


def test_login_reaches_the_jailed_daemon_through_the_hook(facts: dict[str, Any]) -> None:
    """cryptohome-sim --no-daemon-stores mounts the vault only; the hook, on "started", binds
    the stores with the template's owner and mode; the jailed daemon writes into the vault."""
    assert facts["login"][0] == 0, facts["login"]
    alice = facts["alice_target"].rsplit("/", 1)[1]
    assert any(line.startswith("daemonstore hook: session started: bound ") and alice in line
               for line in facts["hook_log"])
    assert facts["alice_binds_in_root"] == 1
    # one copy per store mount in the daemon's namespace (its hidden /run keeps one too)
    assert facts["alice_binds_in_daemon"] == facts["daemon_store_copies"]
    assert facts["daemon_write"] == 0
    assert facts["in_vault"] == "report\n"
    assert facts["owner_mode"] == [20200, 20200, "0o700"]  # the template's


def test_uid_65534_is_refused_by_the_installed_policy(facts: dict[str, Any]) -> None:
    code, err = facts["nobody_login"]
    assert code == 1
    assert "org.freedesktop.DBus.Error.AccessDenied" in err and "uid=65534" in err


def test_status_works_on_the_real_root(facts: dict[str, Any]) -> None:
    code, report, err = facts["status"]
    assert isinstance(report, dict), (report, err)
    assert code == (1 if report["problems"] else 0)
    assert report["root"] == "/" and report["backend"] == "kernel"
    assert facts["alice_target"].rsplit("/", 1)[1] in json.dumps(report["users"])


def test_default_cryptohome_binds_and_the_hook_binds_nothing_twice(
        facts: dict[str, Any]) -> None:
    """cryptohome-sim restarted in its default mode binds the stores itself (as ChromeOS's
    cryptohome does); the hook, following the names' new owner, leaves them alone."""
    default = facts["default"]
    assert default["stopped"] == 0 and default["login"][0] == 0, default
    assert default["binds_in_root"] == default["binds_in_root_later"] == 1
    assert not any("bound" in line and default["hash"] in line for line in facts["hook_log"])
    assert default["logout"] == 0 and default["after_logout_daemon"] == []


def test_a_vault_unmounted_behind_the_bus_loses_its_store_binds(facts: dict[str, Any]) -> None:
    """The hook's mount-table watch (POLLPRI on /proc/self/mountinfo): carol's vault and homes
    unmounted by hand, her store binds go without any signal."""
    carol = facts["carol"]
    assert carol["login"] == 0 and carol["daemon_saw"]
    assert carol["left_in_root"] == []
    # crash (3770, group-writable as ChromeOS ships it) and sample, each store and cache
    assert any(line.startswith("daemonstore hook: mounts changed: unbound 4 stores of ")
               for line in facts["hook_log"])


def test_logout_removes_the_store_everywhere_and_the_hook_stops_cleanly(
        facts: dict[str, Any]) -> None:
    assert facts["logout"][0] == 0, facts["logout"]
    assert facts["after_logout_daemon"] == []
    assert facts["after_logout_root"] == []
    assert facts["hook_exit"] == 0
    assert facts["hook_log"][-1] == "daemonstore hook: stopped"

