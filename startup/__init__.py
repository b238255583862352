"""The chromeos_startup step: ``daemonstore-startup`` (console script ``startup.cli:main``).

``chromeos_startup`` runs it at boot: each ``/etc/daemon-store/<d>`` template becomes shared
``/run/daemon-store{,-cache}/<d>`` mounts (docs/chromeos.md §1). The planner and apply it runs
are the library's :mod:`daemonstore.boot`, which the sign-in hook, ``repair`` and the simulated
worlds share; this package is the boot-time entry point and nothing else, so the library never
imports it.
"""

from daemonstore.boot import StartupPlan, StartupReport, apply_plan, plan_startup, run_startup

__all__ = ["StartupPlan", "StartupReport", "apply_plan", "plan_startup", "run_startup"]
