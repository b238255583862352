"""README's "For daemon authors" shows examples/mydaemon whole: each block under a
``<!-- file: PATH -->`` line is byte-identical to that file, every file of the example is shown
once, and no other code block hides there (only the one-line run command), so the README's
example alone is what tests/system/test_examples.py runs (issue 16 "Done when")."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "mydaemon"
FENCE = re.compile(r"^```([a-z]*)\n(.*?)^```\n", re.M | re.S)
MARKER = re.compile(r"<!-- file: (\S+) -->\n\Z")


def _section() -> str:
    text = (ROOT / "README.md").read_text()
    assert "\n## For daemon authors\n" in text
    section = text.split("\n## For daemon authors\n", 1)[1].split("\n## ", 1)[0]
    assert text.index("## For daemon authors") < text.index("\n## Layout\n")
    return section


def _blocks() -> list[tuple[str | None, str, str]]:
    """(file the block shows or None, language, content) for each fenced block, in order."""
    section = _section()
    out = []
    for match in FENCE.finditer(section):
        marker = MARKER.search(section[:match.start()])
        out.append((marker.group(1) if marker else None, match.group(1), match.group(2)))
    return out


def test_every_shown_file_is_byte_identical() -> None:
    shown = [(path, content) for path, _, content in _blocks() if path is not None]
    assert shown, "no <!-- file: ... --> block in the section"
    for path, content in shown:
        assert (ROOT / path).read_text() == content, f"README's block differs from {path}"


def test_every_file_of_the_example_is_shown_once() -> None:
    files = sorted(str(p.relative_to(ROOT)) for p in EXAMPLE.iterdir()
                   if p.is_file() and not p.name.endswith(".pyc"))
    assert sorted(path for path, _, _ in _blocks() if path is not None) == files


def test_the_only_other_block_is_the_run_command() -> None:
    others = [(lang, content) for path, lang, content in _blocks() if path is None]
    assert others == [("sh", "pytest examples/mydaemon -q\n")]


def test_blocks_are_labelled_by_language() -> None:
    langs = {Path(path).suffix: lang for path, lang, _ in _blocks() if path is not None}
    assert langs == {".py": "python", ".sh": "sh"}


def test_no_conftest_beside_the_example() -> None:
    assert [p for p in (EXAMPLE, EXAMPLE.parent, ROOT) if (p / "conftest.py").exists()] == []
