"""``daemonstore demo`` on the model: the whole story runs, its facts hold, the output is the same
every time (seeded salt), and the CLI writes the propagation picture (the kernel run, and its
equality with this one, is tests/kernel/test_demo_status_kernel.py; --bus is in tests/dbus)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from daemonstore.cli import main
from daemonstore.demo import picture
from daemonstore.demo import story as demo
from daemonstore.demo.facts import broken_facts
from daemonstore.demo.signers import GuestUnavailable, InProcess


@pytest.fixture(scope="module")
def result() -> demo.DemoResult:
    return demo.run_demo()


@pytest.fixture(scope="module")
def lines(result: demo.DemoResult) -> list[str]:
    return demo.render(result)


def test_story_facts(result: demo.DemoResult) -> None:
    facts = result.facts
    assert facts["startup_problems"] == []
    assert facts["landed_in_vault"] == {"biod": True, "shill": True, "crash": True,
                                        "crash-cache": True}
    # after alice signs out, nothing of hers is reachable in any daemon's namespace
    assert facts["visible_after_sign_out"] == {"daemon-biod": [], "daemon-shill": [],
                                               "daemon-crash": []}
    assert facts["files_back"] == {"biod": True, "shill": True, "crash": True}
    assert facts["problems"] == []
    assert facts["busy_sign_out"] == {"holders": 1, "held_after": 1, "holder_attached": False,
                                      "holder_sees_store": False, "held_after_release": 0}
    assert broken_facts(result) == []


def test_guest_session(result: demo.DemoResult) -> None:
    guest = result.facts["guest"]
    assert guest["seen_while_signed_in"] == {"daemon-biod": "store+cache",
                                             "daemon-shill": "store+cache",
                                             "daemon-crash": "store+cache"}
    assert guest["seen_after"] == {} and guest["file_left"] is False


def test_guest_unavailable_is_said_not_faked(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: InProcess, user_hash: str) -> int:
        raise GuestUnavailable("no guest sessions here")

    monkeypatch.setattr(InProcess, "login_guest", refuse)
    res = demo.run_demo()
    assert res.facts["guest"] == "not available"
    said = ("  not available in this build: no guest sessions here; this step is skipped, not "
            "simulated")
    assert said in res.lines
    after = res.lines[res.lines.index(said) + 1:]
    assert not any("guest" in line for line in after if "NAMESPACE" in line)


def test_deterministic(lines: list[str]) -> None:
    assert demo.render(demo.run_demo()) == lines


def test_key_lines(result: demo.DemoResult, lines: list[str]) -> None:
    alice = next(h for h, name in result.aliases.items() if name == "alice")
    assert lines[0] == "daemonstore demo on the model (pure Python: no root, no mounts)"
    assert "  $ daemonstore jail -v -Kslave \\" in lines
    assert "        -k 'tmpfs,/run,tmpfs,MS_NODEV|MS_NOEXEC|MS_NOSUID' \\" in lines
    assert f"  alice@example.com -> hash {alice} (SHA-1 of salt + name); 13 mounts, among them " \
           "/run/daemon-store*/<d>/<alice>" in lines
    assert ("    -> /home/.shadow/<alice>/vault/root/biod/fingerprints.dat reads back the same "
            "bytes") in lines
    assert ("  daemon-biod reads /run/daemon-store/biod/<alice>/fingerprints.dat: \"alice's "
            "fingerprint templates\"") in lines
    assert "  daemon-biod lists bob's store: empty (alice's files are not there)" in lines
    assert "  problems: none" in lines
    picture = lines[lines.index("== 12. the propagation picture (stores and vaults, visible "
                                "mounts) =="):]
    assert "G1 peers: init:/run/daemon-store/biod" in picture
    assert "  `-> slave daemon-biod:/run/daemon-store/biod" in picture
    assert "  |-> slave daemon-biod:/run/daemon-store/biod/<alice>" in picture


def test_tables_after_sign_in_and_sign_out(lines: list[str]) -> None:
    def table_after(heading: str) -> list[str]:
        start = lines.index(heading)
        first = next(i for i in range(start, len(lines)) if "NAMESPACE" in lines[i])
        return lines[first:first + 7]

    signed_in = table_after("== 4. alice signs in ==")
    assert signed_in[0].split() == ["NAMESPACE", "DAEMON", "alice"]
    assert [r.split() for r in signed_in[1:]] == [
        ["init", "biod", "store+cache"], ["init", "shill", "store+cache"],
        ["init", "crash", "store+cache"], ["daemon-biod", "biod", "store+cache"],
        ["daemon-shill", "shill", "store+cache"], ["daemon-crash", "crash", "store+cache"]]
    signed_out = table_after("== 6. alice signs out ==")
    assert all(r.split()[2:] == ["-"] for r in signed_out[1:])


# ---- the CLI ------------------------------------------------------------------------------------


def test_cli_demo(lines: list[str]) -> None:
    res = CliRunner().invoke(main, ["demo"])
    assert res.exit_code == 0, res.output
    assert res.output.splitlines() == lines


def test_cli_graph_without_dot_keeps_the_dot_file(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(picture.shutil, "which", lambda name: None)
    res = CliRunner().invoke(main, ["demo", "--graph", str(tmp_path / "out.svg")])
    assert res.exit_code == 0, res.output
    dot = (tmp_path / "out.dot").read_text()
    assert dot.startswith("digraph propagation {") and '"G1" -> ' in dot
    assert not (tmp_path / "out.svg").exists()
    assert res.output.splitlines()[-2:] == [
        f"graph: wrote {tmp_path}/out.dot",
        f"graph: Graphviz 'dot' is not installed, so no {tmp_path}/out.svg; render it elsewhere "
        f"with: dot -Tsvg {tmp_path}/out.dot -o {tmp_path}/out.svg"]


def test_cli_graph_runs_dot_when_installed(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "dot"  # records its argv and writes the -o file, like dot -Tsvg
    fake.write_text('#!/bin/sh\necho "$@" > "$0.args"\necho "<svg/>" > "$4"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(picture.shutil, "which", lambda name: str(fake))
    res = CliRunner().invoke(main, ["demo", "--graph", str(tmp_path / "pic")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "pic.svg").read_text() == "<svg/>\n"
    assert (tmp_path / "dot.args").read_text().split() == [
        "-Tsvg", f"{tmp_path}/pic.dot", "-o", f"{tmp_path}/pic.svg"]
    assert res.output.splitlines()[-1] == f"graph: wrote {tmp_path}/pic.svg"


def test_cli_graph_unwritable_exits_2(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["demo", "--graph", str(tmp_path / "no/such/dir/x.svg")])
    assert res.exit_code == 2
    assert res.output.splitlines()[-1].startswith(f"Error: --graph {tmp_path}/no/such/dir/x.svg: ")


@pytest.mark.parametrize(("name", "dot", "svg"), [
    ("out.svg", "out.dot", "out.svg"), ("out.dot", "out.dot", "out.svg"),
    ("out", "out.dot", "out.svg"), ("a/b.c", "a/b.c.dot", "a/b.c.svg")])
def test_graph_paths(name: str, dot: str, svg: str) -> None:
    assert picture.graph_paths(name) == (Path(dot), Path(svg))


def test_broken_facts_fail_the_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    real = demo.run_demo

    def leaky(**kwargs: bool) -> demo.DemoResult:
        res = real(**kwargs)
        res.facts["visible_after_sign_out"]["daemon-biod"] = ["store"]
        return res

    monkeypatch.setattr(demo, "run_demo", leaky)
    res = CliRunner().invoke(main, ["demo"])
    assert res.exit_code == 1
    assert "demo: still visible after sign-out in daemon-biod: store" in res.output


def test_kernel_without_root_exits_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("daemonstore.kernel.sandbox.kernel_unavailable_reason",
                        lambda: "needs root (euid 0) for unshare(CLONE_NEWNS) and mount(2)")
    res = CliRunner().invoke(main, ["demo", "--kernel"])
    assert res.exit_code == 2
    assert res.output == ("Error: --kernel: needs root (euid 0) for unshare(CLONE_NEWNS) and "
                          "mount(2); drop --kernel to run on the model\n")


def test_fresh_machine_runtime_is_small(result: demo.DemoResult) -> None:
    assert result.seconds < 5, "the README promises a few seconds on a fresh machine"
