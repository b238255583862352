"""Simulated ChromeOS cryptohome and session manager on a real D-Bus bus (``cryptohome-sim``),
speaking ChromeOS's wire API (docs/architecture.md §7: ``(ay) -> (ay)`` user_data_auth protobufs).

Layers: :mod:`~cryptohome_sim.core` (plain state over a Host, no D-Bus), :mod:`~.service`
(dbus-fast interfaces), :mod:`~.bus` (a private ``dbus-daemon`` with the shipped policy files),
:mod:`~.cli` (the command). The client every caller uses is :mod:`daemonstore.dbus.client`; the
names are :mod:`daemonstore.dbus.names`, the protobuf subset :mod:`daemonstore.dbus.proto`.
"""
