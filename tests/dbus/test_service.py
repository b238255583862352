"""cryptohome_sim over a private bus, spoken to in ChromeOS's wire format.

Requests and replies are pinned as hand-written protobuf bytes (field numbers of system_api's
UserDataAuth.proto / rpc.proto, docs/chromeos.md §8.1), so a field-number slip fails here, not
in a user's daemon. The flow test drives everything with raw ``(ay)`` calls and no protobuf
library at all, as a C++ client built from system_api would.
"""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from daemonstore import paths
from daemonstore.dbus import names
from daemonstore.dbus.client import CallError, Client, CryptohomeRefused
from daemonstore.testing.bus import RunningCryptohome
from daemonstore.world import World

pytestmark = [pytest.mark.dbus, pytest.mark.asyncio]

SALT = bytes.fromhex("00112233445566778899aabbccddeeff")
SIGNAL_TIMEOUT = 5.0
UDA = names.USERDATAAUTH_IFACE
MISC = names.MISC_IFACE


def _expected(salt: bytes, username: str) -> str:
    """hex(SHA1(salt || username with only A-Z lower-cased, bytewise))."""
    raw = username.encode("utf-8")
    return hashlib.sha1(salt + bytes(c + 32 if 65 <= c <= 90 else c for c in raw)).hexdigest()


def _install_salt(svc: RunningCryptohome, salt: bytes = SALT) -> None:
    svc.host.mkdir(paths.SHADOW, 0o700, parents=True)
    svc.host.write_file(paths.SALT, salt)


async def _next(queue: asyncio.Queue[str]) -> str:
    return await asyncio.wait_for(queue.get(), SIGNAL_TIMEOUT)


# ---- hand-made protobuf wire format (no protobuf library on this side) ------------------------


def _len(field: int, data: bytes) -> bytes:
    """A length-delimited field (wire type 2); lengths here are < 128 (one varint byte)."""
    assert len(data) < 128
    return bytes([field << 3 | 2, len(data)]) + data


def _fields(data: bytes) -> dict[int, bytes | int]:
    """Decode a flat message: {field number: varint value or bytes}."""
    out: dict[int, bytes | int] = {}
    i = 0
    while i < len(data):
        key = data[i]
        i += 1
        field, wire = key >> 3, key & 7
        if wire == 0:
            value = shift = 0
            while True:
                byte = data[i]
                i += 1
                value |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
            out[field] = value
        elif wire == 2:
            size = data[i]
            i += 1
            out[field] = data[i:i + size]
            i += size
        else:
            raise AssertionError(f"unexpected wire type {wire} in {data!r}")
    return out


def _account(email: str) -> bytes:
    """``cryptohome.AccountIdentifier{account_id = 2}``."""
    return _len(2, email.encode())


async def _raw(client: Client, interface: str, member: str, request: bytes) -> bytes:
    (reply,) = await client.call(names.CRYPTOHOME_NAME, names.CRYPTOHOME_PATH, interface,
                                 member, "ay", [request])
    return bytes(reply)


# ---- pinned bytes ------------------------------------------------------------------------------


async def test_get_sanitized_username_bytes(cryptohome_service: RunningCryptohome,
                                            cryptohome_client: Client) -> None:
    _install_salt(cryptohome_service)
    reply = await _raw(cryptohome_client, MISC, "GetSanitizedUsername",
                       b"\x0a\x11alice@example.com")
    assert reply == b"\x0a\x28" + _expected(SALT, "alice@example.com").encode()


async def test_a_reply_without_error_field_is_empty_on_failure(
        cryptohome_client: Client) -> None:
    """GetSanitizedUsernameReply has no ``error``: ChromeOS answers an empty string."""
    await cryptohome_client.inject_failure("GetSanitizedUsername", 0)
    assert await _raw(cryptohome_client, MISC, "GetSanitizedUsername", b"\x0a\x01a") == b""


async def test_get_system_salt_bytes(cryptohome_service: RunningCryptohome,
                                     cryptohome_client: Client) -> None:
    _install_salt(cryptohome_service)
    assert await _raw(cryptohome_client, MISC, "GetSystemSalt", b"") == b"\x0a\x10" + SALT


