"""``daemonstore sim`` through click's CliRunner, on the model; the kernel is stubbed out so
these run everywhere (the real-kernel CLI runs are in tests/kernel/test_cli_kernel.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from daemonstore import mountinfo
from daemonstore.cli import main
from daemonstore.ops import parse
from daemonstore.sim import files as sim
from daemonstore.sim.files import run_on_model
from tests.scenario_files import SCENARIO_FILES, expected


def _file(prefix: str) -> Path:
    return next(p for p in SCENARIO_FILES if p.name.startswith(prefix))


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture
def fake_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend to be root and let the "kernel" be the model (no fork, no namespace)."""
    monkeypatch.setattr(sim, "kernel_unavailable", lambda: None)
    monkeypatch.setattr(sim, "run_on_kernel", run_on_model)


@pytest.fixture
def not_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)

    def forbidden(*_: object) -> None:
        raise AssertionError("must not reach the kernel without root")

    monkeypatch.setattr(sim, "run_on_kernel", forbidden)


# ---- sim run --------------------------------------------------------------------------------


def test_run_json_sc01_shared_bind_propagates_both_ways() -> None:
    res = invoke("sim", "run", "--json", str(_file("sc01-")))
    assert res.exit_code == 0
    assert res.output.count("\n") == 1  # exactly one JSON object, one line
    out = json.loads(res.output)
    assert out["errors"] == []
    entries = {e.mount_point: e for e in mountinfo.parse(out["namespaces"]["init"])}
    assert set(entries) == {"/", "/mnt", "/tmp", "/tmp/a", "/mnt/a", "/mnt/b", "/tmp/b"}
    # /mnt and its bind /tmp are peers; each submount has a propagated peer on the other side
    assert entries["/mnt"].shared is not None and entries["/mnt"].shared == entries["/tmp"].shared
    assert entries["/mnt/a"].shared == entries["/tmp/a"].shared != entries["/mnt"].shared
    assert entries["/tmp/b"].source == entries["/mnt/b"].source == "sd1"
    assert entries["/"].source == "sandbox" and entries["/"].propagation == "private"
    want = mountinfo.canonical(expected(_file("sc01-"))["namespaces"], [])
    assert mountinfo.canonical(out["namespaces"], out["errors"]) == want


def test_run_json_records_errors_and_namespaces() -> None:
    out = json.loads(invoke("sim", "run", "--json", str(_file("sc46-"))).output)
    assert out["errors"] == [[4, "EINVAL"], [5, "EINVAL"], [6, "EINVAL"], [9, "EINVAL"],
                             [10, "EINVAL"]]
    out = json.loads(invoke("sim", "run", "--json", str(_file("sc37-"))).output)
    assert list(out["namespaces"]) == ["init", "kid"]
    kid = mountinfo.parse(out["namespaces"]["kid"])
    assert any(e.master is not None for e in kid)  # --propagation slave made slaves


def test_run_table_shows_columns_propagation_and_failed_lines() -> None:
    res = invoke("sim", "run", str(_file("sc24-")))
    assert res.exit_code == 0
    lines = res.output.splitlines()
    assert lines[0] == "namespace init:"
    assert lines[1].split() == ["ID", "MOUNT", "POINT", "ROOT", "FSTYPE", "SOURCE",
                                "PROPAGATION", "PARENT"]
    assert any(ln.split()[1:5] == ["/", "/", "tmpfs", "sandbox"] and "private" in ln
               for ln in lines[2:])
    assert any(ln.split()[1] == "/B2" and "shared:" in ln for ln in lines[2:])
    assert "errors: 1" in lines
    assert "  line 11: EBUSY  (umount /B1/b)" in lines


def test_run_table_master_label_and_second_namespace() -> None:
    out = invoke("sim", "run", str(_file("sc37-"))).output
    assert "namespace kid:" in out
    assert "master:" in out
    assert "errors: none" in out


def test_run_missing_file_is_exit_2_one_line(tmp_path: Path) -> None:
    res = invoke("sim", "run", str(tmp_path / "nope.txt"))
    assert res.exit_code == 2
    assert res.output.strip().count("\n") == 0
    assert "cannot read scenario: No such file or directory" in res.output


def test_run_syntax_error_is_exit_2_with_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("mkdir /a\n# fine\nmount --make-sideways /a\n")
    res = invoke("sim", "run", "--json", str(bad))
    assert res.exit_code == 2
    assert res.output.strip().count("\n") == 0
    assert "line 3: unknown propagation option '--make-sideways'" in res.output


