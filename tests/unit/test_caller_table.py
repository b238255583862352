"""The shipped bus policy files and the caller table (daemonstore/dbus/callers.py) say the same
thing, so the bus and cryptohome-sim's own check can never drift apart; and the table's
semantics (root everything, chronos the listed methods with an interface, nobody else)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from cryptohome_sim.bus import POLICY_FILES, policy_text, render_policy
from daemonstore.dbus import names
from daemonstore.dbus.callers import ALL, CALLERS, CHRONOS, ROLES, ROOT, Grant, may_call

Table = dict[str, dict[str, Grant]]


class Unexpected(AssertionError):
    """A rule the parser does not know: the table cannot express it, so it must not pass."""


def parse_policy(text: str) -> tuple[Table, dict[str, set[str]]]:
    """(bus name -> user -> grant, bus name -> users allowed to own it) from one policy file.

    Every element must be one this table models; a default context must deny owning and
    sending to each name it mentions (so nobody else gets anything)."""
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
    if not mentioned <= denied_send or not mentioned <= denied_own:
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


def test_policy_files_say_exactly_the_table() -> None:
    table, owners = shipped()
    assert table == CALLERS
    assert owners == {name: {ROOT} for name in CALLERS}  # only root owns the names


def test_a_policy_that_drifted_from_the_table_is_noticed() -> None:
    """The comparison above can fail: one more method for chronos, or one method fewer."""
    text = policy_text("org.chromium.SessionManager.conf")
    more = text.replace('<policy user="chronos">', '<policy user="chronos">\n'
                        '    <allow send_destination="org.chromium.SessionManager"\n'
                        '           send_interface="org.daemonstore.Control"'
                        ' send_member="AddUser"/>', 1)
    fewer = re.sub(r'<allow [^>]*send_member="RetrievePrimarySession"/>', "", text, count=1)
    assert fewer != text
    assert parse_policy(text)[0][names.SESSION_NAME] == CALLERS[names.SESSION_NAME]
    assert parse_policy(more)[0][names.SESSION_NAME] != CALLERS[names.SESSION_NAME]
    assert parse_policy(fewer)[0][names.SESSION_NAME] != CALLERS[names.SESSION_NAME]
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


@pytest.mark.parametrize("role", [None, "nobody", *ROLES])
def test_nobody_else_and_no_other_name(role: str | None) -> None:
    assert not may_call("org.example.Other", role, names.MISC_IFACE, "GetSystemSalt")
    if role not in ROLES:
        for name in CALLERS:
            assert not may_call(name, role, names.MISC_IFACE, "GetSystemSalt")
