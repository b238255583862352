"""The scenario corpus the conformance tests run: tests/scenarios/*.txt with the Linux 6.18
results in tests/scenarios/expected/*.json (a copy of the shared corpus, so the repo is
self-contained; test_scenario_copy_in_sync notices when the shared corpus moves on), plus
tests/scenarios/regressions/: divergences the fuzzer found, shrunk, with the result this
project's kernel backend recorded on Linux 6.18 (``daemonstore sim run --kernel --json``), and
tests/scenarios/busy/: files held open (``hold``/``release``), the shared sc61-sc62 copied from
../shared/scenarios/busy and this project's own b01-b05 recorded the same way."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SCENARIO_DIR = REPO / "tests" / "scenarios"
SHARED_DIR = REPO.parent / "shared" / "scenarios"

SCENARIO_FILES: list[Path] = sorted(SCENARIO_DIR.glob("*.txt"))
REGRESSION_FILES: list[Path] = sorted((SCENARIO_DIR / "regressions").glob("*.txt"))
BUSY_DIR = SCENARIO_DIR / "busy"
SHARED_BUSY_DIR = SHARED_DIR / "busy"
BUSY_FILES: list[Path] = sorted(BUSY_DIR.glob("*.txt"))
#: scenarios the shared corpus holds beyond our copy (e.g. SC47-SC60 once they are published):
#: run them too, straight from ../shared/scenarios, wherever a recorded result comes with them
SHARED_EXTRA: list[Path] = sorted(
    p for p in (SHARED_DIR.glob("*.txt") if SHARED_DIR.is_dir() else [])
    if not (SCENARIO_DIR / p.name).exists()
    and (p.parent / "expected" / f"{p.stem}.json").is_file())
#: everything the model must reproduce
CONFORMANCE_FILES: list[Path] = SCENARIO_FILES + REGRESSION_FILES + BUSY_FILES + SHARED_EXTRA


def expected(path: Path) -> dict[str, Any]:
    """The recorded kernel result for one scenario file."""
    return json.loads((path.parent / "expected" / (path.stem + ".json")).read_text())


def scenario_id(path: Path) -> str:
    return path.stem.split("-", 1)[0]
