"""The chromeos_startup daemon-store step: ``/etc/daemon-store`` templates become shared
``/run/daemon-store{,-cache}/<d>`` mounts (chromeos-facts.md §1), checked, idempotent, and written
once against the Host interface (runs on ModelHost and KernelHost alike).

``plan`` (pure: inspect, decide), ``apply`` (carry out, report), ``cli`` (``daemonstore-startup``).
"""

from startup.apply import StartupReport, apply_plan, run_startup
from startup.plan import StartupPlan, plan_startup

__all__ = ["StartupPlan", "StartupReport", "apply_plan", "plan_startup", "run_startup"]
