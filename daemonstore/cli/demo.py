"""``daemonstore demo [--kernel] [--graph FILE] [--bus]`` (thin click command over
:mod:`daemonstore.demo`; registered in ``cli/__init__.py``).

Exit codes: 0 the story ran and every fact held, 1 a fact did not hold (printed) or the sandbox
failed, 2 cannot run as asked (``--kernel`` without root, ``--bus`` without dbus-daemon, an
unwritable ``--graph`` path).
"""

from __future__ import annotations

import sys

import click

from daemonstore.command import CannotRun
from daemonstore.demo import story as demo
from daemonstore.demo.facts import broken_facts
from daemonstore.demo.picture import GraphUnwritable, write_graph


@click.command("demo")
@click.option("--kernel", is_flag=True,
              help="Run on the real kernel (root; a tmpfs sandbox in a private mount namespace "
                   "of a forked child). Default: the model.")
@click.option("--graph", "graph_file", metavar="FILE", default=None,
              help="Also write the propagation picture as Graphviz DOT (FILE.dot) and, if dot is "
                   "installed, SVG (FILE.svg).")
@click.option("--bus", is_flag=True,
              help="Sign in and out over a private D-Bus bus through cryptohome_sim "
                   "(needs dbus-daemon).")
def demo_command(kernel: bool, graph_file: str | None, bus: bool) -> None:
    """The daemon store end to end: templates, startup, jailed daemons, sign-ins and sign-outs,
    what each namespace sees, and the propagation picture."""
    if kernel:
        from daemonstore.kernel.sandbox import kernel_unavailable_reason

        reason = kernel_unavailable_reason()
        if reason:
            raise CannotRun(f"--kernel: {reason}; drop --kernel to run on the model")
    if bus:
        from cryptohome_sim.bus import find_dbus_daemon

        if find_dbus_daemon() is None:
            raise CannotRun("--bus: dbus-daemon is not installed (Debian package 'dbus')")
    from daemonstore.dbus.client import ClientError

    try:
        result = demo.run_demo(kernel=kernel, bus=bus)
    except (OSError, RuntimeError, ClientError) as exc:  # sandbox or bus could not be set up
        raise click.ClickException(f"demo failed: {str(exc).splitlines()[0]}") from None
    for line in demo.render(result):
        click.echo(line)
    if graph_file:
        try:
            lines = write_graph(result, graph_file)
        except GraphUnwritable as exc:
            raise CannotRun(f"--graph {graph_file}: {exc}") from None
        for line in lines:
            click.echo(line)
    broken = broken_facts(result)
    if broken:
        for line in broken:
            click.echo(f"demo: {line}", err=True)
        sys.exit(1)
