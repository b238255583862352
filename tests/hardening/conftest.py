"""The hardening suite: attacks, faults and load (SECURITY.md says what each test proves).

Every kernel body runs in ``run_in_sandbox``'s forked child (a private mount namespace on a tmpfs
sandbox); the victims of the attacks (a fake ``/etc/passwd``, ``/etc/shadow``, a canary
directory) are files *inside* that sandbox. Three guards here, in the pytest process:

* kernel tests skip without root -- or fail when ``CI`` is set (tests/kernel's rule);
* :func:`_host_untouched` (autouse): before and after every test, this process's
  ``/proc/self/mountinfo`` and a checksum of a few host files that are only ever *read*; any
  difference fails the test and counts as a leak ("nothing outside the sandbox changed");
* :class:`Figures`: tests record what they tried; the terminal summary prints one line per suite
  (``hardening: attacks: N tried, N refused cleanly, leaks 0`` ...), the figures README quotes.

Default sizes are the issue's (200 load cycles; 200 sign-ins against the swapper) and keep this
suite under 3 minutes on 2 cores; ``DAEMONSTORE_HARDENING_FULL=1`` runs 1000 of each.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from dataclasses import dataclass, field

import pytest

FULL = os.environ.get("DAEMONSTORE_HARDENING_FULL", "") not in ("", "0")

#: host files whose checksum must not change (only read, never written by any test)
HOST_FILES = ("/etc/passwd", "/etc/group", "/etc/hostname", "/etc/hosts", "/etc/fstab")


@dataclass
class Figures:
    """What the suites tried, summed over the session."""

    counts: Counter[str] = field(default_factory=Counter)
    notes: dict[str, str] = field(default_factory=dict)

    def add(self, **counts: int) -> None:
        self.counts.update(counts)

    def note(self, key: str, text: str) -> None:
        self.notes[key] = text

    def lines(self) -> list[str]:
        c = self.counts
        out = []
        if c["attacks"]:
            out.append(f"attacks: {c['attacks']} tried, {c['attacks_refused']} refused cleanly, "
                       f"leaks {c['attack_leaks'] + c['host_leaks']}")
        if c["race_signins"]:
            out.append(f"race: {c['race_signins']} sign-ins against a symlink swapper "
                       f"({c['race_swaps']} swaps), {c['race_ok']} succeeded cleanly, "
                       f"{c['race_refused']} refused cleanly ({self.notes.get('race', '')}), "
                       f"escapes {c['race_escapes']}")
        if c["identity_race"]:
            out.append(f"identity: {c['identity_race']} sign-ins against a mount-point swapper "
                       f"in /home/chronos ({c['identity_swaps']} swaps), {c['identity_ok']} "
                       f"succeeded cleanly, {c['identity_refused']} refused cleanly"
                       + (f" ({self.notes['identity']})" if self.notes.get("identity") else "")
                       + ", escapes "
                       f"{c['identity_escapes']}, leftover mounts {c['identity_left']}")
        if c["rmdir_tries"]:
            out.append(f"rmdir: {c['rmdir_tries']} rmdir/rename-over of home mount points as uid "
                       f"1000 from namespaces made before sign-in, {c['rmdir_refused']} refused "
                       f"(ENOTEMPTY), homes detached {c['rmdir_detached']}")
        if c["loop_signins"]:
            out.append(f"service loop: {c['loop_signins']} sign-ins (one held in the Host lane, "
                       f"one with hundreds of stores), {c['loop_answered']} cheap calls answered "
                       "before the sign-in finished")
        if c["measure_runs"]:
            out.append(f"cache measuring by fd: {c['measure_runs']} runs (a chain deeper than "
                       "PATH_MAX measured whole; a directory moved out mid-walk stops it), "
                       f"escapes {c['measure_escapes']}")
        if c["faults"]:
            out.append(f"faults: {c['faults']} injected ({c['faults_eio']} EIO, "
                       f"{c['faults_kill']} SIGKILL), {c['faults_converged']} converged, "
                       f"leaks {c['fault_leaks']}, data lost {c['fault_data_lost']}; "
                       f"{c['faults_busy']} busy store binds at sign-out detached lazily and "
                       "reported")
        if c["load_cycles"]:
            out.append(f"load: {self.notes.get('load', '')}")
        return out


_FIGURES = pytest.StashKey[Figures]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_FIGURES] = Figures()


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Figures:
    return request.config.stash[_FIGURES]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int,
                            config: pytest.Config) -> None:
    lines = config.stash[_FIGURES].lines()
    if lines:
        terminalreporter.section("hardening figures")
        for line in lines:
            terminalreporter.write_line(f"hardening: {line}")


# ---- guards ---------------------------------------------------------------------------------


# the kernel and dbus guards live in tests/conftest.py



def host_state() -> tuple[str, dict[str, str]]:
    """This (pytest) process's mount table and the checksums of HOST_FILES (read only)."""
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        mounts = f.read()
    sums = {}
    for path in HOST_FILES:
        try:
            with open(path, "rb") as f:
                sums[path] = hashlib.sha256(f.read()).hexdigest()
        except OSError as exc:
            sums[path] = f"unreadable: {exc.errno}"
    return mounts, sums


@pytest.fixture(autouse=True)
def _host_untouched(figures: Figures) -> object:
    before = host_state()
    yield
    after = host_state()
    if after != before:
        figures.add(host_leaks=1)
        changed = [p for p in HOST_FILES if before[1][p] != after[1][p]]
        pytest.fail(f"the host changed outside the sandbox: mountinfo "
                    f"{'changed' if before[0] != after[0] else 'same'}, files changed: {changed}")
