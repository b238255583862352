"""``daemonstore audit`` through click's CliRunner: output, JSON and the exit codes
(0 clean or info only, 1 a warning or error, 2 an input that cannot be read)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from daemonstore.cli import main

CORPUS = Path(__file__).resolve().parents[1] / "audit_corpus"
GOOD = CORPUS / "good"
BAD = CORPUS / "bad"


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, ["audit", *args], catch_exceptions=False)


def test_clean_configs_exit_0() -> None:
    result = invoke(str(GOOD))
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "audit: 5 files, 0 errors, 0 warnings, 0 info"


def test_info_only_exits_0() -> None:
    result = invoke(str(BAD / "unknown-option.conf"), str(BAD / "no-minijail.conf"))
    assert result.exit_code == 0
    assert "info unknown-option: --no-such-option" in result.output


def test_findings_exit_1_with_path_line_and_rule() -> None:
    path = BAD / "store-propagation-private.conf"
    result = invoke(str(path))
    assert result.exit_code == 1
    first = result.output.splitlines()[0]
    assert first.startswith(f"{path}:7: error store-propagation-private: -Kprivate: ")


def test_unreadable_input_exits_2_and_the_rest_is_still_audited(tmp_path: Path) -> None:
    broken = tmp_path / "broken.conf"
    broken.write_text("% minijail-config-file v0\nmount =\n")
    result = invoke(str(broken), str(tmp_path / "missing.conf"),
                    str(BAD / "forbidden-intersection.conf"))
    assert result.exit_code == 2
    assert f"{broken}:2: cannot parse" in result.output
    assert "missing.conf: cannot read" in result.output
    assert "error forbidden-intersection" in result.output


def test_json() -> None:
    result = invoke("--json", str(BAD / "caps-root-equivalent.conf"), str(GOOD / "mtpd.conf"))
    assert result.exit_code == 1
    doc = json.loads(result.output)
    assert doc["summary"] == {"files": 2, "unreadable": 0, "error": 1, "warning": 0, "info": 0}
    (finding,) = doc["files"][0]["findings"]
    assert finding["rule"] == "caps-root-equivalent" and finding["arg"] == "-c 0x80"
    assert finding["line"] == 7 and finding["severity"] == "error"
    assert doc["files"][1]["findings"] == [] and doc["files"][1]["simulations"] == []


def test_simulate_text_and_json(tmp_path: Path) -> None:
    store = "'/run/daemon-store/foo,/run/daemon-store/foo,none,MS_BIND|MS_REC'"
    slave = tmp_path / "slave.conf"
    slave.write_text(f"exec minijail0 -v -Kslave -k {store} -- /usr/bin/foo\n")
    private = tmp_path / "private.conf"
    private.write_text(f"exec minijail0 -v -Kprivate -k {store} -- /usr/bin/foo\n")
    result = invoke("--simulate", str(slave), str(private))
    assert f"{slave}:1: simulate: sign-in propagates" in result.output
    assert f"{private}:1: simulate: never sees sign-ins" in result.output
    assert "  the daemon's own mounts leak out: none" in result.output
    doc = json.loads(invoke("--simulate", "--json", str(slave)).output)
    (sim,) = doc["files"][0]["simulations"]
    assert sim["verdict"] == "sign-in propagates" and sim["line"] == 1 and sim["leaks"] == []


def test_group_file_resolves_g(tmp_path: Path) -> None:
    job = tmp_path / "job.conf"
    job.write_text("exec minijail0 -u foo -g foo -G -n -- /usr/bin/foo\n")
    group = tmp_path / "group"
    group.write_text("chronos-access:x:1001:chronos,foo\n")
    assert invoke(str(job)).exit_code == 0
    result = invoke("--group-file", str(group), str(job))
    assert result.exit_code == 1 and "chronos-access-group: -G:" in result.output
    assert invoke("--group-file", str(tmp_path / "nope"), str(job)).exit_code == 2


def test_list_rules_and_usage() -> None:
    result = invoke("--list-rules")
    assert result.exit_code == 0 and result.output.startswith("minijail-refuses")
    assert len(result.output.splitlines()) == 18
    assert invoke().exit_code == 2  # no PATH: a usage error
