"""README's "Layout" section lists exactly the tree: every module and package of daemonstore/,
and the top-level folders it names exist (a moved module must move in the README too)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _layout_lines() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```\n(.*?)```", section, re.S)
    assert block, "README's Layout section has no code block"
    return block.group(1).splitlines()


def _entries(indent: str) -> set[str]:
    return {line.split()[0] for line in _layout_lines()
            if line.startswith(indent) and not line.startswith(indent + " ")}


def test_layout_lists_every_part_of_the_package() -> None:
    package = ROOT / "daemonstore"
    parts = {p.name for p in package.glob("*.py")}
    parts |= {f"{p.name}/" for p in package.iterdir() if (p / "__init__.py").is_file()}
    assert _entries("  ") == parts


def test_layout_top_level_folders_exist() -> None:
    top = _entries("")
    assert {"daemonstore/", "startup/", "cryptohome_sim/", "bench/", "tests/"} <= top
    assert [name for name in top if not (ROOT / name).is_dir()] == []
