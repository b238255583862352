"""``audit --simulate``: the jail built on the model around a sign-in."""

from __future__ import annotations

import pytest

from daemonstore.audit.simulate import NEVER, PROPAGATES, simulate
from daemonstore.jail.spec import parse_jail_args

STORE_K = "/run/daemon-store/foo,/run/daemon-store/foo,none,MS_BIND|MS_REC"


def run(*argv: str) -> tuple[str, list[str], list[str]]:
    sim = simulate(parse_jail_args([*argv, "--", "/usr/bin/foo"], audit=True))
    return sim.verdict, sim.lines, sim.leaks


def test_the_documented_form_receives_the_sign_in() -> None:
    verdict, lines, leaks = run("-v", "-Kslave", "-k", STORE_K)
    assert verdict == PROPAGATES == "sign-in propagates"
    assert lines[1] == "before sign-in: /run/daemon-store/foo: no user store"
    assert lines[2].endswith("the user's store  -> sign-in propagates")
    assert lines[3] == "started after the sign-in: the signed-in user's store is there"
    assert leaks == [] and lines[-1] == "the daemon's own mounts leak out: none"


@pytest.mark.parametrize("argv", [
    ("-Kslave", "-k", STORE_K),             # without -v: minijail0 refuses to start
    ("-k", STORE_K),                        # without -v or -K: private
    ("-v", "-Kprivate", "-k", STORE_K),
    ("--profile", "minimalistic-mountns", "-k", STORE_K),
])
def test_the_traps_never_see_sign_ins(argv: tuple[str, ...]) -> None:
    verdict, lines, _ = run(*argv)
    assert verdict == NEVER == "never sees sign-ins"
    assert any("-> never sees sign-ins" in line or "refuses to start" in line
               for line in lines)


def test_private_still_copies_a_user_signed_in_before_the_start() -> None:
    _, lines, _ = run("-v", "-Kprivate", "-k", STORE_K)
    assert "started after the sign-in: the signed-in user's store is there" in lines


def test_without_ms_rec_a_restarted_daemon_misses_the_signed_in_user() -> None:
    verdict, lines, _ = run("-v", "-Kslave", "-k",
                            "/run/daemon-store/foo,/run/daemon-store/foo,none,MS_BIND")
    assert verdict == PROPAGATES
    assert "started after the sign-in: the signed-in user's store is missing (no MS_REC?)" in lines


def test_shared_propagation_leaks_the_daemons_mounts() -> None:
    verdict, lines, leaks = run("-v", "-K", "-k", STORE_K)
    assert verdict == PROPAGATES
    assert leaks == ["/run/daemon-store/foo/audit-probe"]
    assert lines[-1] == "the daemon's own mounts leak out: /run/daemon-store/foo/audit-probe"


def test_the_tmpfs_run_recipe_with_both_stores() -> None:
    cache = STORE_K.replace("daemon-store/", "daemon-store-cache/")
    verdict, lines, leaks = run("-v", "-Kslave", "--profile", "minimalistic-mountns", "-k",
                                "tmpfs,/run,tmpfs,MS_NODEV|MS_NOEXEC|MS_NOSUID", "-k", STORE_K,
                                "-k", cache, "-b", "/proc")
    assert verdict == PROPAGATES and leaks == []
    assert "not modelled: -b /proc,/proc, pivot_root /var/empty" in lines


@pytest.mark.parametrize(("argv", "reason"), [
    (("-v", "-Kslave", "-b", "/etc"), "no daemon-store bind"),
    (("-v", "-Kslave", "-k", "/run/daemon-store/${D},/x,none,MS_BIND|MS_REC"), "variable"),
    (("-V", "/run/namespaces/mnt_chrome", "-k", STORE_K), "-V is not modelled"),
    (("-v", "-Kslave", "-k", STORE_K, "-c", "${CAPS}"), "depends on a variable"),
])
def test_what_is_not_simulated(argv: tuple[str, ...], reason: str) -> None:
    verdict, _, _ = run(*argv)
    assert verdict.startswith("not simulated") and reason in verdict


def test_an_unbindable_jail_cannot_be_built() -> None:
    verdict, lines, _ = run("-v", "-Kunbindable", "-k", STORE_K)
    assert verdict == NEVER and any("cannot be built" in line for line in lines)
