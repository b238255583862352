"""The ``--system`` interlock (docs/architecture.md §10): a command that changes
mounts refuses the machine's initial mount namespace unless given ``--system``; anywhere else no
flag is needed. The namespace probe is injected (``command.in_initial_namespace``) and the
backend is a model host, so no test here touches any namespace's mounts."""

from __future__ import annotations

import errno
from typing import Any

import pytest
from click.testing import CliRunner

from daemonstore import command
from daemonstore.boot import seed
from daemonstore.cli import main
from daemonstore.model import ModelHost

#: every command that changes mounts, with arguments that would otherwise run
CHANGERS = {
    "startup": ["startup"],
    "repair": ["repair"],
    "cleanup": ["cleanup"],
    "hook": ["hook", "--once"],
}


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Record every backend opened (root and the ``system`` it was given); a model host."""
    calls: list[dict[str, Any]] = []
    host = ModelHost()
    seed.install(host, [seed.Entry("a")], None)
    host.mkdir("/home/.shadow", parents=True)  # what cleanup measures

    def open_host(root: str, **kw: Any) -> ModelHost:
        calls.append({"root": root, **kw})
        return host

    monkeypatch.setattr(command, "open_host", open_host)
    return calls


def initial(monkeypatch: pytest.MonkeyPatch, answer: bool | OSError) -> None:
    def probe() -> bool:
        if isinstance(answer, OSError):
            raise answer
        return answer

    monkeypatch.setattr(command, "in_initial_namespace", probe)


@pytest.mark.parametrize("name", sorted(CHANGERS))
def test_initial_namespace_is_refused_without_system(
        name: str, monkeypatch: pytest.MonkeyPatch, opened: list[dict[str, Any]]) -> None:
    initial(monkeypatch, True)
    res = CliRunner().invoke(main, CHANGERS[name])
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and "initial mount namespace" in lines[0]
    assert "--system" in lines[0]
    assert opened == []  # refused before any backend was opened


@pytest.mark.parametrize("name", ["startup", "repair", "cleanup"])
def test_system_lets_it_run_in_the_initial_namespace(
        name: str, monkeypatch: pytest.MonkeyPatch, opened: list[dict[str, Any]]) -> None:
    initial(monkeypatch, True)
    res = CliRunner().invoke(main, [*CHANGERS[name], "--system"])
    assert "initial mount namespace" not in res.output
    assert res.exit_code in (0, 1), res.output  # ran: 1 is a finding of the command itself
    assert opened == [{"root": "/", "system": True}]


@pytest.mark.parametrize("name", ["startup", "repair", "cleanup"])
def test_elsewhere_no_flag_is_needed_and_root_defaults_to_slash(
        name: str, monkeypatch: pytest.MonkeyPatch, opened: list[dict[str, Any]]) -> None:
    initial(monkeypatch, False)
    res = CliRunner().invoke(main, CHANGERS[name])
    assert res.exit_code in (0, 1), res.output
    assert opened == [{"root": "/", "system": False}]


def test_startup_with_system_in_a_container_makes_the_stores(
        monkeypatch: pytest.MonkeyPatch, opened: list[dict[str, Any]]) -> None:
    initial(monkeypatch, False)
    res = CliRunner().invoke(main, ["startup"])
    assert res.exit_code == 0, res.output
    assert res.output.startswith("startup: 2 stores, 2 ready, changed 2")


@pytest.mark.parametrize("args", [["startup", "--dry-run"], ["repair", "--dry-run"],
                                  ["status"]])
def test_commands_that_only_read_need_no_flag(
        args: list[str], monkeypatch: pytest.MonkeyPatch, opened: list[dict[str, Any]]) -> None:
    initial(monkeypatch, True)
    res = CliRunner().invoke(main, args)
    assert res.exit_code in (0, 1), res.output
    # the backend may read the initial namespace, and nothing in a read changes a mount
    assert opened == [{"root": "/", "system": True}]


@pytest.mark.parametrize("args, held", [
    (["-v", "-Kslave", "--", "true"], False),
    (["-k", "tmpfs,/tmp,tmpfs", "--", "true"], False),  # -k makes a namespace too (minijail)
    (["--", "true"], True),  # no namespace of its own: the caller's
])
def test_jail_is_held_only_without_its_own_namespace(
        args: list[str], held: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """With its own namespace every mount is made after unshare, so the interlock does not
    apply. The backend refuses to open here in every case, so nothing can exec."""
    initial(monkeypatch, True)
    seen: list[dict[str, Any]] = []

    def open_host(root: str, **kw: Any) -> ModelHost:
        seen.append({"root": root, **kw})
        raise PermissionError(errno.EPERM, "stop here")

    monkeypatch.setattr(command, "open_host", open_host)
    res = CliRunner().invoke(main, ["jail", *args])
    assert res.exit_code == 2
    assert ("initial mount namespace" in res.output) == held
    assert seen == ([] if held else [{"root": "/", "system": True}])


def test_an_unknowable_namespace_is_refused_with_its_reason(
        monkeypatch: pytest.MonkeyPatch, opened: list[dict[str, Any]]) -> None:
    initial(monkeypatch, PermissionError(errno.EACCES, "cannot identify the initial mount "
                                                       "namespace"))
    res = CliRunner().invoke(main, ["startup"])
    assert res.exit_code == 2
    assert "cannot identify the initial mount namespace" in res.output
    assert "--system" in res.output
    assert opened == []
