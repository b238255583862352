"""The architecture as a test: which part of the product may import which (AST imports, no import).

An *area* is a subpackage of ``daemonstore`` (``daemonstore.session``), a top-level module of it
(``daemonstore.paths``), or one of the other top-level packages (``startup``, ``cryptohome_sim``).
Areas sit in tiers; an area imports only areas of its own tier or below, and no two areas (nor
two modules) import each other, directly or round a cycle. Imports inside functions count too:
a lazy import is still a dependency.

    tier 6  the facade     daemonstore/__init__.py: the public API; nothing of ours imports it
    tier 5  front ends     cli, demo, testing (the pytest plugin), startup (the boot entry point)
    tier 4  compositions   world, audit, command, cryptohome_sim
    tier 3  components     boot, session, jail, daemon, dbus, report, cleanup, sim, hook, install
    tier 2  plans          ops
    tier 1  backends       model (pure), kernel (the only ctypes user)
    tier 0  vocabulary     errors, mountflags, paths, host, mountinfo, mounttree, records
"""

from __future__ import annotations

import ast
import itertools
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("daemonstore", "startup", "cryptohome_sim")

TIERS: dict[str, int] = {
    **dict.fromkeys(("daemonstore.errors", "daemonstore.mountflags", "daemonstore.paths",
                     "daemonstore.host", "daemonstore.hostlane", "daemonstore.mountinfo",
                     "daemonstore.mounttree", "daemonstore.records"), 0),
    **dict.fromkeys(("daemonstore.model", "daemonstore.kernel"), 1),
    "daemonstore.ops": 2,
    **dict.fromkeys(("daemonstore.boot", "daemonstore.session", "daemonstore.jail",
                     "daemonstore.daemon", "daemonstore.dbus", "daemonstore.report",
                     "daemonstore.cleanup", "daemonstore.sim", "daemonstore.hook",
                     "daemonstore.install"), 3),
    **dict.fromkeys(("daemonstore.world", "daemonstore.audit", "daemonstore.command",
                     "cryptohome_sim"), 4),
    **dict.fromkeys(("daemonstore.cli", "daemonstore.demo", "daemonstore.testing", "startup"), 5),
    "daemonstore": 6,  # the package itself: the public API, re-exported (test_exports.py)
}
# Standard-library or third-party modules that only some areas may touch.
ONLY = {
    "ctypes": {"daemonstore.kernel"},
    "pytest": {"daemonstore.testing"},
    "pytest_asyncio": {"daemonstore.testing"},
    "pyudev": {"daemonstore.kernel"},
}
PURE = {"daemonstore.model"}  # no os, no ctypes, no subprocess: the model runs anywhere
IMPURE = {"os", "ctypes", "subprocess", "socket", "posix", "fcntl", "shutil", "pathlib"}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every module ``name`` imports, absolute, with ``from X import Y`` resolved to X.Y when
    X.Y is a module of ours (so ``from daemonstore import paths`` is an edge to paths)."""
    is_package = path.name == "__init__.py"
    here = name.split(".") if is_package else name.split(".")[:-1]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here[: len(here) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            submodules = {f"{base}.{alias.name}" for alias in node.names} & MODULES.keys()
            out.update(submodules)
            if len(submodules) < len(node.names):  # some names are attributes of ``base``
                out.add(base)
    return {m for m in out if m}


IMPORTS = {name: _imports(name, path) for name, path in MODULES.items()}


def area(module: str) -> str | None:
    """The area a module of ours belongs to (None for anything else)."""
    parts = module.split(".")
    if parts[0] not in PACKAGES:
        return None
    if parts[0] != "daemonstore":
        return parts[0]
    return ".".join(parts[:2])


def _ours(module: str) -> str | None:
    """The longest prefix of ``module`` that is one of our modules."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in MODULES:
            return ".".join(parts[:end])
    return None


def _edges() -> dict[str, set[str]]:
    return {name: {t for m in imported if (t := _ours(m)) and t != name}
            for name, imported in IMPORTS.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = itertools.count()
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = next(counter)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = next(counter)
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph.get(succ, ())))))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_every_area_has_a_tier():
    missing = sorted({a for m in MODULES if (a := area(m)) not in TIERS})
    assert missing == [], f"areas with no tier in TIERS: {missing}"


def test_imports_go_down_the_tiers():
    wrong = []
    for name, targets in _edges().items():
        for target in targets:
            src, dst = area(name), area(target)
            if src in TIERS and dst in TIERS and TIERS[dst] > TIERS[src]:
                wrong.append(f"{name} (tier {TIERS[src]}) imports {target} (tier {TIERS[dst]})")
    assert wrong == []


def test_the_model_is_pure():
    wrong = [f"{name} imports {m}" for name, imported in IMPORTS.items()
             if area(name) in PURE for m in imported if m.split(".")[0] in IMPURE]
    assert wrong == []


@pytest.mark.parametrize("library", sorted(ONLY))
def test_library_used_only_where_allowed(library):
    wrong = [f"{name} imports {library}" for name, imported in IMPORTS.items()
             if any(m.split(".")[0] == library for m in imported)
             and area(name) not in ONLY[library]]
    assert wrong == []


def test_core_imports_no_front_end_simulator_or_boot_entry():
    """What a device runs and a daemon links (tiers 0-3) never reaches the boot entry point,
    the simulator or the pytest plugin."""
    banned = {"startup", "cryptohome_sim", "daemonstore.testing"}
    wrong = [f"{name} imports {t}" for name, targets in _edges().items()
             if TIERS.get(area(name), 9) <= 3 for t in targets if area(t) in banned]
    assert wrong == []


def test_no_import_cycles_between_modules():
    assert _cycles(_edges()) == []


def test_no_import_cycles_between_areas():
    graph: dict[str, set[str]] = defaultdict(set)
    for name, targets in _edges().items():
        for target in targets:
            if (a := area(name)) != (b := area(target)):
                graph[a].add(b)
    assert _cycles(dict(graph)) == []


def test_modules_stay_small():
    """No module over 500 lines outside the model (whose files mirror fs/namespace.c and
    fs/pnode.c function by function)."""
    big = {name: n for name, path in MODULES.items()
           if area(name) not in PURE and (n := len(path.read_text().splitlines())) > 500}
    assert big == {}
