"""``daemonstore sim`` on the real kernel, through CliRunner (the commands fork the sandbox)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from daemonstore import mountinfo
from daemonstore.cli import main
from tests.scenario_files import SCENARIO_FILES, expected

pytestmark = pytest.mark.kernel


def _file(prefix: str) -> Path:
    return next(p for p in SCENARIO_FILES if p.name.startswith(prefix))


def test_run_kernel_json_matches_recording() -> None:
    path = _file("sc24-")
    res = CliRunner().invoke(main, ["sim", "run", "--kernel", "--json", str(path)])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["errors"] == [[11, "EBUSY"]]
    want = expected(path)
    assert (mountinfo.canonical(out["namespaces"], out["errors"])
            == mountinfo.canonical(want["namespaces"], want["errors"]))
    root = mountinfo.parse(out["namespaces"]["init"])[0]
    assert (root.mount_point, root.source) == ("/", "sandbox")


def test_diff_same_on_kernel() -> None:
    files = [str(_file(p)) for p in ("sc01-", "sc24-", "sc37-")]
    res = CliRunner().invoke(main, ["sim", "diff", *files])
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[:3] == [f"{f}: same" for f in files]


def test_fuzz_small_run(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["sim", "fuzz", "--seed", "7", "--count", "5",
                                    "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[-1].startswith("fuzz: 5 scenarios, ")
    assert res.output.rstrip().endswith(" 0 divergences")
    assert not list(tmp_path.iterdir())
