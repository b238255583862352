"""``daemonstore jail``: the minijail0-compatible front end (argv -> JailSpec -> plan -> exec).

click would reinterpret minijail's getopt-style words (``-Kslave``, ``--``), so this command takes
its arguments raw and hands them to :func:`daemonstore.jail.spec.parse_jail_args`, the one parser
(docs/architecture.md §9: argv -> spec is tested without any kernel). Our own options come first:

    daemonstore jail [--root DIR] [--system] [--dry-run] [--name NAME] MINIJAIL-ARGS... -- CMD

``--root`` is ``/`` by default. A jail with its own mount namespace (``-v`` and the other options
that make one) changes no mount outside it, so it runs anywhere; one without (its mounts land in
the caller's namespace) is held by the ``--system`` interlock like every command that changes
mounts.

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
    opts: dict[str, Any] = {"root": "/", "dry_run": False, "name": "jail", "system": False}
    while args:
        word = args[0]
        if word in ("-h", "--help"):
            opts["help"] = True
            return opts, []
        if word in ("--dry-run", "--system"):
            opts[word[2:].replace("-", "_")] = True
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
    system = opts["system"]
    if not spec.new_mount_ns:  # its mounts would land in this namespace
        command.check_interlock(system, "a jail without its own mount namespace (-v)")
    try:
        # with -v every mount is made after unshare(CLONE_NEWNS), in the jail's own namespace
        host = command.open_root(opts["root"], system=system or spec.new_mount_ns)
    except CannotRun as exc:
        raise CannotRun(f"cannot use {exc.message}") from None
    try:
        exec_jail(host, spec, opts["name"])
    except JailError as exc:
        raise click.ClickException(f"jail failed: {exc}") from None
    except (OSError, KeyError) as exc:
        raise click.ClickException(f"cannot start {spec.command[0]}: {exc}") from None