async def test_start_auth_session_request_and_reply_bytes(
        cryptohome_client: Client) -> None:
    # account_id = 1 {account_id = 2 "bob"}, intent = 3 DECRYPT, is_ephemeral_user = 4 false
    reply = _fields(await _raw(cryptohome_client, UDA, "StartAuthSession",
                               b"\x0a\x05\x12\x03bob\x18\x01"))
    assert set(reply) == {2, 8}  # error 0 and user_exists false are not on the wire
    assert len(reply[2]) == 16 and reply[8] == reply[2]  # type: ignore[arg-type]
    # the deprecated email = 1 is read when account_id is missing
    reply = _fields(await _raw(cryptohome_client, UDA, "StartAuthSession",
                               b"\x0a\x05\x0a\x03bob\x18\x01"))
    assert len(reply[2]) == 16  # type: ignore[arg-type]


async def test_refusal_is_an_error_code_in_the_reply(cryptohome_client: Client) -> None:
    sid = _fields(await _raw(cryptohome_client, UDA, "StartAuthSession",
                             b"\x0a\x05\x12\x03bob"))[2]
    assert isinstance(sid, bytes)
    # never created: ACCOUNT_NOT_FOUND = 1 in field error = 1
    assert await _raw(cryptohome_client, UDA, "PreparePersistentVault",
                      _len(1, sid)) == b"\x08\x01"
    # an unknown auth session: INVALID_ARGUMENT = 33
    assert await _raw(cryptohome_client, UDA, "PreparePersistentVault",
                      _len(1, b"\x00" * 16)) == b"\x08\x21"
    # the client library raises it as CryptohomeRefused with the enum's name
    with pytest.raises(CryptohomeRefused) as exc:
        await cryptohome_client.prepare_persistent_vault(sid)
    assert (exc.value.code, exc.value.code_name) == (1, "CRYPTOHOME_ERROR_ACCOUNT_NOT_FOUND")


