"""``daemonstore status [--root DIR] [--json]`` and ``daemonstore path DAEMON USER [--cache]
[--root DIR]`` (thin click commands over :mod:`daemonstore.report.status` and
:mod:`daemonstore.daemon.salt`; registered in ``cli/__init__.py``).

status exits 0 when it found no problem, 1 when it reported problems, 2 when it cannot run here:
it reads the stores through a KernelHost on ``--root`` (``/`` by default); it only reads, so it
runs in the initial mount namespace too, without ``--system``. path exits 0 with the path, 2
with a one-line reason (bad names, no salt, unusable ``--root``); it only reads, so any
directory will do as ``--root``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from daemonstore import paths
from daemonstore.command import CannotRun, host_for, one_line
from daemonstore.daemon.salt import SaltMissing, user_store_path
from daemonstore.report import status

_ROOT_HELP = ("Root holding etc/daemon-store, run/ and home/: / (default) or a sandbox (a "
              "private tmpfs mount point). Only read: no --system needed.")


@click.command("status")
@click.option("--root", default="/", show_default=True, metavar="DIR", help=_ROOT_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def status_command(root: str, as_json: bool) -> None:
    """Stores, signed-in users, and which mount namespaces receive which store (every process's
    namespace holding the sandbox, found through /proc); problems found. Exit 1 if any."""
    with host_for(root, changes_mounts=False, explain=one_line) as host:
        report = status.status_of(host, scan_processes=host.kind == "kernel")
    if as_json:
        out: dict[str, Any] = {"root": root, "backend": host.kind, **report.to_json()}
        click.echo(json.dumps(out))
    else:
        for line in report.to_lines():
            click.echo(line)
    if report.problems:
        sys.exit(1)


@click.command("path")
@click.argument("daemon")
@click.argument("user")
@click.option("--cache", is_flag=True, help="The cache store (/run/daemon-store-cache).")
@click.option("--root", default="/", show_default=True, metavar="DIR",
              help="Root holding home/.shadow/salt (only read).")
def path_command(daemon: str, user: str, cache: bool, root: str) -> None:
    """Print DAEMON's store path for USER: /run/daemon-store[-cache]/DAEMON/HASH, HASH being
    cryptohome's GetSanitizedUsername (SHA-1 of the system salt and the lower-cased name)."""
    try:
        paths.check_daemon_name(daemon)
        paths.check_username(user)
    except paths.BadName as exc:
        raise CannotRun(str(exc)) from None
    with host_for(root, read_only=True) as reader:
        try:
            click.echo(user_store_path(reader, daemon, user, cache=cache))
        except SaltMissing as exc:
            raise CannotRun(f"--root {root}: {exc}") from None
