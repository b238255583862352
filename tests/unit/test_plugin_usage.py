"""The plugin fails loudly: what it would otherwise ignore or get wrong is an error naming the
test and the fix. Each case is a small test file run through the installed plugin (``pytester``
in a subprocess, as a daemon author's suite runs), and its outcome and message are checked."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytest_plugins = ["pytester"]

#: the project's ``kernel`` mark (which also selects the kernel world) is registered here, as in
#: this project's pyproject.toml; the plugin registers only ``daemonstore``
INI = ("[pytest]\nasyncio_default_fixture_loop_scope = function\n"
       "markers =\n    kernel: the kernel world\n")

CASES = textwrap.dedent("""
    import pytest

    @pytest.mark.daemonstore(backend="kernal")
    def test_unknown_backend(daemonstore_world):
        pass

    @pytest.mark.daemonstore(deamons=[("foo", 20100, 20100, 0o700)])
    def test_unknown_keyword(daemonstore_world):
        pass

    @pytest.mark.daemonstore("foo")
    def test_positional(daemonstore_world):
        pass

    @pytest.mark.daemonstore(daemons=[("foo", 20100, 20100, 0o700)])
    def test_ignored_mark():
        pass

    @pytest.mark.kernel
    @pytest.mark.daemonstore(backend="model")
    def test_kernel_mark_and_model_backend(daemonstore_world):
        pass

    @pytest.mark.daemonstore(backend="kernel")
    @pytest.mark.parametrize("daemonstore_world", ["model"], indirect=True)
    def test_param_contradicts_mark(daemonstore_world):
        pass

    @pytest.mark.parametrize("daemonstore_world", ["tmpfs"], indirect=True)
    def test_unknown_param(daemonstore_world):
        pass

    async def test_async_on_sync_world(daemonstore_world):
        pass

    @pytest.mark.daemonstore(backend="kernel")
    def test_sync_on_kernel_bus_world(bus_world):
        pass

    @pytest.mark.daemonstore(backend="kernel")
    async def test_kernel_bus_world_and_model_service(bus_world, cryptohome_service):
        pass

    def test_two_worlds(daemonstore_world, bus_world):
        pass

    @pytest.mark.daemonstore(backend="model")
    def test_model_system_world(daemonstore_system_world):
        pass

    @pytest.mark.daemonstore(daemons=[("foo", 20100, 20100, 0o700)])
    async def test_async_on_system_world(daemonstore_system_world):
        pass

    @pytest.mark.daemonstore(seed="7")
    def test_bad_seed(daemonstore_world):
        pass

    def test_unknown_daemon(daemonstore_world):
        daemonstore_world.install_daemon("foo", 20100, 20100, 0o700)
        daemonstore_world.daemon("fo")

    @pytest.mark.daemonstore(daemons=[("foo", 20100, 20100, 0o700)], seed=1)
    def test_well_formed_passes(daemonstore_world):
        assert daemonstore_world.daemon("foo").listdir() == []

    def test_plain_test_is_left_alone():
        pass
""")

#: test name -> the line of the error the report must show
EXPECTED = {
    "test_unknown_backend": "*unknown daemonstore backend 'kernal'*use one of 'model', 'kernel'*",
    "test_unknown_keyword": "*mark.daemonstore has no keyword 'deamons'; it takes backend, "
                            "daemons, seed*",
    "test_positional": "*takes keywords only*not positional ('foo',)*",
    "test_ignored_mark": "*@pytest.mark.daemonstore is ignored: the test uses no world fixture*",
    "test_kernel_mark_and_model_backend": "*contradictory daemonstore backends*"
                                          "backend=...) says 'model'*mark.kernel says 'kernel'*",
    "test_param_contradicts_mark": "*contradictory daemonstore backends*says 'kernel'*"
                                   "the fixture's parameter says 'model'*",
    "test_unknown_param": "*unknown daemonstore backend 'tmpfs' (fixture parameter)*",
    "test_async_on_sync_world": "*an async def test cannot use the synchronous daemonstore_world*",
    "test_sync_on_kernel_bus_world": "*bus_world on the kernel runs the test in the sandbox "
                                     "child's event loop: write it as async def*",
    "test_kernel_bus_world_and_model_service": "*cryptohome_service*would start a second, "
                                               "model-backed cryptohome*",
    "test_two_worlds": "*one world per test, not daemonstore_world, bus_world*",
    "test_model_system_world": "*daemonstore_system_world is a device in a container, always "
                               "on the kernel: backend='model' contradicts it*",
    "test_async_on_system_world": "*an async def test cannot use the synchronous "
                                  "daemonstore_system_world*",
    "test_bad_seed": "*seed= takes an int, not '7'*",
    "test_unknown_daemon": "*WorldError: daemon 'fo' has no store*no template*"
                           "install_daemon('fo'*",
}


def test_every_misuse_is_an_error_naming_the_test_and_the_fix(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(test_misuse=CASES)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA")
    out = result.stdout.str()
    # the misuses are refused before any fixture runs (setup errors), except the unknown
    # daemon, which the world refuses in the body
    setup_errors = set(EXPECTED) - {"test_unknown_daemon"}
    for name in sorted(setup_errors):
        result.stdout.fnmatch_lines([f"ERROR test_misuse.py::{name}*"])
    result.stdout.fnmatch_lines(["FAILED test_misuse.py::test_unknown_daemon*"])
    for line in EXPECTED.values():
        result.stdout.fnmatch_lines([line])
    assert "During handling" not in out  # one clear message, no chained traceback
    result.stdout.fnmatch_lines(["PASSED test_misuse.py::test_well_formed_passes",
                                 "PASSED test_misuse.py::test_plain_test_is_left_alone"])
    assert result.parseoutcomes() == {"passed": 2, "failed": 1, "errors": len(setup_errors)}
    result.stdout.no_fnmatch_line("*Warning*")


def test_plugin_imports_only_what_the_slim_testing_extra_installs() -> None:
    """``pip install daemonstore[testing]`` brings pytest and pytest-asyncio, nothing of the
    project's own test tools: loading the plugin (and its bus module, which registers the D-Bus
    fixtures) imports no hypothesis, pyfakefs or ruff, and no D-Bus until a bus fixture runs."""
    code = ("import sys, daemonstore.testing, daemonstore.testing.bus; "
            "print(sorted({m.split('.')[0] for m in sys.modules}))")
    loaded = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                            text=True).stdout
    for name in ("hypothesis", "pyfakefs", "ruff", "dbus_fast", "cryptohome_sim", "pyudev"):
        assert f"'{name}'" not in loaded, name
    assert "'pytest_asyncio'" in loaded and "'pytest'" in loaded  # the control: it did load


def test_slim_testing_extra_lists_only_the_plugins_needs() -> None:
    import tomllib
    from pathlib import Path

    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    extras = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
    names = {req.split(">")[0].split("=")[0].split("<")[0].strip() for req in extras["testing"]}
    assert names == {"pytest", "pytest-asyncio"}
    assert set(extras["testing"]) <= set(extras["test"])  # the project's own keeps everything