def test_run_kernel_without_root_is_exit_2(not_root: None) -> None:
    res = invoke("sim", "run", "--kernel", "--json", str(_file("sc01-")))
    assert res.exit_code == 2
    assert res.output.startswith("Error: the kernel backend needs root")
    assert "drop --kernel to use the model" in res.output


# ---- sim diff -------------------------------------------------------------------------------


def test_diff_same(fake_kernel: None) -> None:
    res = invoke("sim", "diff", str(_file("sc01-")), str(_file("sc02-")))
    assert res.exit_code == 0
    assert f"{_file('sc01-')}: same" in res.output.splitlines()
    assert "diff: 2 scenarios, 0 differ" in res.output


def test_diff_reports_difference_and_exits_1(fake_kernel: None,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    def kernel_without_last_op(ops: Any) -> dict[str, Any]:
        return run_on_model(list(ops)[:-1])

    monkeypatch.setattr(sim, "run_on_kernel", kernel_without_last_op)
    res = invoke("sim", "diff", str(_file("sc01-")))
    assert res.exit_code == 1
    assert f"{_file('sc01-')}: differs" in res.output
    assert "[init] only model: /mnt/b" in res.output


def test_diff_needs_root(not_root: None) -> None:
    assert invoke("sim", "diff", str(_file("sc01-"))).exit_code == 2


def test_diff_needs_an_argument() -> None:
    assert invoke("sim", "diff").exit_code == 2


# ---- sim fuzz -------------------------------------------------------------------------------


def test_fuzz_model_against_itself_has_no_divergence(fake_kernel: None) -> None:
    res = invoke("sim", "fuzz", "--seed", "3", "--count", "8")
    assert res.exit_code == 0
    assert res.output.startswith("fuzz: 8 scenarios, ")
    assert res.output.rstrip().endswith(" ops, 0 divergences")


def test_fuzz_shrinks_and_writes_divergences(fake_kernel: None, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    def kernel_ignoring_make_shared(ops: Any) -> dict[str, Any]:
        kept = [op for op in ops if "make-shared" not in op.to_line()]
        return run_on_model(kept)

    monkeypatch.setattr(sim, "run_on_kernel", kernel_ignoring_make_shared)
    res = invoke("sim", "fuzz", "--seed", "1", "--count", "6", "--out", str(tmp_path / "o"))
    assert res.exit_code == 1
    assert "divergence: seed 1 scenario" in res.output
    files = sorted((tmp_path / "o").glob("fuzz-seed1-*.txt"))
    assert files
    for f in files:
        ops = parse(f.read_text())
        # shrunk: the make-shared op is kept, and nothing that can go without losing the diff
        assert any("make-shared" in op.to_line() for op in ops)
        assert len(ops) <= 4, f.read_text()


def test_fuzz_bad_ranges_and_root(not_root: None) -> None:
    assert invoke("sim", "fuzz", "--seed", "1", "--count", "1").exit_code == 2
    res = invoke("sim", "fuzz", "--seed", "1", "--ops-min", "9", "--ops-max", "3")
    assert res.exit_code == 2 and "--ops-min 9 is larger than --ops-max 3" in res.output
    assert invoke("sim", "fuzz", "--count", "1").exit_code == 2  # --seed is required


def test_help_lists_the_contract_commands() -> None:
    out = invoke("sim", "--help").output
    for name in ("run", "diff", "fuzz"):
        assert f"  {name} " in out


def test_run_model_not_implemented_is_exit_1_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def unsupported(ops: Any) -> dict[str, Any]:
        raise NotImplementedError("remount")

    monkeypatch.setattr(sim, "run_on_model", unsupported)
    res = invoke("sim", "run", str(_file("sc01-")))
    assert res.exit_code == 1
    assert res.output.strip().endswith("not implemented by the model: remount")
    assert res.output.strip().count("\n") == 0


def test_propagation_label_is_the_mountinfo_tags_of_propagation_state() -> None:
    line = "36 35 98:0 / /mnt rw shared:1 master:2 propagate_from:3 unbindable x:y - tmpfs t rw"
    entry = mountinfo.parse_line(line)
    assert entry.render() == line
    assert sim.propagation_label(entry) == "shared:1 master:2 unbindable"
    assert sim.propagation_label(mountinfo.parse_line("1 1 0:1 / / rw - tmpfs s rw")) == "private"
