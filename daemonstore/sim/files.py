"""What the ``daemonstore sim`` commands do, minus argv (sim layer): load a scenario file, run it
on a backend (the pure model, or the kernel in a sandbox), compare backends, render a result as a
readable table (no exit codes here; the cli owns those, docs/architecture.md §9).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemonstore import mountinfo
from daemonstore.errors import DaemonStoreError
from daemonstore.model import ModelHost
from daemonstore.ops import Op, canonical_result, parse, run_scenario


class ScenarioFileError(DaemonStoreError):
    """A scenario file cannot be used: unreadable, not UTF-8, or a syntax error (one line)."""


@dataclass(frozen=True)
class Loaded:
    path: str
    text: str
    ops: list[Op]

    def line_text(self, line: int) -> str:
        lines = self.text.splitlines()
        return lines[line - 1].strip() if 0 < line <= len(lines) else ""


def load(path: str | os.PathLike[str]) -> Loaded:
    """Read and parse a scenario file; every failure is a one-line ScenarioFileError."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ScenarioFileError(f"{path}: cannot read scenario: {reason}") from None
    try:
        ops = parse(text)
    except ValueError as exc:  # ScenarioSyntaxError names the line and the reason
        raise ScenarioFileError(f"{path}: {exc}") from None
    return Loaded(str(path), text, ops)


def kernel_unavailable() -> str | None:
    """Why the kernel backend cannot run here, or None. Checked before the real work so the user
    gets one clear line instead of a traceback from unshare(2); the euid test comes first because
    it needs no fork."""
    if os.geteuid() != 0:
        return "the kernel backend needs root (CAP_SYS_ADMIN) to create a private mount namespace"
    from daemonstore.kernel.sandbox import kernel_unavailable_reason  # probes in a forked child

    reason = kernel_unavailable_reason()
    return f"the kernel backend cannot run here: {reason}" if reason else None


def run_on_model(ops_or_text: str | Sequence[Op]) -> dict[str, Any]:
    """Run a scenario on a fresh pure model (its "/" is a private tmpfs ``sandbox``)."""
    return run_scenario(ModelHost(), ops_or_text)


def run_on_kernel(ops_or_text: str | Sequence[Op]) -> dict[str, Any]:
    """Run a scenario on the real kernel, in a forked child inside a fresh private mount
    namespace with a fresh tmpfs sandbox (needs root). Syntax errors surface here, in the caller,
    before any fork."""
    from daemonstore.kernel import run_in_sandbox  # only this path needs the kernel backend

    ops = parse(ops_or_text) if isinstance(ops_or_text, str) else list(ops_or_text)
    return run_in_sandbox(run_scenario, ops)


def run(ops: Sequence[Op], kernel: bool = False) -> dict[str, Any]:
    return run_on_kernel(ops) if kernel else run_on_model(ops)


def diff(ops: Sequence[Op]) -> list[str]:
    """Model vs kernel on one scenario, as canonical_diff lines (empty = same)."""
    model = canonical_result(run_on_model(ops))
    kernel = canonical_result(run_on_kernel(ops))
    return mountinfo.canonical_diff(model, kernel, "model", "kernel")


# ---- the readable table ---------------------------------------------------------------------

_COLUMNS = ("ID", "MOUNT POINT", "ROOT", "FSTYPE", "SOURCE", "PROPAGATION", "PARENT")


def propagation_label(entry: mountinfo.MountInfoEntry) -> str:
    """``shared:1``, ``master:2``, ``shared:1 master:2``, ``unbindable`` or ``private``: the
    mountinfo optional fields, which is how the kernel itself names propagation state."""
    return " ".join(entry.tags(all_fields=False)) or "private"


def format_namespace(text: str) -> list[str]:
    entries = mountinfo.parse(text)
    by_id = {e.mount_id: e for e in entries}
    rows = []
    for e in entries:
        parent = by_id.get(e.parent_id)
        # the sandbox root's parent lies outside the sandbox (kernel) or is itself (model)
        where = f"{parent.mount_id} {parent.mount_point}" if parent and parent is not e else "-"
        rows.append((str(e.mount_id), e.mount_point, e.root, e.fstype, e.source,
                     propagation_label(e), where))
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(_COLUMNS)]
    out = []
    for row in [_COLUMNS, *rows]:
        out.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return out


def format_result(result: dict[str, Any], loaded: Loaded | None = None) -> str:
    """The non-JSON output of ``sim run``: one table per namespace, then the failed lines."""
    out: list[str] = []
    for name, text in result["namespaces"].items():
        out.append(f"namespace {name}:")
        out.extend("  " + line for line in format_namespace(text))
        out.append("")
    errors = result["errors"]
    if not errors:
        out.append("errors: none")
    else:
        out.append(f"errors: {len(errors)}")
        for line, err in errors:
            src = loaded.line_text(line) if loaded else ""
            out.append(f"  line {line}: {err}" + (f"  ({src})" if src else ""))
    return "\n".join(out)
