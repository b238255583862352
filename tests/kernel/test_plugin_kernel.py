"""The plugin runs a kernel world's whole test function in the sandbox child: a daemon author's
test, written like a model test, run through the installed plugin (``pytester`` in a subprocess)
and its report checked -- outcomes, a failing assertion's message and the child's traceback, the
child's log records in ``caplog`` and the report, a skip in the body."""

from __future__ import annotations

import textwrap

import pytest

pytestmark = pytest.mark.kernel
pytest_plugins = ["pytester"]

AUTHOR_SUITE = textwrap.dedent("""
    import logging
    import os

    import pytest

    log = logging.getLogger("mydaemon")
    FOO = ("mydaemon", 20100, 20100, 0o700)

    @pytest.fixture
    def parent_caplog(caplog):
        # runs in the pytest process: after the call, the child's records were re-emitted here
        yield caplog
        got = [(r.name, r.levelname, r.getMessage()) for r in caplog.get_records("call")]
        assert got == [("mydaemon", "WARNING", "alice is signed in"),
                       ("mydaemon", "ERROR", "bad thing: 42")], got
        assert "ZeroDivisionError" in caplog.get_records("call")[1].exc_text

    @pytest.mark.daemonstore(backend="kernel", daemons=[FOO])
    def test_body_runs_in_the_sandbox_child(daemonstore_world, parent_caplog):
        world = daemonstore_world
        assert world.kind == "kernel" and "/daemonstore-sandbox-" in world.host.root
        assert os.getpid() != int(os.environ["PARENT_PID"])  # a forked child
        view = world.daemon("mydaemon")
        world.login("alice")
        assert view.sees_store("alice")
        log.warning("alice is signed in")
        try:
            1 / 0
        except ZeroDivisionError:
            log.exception("bad thing: %d", 42)
        # caplog works in the child too: the handler was installed before the fork
        assert [r.getMessage() for r in parent_caplog.records] == ["alice is signed in",
                                                                  "bad thing: 42"]
        view.write("alice", "state", b"1")
        world.logout("alice")
        assert not view.sees_store("alice")
        assert world.read_vault("alice", "mydaemon", "state") == b"1"

    @pytest.mark.daemonstore(daemons=[FOO])
    @pytest.mark.parametrize("daemonstore_world", ["model", "kernel"], indirect=True)
    def test_same_body_on_both_backends(daemonstore_world, request):
        world = daemonstore_world
        assert world.kind == request.node.callspec.params["daemonstore_world"]
        view = world.daemon("mydaemon")
        assert world.hash_of("alice") == world.login("alice")  # seed 0: same hash on both
        assert view.visible_users() == [world.hash_of("alice")]
        print("HASH", world.kind, world.hash_of("alice"))

    @pytest.mark.daemonstore(backend="kernel", daemons=[FOO])
    def test_failing_assertion(daemonstore_world):
        view = daemonstore_world.daemon("mydaemon")
        daemonstore_world.login("alice")
        seen = view.sees_store("alice")
        assert not seen, "the daemon should not see it"

    @pytest.mark.daemonstore(backend="kernel")
    def test_skip_in_the_body(daemonstore_world):
        pytest.skip("nothing to do here")

    @pytest.mark.daemonstore(backend="kernel")
    def test_error_in_the_body(daemonstore_world):
        daemonstore_world.daemon("nodaemon")

    @pytest.mark.daemonstore(backend="kernel", daemons=[FOO])
    def test_world_run_still_works(daemonstore_world):
        def body(world):
            view = world.daemon("mydaemon")
            world.login("alice")
            return world.kind, view.sees_store("alice")
        assert daemonstore_world.run(body) == ("kernel", True)
""")


def test_a_kernel_test_is_written_like_a_model_test(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_author=AUTHOR_SUITE)
    # the pytest process's pid, for the body to check it runs in another (the forked child)
    pytester.makeconftest("import os\nos.environ['PARENT_PID'] = str(os.getpid())\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA")
    assert result.parseoutcomes() == {"passed": 4, "failed": 2, "skipped": 1}, result.stdout.str()
    result.stdout.fnmatch_lines([
        "PASSED test_author.py::test_body_runs_in_the_sandbox_child",
        "PASSED test_author.py::test_same_body_on_both_backends[[]model[]]",
        "PASSED test_author.py::test_same_body_on_both_backends[[]kernel[]]",
        "PASSED test_author.py::test_world_run_still_works",
        "SKIPPED [[]1[]] test_author.py:*: nothing to do here",
        "FAILED test_author.py::test_failing_assertion - AssertionError*",
        "FAILED test_author.py::test_error_in_the_body - daemonstore.world.WorldError*",
    ])
    result.stdout.fnmatch_lines(["E   daemonstore.world.WorldError: daemon 'nodaemon' has no "
                                 "store*install_daemon('nodaemon'*"])
    out = result.stdout.str()
    # the failure shows pytest's rewritten message and the child's traceback down to the line
    failure = out.split(" test_failing_assertion ", 1)[1].split("\n___", 1)[0]
    assert "assert not True" in failure and "traceback in the sandbox child:" in failure
    assert 'test_author.py", line ' in failure and 'assert not seen, "the daemon' in failure
    # the same seed gives the same user hash on the model and the kernel
    hashes = {line.split()[1]: line.split()[2] for line in out.splitlines()
              if line.startswith("HASH ")}
    assert set(hashes) == {"model", "kernel"} and hashes["model"] == hashes["kernel"], hashes
