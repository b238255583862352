"""``daemonstore cleanup``: argv -> thresholds and a Host -> :func:`run_cleanup` (or
:func:`watch`) -> output and exit code. Thin (docs/architecture.md §9).

The backend is the real kernel, ``KernelHost(--root)``, with its safety rules (a tmpfs mount point
in a private mount namespace; never the machine's initial namespace). Tests swap
:func:`daemonstore.command.open_host` for a model host.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from daemonstore.cleanup.apply import run_cleanup, watch
from daemonstore.cleanup.plan import (
    DEFAULT_AGGRESSIVE,
    DEFAULT_CRITICAL,
    DEFAULT_NORMAL,
    DEFAULT_TARGET,
    NEEDS_CLEANUP,
    CleanupReport,
    Thresholds,
    format_size,
    parse_size,
)
from daemonstore.command import ROOT_HELP, bus_address, host_for, step_logger, system_option
from daemonstore.dbus.lowdisk import LowDiskNotifier

EXIT_OK = 0
EXIT_SHORT = 1

_EPILOG = """\b
Exit codes:
  0  nothing to do, or done: the target is met or the state is above the normal threshold
     (always 0 for --dry-run and --watch)
  1  every cache that may go was cleared and the target is still missed, or a step failed
  2  bad usage, or cannot run here (--root unusable, free space not measurable)
"""


def _size(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _size_option(name: str, default: int, what: str) -> Any:
    return click.option(f"--{name}", metavar="SIZE", callback=_size, default=None,
                        help=f"{what} (default {format_size(default)}).")


def _output(report: CleanupReport, root: str, backend: str, as_json: bool) -> None:
    if as_json:
        code = EXIT_OK if report.ok else EXIT_SHORT
        click.echo(json.dumps({"root": root, "backend": backend, "exit_code": code,
                               **report.to_json()}))
    else:
        for line in report.lines():
            click.echo(line)


@click.command("cleanup", epilog=_EPILOG,
               context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--root", default="/", show_default=True, metavar="DIR",
              help=ROOT_HELP)
@system_option
@click.option("--dry-run", is_flag=True, help="Print the ordered plan and the predicted "
                                              "steps (+); delete nothing.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object per pass (JSON lines with --watch).")
@_size_option("target", DEFAULT_TARGET, "Stop once this much is free")
@_size_option("normal", DEFAULT_NORMAL, "Clean up when less than this is free")
@_size_option("aggressive", DEFAULT_AGGRESSIVE,
              "Below this, signed-in users' caches go too")
@_size_option("critical", DEFAULT_CRITICAL, "Below this the state is critical")
@click.option("--watch", "interval", type=click.FloatRange(min=0, min_open=True), default=None,
              metavar="INTERVAL", help="Check now and then every INTERVAL seconds.")
@click.option("--count", type=click.IntRange(min=1), default=None,
              help="With --watch: stop after N passes (default: until interrupted).")
@click.option("-v", "--verbose", is_flag=True, help="Print each step before it runs.")
def cleanup_command(root: str, system: bool, dry_run: bool, as_json: bool, target: int | None,
                    normal: int | None, aggressive: int | None, critical: int | None,
                    interval: float | None, count: int | None, verbose: bool) -> None:
    """Free disk space by clearing daemon-store caches, as cryptohome does when space runs low.

    Signed-out users' root/.cache/<d> contents go first (least recently active user first),
    then, when free space is below the aggressive threshold, signed-in users'
    /run/daemon-store-cache/<d>/<H> contents; it stops as soon as the target is free. Symlinks
    are never followed, other mounts never entered, the cache directories themselves kept.
    """
    if count is not None and interval is None:
        raise click.UsageError("--count needs --watch")
    given = {"target": target, "normal": normal, "aggressive": aggressive,
             "critical": critical}
    try:
        thresholds = Thresholds(**{k: v for k, v in given.items() if v is not None})
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    log = step_logger(verbose, err=as_json)
    with host_for(root, system=system, changes_mounts=not dry_run, what="cleanup",
                  explain=_unmeasurable) as host:
        try:
            if interval is None:
                report = run_cleanup(host, thresholds, dry_run=dry_run, log=log)
                _output(report, root, host.kind, as_json)
                code = EXIT_OK if report.ok else EXIT_SHORT
            else:
                notify = _low_disk_notifier(root)

                def on_report(report: CleanupReport) -> None:
                    _output(report, root, host.kind, as_json)
                    if report.state_before in NEEDS_CLEANUP:  # docs/chromeos.md §6.2
                        problem = notify(report.plan.free)
                        if problem:
                            click.echo(f"daemonstore cleanup: {problem}", err=True)

                watch(host, thresholds, interval=interval, count=count, dry_run=dry_run,
                      log=log, on_report=on_report)
                code = EXIT_OK
        except KeyboardInterrupt:
            code = EXIT_OK
    sys.exit(code)


def _low_disk_notifier(root: str) -> LowDiskNotifier:
    """``--watch`` signals low space on the system bus (daemonstore.dbus.lowdisk)."""

    return LowDiskNotifier(bus_address(None, root))


def _unmeasurable(exc: OSError) -> str:
    return f"cannot measure the free space of /home/.shadow: {exc.strerror or exc}"
