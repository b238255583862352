"""Sign-out with a daemon that holds a file in its store (session/holders.py, sign_out.py): the
holders are reported, ``kill_holders`` ends them first, otherwise the store is flushed and lazily
detached and lives on for the holder. One body for both backends: the kernel half runs the same
bodies in a sandbox (tests/kernel/test_busy_signout_kernel.py)."""

from __future__ import annotations

from typing import Any

from daemonstore.world import World

DAEMON = ("mydaemon", 20100, 20100, 0o700)


def busy_sign_out(world: World) -> dict[str, Any]:
    """A daemon keeps state.json open at sign-out; nobody ends it."""
    world.install_daemon(*DAEMON)
    view = world.daemon("mydaemon")
    user = world.login("alice")
    view.write("alice", "state.json", b"saved")
    name = view.hold("alice", "state.json")
    result = world.logout("alice")
    holds = view.holds()
    out = {
        "hash": user,
        "name": name,
        "holders": result.holders,
        "lazy": result.lazily_detached,
        "failed": result.failed,
        "ended": result.ended,
        "signed_in": world.signed_in(),
        "sees_store": view.sees_store("alice"),
        "holds": [(f.holder, f.attached) for f in holds],
        "vault": world.read_vault("alice", "mydaemon", "state.json"),
    }
    view.release(name)
    out["after_release"] = view.holds()
    # the user can sign in again: the detached store is not in the way
    world.login("alice")
    out["again"] = view.read("alice", "state.json")
    return out


def check_busy_sign_out(out: dict[str, Any]) -> None:
    user, name = out["hash"], out["name"]
    store = f"/run/daemon-store/mydaemon/{user}"
    assert len(out["holders"]) == 1
    assert name in out["holders"][0] and f"{store}/state.json" in out["holders"][0]
    assert out["lazy"] and store in out["lazy"] and not out["failed"] and not out["ended"]
    assert out["signed_in"] == []
    assert out["sees_store"] is False
    assert out["holds"] == [(name, False)]  # held on a detached mount
    assert out["vault"] == b"saved"
    assert out["after_release"] == []
    assert out["again"] == b"saved"


def killed_sign_out(world: World) -> dict[str, Any]:
    """The same, with ``kill_holders``: the holder is ended, then every umount is clean."""
    world.install_daemon(*DAEMON)
    view = world.daemon("mydaemon")
    world.login("alice")
    view.write("alice", "state.json", b"saved")
    name = view.hold("alice")  # the store directory itself, as a daemon's cwd would
    result = world.logout("alice", kill_holders=True)
    return {"name": name, "holders": result.holders, "ended": result.ended,
            "lazy": result.lazily_detached, "failed": result.failed, "holds": view.holds(),
            "warnings": result.warnings}


def check_killed_sign_out(out: dict[str, Any]) -> None:
    assert len(out["holders"]) == 1 and out["name"] in out["holders"][0]
    assert out["ended"] == [out["name"]]
    assert out["lazy"] == [] and out["failed"] == []
    assert out["holds"] == []
    assert any("process_killer --mount_holders" in w for w in out["warnings"])


def quiet_sign_out(world: World) -> dict[str, Any]:
    """No holder: nothing reported, nothing lazy."""
    world.install_daemon(*DAEMON)
    world.daemon("mydaemon")
    world.login("alice")
    result = world.logout("alice", kill_holders=True)
    return {"holders": result.holders, "ended": result.ended, "lazy": result.lazily_detached}


def test_busy_sign_out_reports_the_holder_and_detaches_lazily() -> None:
    check_busy_sign_out(World.model().run(busy_sign_out))


def test_kill_holders_ends_the_holder_first() -> None:
    check_killed_sign_out(World.model().run(killed_sign_out))


def test_a_sign_out_without_holders_reports_none() -> None:
    assert World.model().run(quiet_sign_out) == {"holders": [], "ended": [], "lazy": []}


def held_status(world: World) -> dict[str, Any]:
    """``daemonstore status`` after a busy sign-out, and after the holder lets go."""
    from daemonstore.report.status import status_of

    world.install_daemon(*DAEMON)
    view = world.daemon("mydaemon")
    user = world.login("alice")
    name = view.hold("alice")
    with world.in_namespace(world.namespace):
        while_signed_in = status_of(world.host)
    world.logout("alice")
    with world.in_namespace(world.namespace):
        held = status_of(world.host)
    view.release(name)
    with world.in_namespace(world.namespace):
        released = status_of(world.host)
    return {"user": user, "name": name, "signed_in": while_signed_in.held,
            "held": held.to_json()["held"], "problems": held.problems,
            "lines": held.to_lines(), "released": released.held,
            "released_problems": released.problems}


def check_held_status(out: dict[str, Any]) -> None:
    user, name = out["user"], out["name"]
    assert out["signed_in"] == {}  # a signed-in user's open files are no problem
    [holder] = out["held"][user]
    assert name in holder and "detached" in holder
    assert any(p.startswith(f"user {user} is signed out") and name in p
               for p in out["problems"])
    assert any(line.startswith(f"  {user[:12]}: ") for line in out["lines"])
    assert out["released"] == {}
    assert not any("signed out" in p for p in out["released_problems"])


def test_status_reports_held_stores_of_signed_out_users() -> None:
    check_held_status(World.model().run(held_status))
