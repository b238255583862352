"""``daemonstore-startup`` (also ``daemonstore startup``): argv -> a Host -> run_startup -> output
and exit code. Thin (docs/architecture.md §9); the logic is in daemonstore.boot.plan and
daemonstore.boot.apply.

The backend is the real kernel, ``KernelHost(--root)``, on ``/`` by default (chromeos_startup
runs ``daemonstore-startup --system``) or on a sandbox root (a private tmpfs mount point). In the
machine's initial mount namespace it refuses unless ``--system`` (the interlock,
:func:`daemonstore.command.check_interlock`).

Exit codes (also in ``--help``):

* 0: every template valid and every store ready (orphaned stores are reported but not counted:
  they are left alone on purpose);
* 1: something was skipped or is not ready: an invalid template, a blocked store (symlink or
  foreign mount at its path) or a failed step; everything else was still done;
* 2: bad usage, or cannot run here (``--root`` unusable, the initial mount namespace, no root).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from daemonstore.boot.apply import run_startup
from daemonstore.command import ROOT_HELP, host_for, step_logger, system_option

EXIT_COMPLETE = 0
EXIT_INCOMPLETE = 1

_EPILOG = """\b
Exit codes:
  0  every template valid, every store a shared self-bind (orphans are only reported)
  1  some template skipped or store not ready (blocked or failed); the rest was done
  2  bad usage, or cannot run here (e.g. the initial mount namespace, --root unusable)
"""


def _err(text: str) -> None:
    click.echo(f"daemonstore-startup: {text}", err=True)


@click.command("startup", epilog=_EPILOG,
               context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--root", default="/", show_default=True, metavar="DIR",
              help=ROOT_HELP)
@system_option
@click.option("--dry-run", is_flag=True,
              help="Print the plan as scenario-language lines; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (the report).")
@click.option("--verify", is_flag=True,
              help="After the steps, re-read mountinfo and check every changed store.")
@click.option("-v", "--verbose", is_flag=True, help="Print each step before it runs.")
def startup_command(root: str, system: bool, dry_run: bool, as_json: bool, verify: bool,
                    verbose: bool) -> None:
    """Turn /etc/daemon-store templates into shared /run/daemon-store{,-cache} mounts.

    Invalid templates (symlinks, non-directories, bad names, unknown owners, group- or
    world-writable) are skipped with a reason; the rest go ahead. Idempotent: a second run
    changes nothing.
    """
    log = step_logger(verbose, err=as_json)
    # a dry run changes nothing: no interlock. An OSError in the block: the host itself failed
    # (mountinfo unreadable)
    with host_for(root, system=system, changes_mounts=not dry_run,
                  what="daemonstore-startup") as host:
        plan, report = run_startup(host, dry_run=dry_run, log=log, verify=verify)
    code = EXIT_COMPLETE if report.complete else EXIT_INCOMPLETE
    if as_json:
        out: dict[str, Any] = {"root": root, "backend": host.kind, "exit_code": code,
                               **report.to_json()}
        if dry_run:
            out["plan"] = plan.to_lines()
        click.echo(json.dumps(out))
    elif dry_run:
        for line in plan.to_lines():
            click.echo(line)
        click.echo(f"# {report.summary()}")
    else:
        for line in report.problem_lines():
            _err(line)
        for orphan in report.orphans:
            _err(f"orphan {orphan.line()}")
        if verbose:
            for result in report.results:
                click.echo(result.line())
        click.echo(report.summary())
    sys.exit(code)


def main() -> None:
    """Console script entry point (``daemonstore-startup``)."""
    startup_command(prog_name="daemonstore-startup")
