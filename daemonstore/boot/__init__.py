"""The boot step: ``/etc/daemon-store`` templates become shared ``/run/daemon-store{,-cache}/<d>``
mounts (docs/chromeos.md §1), checked, idempotent, written once against the Host interface.

``plan`` (pure: inspect, decide), ``apply`` (carry out, report), ``seed`` (install templates and
their passwd lines: worlds, the demo and benchmarks). ``daemonstore-startup`` runs it.
"""

from daemonstore.boot.apply import StartupReport, apply_plan, run_startup
from daemonstore.boot.plan import StartupPlan, plan_startup

__all__ = ["StartupPlan", "StartupReport", "apply_plan", "plan_startup", "run_startup"]
