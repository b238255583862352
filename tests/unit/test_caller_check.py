"""cryptohome_sim.callers without a bus: the uid map (CallerIds, the CLI options that set it)
and the check's bookkeeping against a scripted connection -- held calls answered in order, a
failed uid lookup refusing what was held, a caller that leaves during its lookup never cached,
no error sent to a caller that asked for no reply."""

from __future__ import annotations

import asyncio
import os
import pwd

import pytest
from click.testing import CliRunner
from dbus_fast import Message, MessageFlag, MessageType

from cryptohome_sim.callers import BUS_NAME, CallerCheck, CallerIds, UnknownUser, uid_of
from cryptohome_sim.cli import main as cryptohome_sim_main
from daemonstore.dbus import names
from daemonstore.dbus.callers import CHRONOS, ROOT

SALT = (names.MISC_IFACE, "GetSystemSalt")
CONTROL = (names.CONTROL_IFACE, "AddUser")


class FakeBus:
    """What CallerCheck uses of a connection: ``call`` answers GetConnectionUnixUser from
    ``uids`` (an error for a name not there) once ``release`` is set."""

    def __init__(self, uids: dict[str, int]) -> None:
        self.uids = uids
        self.connected = True
        self.release = asyncio.Event()
        self.sent: list[Message] = []
        self.dispatched: list[Message] = []
        self.asked: list[str] = []

    async def call(self, msg: Message) -> Message:
        await self.release.wait()
        msg.serial = next(_serial)  # as the real connection numbers what it sends
        if msg.member == "AddMatch":
            return Message.new_method_return(msg)
        self.asked.append(msg.body[0])
        if msg.body[0] in self.uids:
            return Message.new_method_return(msg, "u", [self.uids[msg.body[0]]])
        return Message.new_error(msg, "org.freedesktop.DBus.Error.NameHasNoOwner", "gone")

    def send(self, msg: Message) -> None:
        self.sent.append(msg)

    def _process_message(self, msg: Message) -> None:
        self.dispatched.append(msg)


_serial = iter(range(1, 10_000))


def call(sender: str, what: tuple[str, str], *, no_reply: bool = False) -> Message:
    return Message(destination=names.CRYPTOHOME_NAME, path=names.CRYPTOHOME_PATH,
                   interface=what[0], member=what[1], sender=sender, serial=next(_serial),
                   flags=MessageFlag.NO_REPLY_EXPECTED if no_reply else MessageFlag.NONE)


def left(name: str) -> Message:
    return Message(message_type=MessageType.SIGNAL, sender=BUS_NAME, path="/org/freedesktop/DBus",
                   interface=BUS_NAME, member="NameOwnerChanged", signature="sss",
                   body=[name, name, ""], serial=next(_serial))


def checker(uids: dict[str, int]) -> tuple[CallerCheck, FakeBus]:
    bus = FakeBus(uids)
    ids = CallerIds(root=0, chronos=1000)
    return CallerCheck(bus, names.CRYPTOHOME_NAME, ids), bus  # type: ignore[arg-type]


async def settle(check: CallerCheck) -> None:
    for _ in range(20):
        await asyncio.sleep(0)


@pytest.mark.asyncio
async def test_held_calls_run_in_order_then_the_cache_answers() -> None:
    check, bus = checker({":1.5": 1000})
    first, second = call(":1.5", SALT), call(":1.5", CONTROL)
    assert check.handle(first) is True and check.handle(second) is True  # held
    bus.release.set()
    await settle(check)
    assert bus.dispatched == [first]  # chronos may GetSystemSalt
    assert [(m.error_name, m.reply_serial) for m in bus.sent] == [
        (names.ACCESS_DENIED, second.serial)]  # ... but not AddUser
    assert 'uid=1000' in bus.sent[0].body[0]
    assert check.cached() == {":1.5": 1000}
    third = call(":1.5", SALT)
    assert check.handle(third) is None  # known now: straight on to dispatch
    refused = check.handle(call(":1.5", CONTROL))
    assert isinstance(refused, Message) and refused.error_name == names.ACCESS_DENIED
    assert bus.asked == [":1.5"]  # asked once
    check.handle(left(":1.5"))
    assert check.cached() == {}