async def test_low_disk_space_signal_bytes(cryptohome_service: RunningCryptohome,
                                           cryptohome_client: Client) -> None:
    watcher = await cryptohome_service.client()
    raw: asyncio.Queue[bytes] = asyncio.Queue()
    rule = (f"type='signal',interface='{UDA}',member='{names.LOW_DISK_SIGNAL}'")
    await watcher.call("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                       "AddMatch", "s", [rule])

    def handler(msg) -> None:  # type: ignore[no-untyped-def]
        if msg.member == names.LOW_DISK_SIGNAL:
            raw.put_nowait(bytes(msg.body[0]))

    watcher._bus.add_message_handler(handler)  # noqa: SLF001 - the raw bytes are the point
    async with watcher.low_disk_space() as free:
        await cryptohome_client.emit_low_disk_space(1000)
        assert await asyncio.wait_for(free.get(), SIGNAL_TIMEOUT) == 1000
    assert await asyncio.wait_for(raw.get(), SIGNAL_TIMEOUT) == b"\x08\xe8\x07"


# ---- the whole flow, raw ----------------------------------------------------------------------


async def _sign_in_raw(client: Client, email: str) -> str:
    reply = _fields(await _raw(client, UDA, "StartAuthSession",
                               _len(1, _account(email)) + b"\x18\x01"))
    sid = reply[2]
    assert isinstance(sid, bytes) and 3 not in reply  # user_exists false: a new user
    created = _fields(await _raw(client, UDA, "CreatePersistentUser", _len(1, sid)))
    prepared = await _raw(client, UDA, "PreparePersistentVault", _len(1, sid))
    assert prepared == _len(2, created[2])  # type: ignore[arg-type]
    user_hash = created[2].decode()  # type: ignore[union-attr]
    await client.call(names.SESSION_NAME, names.SESSION_PATH, names.SESSION_IFACE,
                      "StartSession", "ss", [email, ""])
    return user_hash


async def test_full_flow_with_hand_encoded_bytes(cryptohome_service: RunningCryptohome,
                                                 cryptohome_client: Client) -> None:
    host = cryptohome_service.host
    await cryptohome_client.install_daemon("biod", 282, 282, 0o700)
    await cryptohome_client.install_daemon("crash", 0, 20150, 0o3770)  # as ChromeOS ships it
    watcher = await cryptohome_service.client()
    async with watcher.session_states() as states:
        alice = await _sign_in_raw(cryptohome_client, "alice@example.com")
        assert await _next(states) == names.STARTED
        for daemon in ("biod", "crash"):
            for cache in (False, True):
                assert f" {paths.user_store(daemon, alice, cache)} " in host.mountinfo()
        # IsMounted{username = 1}: is_mounted = 1 true
        assert await _raw(cryptohome_client, UDA, "IsMounted",
                          b"\x0a\x11alice@example.com") == b"\x08\x01"
        # the guest is refused while alice is mounted: MOUNT_FATAL = 5
        assert await _raw(cryptohome_client, UDA, "PrepareGuestVault", b"") == b"\x08\x05"

        bob = await _sign_in_raw(cryptohome_client, "bob@example.com")
        assert await _next(states) == names.STARTED
        assert await watcher.active_sessions() == {"alice@example.com": alice,
                                                   "bob@example.com": bob}
        assert await watcher.primary_session() == ("alice@example.com", alice)

        await cryptohome_client.clear_calls()
        await cryptohome_client.call(names.SESSION_NAME, names.SESSION_PATH,
                                     names.SESSION_IFACE, "StopSession", "s", [""])
        assert [await _next(states), await _next(states)] == [names.STOPPING, names.STOPPED]
        signals = [a for m, a in await cryptohome_client.get_calls()
                   if m == names.SESSION_SIGNAL]
        assert signals == [[names.STOPPING], [names.STOPPED]]  # one each, for two users
        assert await watcher.session_state() == names.STOPPED
        assert await watcher.active_sessions() == {}
        assert f" {paths.user_store('biod', bob)} " in host.mountinfo()  # ui-post-stop next

        assert await _raw(cryptohome_client, UDA, "Unmount", b"") == b""  # UnmountReply{}
        assert await _raw(cryptohome_client, UDA, "IsMounted", b"") == b""  # nobody
        for user_hash in (alice, bob):
            assert user_hash not in host.mountinfo()

        reply = await _raw(cryptohome_client, UDA, "PrepareGuestVault", b"")
        guest = _expected(host.read_file(paths.SALT), paths.GUEST_USER)
        assert reply == _len(2, guest.encode())
        await cryptohome_client.call(names.SESSION_NAME, names.SESSION_PATH,
                                     names.SESSION_IFACE, "StartSession", "ss",
                                     [paths.GUEST_USER, ""])
        assert await _next(states) == names.STARTED
        assert await watcher.is_guest_session_active()
        assert await watcher.primary_session() == ("", "")
        # IsMounted{}: is_mounted = 1, is_ephemeral_mount = 2
        assert await _raw(cryptohome_client, UDA, "IsMounted", b"") == b"\x08\x01\x10\x01"
        assert f" {paths.user_store('biod', guest)} " in host.mountinfo()
        await cryptohome_client.stop_session()
        assert [await _next(states), await _next(states)] == [names.STOPPING, names.STOPPED]
        assert await _raw(cryptohome_client, UDA, "Unmount", b"") == b""
    assert await _raw(cryptohome_client, UDA, "IsMounted", b"") == b""
    assert guest not in host.mountinfo()


async def test_returning_user_authenticates_and_remove_forgets(
        cryptohome_client: Client) -> None:
    alice = await _sign_in_raw(cryptohome_client, "alice@example.com")
    await cryptohome_client.logout()
    reply = _fields(await _raw(cryptohome_client, UDA, "StartAuthSession",
                               _len(1, _account("alice@example.com"))))
    assert reply[3] == 1  # user_exists
    sid = reply[2]
    assert isinstance(sid, bytes)
    # auth_session_id = 1, auth_input = 3 {password_input = 1 {secret = 1}}, labels = 4
    request = _len(1, sid) + _len(3, _len(1, _len(1, b"pw"))) + _len(4, b"password")
    assert await _raw(cryptohome_client, UDA, "AuthenticateAuthFactor", request) == b""
    assert await _raw(cryptohome_client, UDA, "PreparePersistentVault",
                      _len(1, sid)) == _len(2, alice.encode())
    assert await _raw(cryptohome_client, UDA, "InvalidateAuthSession", _len(1, sid)) == b""
    # Remove{identifier = 1}: refused while mounted (REMOVE_FAILED = 32), then done
    remove = _len(1, _account("alice@example.com"))
    assert await _raw(cryptohome_client, UDA, "Remove", remove) == b"\x08\x20"
    await cryptohome_client.unmount()
    assert await _raw(cryptohome_client, UDA, "Remove", remove) == b""
    assert await _raw(cryptohome_client, UDA, "Remove", remove) == b"\x08\x01"


# ---- the client library over the same calls ---------------------------------------------------


@pytest.mark.parametrize("username", [
    "alice@example.com",
    "Alice@Example.COM",     # mixed case: A-Z become a-z
    "ÅSA.ÖBERG@EXAMPLE.SE",  # non-ASCII: the UTF-8 bytes of Å and Ö stay as they are
    "İ",                     # str.lower() would make this "i̇"; bytewise tolower leaves it
])
async def test_sanitized_username_vectors(cryptohome_service: RunningCryptohome,
                                          cryptohome_client: Client, username: str) -> None:
    _install_salt(cryptohome_service)
    assert await cryptohome_client.sanitized_username(username) == _expected(SALT, username)


async def test_salt_is_created_if_missing(cryptohome_service: RunningCryptohome,
                                          cryptohome_client: Client) -> None:
    host = cryptohome_service.host
    assert not host.exists(paths.SALT)
    got = await cryptohome_client.sanitized_username("Bob")
    salt = host.read_file(paths.SALT)
    assert len(salt) == 16 and host.stat(paths.SALT).perm == 0o644
    assert got == _expected(salt, "bob")
    assert await cryptohome_client.system_salt() == salt


async def test_login_emits_started_and_logout_stops_everyone(
        cryptohome_service: RunningCryptohome, cryptohome_client: Client) -> None:
    client = cryptohome_client
    await client.sanitized_username("x")  # the salt exists before the snapshot
    before = cryptohome_service.host.mountinfo()
    assert await client.session_state() == names.STOPPED
    assert await client.primary_session() == ("", "")
    watcher = await cryptohome_service.client()
    async with watcher.session_states() as states:
        alice = await client.login("alice")
        assert alice.created
        bob = await client.login("bob")
        assert [await _next(states), await _next(states)] == [names.STARTED, names.STARTED]
        assert await client.primary_session() == ("alice", alice.user_hash)
        assert await client.active_sessions() == {"alice": alice.user_hash,
                                                  "bob": bob.user_hash}
        result = await client.logout()
        assert result.had_session
        assert [await _next(states), await _next(states)] == [names.STOPPING, names.STOPPED]
    assert await client.session_state() == names.STOPPED
    assert await client.is_mounted() == (False, False)
    assert cryptohome_service.host.mountinfo() == before
    again = await client.login("alice")
    assert not again.created and again.user_hash == alice.user_hash


async def test_logout_order_stopping_stopped_then_unmount(
        cryptohome_service: RunningCryptohome, cryptohome_client: Client) -> None:
    await cryptohome_service.login("alice")
    await cryptohome_client.clear_calls()
    await cryptohome_service.logout()
    calls = [(m, a) for m, a in await cryptohome_client.get_calls()
             if m not in ("GetCalls", "ClearCalls")]
    assert calls == [("StopSession", []),
                     (names.SESSION_SIGNAL, [names.STOPPING]),
                     (names.SESSION_SIGNAL, [names.STOPPED]),
                     ("Unmount", [])]


async def test_stop_session_with_reason_ends_every_session(
        cryptohome_service: RunningCryptohome, cryptohome_client: Client) -> None:
    await cryptohome_client.login("alice")
    async with cryptohome_client.session_states() as states:
        await cryptohome_client.stop_session_with_reason(3)
        assert [await _next(states), await _next(states)] == [names.STOPPING, names.STOPPED]
    with pytest.raises(CallError) as exc:
        await cryptohome_client.stop_session()
    assert exc.value.error_name == f"{names.SESSION_ERROR}.SessionDoesNotExist"


async def test_start_session_needs_a_mounted_cryptohome(cryptohome_client: Client) -> None:
    with pytest.raises(CallError) as exc:
        await cryptohome_client.start_session("alice")
    assert exc.value.error_name == f"{names.SESSION_ERROR}.NotMounted"


async def test_second_login_of_the_same_user_is_mount_point_busy(
        cryptohome_client: Client) -> None:
    await cryptohome_client.login("alice")
    with pytest.raises(CryptohomeRefused) as exc:
        await cryptohome_client.login("ALICE")  # same hash: ASCII case does not matter
    assert exc.value.code_name == "CRYPTOHOME_ERROR_MOUNT_MOUNT_POINT_BUSY"


@pytest.mark.parametrize("step", [0, 7, 20])
async def test_injected_failure_fails_prepare_and_changes_nothing(
        cryptohome_service: RunningCryptohome, cryptohome_client: Client, step: int) -> None:
    await cryptohome_client.install_daemon("biod", 0, 0, 0o755)
    await cryptohome_client.sanitized_username("alice")  # salt first
    before = cryptohome_service.host.mountinfo()
    await cryptohome_client.inject_failure("PreparePersistentVault", step)
    with pytest.raises(CryptohomeRefused) as exc:
        await cryptohome_client.login("alice")
    assert exc.value.code_name == "CRYPTOHOME_ERROR_MOUNT_FATAL"
    assert cryptohome_service.host.mountinfo() == before
    assert await cryptohome_client.session_state() == names.STOPPED
    assert "StartSession" not in [m for m, _ in await cryptohome_client.get_calls()]
    await cryptohome_client.login("alice")  # one-shot


async def test_failed_start_session_unmounts_again(
        cryptohome_service: RunningCryptohome, cryptohome_client: Client) -> None:
    await cryptohome_client.sanitized_username("alice")
    before = cryptohome_service.host.mountinfo()
    await cryptohome_client.inject_failure("StartSession", 0)
    with pytest.raises(CallError) as exc:
        await cryptohome_client.login("alice")
    assert exc.value.error_name == f"{names.SESSION_ERROR}.SessionFailed"
    assert cryptohome_service.host.mountinfo() == before


async def test_ephemeral_login(cryptohome_service: RunningCryptohome,
                               cryptohome_client: Client) -> None:
    result = await cryptohome_client.login("kiosk@example.com", ephemeral=True)
    assert await cryptohome_client.is_mounted("kiosk@example.com") == (True, True)
    assert await cryptohome_client.primary_session() == ("kiosk@example.com",
                                                         result.user_hash)
    await cryptohome_client.logout()
    assert await cryptohome_client.is_mounted() == (False, False)


# ---- malformed requests ------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "interface", "member", "signature", "body"), [
    (names.CRYPTOHOME_PATH, MISC, "GetSanitizedUsername", "ay", [b"\x0a\x00"]),  # empty name
    (names.CRYPTOHOME_PATH, MISC, "GetSanitizedUsername", "ay", [b"\x0a\x03a\nb"]),
    (names.CRYPTOHOME_PATH, MISC, "GetSanitizedUsername", "ay", [b"\x0a\x05ab"]),  # truncated
    (names.CRYPTOHOME_PATH, MISC, "GetSanitizedUsername", "ay", [b"\xff\xff\xff"]),
    (names.CRYPTOHOME_PATH, MISC, "GetSanitizedUsername", "s", ["alice"]),  # the old shape
    (names.CRYPTOHOME_PATH, MISC, "GetSanitizedUsername", "", []),
    (names.CRYPTOHOME_PATH, UDA, "StartAuthSession", "ay", [b"\x0a\x02\x12\x00"]),
    (names.CRYPTOHOME_PATH, UDA, "Unmount", "s", ["alice"]),
    (names.CRYPTOHOME_PATH, UDA, "Unmount", "ay", [b"\x0a" * (64 * 1024 + 1)]),  # too big
    (names.CONTROL_PATH, names.CONTROL_IFACE, "InjectFailure", "si", ["Reboot", 0]),
    (names.CONTROL_PATH, names.CONTROL_IFACE, "InjectFailure", "ss", ["Unmount", "1"]),
    (names.CONTROL_PATH, names.CONTROL_IFACE, "InstallDaemon", "suuu", ["../etc", 0, 0, 0o755]),
    (names.CONTROL_PATH, names.CONTROL_IFACE, "InstallDaemon", "suuu", ["biod", 0, 0, 0o17777]),
])
async def test_malformed_requests_are_invalid_args_and_not_logged(
        cryptohome_client: Client, path: str, interface: str, member: str, signature: str,
        body: list[object]) -> None:
    await cryptohome_client.clear_calls()
    with pytest.raises(CallError) as exc:
        await cryptohome_client.call(names.CRYPTOHOME_NAME, path, interface, member, signature,
                                     body)
    assert exc.value.error_name == names.INVALID_ARGS
    assert exc.value.text  # always a reason
    assert await cryptohome_client.get_calls() == []  # nothing logged before it validates


