"""The conformance suite, model half: every shipped scenario on the pure model must equal what
Linux 6.18 recorded (tests/scenarios/expected), compared canonically (docs/propagation.md §5: two
results are equal when their canonical forms are equal). The live-kernel half is tests/kernel."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemonstore import mountinfo
from daemonstore.ops import canonical_result
from daemonstore.sim.files import run_on_model
from tests.scenario_files import (
    BUSY_DIR,
    BUSY_FILES,
    CONFORMANCE_FILES,
    REGRESSION_FILES,
    SCENARIO_DIR,
    SCENARIO_FILES,
    SHARED_BUSY_DIR,
    SHARED_DIR,
    expected,
    scenario_id,
)


def test_corpus_is_complete() -> None:
    assert len(SCENARIO_FILES) >= 46
    assert REGRESSION_FILES
    assert len(BUSY_FILES) >= 7
    for path in SCENARIO_FILES + REGRESSION_FILES + BUSY_FILES:
        assert (path.parent / "expected" / f"{path.stem}.json").is_file(), path.name


@pytest.mark.skipif(not SHARED_DIR.is_dir(), reason="no shared scenario corpus next to the repo")
def test_scenario_copy_in_sync() -> None:
    """tests/scenarios is a copy of ../shared/scenarios: every file we copied must still be
    byte-identical there (new shared files are run directly, see SHARED_EXTRA)."""
    for pattern in ("*.txt", "expected/*.json"):
        ours = {p.relative_to(SCENARIO_DIR): p.read_bytes() for p in SCENARIO_DIR.glob(pattern)}
        theirs = {p.relative_to(SHARED_DIR): p.read_bytes() for p in SHARED_DIR.glob(pattern)}
        missing = [str(k) for k in ours if k not in theirs]
        assert not missing, f"no longer in the shared corpus: {missing}"
        changed = [str(k) for k in ours if ours[k] != theirs[k]]
        assert not changed, f"shared scenarios changed: {changed}"


@pytest.mark.skipif(not SHARED_BUSY_DIR.is_dir(), reason="no shared busy corpus next to the repo")
def test_busy_copy_in_sync() -> None:
    """Every scenario and recording of ../shared/scenarios/busy is in tests/scenarios/busy,
    byte-identical (our own b* scenarios live only here)."""
    for pattern in ("*.txt", "expected/*.json"):
        for theirs in SHARED_BUSY_DIR.glob(pattern):
            ours = BUSY_DIR / theirs.relative_to(SHARED_BUSY_DIR)
            assert ours.is_file(), f"not copied from the shared corpus: {ours.name}"
            assert ours.read_bytes() == theirs.read_bytes(), f"changed upstream: {ours.name}"


@pytest.mark.parametrize("path", CONFORMANCE_FILES, ids=scenario_id)
def test_model_matches_recorded_kernel(path: Path) -> None:
    got = canonical_result(run_on_model(path.read_text()))
    want = canonical_result(expected(path))
    diffs = mountinfo.canonical_diff(got, want, "model", "linux-6.18")
    assert not diffs, f"{path.name}:\n" + "\n".join(diffs)


def test_result_shape_is_the_sim_run_json_format() -> None:
    path = next(p for p in SCENARIO_FILES if p.name.startswith("sc34-"))
    result = run_on_model(path.read_text())
    assert set(result) == {"errors", "namespaces"}
    assert list(result["namespaces"])[0] == "init"
    assert set(result["namespaces"]) == {"init", "child"}
    for text in result["namespaces"].values():
        entries = mountinfo.parse(text)
        assert entries[0].mount_point == "/" and entries[0].source == "sandbox"
        assert not text.endswith("\n")


def test_errors_carry_physical_line_numbers() -> None:
    path = next(p for p in SCENARIO_FILES if p.name.startswith("sc46-"))
    assert run_on_model(path.read_text())["errors"] == [
        [4, "EINVAL"], [5, "EINVAL"], [6, "EINVAL"], [9, "EINVAL"], [10, "EINVAL"]]
