"""``daemonstore-startup`` / ``daemonstore startup`` through click's CliRunner on the model (the
backend factory is swapped for a prepared ModelHost; the real kernel CLI runs are in
tests/kernel/test_startup_kernel.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from daemonstore import command
from daemonstore.boot import seed as demo
from daemonstore.cli import main as daemonstore_main
from daemonstore.cli.startup import startup_command
from daemonstore.kernel import SandboxRefused
from daemonstore.model import ModelHost


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> ModelHost:
    h = ModelHost()
    monkeypatch.setattr(command, "open_host", lambda root, **_: h)
    return h


def invoke(*args: str, cmd: Any = startup_command) -> Any:
    return CliRunner().invoke(cmd, list(args), catch_exceptions=False)


def test_all_valid_exits_0_with_a_summary(host: ModelHost) -> None:
    demo.install(host, [demo.Entry("a"), demo.Entry("b")], None)
    res = invoke("--root", "/r")
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines() == ["startup: 4 stores, 4 ready, changed 4, 0 not ready, "
                                       "0 templates skipped, 0 orphans"]
    assert res.stderr == ""


def test_skipped_templates_exit_1_one_line_each_naming_the_path(host: ModelHost) -> None:
    demo.install(host)
    res = invoke("--root", "/r")
    assert res.exit_code == 1
    lines = res.stderr.splitlines()
    assert len(lines) == len(demo.SAMPLE_SKIPPED)
    for name in demo.SAMPLE_SKIPPED:
        assert any(f"skipped /etc/daemon-store/{name}: " in ln for ln in lines), name
    assert all(ln.startswith("daemonstore-startup: ") for ln in lines)
    # everything else was still done, and a second run says so without changing anything
    before = host.mountinfo()
    res = invoke("--root", "/r")
    assert res.exit_code == 1 and host.mountinfo() == before
    assert "changed 0" in res.stdout


def test_dry_run_prints_the_plan_and_changes_nothing(host: ModelHost) -> None:
    demo.install(host, [demo.Entry("a")], None)
    before = host.mountinfo()
    res = invoke("--dry-run")
    assert res.exit_code == 0
    assert host.mountinfo() == before and not host.exists("/run")
    lines = res.stdout.splitlines()
    assert "mount --bind /run/daemon-store/a /run/daemon-store/a" in lines
    assert "mount --make-shared /run/daemon-store-cache/a" in lines
    assert "mkdir -m 0755 /run/daemon-store-cache/a" in lines
    assert lines[-1].startswith("# startup: 2 stores, 0 ready, would change 2")


def test_json_is_one_object_with_the_exit_code(host: ModelHost) -> None:
    demo.install(host)
    res = invoke("--json", "--root", "/r")
    assert res.exit_code == 1
    assert res.stdout.count("\n") == 1
    data = json.loads(res.stdout)
    assert (data["root"], data["backend"], data["exit_code"], data["complete"]) == \
        ("/r", "model", 1, False)
    assert {s["path"].rsplit("/", 1)[1] for s in data["skipped"]} == set(demo.SAMPLE_SKIPPED)
    assert res.stderr == ""


def test_json_dry_run_includes_the_plan_lines(host: ModelHost) -> None:
    demo.install(host, [demo.Entry("a")], None)
    data = json.loads(invoke("--json", "--dry-run").stdout)
    assert data["dry_run"] and "mount --make-shared /run/daemon-store/a" in data["plan"]


def test_verbose_prints_steps_before_running_them(host: ModelHost) -> None:
    demo.install(host, [demo.Entry("a")], None)
    res = invoke("-v")
    assert res.exit_code == 0
    assert "+ mount --bind /run/daemon-store/a /run/daemon-store/a" in res.stdout
    assert "/run/daemon-store/a: ready (missing before)" in res.stdout


def test_orphans_are_reported_but_exit_0(host: ModelHost) -> None:
    demo.install(host, [demo.Entry("a")], None)
    host.mkdir("/run/daemon-store/gone", parents=True)
    res = invoke()
    assert res.exit_code == 0
    assert "orphan /run/daemon-store/gone: no template" in res.stderr


def test_refusal_to_run_is_exit_2_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(root: str, **_: object) -> ModelHost:
        raise SandboxRefused("refusing to run in the machine's initial mount namespace")

    monkeypatch.setattr(command, "open_host", refuse)
    res = invoke("--root", "/somewhere")
    assert res.exit_code == 2
    assert res.stderr.strip().splitlines() == [
        "Error: --root /somewhere: refusing to run in the machine's initial mount namespace"]


def test_real_backend_refuses_the_initial_namespace_or_a_non_tmpfs_root(tmp_path: Any) -> None:
    # the real KernelHost, no monkeypatching: in pytest's (initial or non-tmpfs) setting it must
    # refuse with exit 2 before touching anything
    res = invoke("--root", str(tmp_path))
    assert res.exit_code == 2 and res.stderr.startswith("Error: --root ")
    assert list(tmp_path.iterdir()) == []


def test_bad_usage_is_exit_2() -> None:
    assert invoke("--no-such-option").exit_code == 2


def test_help_documents_the_exit_codes() -> None:
    out = invoke("--help").stdout
    assert "Exit codes:" in out and "  0  " in out and "  1  " in out and "  2  " in out


def test_registered_as_daemonstore_startup(host: ModelHost) -> None:
    demo.install(host, [demo.Entry("a")], None)
    res = invoke("startup", "--json", cmd=daemonstore_main)
    assert res.exit_code == 0 and json.loads(res.stdout)["complete"]


def test_verify_flag_checks_the_result(host: ModelHost) -> None:
    demo.install(host, [demo.Entry("a")], None)
    res = invoke("--verify", "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["complete"]


def test_a_template_owned_by_chronos_exits_1_naming_path_owner_and_rule(host: ModelHost) -> None:
    demo.install(host, [demo.Entry("ok", uid=20104), demo.Entry("bad", uid=1000)],
                 [("root", 0), ("shill", 20104), ("chronos", 1000)])
    res = invoke("--root", "/r")
    assert res.exit_code == 1
    (line,) = res.stderr.splitlines()
    assert "skipped /etc/daemon-store/bad: owned by uid 1000, which is not a system user" in line
    assert "1-999 or 20100-29999" in line and "chronos (1000)" in line
    assert "startup: 2 stores, 2 ready" in res.stdout  # the valid template still got its stores