async def test_the_invented_interface_is_gone(cryptohome_client: Client) -> None:
    with pytest.raises(CallError) as exc:
        await cryptohome_client.call(names.CRYPTOHOME_NAME, names.CRYPTOHOME_PATH,
                                     "org.chromium.CryptohomeMountInterface", "MountEx", "sb",
                                     ["alice", False])
    assert exc.value.error_name == "org.freedesktop.DBus.Error.UnknownMethod"


@pytest.mark.parametrize(("member", "signature", "body"), [
    ("StartSession", "ss", ["", ""]),
    ("StartSession", "s", ["alice"]),  # the old shape: one string
    ("StopSession", "", []),
    ("StopSessionWithReason", "s", ["x"]),
    ("RetrieveSessionState", "s", ["x"]),
])
async def test_malformed_session_arguments_are_invalid_args(
        cryptohome_client: Client, member: str, signature: str, body: list[object]) -> None:
    with pytest.raises(CallError) as exc:
        await cryptohome_client.call(names.SESSION_NAME, names.SESSION_PATH,
                                     names.SESSION_IFACE, member, signature, body)
    assert exc.value.error_name == names.INVALID_ARGS


# ---- a daemon's view, signed in over the bus ---------------------------------------------------


@pytest.mark.daemonstore(daemons=[("biod", 282, 282, 0o700)])
@pytest.mark.parametrize("bus_world", ["model", pytest.param("kernel", marks=pytest.mark.kernel)],
                         indirect=True)
async def test_daemon_namespace_sees_the_store_of_a_bus_login(
        bus_world: World, request: pytest.FixtureRequest) -> None:
    """A daemon started at boot (slave namespace) sees alice's store after a bus login,
    reacting to ``started``, and not after ``stopped`` + ``Unmount``. On the kernel the plugin
    runs this whole test in the sandbox child, with its own dbus-daemon and cryptohome-sim."""
    world = bus_world
    assert world.kind == request.node.callspec.params["bus_world"]
    view = world.daemon("biod")
    async with world.bus.session_states() as states:
        result = await world.bus.login("alice")
        assert await _next(states) == names.STARTED
        assert result.user_hash == world.hash_of("alice")
        assert view.sees_store("alice")
        view.write("alice", "state.json", b"{}")
        await world.bus.logout()
        assert [await _next(states), await _next(states)] == [names.STOPPING, names.STOPPED]
    assert not view.sees_store("alice")
    assert world.read_vault("alice", "biod", "state.json") == b"{}"
