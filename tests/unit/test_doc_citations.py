"""Citations of documents point at documents that ship, and at sections those documents have.

The code's docstrings and comments cite the project's own documents (``docs/chromeos.md §2.4``,
``docs/propagation.md §6 item 13``) and upstream ones by name (``sharedsubtree.rst``, ChromiumOS's
``sandboxing.md``). A citation of a file the repository does not hold sends a reader nowhere, so:

* every ``NAME.md`` mentioned in the source tree must exist, relative to the repository root or
  to the citing file's folder, or be one of the named exceptions in :data:`NOT_OURS`;
* every ``§N`` (``§N.M``, ``§N-M``, ``§N item K``, ``§N steps K and L``) belongs to the document
  named most recently before it in the same file; when that is one of ours, the section must be
  a numbered heading of it, and an item or step a numbered list item of that section. A ``§``
  with no document named before it is an error: a section of what? Inside ``docs/`` a ``§``
  is the citing document's own unless a link to another one comes right before it
  (``[propagation.md](propagation.md) §2.4, §3.2``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: what is scanned: the packages, the benchmarks, the tests, the documents and the top-level files
SCANNED_DIRS = ("daemonstore", "startup", "cryptohome_sim", "bench", "tests", "docs")
SCANNED_FILES = ("README.md", "SECURITY.md", "pyproject.toml")
SUFFIXES = {".py", ".md", ".proto", ".conf", ".toml", ".sh", ".cfg", ".ini", ".txt"}
SKIPPED_PARTS = {"__pycache__", ".venv", ".git"}
#: this file holds deliberately broken citations, as test input
SELF = Path(__file__).resolve()

#: ``.md`` names that are not files of this repository, and why they may be named anyway
NOT_OURS = {
    "sandboxing.md": "ChromiumOS's sandboxing guide, cited upstream by name",
    "benchmarks.md": "written by bench/run_all.py into bench/results/ (a file name in code)",
}

_URL = re.compile(r"\w+://\S+")
#: a document name: NAME.md (ours or upstream), or an upstream NAME.rst / NAME.txt
_DOC = r"(?<![\w.-])(?P<doc>(?:[\w.-]+/)*[\w-][\w.-]*\.(?:md|rst|txt))(?![\w-])"
_NUM = r"\d+(?:\.\d+)*"
_ITEMS = r"(?:items?|steps?|invariants?|inv\.)\s+(?P<items>\d+(?:(?:,\s*|\s+and\s+|-)\d+)*)"
_SECTION = (rf"§(?P<first>{_NUM})(?:\s?-\s?§?(?P<last>{_NUM}))?"
            rf"(?:,?\s+{_ITEMS})?")
_TOKEN = re.compile(rf"{_DOC}|(?P<section>{_SECTION})")
_HEADING = re.compile(rf"^#{{1,6}}\s+(?P<num>{_NUM})\.?\s", re.M)
_LIST_ITEM = re.compile(r"^ {0,3}(\d+)\.\s", re.M)
#: what may stand between a link and the sections of it that follow: ``) §1``, ``§1, §2 and §3``
_CHAINED = re.compile(r"[\s)\]`,;]*(?:and\s+)?")


@dataclass(frozen=True)
class Outline:
    """A document's numbered sections, each with the numbers of its top-level list items."""

    items: dict[str, set[int]]

    @classmethod
    def of(cls, text: str) -> Outline:
        heads = list(_HEADING.finditer(text))
        items: dict[str, set[int]] = {}
        for head, after in zip(heads, [*heads[1:], None], strict=True):
            body = text[head.end():after.start() if after else len(text)]
            items[head["num"]] = {int(n) for n in _LIST_ITEM.findall(body)}
        return cls(items)


def _resolve(name: str, citing: Path) -> Path | None:
    for base in (ROOT, citing.parent):
        path = (base / name).resolve()
        if path.is_file():
            return path
    return None