@pytest.mark.asyncio
async def test_a_failed_lookup_refuses_what_was_held_and_caches_nothing() -> None:
    check, bus = checker({})
    held = [call(":1.9", SALT), call(":1.9", SALT)]
    for msg in held:
        assert check.handle(msg) is True
    bus.release.set()
    await settle(check)
    assert bus.dispatched == []
    assert [m.error_name for m in bus.sent] == [names.ACCESS_DENIED] * 2
    assert check.cached() == {}


@pytest.mark.asyncio
async def test_a_caller_leaving_during_its_lookup_is_not_cached() -> None:
    check, bus = checker({":1.7": 0})
    msg = call(":1.7", CONTROL)
    assert check.handle(msg) is True
    check.handle(left(":1.7"))  # the signal overtakes the task that reads the reply
    bus.release.set()
    await settle(check)
    assert bus.dispatched == [msg]  # it was root when it called
    assert check.cached() == {}


@pytest.mark.asyncio
async def test_no_error_for_a_caller_that_wants_no_reply() -> None:
    check, bus = checker({":1.3": 65534})
    bus.release.set()
    assert check.handle(call(":1.3", SALT, no_reply=True)) is True
    await settle(check)
    assert bus.sent == [] and bus.dispatched == []
    assert check.handle(call(":1.3", SALT, no_reply=True)) is True  # cached: handled, silent
    assert bus.sent == []


@pytest.mark.asyncio
async def test_other_messages_and_other_signals_pass_untouched() -> None:
    check, bus = checker({})
    signal = Message(message_type=MessageType.SIGNAL, sender=":1.4", path="/x",
                     interface="a.b", member="NameOwnerChanged", signature="sss",
                     body=[":1.5", ":1.5", ""], serial=next(_serial))
    check._uids[":1.5"] = 0
    assert check.handle(signal) is None
    assert check.cached() == {":1.5": 0}  # a NameOwnerChanged not from the bus is ignored
    ret = Message(message_type=MessageType.METHOD_RETURN, reply_serial=1, sender=":1.4",
                  serial=next(_serial))
    assert check.handle(ret) is None
    check.handle(left("org.example.WellKnown"))  # a well-known name leaving: not a caller
    assert check.cached() == {":1.5": 0}


def test_caller_ids() -> None:
    daemon = pwd.getpwnam("daemon").pw_uid
    assert CallerIds.named("root", "daemon") == CallerIds(0, daemon)
    assert CallerIds.named("0", "1000") == CallerIds(0, 1000)
    assert CallerIds.named("root", "no-such-user-here") == CallerIds(0, None)
    with pytest.raises(UnknownUser, match="no-such-user-here"):
        CallerIds.named("root", "no-such-user-here", strict=True)
    with pytest.raises(UnknownUser, match="root's role"):
        CallerIds.named("no-such-user-here", None)
    assert CallerIds.default().root == os.geteuid()
    assert uid_of("nobody") == 65534 and uid_of("no-such-user-here") is None
    ids = CallerIds(0, 1000)
    assert [ids.role_of(u) for u in (0, 1000, 65534, None)] == [ROOT, CHRONOS, None, None]
    assert CallerIds(0, 0).role_of(0) == ROOT  # one uid for both: root wins


@pytest.mark.parametrize("option", ["--chronos-user", "--root-user"])
def test_cli_refuses_an_unknown_user_before_anything(option: str) -> None:
    result = CliRunner().invoke(cryptohome_sim_main, [
        "--model", "--address", "unix:path=/nonexistent/socket", option, "no-such-user-here"])
    assert result.exit_code == 2
    assert "no-such-user-here" in result.output and "role" in result.output
