"""The demo's promises, checked against the facts its story recorded (front end: pure, on a
:class:`~daemonstore.demo.story.DemoResult`). A demo that silently shows a failure would be
worse than none, so ``daemonstore demo`` exits 1 when any promise is broken.
"""

from __future__ import annotations

from daemonstore.demo.story import DemoResult

__all__ = ["broken_facts"]


def broken_facts(result: DemoResult) -> list[str]:
    """What did not hold: stores gone everywhere after sign-out, files in the vault and back at
    re-sign-in, nothing of the guest left, no status problem."""
    facts = result.facts
    broken = [f"still visible after sign-out in {ns}: {', '.join(kinds)}"
              for ns, kinds in facts.get("visible_after_sign_out", {}).items() if kinds]
    broken += [f"{d}: the file did not land in the vault"
               for d, ok in facts.get("landed_in_vault", {}).items() if not ok]
    broken += [f"{d}: the file was not back after signing in again"
               for d, ok in facts.get("files_back", {}).items() if not ok]
    guest = facts.get("guest")
    if isinstance(guest, dict) and (guest["seen_after"] or guest["file_left"]):
        broken.append(f"the guest's stores or files outlived the guest session: {guest}")
    broken += [f"status problem: {p}" for p in facts.get("problems", [])]
    return broken