def _numbers(items: str) -> list[int]:
    """``"3 and 12"`` -> [3, 12]; ``"2-4"`` -> [2, 3, 4]."""
    out: list[int] = []
    for part in re.split(r",\s*|\s+and\s+", items):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def problems_in(text: str, citing: Path, outlines: dict[Path, Outline] | None = None) -> list[str]:
    """Every broken citation in ``text`` (the contents of the file ``citing``), one line each."""
    outlines = {} if outlines is None else outlines
    text = _URL.sub(lambda m: " " * len(m.group()), text)
    found: list[str] = []
    own = (citing.name, citing) if citing.parent == ROOT / "docs" else None
    cited: tuple[str, Path | None] | None = own  # (name as written, the file if it is ours)
    end = 0  # where the previous citation token ended
    for match in _TOKEN.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        where = f"{citing.relative_to(ROOT) if citing.is_relative_to(ROOT) else citing}:{line}"
        if own and not _CHAINED.fullmatch(text, end, match.start()):
            cited = own  # a document's bare section is its own
        end = match.end()
        if match["doc"]:
            name = match["doc"]
            path = _resolve(name, citing) if name.endswith(".md") else None
            if name.endswith(".md") and path is None and Path(name).name not in NOT_OURS:
                found.append(f"{where}: {name} is not a file of this repository (docs/ holds "
                             "ours; cite upstream documents by their project and path)")
            cited = (name, path)
            continue
        if cited is None:
            found.append(f"{where}: {match['section']!r} cites a section of no named document")
            continue
        name, path = cited
        if path is None:
            continue  # an upstream document: its sections are not ours to check
        if path not in outlines:
            outlines[path] = Outline.of(path.read_text())
        sections = outlines[path].items
        for number in filter(None, (match["first"], match["last"])):
            if number not in sections:
                found.append(f"{where}: {name} has no section §{number}")
        if match["items"] and match["first"] in sections:
            missing = [n for n in _numbers(match["items"]) if n not in sections[match["first"]]]
            if missing:
                found.append(f"{where}: {name} §{match['first']} has no item {missing}")
    return found


def _scanned() -> list[Path]:
    files = [ROOT / name for name in SCANNED_FILES]
    for folder in SCANNED_DIRS:
        files += sorted(p for p in (ROOT / folder).rglob("*")
                        if p.is_file() and p.suffix in SUFFIXES
                        and not SKIPPED_PARTS & set(p.relative_to(ROOT).parts))
    return [p for p in files if p.resolve() != SELF]


def test_every_citation_points_at_a_shipped_document_and_section() -> None:
    outlines: dict[Path, Outline] = {}
    found = [problem for path in _scanned()
             for problem in problems_in(path.read_text(errors="replace"), path, outlines)]
    assert found == []


def test_the_documents_ship() -> None:
    assert {p.name for p in (ROOT / "docs").glob("*.md")} >= {
        "architecture.md", "chromeos.md", "propagation.md"}


def test_the_scan_covers_the_source_tree() -> None:
    scanned = {p.relative_to(ROOT).as_posix() for p in _scanned()}
    assert {"daemonstore/host.py", "startup/__init__.py", "cryptohome_sim/core.py",
            "bench/boot.py", "daemonstore/dbus/proto/rpc.proto", "docs/chromeos.md",
            "README.md"} <= scanned


# ---- the checker itself, on made-up text ----------------------------------------------------

HERE = ROOT / "daemonstore" / "example.py"  # a citing file at the depth of the real ones


@pytest.mark.parametrize("text", [
    "see docs/chromeos.md §2.4 and §7 item 1",
    "docs/chromeos.md §7 items 3 and 12; §2.2 step 3",
    "docs/propagation.md §2.2-2.7, §6 item 13, §1.1 invariant 4",
    "docs/chromeos.md §4-§5",
    "(docs/chromeos.md\n    §1)",
    "kernel: sharedsubtree.rst §5b; ChromiumOS sandboxing.md",
    "the guide: https://example.invalid/HEAD/nowhere.md",
    "README.md and SECURITY.md",
])
def test_good_citations_pass(text: str) -> None:
    assert problems_in(text, HERE) == []


@pytest.mark.parametrize(("text", "complaint"), [
    ("cited: design" + ".md, the CLI", "is not a file of this repository"),
    ("docs/style.md habit 1", "is not a file of this repository"),
    ("docs/chromeos.md §9", "has no section §9"),
    ("docs/chromeos.md §2.9", "has no section §2.9"),
    ("docs/propagation.md §2.2-2.11", "has no section §2.11"),
    ("docs/chromeos.md §7 item 13", "§7 has no item [13]"),
    ("docs/chromeos.md §7 items 1 and 14", "§7 has no item [14]"),
    ("a bare §3 with nothing named before it", "cites a section of no named document"),
])
def test_bad_citations_are_named(text: str, complaint: str) -> None:
    found = problems_in(text, HERE)
    assert len(found) == 1 and complaint in found[0], found
    assert found[0].startswith("daemonstore/example.py:1: ")


def test_inside_docs_a_bare_section_is_the_documents_own() -> None:
    chromeos = ROOT / "docs" / "chromeos.md"
    # §7 item 12 and §2.6 are chromeos.md's; §2.4, §3.2 follow a link to propagation.md, which
    # has them (and chromeos.md has no §3.2); after other words the document's own again: §8.3
    text = ("see §7 item 12, [propagation.md](propagation.md) §2.4, §3.2 and §2.10; then §2.6 "
            "and §8.3")
    assert problems_in(text, chromeos) == []
    assert problems_in("[propagation.md](propagation.md) says more; §6 item 20", chromeos) == [
        "docs/chromeos.md:1: chromeos.md §6 has no item [20]"]
