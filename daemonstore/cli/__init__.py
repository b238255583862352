"""The ``daemonstore`` command line: the main group and its commands, each a thin dispatcher in
its own module here (argv -> call into the library -> exit code; docs/architecture.md §9).

Exit codes: 0 ran, 1 a finding (a difference, a divergence, a library failure), 2 bad input or
an environment that cannot run the command (docs/architecture.md §9: "every non-zero exit prints a
one-line reason"; :class:`daemonstore.command.CannotRun`).
"""

from __future__ import annotations

from importlib.metadata import version

import click

from daemonstore.cli.audit import audit_command
from daemonstore.cli.cleanup import cleanup_command
from daemonstore.cli.demo import demo_command
from daemonstore.cli.hook import hook_command
from daemonstore.cli.install import install_command
from daemonstore.cli.jail import jail_command
from daemonstore.cli.login import login, logout
from daemonstore.cli.repair import repair_command
from daemonstore.cli.sim import sim_group
from daemonstore.cli.startup import startup_command
from daemonstore.cli.status import path_command, status_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version("daemonstore"), prog_name="daemonstore")
def main() -> None:
    """ChromeOS daemon-store machinery with a verified model of Linux mount propagation."""


main.add_command(sim_group, "sim")  # `daemonstore sim run|diff|fuzz`: scenarios, model vs kernel
main.add_command(startup_command, "startup")  # `daemonstore startup`
main.add_command(login)  # `daemonstore login USER [--guest]` (via the bus)
main.add_command(logout)  # `daemonstore logout` (via the bus)
main.add_command(jail_command)  # `daemonstore jail [-v] [-K[MODE]] [-k SPEC]...`
main.add_command(cleanup_command, "cleanup")  # low-disk cache cleanup (docs/chromeos.md §6)
main.add_command(demo_command, "demo")  # `daemonstore demo [--kernel]`
main.add_command(status_command, "status")  # `daemonstore status`
main.add_command(path_command, "path")  # `daemonstore path DAEMON USER [--cache]`
main.add_command(audit_command, "audit")  # `daemonstore audit`: check init scripts' jails
main.add_command(repair_command, "repair")  # converge after a crash (SECURITY.md)
main.add_command(hook_command, "hook")  # `daemonstore hook` (the session hook)
main.add_command(install_command, "install")  # `daemonstore install [--prefix]`
