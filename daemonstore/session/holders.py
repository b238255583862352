"""Who keeps a user's mounts busy at sign-out (plan layer, reads the Host): what ChromeOS's
``ui-post-stop`` looks for with ``process_killer --mount_holders`` (docs/chromeos.md §2.7)
before cryptohome unmounts.

A *pin* is a reference on a mount: a file held open, a cwd, a root (:class:`~daemonstore.host.
OpenFile`; the model's holds, the kernel's ``/proc/*/fd``, ``cwd`` and ``root`` in every
namespace). A pin is the user's when the mount it pins is one of the user's mounts in the
current namespace (the vault, the home binds, the store binds and what is mounted below them:
queries.user_mounts), or when the path the holder sees names the user (``/home/user/<H>``,
``/run/daemon-store/<d>/<H>/...``: process_killer's path patterns), which is how holders in
other namespaces (a daemon's, with its copies of the store binds) are found. A holder that
reaches a copy of the user's mount by a path that does not name the user (a store bound again
elsewhere in its namespace) is not found; its EBUSY still leads to the lazy detach.

Pins on a detached mount (after a lazy detach) are the user's when the path they were opened
by names the user: the kernel shows a detached mount's files relative to that mount, so only
the holds this process made keep their path there.
"""

from __future__ import annotations

from collections.abc import Iterable

from daemonstore import mountinfo, paths
from daemonstore.host import Host, OpenFile
from daemonstore.session.queries import store_user, user_mounts

__all__ = ["detached_pins", "end_pins", "path_user", "user_pins"]


def path_user(path: str) -> str | None:
    """The user hash a path names (a store, a home, a vault mount), else None."""
    found = store_user(path)
    if found is not None:
        return found
    for base in (paths.SHADOW, "/home/user", "/home/root"):
        if path.startswith(base + "/"):
            head = path[len(base) + 1:].split("/", 1)[0]
            return head if paths.is_hash(head) else None
    if path.startswith("/home/chronos/u-"):
        head = path[len("/home/chronos/u-"):].split("/", 1)[0]
        return head if paths.is_hash(head) else None
    return None


def user_pins(host: Host, user_hash: str) -> list[OpenFile]:
    """Every reference that keeps one of the user's mounts busy, in any namespace: on a mount
    of the user in the current namespace, or at a path that names the user (one mountinfo
    read and one scan of the references, whatever the number of namespaces)."""
    entries = mountinfo.parse(host.mountinfo())
    ids = {e.mount_id for e in user_mounts(entries, user_hash)}
    return [f for f in host.open_files()
            if f.attached and (f.mnt_id in ids or path_user(f.path) == user_hash)]


def detached_pins(host: Host) -> dict[str, list[OpenFile]]:
    """User hash -> the references that keep a detached mount of that user alive."""
    out: dict[str, list[OpenFile]] = {}
    for f in host.open_files():
        user = path_user(f.path) if not f.attached else None
        if user is not None:
            out.setdefault(user, []).append(f)
    return out


def end_pins(host: Host, pins: Iterable[OpenFile]) -> tuple[list[str], list[str]]:
    """``process_killer --mount_holders``: make each holder let go, once per holder (a process
    with several fds on the mounts is killed once). Returns (ended holders, problems)."""
    ended: list[str] = []
    problems: list[str] = []
    done: set[object] = set()
    for pin in pins:
        key = pin.pid if pin.how != "hold" else ("hold", pin.holder)
        if key in done:
            continue
        done.add(key)
        try:
            host.end_holder(pin)
        except OSError as exc:
            problems.append(f"could not end {pin.holder}: {exc.strerror or exc}")
            continue
        ended.append(pin.holder)
    return ended, problems
