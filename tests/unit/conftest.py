"""Unit tests run in whatever namespace pytest runs in, often the machine's initial one: the
``--system`` interlock (daemonstore.command.check_interlock) gets its answer injected here, so
in-process CLI tests on a model host are not refused. KernelHost keeps its own guard, which no
fixture touches; test_interlock.py injects both answers and checks the refusal."""

from __future__ import annotations

import pytest

from daemonstore import command


@pytest.fixture(autouse=True)
def _not_initial_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(command, "in_initial_namespace", lambda: False)
