"""The demo's propagation picture as files (front end: writes ``--graph``'s DOT file and, when
Graphviz is installed, renders it to SVG with ``dot``).

The picture itself is :mod:`daemonstore.report.graph`; this module only names the files, writes
them and reports what it did as lines to print.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from daemonstore.demo.story import DemoResult
from daemonstore.errors import DaemonStoreError
from daemonstore.report import graph

__all__ = ["GraphUnwritable", "graph_paths", "write_graph"]


class GraphUnwritable(DaemonStoreError):
    """The DOT file could not be written; the message names it and the reason."""


def graph_paths(name: str) -> tuple[Path, Path]:
    """``--graph out.svg`` (or ``out.dot``, or ``out``) -> (out.dot, out.svg)."""
    path = Path(name)
    stem = path.with_suffix("") if path.suffix in (".svg", ".dot") else path
    return stem.with_name(stem.name + ".dot"), stem.with_name(stem.name + ".svg")


def write_graph(result: DemoResult, name: str) -> list[str]:
    """Write the DOT file and, if Graphviz's ``dot`` is installed, the SVG; lines to print."""
    dot_path, svg_path = graph_paths(name)
    try:
        dot_path.write_text(graph.render_dot(result.picture(), result.aliases), encoding="utf-8")
    except OSError as exc:
        raise GraphUnwritable(f"cannot write {dot_path}: {exc.strerror}") from None
    lines = [f"graph: wrote {dot_path}"]
    exe = shutil.which("dot")
    if exe is None:
        return lines + [f"graph: Graphviz 'dot' is not installed, so no {svg_path}; render it "
                        f"elsewhere with: dot -Tsvg {dot_path} -o {svg_path}"]
    done = subprocess.run([exe, "-Tsvg", str(dot_path), "-o", str(svg_path)],
                          capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        return lines + [f"graph: dot failed ({reason}); kept {dot_path}"]
    return lines + [f"graph: wrote {svg_path}"]
