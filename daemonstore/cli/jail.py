"""``daemonstore jail``: the minijail0-compatible front end (argv -> JailSpec -> plan -> exec).

click would reinterpret minijail's getopt-style words (``-Kslave``, ``--``), so this command takes
its arguments raw and hands them to :func:`daemonstore.jail.spec.parse_jail_args`, the one parser
(style.md habit 10: argv -> spec is tested without any kernel). Our own options come first:

    daemonstore jail [--root DIR] [--dry-run] [--name NAME] MINIJAIL-ARGS... [--] CMD ARGS...

Exit codes: 2 bad arguments (position and reason) or a refused environment; 1 a jail step failed
(the step and the path are named); otherwise the command's own, since we exec it.
"""

from __future__ import annotations

from typing import Any

import click

from daemonstore import command
from daemonstore.command import CannotRun
from daemonstore.jail.plan import JailError, exec_jail, plan_jail
from daemonstore.jail.spec import JailSpecError, parse_jail_args

USAGE = __doc__.split("\n\n")[2].strip() if __doc__ else ""


class _RawCommand(click.Command):
    """Keep argv exactly as given (``--`` included) for the minijail parser."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["raw_args"] = list(args)
        return []


def _own_options(args: list[str]) -> tuple[dict[str, Any], list[str]]:
    opts: dict[str, Any] = {"root": None, "dry_run": False, "name": "jail"}
    while args:
        word = args[0]
        if word in ("-h", "--help"):
            opts["help"] = True
            return opts, []
        if word == "--dry-run":
            opts["dry_run"] = True
            args = args[1:]
        elif word in ("--root", "--name"):
            if len(args) < 2:
                raise click.UsageError(f"{word} needs a value")
            opts[word[2:]] = args[1]
            args = args[2:]
        elif word.startswith(("--root=", "--name=")):
            key, _, value = word[2:].partition("=")
            opts[key] = value
            args = args[1:]
        else:
            break
    return opts, args


@click.command("jail", cls=_RawCommand, add_help_option=False)
@click.pass_context
def jail_command(ctx: click.Context) -> None:
    """Start CMD in a new mount namespace, minijail0-style (``-v -Kslave -k ...``)."""
    opts, args = _own_options(ctx.meta["raw_args"])
    if opts.get("help"):
        click.echo(f"Usage: {USAGE}\n\n{__doc__}")
        return
    try:
        spec = parse_jail_args(args)
    except JailSpecError as exc:
        raise CannotRun(f"bad jail argument: {exc}") from None
    for warning in spec.warnings:
        click.echo(f"warning: {warning}", err=True)
    steps = plan_jail(spec, opts["name"])
    if opts["dry_run"]:
        for step in steps:
            click.echo(step.to_line())
        click.echo("exec " + " ".join(spec.command))
        return
    if not spec.command:
        raise CannotRun("no command to run: put it after the options (or after --)")
    if opts["root"] is None:
        raise CannotRun("--root DIR is required: the jail only runs on a sandbox root (a tmpfs "
                        "in a private mount namespace)")
    try:
        host = command.open_host(opts["root"])
    except OSError as exc:  # SandboxRefused is a PermissionError
        raise CannotRun(f"cannot use --root {opts['root']}: {exc}") from None
    try:
        exec_jail(host, spec, opts["name"])
    except JailError as exc:
        raise click.ClickException(f"jail failed: {exc}") from None
    except (OSError, KeyError) as exc:
        raise click.ClickException(f"cannot start {spec.command[0]}: {exc}") from None
