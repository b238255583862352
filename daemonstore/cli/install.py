"""``daemonstore install [--prefix DIR] [--bindir DIR] [--dry-run]``: write the system files
(thin click front end over :mod:`daemonstore.install`). One line per file: ``wrote PATH`` or
``unchanged PATH``. Exit 0 done, 1 a file could not be written (the path and the reason)."""

from __future__ import annotations

import click

from daemonstore.install import install


@click.command("install", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--prefix", default="/", show_default=True, metavar="DIR",
              help="Install under DIR (DESTDIR style, for packaging).")
@click.option("--bindir", default=None, metavar="DIR",
              help="Where the units find daemonstore and daemonstore-startup (default: next to "
                   "this Python, else PATH).")
@click.option("--dry-run", is_flag=True, help="Say what would be written; write nothing.")
def install_command(prefix: str, bindir: str | None, dry_run: bool) -> None:
    """Install the D-Bus policies, the tmpfiles.d entry, the upstart jobs and the systemd units
    for daemonstore-startup and the session hook. Idempotent."""
    try:
        done = install(prefix, bindir=bindir, dry_run=dry_run)
    except OSError as exc:
        raise click.ClickException(f"cannot write {exc.filename}: {exc.strerror}") from None
    for path, what in done:
        click.echo(f"{what} {path}")
