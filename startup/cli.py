"""``daemonstore-startup``: the command chromeos_startup runs; the same command as
``daemonstore startup`` (:mod:`daemonstore.cli.startup`)."""

from daemonstore.cli.startup import main

__all__ = ["main"]
