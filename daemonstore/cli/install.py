"""``daemonstore install [--prefix DIR] [--bindir DIR] [--daemon-user USER]... [--dry-run]``:
write the system files (thin click front end over :mod:`daemonstore.install`). One line per
file: ``wrote PATH`` or ``unchanged PATH``. Exit 0 done, 1 a file could not be written (the path
and the reason), 2 a bad option (nothing written)."""

from __future__ import annotations

import click

from daemonstore.dbus.grants import BadDaemonUser, check_daemon_user
from daemonstore.install import install


def _daemon_users(_ctx: click.Context, _param: click.Parameter,
                  users: tuple[str, ...]) -> tuple[str, ...]:
    try:
        return tuple(check_daemon_user(u) for u in users)
    except BadDaemonUser as exc:
        raise click.BadParameter(str(exc)) from None


@click.command("install", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--prefix", default="/", show_default=True, metavar="DIR",
              help="Install under DIR (DESTDIR style, for packaging).")
@click.option("--bindir", default=None, metavar="DIR",
              help="Where the units find daemonstore and daemonstore-startup (default: next to "
                   "this Python, else PATH).")
@click.option("--daemon-user", "daemon_users", multiple=True, metavar="USER",
              callback=_daemon_users,
              help="Grant USER (a daemon's user name or uid) the daemon role: the session "
                   "queries (RetrievePrimarySession, ...) ChromeOS grants daemons, in "
                   "/etc/dbus-1/system.d/daemonstore-USER.conf. Repeatable.")
@click.option("--dry-run", is_flag=True, help="Say what would be written; write nothing.")
def install_command(prefix: str, bindir: str | None, daemon_users: tuple[str, ...],
                    dry_run: bool) -> None:
    """Install the D-Bus policies (and a grant file per --daemon-user), the tmpfiles.d entry,
    the upstart jobs and the systemd units for daemonstore-startup and the session hook.
    Idempotent."""
    try:
        done = install(prefix, bindir=bindir, dry_run=dry_run, daemon_users=daemon_users)
    except OSError as exc:
        raise click.ClickException(f"cannot write {exc.filename}: {exc.strerror}") from None
    for path, what in done:
        click.echo(f"{what} {path}")
