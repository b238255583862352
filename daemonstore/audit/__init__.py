"""``daemonstore audit``: sandboxing and daemon-store mistakes in init scripts, before they ship
(library layer: reads the given files, no mounts; ``--simulate`` runs on the pure model).

``parse`` turns upstart jobs and minijail config files into minijail0 argv with positions,
:func:`daemonstore.jail.spec.parse_jail_args` (``audit=True``; the parser ``daemonstore jail``
uses too) turns argv into a JailSpec, ``rules`` judges it, ``simulate`` builds it on the model.

Exit codes (``cli.py``): 0 nothing above info, 1 at least one warning or error, 2 an input could
not be read (a missing file, a config file minijail could not parse, an unterminated quote).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from daemonstore.audit import rules
from daemonstore.audit.parse import Input, Invocation, read_inputs
from daemonstore.audit.rules import ERROR, INFO, WARNING, Finding, Jail
from daemonstore.jail.spec import parse_jail_args

if TYPE_CHECKING:
    from daemonstore.audit.simulate import Simulation

__all__ = ["FileReport", "Finding", "audit_paths", "exit_code", "parse_group_file"]


@dataclass
class FileReport:
    """The audit of one input file."""

    path: str
    kind: str
    findings: list[Finding] = field(default_factory=list)
    error: str | None = None
    note: str | None = None
    #: (invocation line, simulation) for ``--simulate``
    simulations: list[tuple[int, Simulation]] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {"path": self.path, "kind": self.kind, "error": self.error, "note": self.note,
                "findings": [f.to_json() for f in self.findings],
                "simulations": [{"line": line, **sim.to_json()}
                                for line, sim in self.simulations]}


# "no-minijail" and "config-unresolved" are about a file or an invocation, not a jail: they are
# in the table (for --list and the README) and emitted here.
@rules.rule("config-unresolved", WARNING,
            "--config FILE is not among the audited inputs: the jail is not judged",
            "minijail0_cli.c --config")
def _config_unresolved(j: Jail, r: rules.Rule) -> Iterator[Finding]:
    yield from ()


@rules.rule("no-minijail", INFO, "an upstart job with no minijail0 invocation",
            "sandboxing.md ('In most cases, Minijail is used in the service's init script')")
def _no_minijail(j: Jail, r: rules.Rule) -> Iterator[Finding]:
    yield from ()


def parse_group_file(text: str) -> dict[str, list[str]]:
    """``/etc/group`` lines -> group name -> member user names (for ``-G``)."""
    groups: dict[str, list[str]] = {}
    for line in text.splitlines():
        fields = line.strip().split(":")
        if len(fields) >= 4 and fields[0] and not fields[0].startswith("#"):
            groups[fields[0]] = [m for m in fields[3].split(",") if m]
    return groups


def audit_invocation(inv: Invocation, groups: dict[str, list[str]] | None = None,
                     *, simulate: bool = False) -> tuple[list[Finding], Simulation | None]:
    """Findings for one minijail0 invocation (and its simulation when asked)."""
    if inv.unresolved_config is not None:
        r = rules.by_id("config-unresolved")
        path, line = inv.location(None)
        why = (f"--config {inv.unresolved_config} was not given to the audit, so the jail is "
               f"not judged; add the config file to the PATHs ({r.cite})")
        return [Finding(r.id, r.severity, f"--config {inv.unresolved_config}", why, line,
                        path)], None
    spec = parse_jail_args(list(inv.argv), audit=True)
    findings = rules.check(Jail(spec, inv, groups or {}))
    order = {r.id: i for i, r in enumerate(rules.RULES)}
    findings.sort(key=lambda f: (f.path != inv.path, f.path, f.line, order[f.rule_id]))
    sim = None
    if simulate:
        from daemonstore.audit.simulate import simulate as run_simulation

        sim = run_simulation(spec)
    return findings, sim


def _file_report(item: Input, groups: dict[str, list[str]], simulate: bool) -> FileReport:
    report = FileReport(item.path, item.kind, error=item.error)
    if item.error is not None:
        return report
    if item.used_by is not None:
        report.note = f"audited as the --config of {item.used_by}"
        return report
    if item.kind == "upstart" and not item.invocations:
        r = rules.by_id("no-minijail")
        report.findings.append(Finding(r.id, r.severity, "(no minijail0)", "the job runs its "
                                       f"program without a sandbox ({r.cite})", 1, item.path))
    for inv in item.invocations:
        findings, sim = audit_invocation(inv, groups, simulate=simulate)
        report.findings += findings
        if sim is not None:
            report.simulations.append((inv.line, sim))
    return report


def audit_paths(paths: Sequence[str], *, groups: dict[str, list[str]] | None = None,
                simulate: bool = False) -> list[FileReport]:
    """Audit every file (directories give their ``*.conf`` files)."""
    return [_file_report(item, groups or {}, simulate) for item in read_inputs(paths)]


def exit_code(reports: Sequence[FileReport]) -> int:
    """2 if an input could not be read, else 1 if a warning or error was found, else 0."""
    if any(r.error for r in reports):
        return 2
    if any(f.severity in (ERROR, WARNING) for r in reports for f in r.findings):
        return 1
    return 0


def summary(reports: Sequence[FileReport]) -> dict[str, int]:
    counts = {"files": len(reports), "unreadable": sum(1 for r in reports if r.error)}
    for sev in (ERROR, WARNING, INFO):
        counts[sev] = sum(1 for r in reports for f in r.findings if f.severity == sev)
    return counts


def format_text(reports: Sequence[FileReport]) -> list[str]:
    """One line per finding (``path:line: severity rule: arg: why``), the simulations, and a
    summary line."""
    out: list[str] = []
    for report in reports:
        if report.error:
            out.append(f"{report.error}")
        for f in report.findings:
            out.append(f"{f.path}:{f.line}: {f.severity} {f.rule_id}: {f.arg}: {f.why}")
        for line, sim in report.simulations:
            out.append(f"{report.path}:{line}: simulate: {sim.verdict}")
            out += [f"  {text}" for text in sim.lines]
    c = summary(reports)
    parts = [_count(c["files"], "file"), _count(c[ERROR], "error"),
             _count(c[WARNING], "warning"), f"{c[INFO]} info"]
    if c["unreadable"]:
        parts.append(f"{c['unreadable']} unreadable")
    out.append("audit: " + ", ".join(parts))
    return out


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")
