"""paths.check_daemon_name: its one-match fast path (``_DAEMON_OK``, taken for every template at
boot) accepts exactly the names its rules accept, one by one: not empty, at most NAME_MAX bytes
(UTF-8, a lone surrogate as its byte), no ``..``, the pattern ``[A-Za-z0-9_][A-Za-z0-9_.-]*``."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from daemonstore import paths


def _by_the_rules(name: str) -> bool:
    return (bool(name) and len(name.encode("utf-8", "surrogateescape")) <= paths.NAME_MAX
            and ".." not in name and paths._DAEMON.match(name) is not None)


@given(st.one_of(st.text(alphabet="aZ09_.-/\n é\udcff", max_size=8),
                 st.text(alphabet="ab._-", min_size=250, max_size=260), st.text()))
@example("")
@example("a" * 255)
@example("a" * 256)
@example("_" + "." * 254)
@example("a" * 254 + "é")
@example("a\n")
def test_the_fast_path_accepts_exactly_what_the_rules_accept(name: str) -> None:
    assert (paths._DAEMON_OK.match(name) is not None) == _by_the_rules(name)
    try:
        paths.check_daemon_name(name)
    except paths.BadName:
        assert not _by_the_rules(name)
    else:
        assert _by_the_rules(name)
