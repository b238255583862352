"""``daemonstore audit [--json] [--simulate] [--group-file FILE] PATH...`` (thin CLI layer).

Exit codes: 0 clean (info findings at most), 1 at least one warning or error, 2 an input could
not be read. ``--list-rules`` prints the rule table (id, severity, what, source) and exits 0.
"""

from __future__ import annotations

import json
import sys

import click

from daemonstore.audit import audit_paths, exit_code, format_text, parse_group_file, summary
from daemonstore.audit.rules import RULES


@click.command("audit")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--simulate", is_flag=True,
              help="Build each daemon-store jail on the model around a sign-in.")
@click.option("--group-file", type=click.Path(dir_okay=False), default=None,
              help="An /etc/group to resolve -G (chronos-access-group).")
@click.option("--list-rules", is_flag=True, help="Print the rule table and exit.")
@click.argument("paths", nargs=-1)
def audit_command(as_json: bool, simulate: bool, group_file: str | None, list_rules: bool,
                  paths: tuple[str, ...]) -> None:
    """Check upstart jobs and minijail config files (PATHs; directories give their *.conf) for
    sandboxing and daemon-store mistakes, with the parser `daemonstore jail` uses."""
    if list_rules:
        for r in RULES:
            click.echo(f"{r.id:28} {r.severity:8} {r.what} [{r.cite}]")
        return
    if not paths:
        raise click.UsageError("give at least one PATH (an upstart .conf or a minijail config)")
    groups: dict[str, list[str]] = {}
    if group_file is not None:
        try:
            with open(group_file, encoding="utf-8") as f:
                groups = parse_group_file(f.read())
        except (OSError, UnicodeDecodeError) as exc:
            click.echo(f"{group_file}: cannot read: {exc}", err=True)
            sys.exit(2)
    reports = audit_paths(paths, groups=groups, simulate=simulate)
    if as_json:
        click.echo(json.dumps({"files": [r.to_json() for r in reports],
                               "summary": summary(reports)}, indent=1))
    else:
        for line in format_text(reports):
            click.echo(line)
    sys.exit(exit_code(reports))
