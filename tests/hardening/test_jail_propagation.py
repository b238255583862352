"""The jail's ``-K`` mode reaches the whole tree, as minijail's (SECURITY.md, "Jail
propagation"), and the modes that let a daemon's mounts flow out are warned about.

On the kernel: the sandbox child's own ``/`` (a private namespace, never the pytest process's
or the machine's initial one) is made ``rshared`` first, the worst case of a host whose root
is shared (systemd's default). A jail built with ``-v -Kslave`` must then hold no mount at all
that is still a peer of the namespace it came from -- outside the sandbox root too -- so
nothing the daemon mounts anywhere flows back out.
"""

from __future__ import annotations

from typing import Any

import pytest

from daemonstore.jail.plan import apply_jail, plan_jail
from daemonstore.jail.spec import parse_jail_args
from daemonstore.kernel.guards import check_private_namespace
from daemonstore.kernel.syscalls import mount
from daemonstore.mountflags import MS_FLAGS as MS
from daemonstore.world import World, kernel_world
from tests.hardening.conftest import Figures
from tests.hardening.util import guarded

STORE = "/run/daemon-store/foo"
BIND = f"{STORE},{STORE},none,MS_BIND|MS_REC"


def _shared_outside(root: str) -> list[str]:
    """Lines of this process's mountinfo outside the sandbox root that are still shared."""
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        lines = f.read().splitlines()
    return [ln for ln in lines
            if f" {root} " not in ln and f" {root}/" not in ln and "shared:" in ln]


def _jail_body(world: World) -> dict[str, Any]:
    check_private_namespace()  # this sandbox child's own namespace, never the caller's
    root = world.host.root  # type: ignore[attr-defined]
    mount(None, "/", None, MS["MS_SHARED"] | MS["MS_REC"])  # a host whose / is shared
    before = _shared_outside(root)
    apply_jail(world.host, plan_jail(parse_jail_args(["-v", "-Kslave", "-k", BIND]), "jail"))
    inside = _shared_outside(root)  # read from the jail's namespace (current now)
    world.host.use_namespace(world.namespace)
    return {"before": len(before), "inside": inside}


@pytest.mark.kernel
def test_the_jail_makes_the_whole_tree_slave(figures: Figures) -> None:
    out = kernel_world(guarded(_jail_body), daemons=[("foo", 20100, 20100, 0o700)])
    assert out["before"] > 0  # the host side really was shared
    assert out["inside"] == []  # and no copy in the jail is a peer of it any more
    figures.add(attacks=1, attacks_refused=1)


@pytest.mark.parametrize("mode", ["-K", "-Kshared"])
def test_modes_that_let_mounts_flow_out_are_warned(mode: str) -> None:
    spec = parse_jail_args(["-v", mode, "-k", BIND, "--", "true"])
    assert any("-Kslave" in w and "peers" in w for w in spec.warnings), spec.warnings
    quiet = parse_jail_args(["-v", "-Kslave", "-k", BIND, "--", "true"])
    assert quiet.warnings == ()
    plain = parse_jail_args(["-v", mode, "--", "true"])  # no store: nothing to warn about
    assert plain.warnings == ()
