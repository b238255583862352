"""``daemonstore demo [--kernel] [--graph FILE] [--bus]`` (thin click command over
:mod:`daemonstore.demo.story`; registered in cli.py with ``main.add_command``).

Exit codes: 0 the story ran and every fact held, 1 a fact did not hold (printed) or the sandbox
failed, 2 cannot run as asked (``--kernel`` without root, ``--bus`` without dbus-daemon, an
unwritable ``--graph`` path).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import click

from daemonstore.command import CannotRun
from daemonstore.demo import story as demo
from daemonstore.report import graph


def graph_paths(name: str) -> tuple[Path, Path]:
    """``--graph out.svg`` (or ``out.dot``, or ``out``) -> (out.dot, out.svg)."""
    path = Path(name)
    stem = path.with_suffix("") if path.suffix in (".svg", ".dot") else path
    return stem.with_name(stem.name + ".dot"), stem.with_name(stem.name + ".svg")


def write_graph(result: demo.DemoResult, name: str) -> list[str]:
    """Write the DOT file and, if Graphviz's ``dot`` is installed, the SVG; lines to print."""
    dot_path, svg_path = graph_paths(name)
    try:
        dot_path.write_text(graph.render_dot(result.picture(), result.aliases), encoding="utf-8")
    except OSError as exc:
        raise CannotRun(f"--graph {name}: cannot write {dot_path}: {exc.strerror}") from None
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


def broken_facts(result: demo.DemoResult) -> list[str]:
    """The story's promises, checked (a demo that silently shows a failure would be worse than
    none): stores gone everywhere after sign-out, files in the vault and back at re-sign-in."""
    facts = result.facts
    broken = [f"still visible after sign-out in {ns}: {', '.join(kinds)}"
              for ns, kinds in facts.get("visible_after_sign_out", {}).items() if kinds]
    broken += [f"{d}: the file did not land in the vault"
               for d, ok in facts.get("landed_in_vault", {}).items() if not ok]
    broken += [f"{d}: the file was not back after signing in again"
               for d, ok in facts.get("files_back", {}).items() if not ok]
    guest = facts.get("guest")
    if isinstance(guest, dict) and (guest["seen_after"] or guest["file_left"]):
        broken.append(f"the guest's stores or files outlived the guest session: {guest}")
    broken += [f"status problem: {p}" for p in facts.get("problems", [])]
    return broken


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
        for line in write_graph(result, graph_file):
            click.echo(line)
    broken = broken_facts(result)
    if broken:
        for line in broken:
            click.echo(f"demo: {line}", err=True)
        sys.exit(1)
