"""``daemonstore status`` never hands a terminal what another process chose (SECURITY.md,
"Status escapes"): a process name (``/proc/PID/comm``, settable by any process) holding a
terminal escape is printed escaped, on the real kernel, from a namespace of the sandbox."""

from __future__ import annotations

import ctypes
import os
import signal
import time
from typing import Any

import pytest

from daemonstore.report.status import printable, status_of
from daemonstore.world import World, kernel_world
from tests.hardening.conftest import Figures
from tests.hardening.util import guarded

#: clear the screen, set the window title, ring the bell: 15 bytes, comm's limit (TASK_COMM_LEN)
EVIL = "\x1b[2J\x1b]0;pwn\x07\x9b"
CLONE_NEWNS = 0x00020000
PR_SET_NAME = 15


def test_printable_escapes_controls_and_keeps_text() -> None:
    assert printable("pid 7 (biod)") == "pid 7 (biod)"
    assert printable("é ü 日本") == "é ü 日本"
    shown = printable("a\x1b[31mb\nc\\d\x9b")
    assert shown == "a\\x1b[31mb\\nc\\\\d\\x9b"
    assert shown.isprintable()


def _evil_process_body(world: World) -> dict[str, Any]:
    """A child in its own mount namespace (a clone of the sandbox's) names itself EVIL; the
    status of the sandbox, scanning /proc, is rendered."""
    world.login("alice")
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.unshare(CLONE_NEWNS) != 0:
                os._exit(3)
            # prctl(PR_SET_NAME): /proc is read-only here (guard_host)
            if libc.prctl(PR_SET_NAME, ctypes.c_char_p(EVIL.encode("latin-1")), 0, 0, 0) != 0:
                os._exit(4)
            os.write(ready_w, b"x")
            while True:
                time.sleep(1)
        finally:
            os._exit(0)
    try:
        os.close(ready_w)
        os.read(ready_r, 1)
        lines = status_of(world.host, scan_processes=True).to_lines()
    finally:
        os.kill(pid, signal.SIGKILL)  # the child this body forked, by its pid
        os.waitpid(pid, 0)
        os.close(ready_r)
    return {"lines": lines, "pid": pid}


@pytest.mark.kernel
def test_status_escapes_process_names(figures: Figures) -> None:
    out = kernel_world(guarded(_evil_process_body), daemons=[("foo", 20100, 20100, 0o700)])
    text = "\n".join(out["lines"])
    assert f"pid {out['pid']} (" in text  # the evil process's namespace is listed
    assert all(line.isprintable() for line in out["lines"]), out["lines"]
    assert "\\x1b[2J\\x1b]0;pwn\\x07" in text
    figures.add(attacks=1, attacks_refused=1)
