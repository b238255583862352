"""The session hook (tier 3, a component): daemon-store binds driven by the session manager's
signals, for a cryptohome that mounts vaults without them (docs/architecture.md §8).

:mod:`.converge` is the job (plan the binds the mounted vaults lack and the binds of vaults no
longer mounted, apply per user with sign-in's ops and rollback); :mod:`.service` is the
long-running loop on the system bus that ``daemonstore hook`` runs.
"""

from daemonstore.hook.converge import BIND, UNBIND, Action, ConvergeReport, converge, plan_converge

__all__ = ["BIND", "UNBIND", "Action", "ConvergeReport", "converge", "plan_converge"]
