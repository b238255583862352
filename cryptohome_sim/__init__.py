"""Simulated ChromeOS cryptohome and session manager on a real D-Bus bus (``cryptohome-sim``).

Layers: :mod:`~cryptohome_sim.core` (plain state over a Host, no D-Bus), :mod:`~.service`
(dbus-fast interfaces), :mod:`~.client` (what ``daemonstore login``/``logout`` and tests call),
:mod:`~.bus` (a private ``dbus-daemon``), :mod:`~.cli` (the command), :mod:`~.names` (D-Bus names).
"""
