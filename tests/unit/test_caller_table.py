"""The shipped bus policy files and the daemon role's grant files say what the caller table
(daemonstore/dbus/callers.py) says, so the bus and cryptohome-sim's own check can never drift
apart; and the table's semantics (root everything, chronos the listed methods with an interface,
a daemon user the session queries, nobody else)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from cryptohome_sim.bus import POLICY_FILES, policy_text, render_policy
from daemonstore.dbus import names
from daemonstore.dbus.callers import (
    ALL,
    CALLERS,
    CHRONOS,
    DAEMON,
    ROLES,
    ROOT,
    Grant,
    may_call,
)
from daemonstore.dbus.grants import render_grant

Table = dict[str, dict[str, Grant]]


class Unexpected(AssertionError):
    """A rule the parser does not know: the table cannot express it, so it must not pass."""


def parse_policy(text: str, *, standalone: bool = True) -> tuple[Table, dict[str, set[str]]]:
    """(bus name -> user -> grant, bus name -> users allowed to own it) from one policy file.

    Every element must be one this table models; a ``standalone`` file's default context must
    deny owning and sending to each name it mentions (so nobody else gets anything). A grant
    file is not standalone: it only adds a user's allows to the shipped file's denials."""
    table: Table = {}
    owners: dict[str, set[str]] = {}
    denied_send: set[str] = set()
    denied_own: set[str] = set()
    for policy in ET.fromstring(text):
        if policy.tag != "policy":
            raise Unexpected(f"top-level <{policy.tag}>")
        user, context = policy.get("user"), policy.get("context")
        for rule in policy:
            attrs = dict(rule.attrib)
            if context == "default" and set(attrs) == {"own"} and rule.tag == "deny":
                denied_own.add(attrs["own"])
            elif context == "default" and set(attrs) == {"send_destination"} \
                    and rule.tag == "deny":
                denied_send.add(attrs["send_destination"])
            elif user is None or rule.tag != "allow":
                raise Unexpected(f"<{rule.tag} {attrs}> in <policy {policy.attrib}>")
            elif set(attrs) == {"own"}:
                owners.setdefault(attrs["own"], set()).add(user)
            elif set(attrs) == {"send_destination"}:
                table.setdefault(attrs["send_destination"], {})[user] = ALL
            elif set(attrs) == {"send_destination", "send_interface", "send_member"}:
                grants = table.setdefault(attrs["send_destination"], {})
                old = grants.get(user, frozenset())
                if old is ALL:
                    raise Unexpected(f"{user} has every method of "
                                     f"{attrs['send_destination']} already")
                assert isinstance(old, frozenset)
                grants[user] = old | {(attrs["send_interface"], attrs["send_member"])}
            else:
                raise Unexpected(f"<{rule.tag} {attrs}> in <policy {policy.attrib}>")
    mentioned = set(table) | set(owners)
    if not standalone and (denied_send or denied_own or owners):
        raise Unexpected("a grant file owns or denies something")
    if standalone and (not mentioned <= denied_send or not mentioned <= denied_own):
        raise Unexpected(f"the default context does not deny {sorted(mentioned)} to everyone")
    return table, owners


def shipped() -> tuple[Table, dict[str, set[str]]]:
    table: Table = {}
    owners: dict[str, set[str]] = {}
    for name in POLICY_FILES:
        got, own = parse_policy(policy_text(name))
        for dest, grants in got.items():
            assert dest not in table, f"{dest} is granted in two files"
            table[dest] = grants
        owners.update(own)
    return table, owners


def without_daemon_role() -> Table:
    return {name: {role: g for role, g in grants.items() if role != DAEMON}
            for name, grants in CALLERS.items()}


def test_policy_files_say_exactly_the_table() -> None:
    table, owners = shipped()
    assert table == without_daemon_role()  # the shipped files: root and chronos
    assert owners == {name: {ROOT} for name in CALLERS}  # only root owns the names


@pytest.mark.parametrize("user", ["biod", "cdm-oemcrypto", "vm_cicerone", "20100"])
def test_a_grant_file_says_exactly_the_daemon_role(user: str) -> None:
    """What ``daemonstore install --daemon-user USER`` writes: the daemon role of the table,
    for that user, and nothing else (no owner, no denial, no other user)."""
    table, owners = parse_policy(render_grant(user), standalone=False)
    assert table == {name: {user: grants[DAEMON]} for name, grants in CALLERS.items()
                     if DAEMON in grants}
    assert table  # the role grants something
    assert owners == {}


def test_the_daemon_role_is_the_session_queries_chromeos_grants_daemons() -> None:
    """login_manager/SessionManager.conf grants daemon users (biod, u2f, crash, power,
    cdm-oemcrypto, pciguard, ...) these read-only queries and nothing on cryptohome."""
    assert CALLERS[names.SESSION_NAME][DAEMON] == {
        (names.SESSION_IFACE, m) for m in ("RetrievePrimarySession", "RetrieveActiveSessions",
                                            "RetrieveSessionState", "IsGuestSessionActive")}
    assert DAEMON not in CALLERS[names.CRYPTOHOME_NAME]
    assert CALLERS[names.SESSION_NAME][DAEMON] < CALLERS[names.SESSION_NAME][CHRONOS]


def test_a_grant_file_that_drifted_is_noticed() -> None:
    text = render_grant("biod")
    more = text.replace('send_member="RetrieveSessionState"/>',
                        'send_member="RetrieveSessionState"/>\n'
                        '    <allow send_destination="org.chromium.SessionManager"\n'
                        '           send_interface="org.chromium.SessionManagerInterface"\n'
                        '           send_member="StartSession"/>', 1)
    assert more != text
    want = {"biod": CALLERS[names.SESSION_NAME][DAEMON]}
    assert parse_policy(more, standalone=False)[0][names.SESSION_NAME] != want
    with pytest.raises(Unexpected):  # a grant file that would own a name is refused
        parse_policy(text.replace("<policy user=\"biod\">", '<policy user="biod">\n'
                                  '    <allow own="org.chromium.SessionManager"/>'),
                     standalone=False)


def test_a_policy_that_drifted_from_the_table_is_noticed() -> None:
    """The comparison above can fail: one more method for chronos, or one method fewer."""
    text = policy_text("org.chromium.SessionManager.conf")
    more = text.replace('<policy user="chronos">', '<policy user="chronos">\n'
                        '    <allow send_destination="org.chromium.SessionManager"\n'
                        '           send_interface="org.daemonstore.Control"'
                        ' send_member="AddUser"/>', 1)
    fewer = re.sub(r'<allow [^>]*send_member="RetrievePrimarySession"/>', "", text, count=1)
    assert fewer != text
    want = without_daemon_role()[names.SESSION_NAME]
    assert parse_policy(text)[0][names.SESSION_NAME] == want
    assert parse_policy(more)[0][names.SESSION_NAME] != want
    assert parse_policy(fewer)[0][names.SESSION_NAME] != want
    with pytest.raises(Unexpected):  # a rule the table cannot say is refused, not ignored
        parse_policy(text.replace('<deny own="org.chromium.SessionManager"/>',
                                  '<allow own="org.chromium.SessionManager"/>'))


def test_rendered_policies_keep_the_table() -> None:
    """The private bus's files (root and chronos replaced by stand-ins) grant the same."""
    for name in POLICY_FILES:
        table, _ = parse_policy(render_policy(name, "alice", "daemon"))
        want, _ = parse_policy(policy_text(name))
        for dest, grants in want.items():
            assert table[dest] == {{ROOT: "alice", CHRONOS: "daemon"}[r]: g
                                   for r, g in grants.items()}


