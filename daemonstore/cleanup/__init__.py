"""Automatic clean-up of daemon-store caches when disk space runs low (docs/chromeos.md §6).

Public API::

    run_cleanup(disk, thresholds=None, *, dry_run=False, signed_in=None, namespace=None,
                log=None) -> CleanupReport                      one FreeDiskSpace pass
    watch(disk, thresholds=None, *, interval, count=None, on_report=None, ...) -> int
    Thresholds(target=2 GiB, normal=1 GiB, aggressive=768 MiB, critical=512 MiB)
    parse_size("64M") -> int, format_size(n) -> str
    plan_cleanup(thresholds, total, free, users) -> CleanupPlan  pure
    gather(disk, *, signed_in=None) -> (users, warnings), clear_cache(disk, step) -> StepResult
    OsDisk(root)                                                 os/shutil adapter (pyfakefs)

``disk`` is any Host (model or kernel) or an OsDisk. From cryptohome_sim::

    from daemonstore.cleanup import run_cleanup
    report = run_cleanup(core.host, namespace=core.namespace)

Layers: :mod:`.plan` is pure; :mod:`.apply` acts on a Disk; :mod:`.osdisk` is the os adapter;
:mod:`.cli` is the ``daemonstore cleanup`` command.
"""

from daemonstore.cleanup.apply import Disk, clear_cache, gather, measure, run_cleanup, watch
from daemonstore.cleanup.osdisk import OsDisk
from daemonstore.cleanup.plan import (
    CacheFacts,
    CleanupPlan,
    CleanupReport,
    ClearCache,
    DiskState,
    Phase,
    StepResult,
    Thresholds,
    UserFacts,
    format_size,
    parse_size,
    plan_cleanup,
)

__all__ = [
    "CacheFacts", "ClearCache", "CleanupPlan", "CleanupReport", "Disk", "DiskState", "OsDisk",
    "Phase", "StepResult", "Thresholds", "UserFacts", "clear_cache", "format_size", "gather",
    "measure", "parse_size", "plan_cleanup", "run_cleanup", "watch",
]
