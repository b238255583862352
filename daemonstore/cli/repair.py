"""``daemonstore repair [--root DIR] [--system] [--dry-run] [--json]``: a thin click command over
:mod:`daemonstore.session.repair` (registered in ``cli/__init__.py``).

Exit codes: 0 the host is consistent (after the changes, or it already was); 1 something could
not be repaired (a blocked store, a mount that would not go, a store bind that could not be
finished; each has a line on stderr); 2 cannot run here (``--root`` unusable, the machine's
initial mount namespace without ``--system``: the interlock).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from daemonstore.command import ROOT_HELP, host_for, system_option
from daemonstore.session.repair import repair

EXIT_CONSISTENT = 0
EXIT_INCOMPLETE = 1

_EPILOG = """\b
Exit codes:
  0  consistent: stores ready, every signed-in user's session complete, nothing leaked
  1  something could not be repaired (see stderr); the rest was done
  2  bad usage, or cannot run here (e.g. the initial mount namespace, --root unusable)
"""


@click.command("repair", epilog=_EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--root", default="/", show_default=True, metavar="DIR",
              help=ROOT_HELP)
@system_option
@click.option("--dry-run", is_flag=True, help="Print what would be done; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def repair_command(root: str, system: bool, dry_run: bool, as_json: bool) -> None:
    """Converge after a crash: finish startup, tear down sign-ins that were cut short (or finish
    their missing store binds), unmount binds of users who are not signed in, remove empty
    leftover mount points. Never deletes user data; a second run changes nothing."""
    with host_for(root, system=system, changes_mounts=not dry_run, what="repair") as host:
        plan, report = repair(host, dry_run=dry_run)
    code = EXIT_CONSISTENT if report.ok else EXIT_INCOMPLETE
    if as_json:
        out: dict[str, Any] = {"root": root, "dry_run": dry_run, "exit_code": code,
                               **report.to_json()}
        if dry_run:
            out["plan"] = plan.to_lines()
        click.echo(json.dumps(out))
    else:
        if dry_run:
            for line in plan.to_lines():
                click.echo(line)
        else:
            for line in report.lines():
                click.echo(line, err="NOT complete" in line or line.startswith("startup problem"))
        click.echo(report.summary())
    sys.exit(code)