@pytest.mark.parametrize("name", list(CALLERS))
def test_root_may_call_everything_there(name: str) -> None:
    assert may_call(name, ROOT, names.CONTROL_IFACE, "AddUser")
    assert may_call(name, ROOT, "org.freedesktop.DBus.Introspectable", "Introspect")
    assert may_call(name, ROOT, None, "anything")


def test_chronos_may_call_the_listed_methods_with_their_interface_only() -> None:
    uda = names.CRYPTOHOME_NAME
    assert may_call(uda, CHRONOS, names.MISC_IFACE, "GetSanitizedUsername")
    assert may_call(names.SESSION_NAME, CHRONOS, names.SESSION_IFACE, "StopSession")
    assert not may_call(uda, CHRONOS, None, "GetSanitizedUsername")  # no interface: denied
    assert not may_call(uda, CHRONOS, names.USERDATAAUTH_IFACE, "GetSanitizedUsername")
    assert not may_call(uda, CHRONOS, names.CONTROL_IFACE, "AddUser")
    assert not may_call(uda, CHRONOS, "org.freedesktop.DBus.Introspectable", "Introspect")
    # a method of the other service is not granted here
    assert not may_call(uda, CHRONOS, names.SESSION_IFACE, "StopSession")


def test_a_daemon_user_may_ask_who_is_signed_in_and_nothing_else() -> None:
    sm = names.SESSION_NAME
    for member in ("RetrievePrimarySession", "RetrieveActiveSessions", "RetrieveSessionState",
                   "IsGuestSessionActive"):
        assert may_call(sm, DAEMON, names.SESSION_IFACE, member)
        assert not may_call(sm, DAEMON, None, member)  # no interface: denied
    for member in ("StartSession", "StopSession", "StopSessionWithReason"):
        assert not may_call(sm, DAEMON, names.SESSION_IFACE, member)
    assert not may_call(sm, DAEMON, names.CONTROL_IFACE, "AddUser")
    assert not may_call(sm, DAEMON, "org.freedesktop.DBus.Introspectable", "Introspect")
    for iface, member in [(names.USERDATAAUTH_IFACE, "PreparePersistentVault"),
                          (names.USERDATAAUTH_IFACE, "IsMounted"),
                          (names.MISC_IFACE, "GetSanitizedUsername")]:
        assert not may_call(names.CRYPTOHOME_NAME, DAEMON, iface, member)


@pytest.mark.parametrize("role", [None, "nobody", *ROLES])
def test_nobody_else_and_no_other_name(role: str | None) -> None:
    assert not may_call("org.example.Other", role, names.MISC_IFACE, "GetSystemSalt")
    if role not in ROLES:
        for name in CALLERS:
            assert not may_call(name, role, names.MISC_IFACE, "GetSystemSalt")
