"""D-Bus tests start their own private ``dbus-daemon`` (never the machine's buses).

The bus fixtures (``private_bus``, ``cryptohome_service``, ``cryptohome_client``, ``bus_world``,
``cryptohome_thread``) come from the installed pytest plugin (``daemonstore.testing``), with its
rule: without ``dbus-daemon`` they skip with the reason, except when the ``CI`` environment
variable is set (``.ci/run`` installs the Debian package ``dbus``), where that is a failure.
Tests marked ``dbus`` that use no fixture follow the same rule (tests/conftest.py). Tests also
marked ``kernel`` need root and a private mount namespace, as in tests/kernel.
"""
