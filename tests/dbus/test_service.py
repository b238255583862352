"""cryptohome_sim over a private bus: names and hashes, sign-in/sign-out driven by calls and
observed through SessionStateChanged, the call log, injected failures, malformed arguments."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from daemonstore import paths
from daemonstore.dbus import names
from daemonstore.dbus.client import CallError, Client
from daemonstore.testing.bus import RunningCryptohome
from daemonstore.world import World

pytestmark = [pytest.mark.dbus, pytest.mark.asyncio]

SALT = bytes.fromhex("00112233445566778899aabbccddeeff")
SIGNAL_TIMEOUT = 5.0


def _expected(salt: bytes, username: str) -> str:
    """hex(SHA1(salt || username with only A-Z lower-cased, bytewise)) -- computed here, not
    with paths.sanitize_username, so the service is checked against the rule itself."""
    raw = username.encode("utf-8")
    return hashlib.sha1(salt + bytes(c + 32 if 65 <= c <= 90 else c for c in raw)).hexdigest()


def _install_salt(svc: RunningCryptohome, salt: bytes = SALT) -> None:
    svc.host.mkdir(paths.SHADOW, 0o700, parents=True)
    svc.host.write_file(paths.SALT, salt)


async def _next(queue: asyncio.Queue[str]) -> str:
    return await asyncio.wait_for(queue.get(), SIGNAL_TIMEOUT)


# ---- GetSanitizedUsername ---------------------------------------------------------------------


@pytest.mark.parametrize("username", [
    "alice@example.com",
    "Alice@Example.COM",   # mixed case: A-Z become a-z
    "ÅSA.ÖBERG@EXAMPLE.SE",  # non-ASCII: the UTF-8 bytes of Å and Ö stay as they are
    "İ",                   # str.lower() would make this "i̇"; bytewise tolower leaves it
])
async def test_sanitized_username_vectors(cryptohome_service: RunningCryptohome,
                                          cryptohome_client: Client, username: str) -> None:
    _install_salt(cryptohome_service)
    got = await cryptohome_client.sanitized_username(username)
    assert got == _expected(SALT, username)
    assert len(got) == 40 and all(c in "0123456789abcdef" for c in got)


async def test_bytewise_lowercasing_pinned(cryptohome_service: RunningCryptohome,
                                           cryptohome_client: Client) -> None:
    _install_salt(cryptohome_service)
    got = await cryptohome_client.sanitized_username("ÄLICE")
    assert got == hashlib.sha1(SALT + "Älice".encode()).hexdigest()
    assert got != hashlib.sha1(SALT + "älice".encode()).hexdigest()  # not Unicode lower()
    assert got == await cryptohome_client.sanitized_username("Älice")


async def test_salt_is_created_if_missing(cryptohome_service: RunningCryptohome,
                                          cryptohome_client: Client) -> None:
    host = cryptohome_service.host
    assert not host.exists(paths.SALT)
    got = await cryptohome_client.sanitized_username("Bob")
    salt = host.read_file(paths.SALT)
    assert len(salt) == 16
    assert host.stat(paths.SALT).perm == 0o644
    assert got == _expected(salt, "bob")
    assert await cryptohome_client.system_salt() == salt  # root may read it


# ---- sign-in and sign-out over the bus --------------------------------------------------------


async def test_login_mounts_on_the_model_and_emits_started(
        cryptohome_service: RunningCryptohome, cryptohome_client: Client) -> None:
    host = cryptohome_service.host
    watcher = await cryptohome_service.client()  # a separate connection, like a daemon
    async with watcher.session_states() as states:
        result = await cryptohome_client.login("alice")
        assert await _next(states) == names.STARTED
    assert result.user_hash == await watcher.sanitized_username("alice")
    assert paths.vault_mount(result.user_hash) in result.mounted
    mountinfo = host.mountinfo()
    for mount_point in result.mounted:
        assert f" {mount_point} " in mountinfo
    assert await watcher.list_mounted() == [result.user_hash]
    assert await watcher.session_state() == names.STARTED


async def test_primary_session_and_state_across_two_users(
        cryptohome_service: RunningCryptohome, cryptohome_client: Client) -> None:
    client = cryptohome_client
    assert await client.session_state() == names.STOPPED
    assert await client.primary_session() == ("", "")
    assert await client.active_sessions() == {}
    watcher = await cryptohome_service.client()
    async with watcher.session_states() as states:
        alice = await client.login("alice")
        bob = await client.login("bob")
        # "started" once per user that signs in (chromeos-facts.md §4)
        assert [await _next(states), await _next(states)] == [names.STARTED, names.STARTED]
        assert await client.primary_session() == ("alice", alice.user_hash)
        assert await client.active_sessions() == {"alice": alice.user_hash,
                                                  "bob": bob.user_hash}
        assert sorted(await client.list_mounted()) == sorted([alice.user_hash, bob.user_hash])

        await client.logout("alice")
        assert [await _next(states), await _next(states)] == [names.STOPPING, names.STOPPED]
        assert await client.session_state() == names.STARTED  # bob is still signed in
        assert await client.primary_session() == ("bob", bob.user_hash)

        await client.logout("bob")
        assert [await _next(states), await _next(states)] == [names.STOPPING, names.STOPPED]
    assert await client.session_state() == names.STOPPED
    assert await client.primary_session() == ("", "")
    assert await client.list_mounted() == []
    assert not await client.is_guest_session_active()


async def test_logout_order_stopping_stopped_then_unmount(
        cryptohome_service: RunningCryptohome, cryptohome_client: Client) -> None:
    host = cryptohome_service.host
    await cryptohome_client.sanitized_username("alice")  # the salt exists before the snapshot
    before = host.mountinfo()
    await cryptohome_service.login("alice")
    await cryptohome_client.clear_calls()
    async with cryptohome_client.session_states() as states:
        result = await cryptohome_service.logout("alice")
        assert [await _next(states), await _next(states)] == [names.STOPPING, names.STOPPED]
    assert result.had_session
    calls = [(m, a) for m, a in await cryptohome_client.get_calls()
             if m not in ("GetCalls", "ClearCalls")]
    assert calls == [("StopSession", ["alice"]),
                     (names.SESSION_SIGNAL, [names.STOPPING]),
                     (names.SESSION_SIGNAL, [names.STOPPED]),
                     ("Unmount", ["alice"])]
    assert host.mountinfo() == before  # everything the sign-in mounted is gone


async def test_unmount_is_refused_while_the_session_runs(
        cryptohome_service: RunningCryptohome, cryptohome_client: Client) -> None:
    await cryptohome_client.login("alice")
    with pytest.raises(CallError) as exc:
        await cryptohome_client.unmount("alice")
    assert exc.value.error_name == f"{names.MOUNT_ERROR}.SessionActive"


async def test_start_session_needs_a_mounted_cryptohome(cryptohome_client: Client) -> None:
    with pytest.raises(CallError) as exc:
        await cryptohome_client.start_session("alice")
    assert exc.value.error_name == f"{names.SESSION_ERROR}.NotMounted"
    with pytest.raises(CallError) as exc:
        await cryptohome_client.stop_session("alice")
    assert exc.value.error_name == f"{names.SESSION_ERROR}.SessionDoesNotExist"


async def test_second_login_of_the_same_user_is_refused(cryptohome_client: Client) -> None:
    await cryptohome_client.login("alice")
    with pytest.raises(CallError) as exc:
        await cryptohome_client.login("ALICE")  # same hash: ASCII case does not matter
    assert exc.value.error_name == f"{names.MOUNT_ERROR}.AlreadyMounted"


async def test_install_daemon_then_login_binds_the_store(
        cryptohome_service: RunningCryptohome, cryptohome_client: Client) -> None:
    applied = await cryptohome_client.install_daemon("biod", 282, 282, 0o700)
    assert "mount --make-shared /run/daemon-store/biod" in applied
    result = await cryptohome_client.login("alice")
    store = paths.user_store("biod", result.user_hash)
    assert store in result.mounted
    assert f" {store} " in await cryptohome_client.mountinfo()
    await cryptohome_client.logout("alice")
    assert f" {store} " not in await cryptohome_client.mountinfo()
    assert not cryptohome_service.host.exists(store)  # sign-out removes the empty target


# ---- injected failures ------------------------------------------------------------------------


@pytest.mark.parametrize("step", [0, 7, 20])
async def test_injected_failure_fails_mountex_and_changes_nothing(
        cryptohome_service: RunningCryptohome, cryptohome_client: Client, step: int) -> None:
    await cryptohome_client.install_daemon("biod", 0, 0, 0o755)
    await cryptohome_client.sanitized_username("alice")  # salt first
    before = cryptohome_service.host.mountinfo()
    await cryptohome_client.inject_failure("MountEx", step)
    with pytest.raises(CallError) as exc:
        await cryptohome_client.login("alice")
    assert exc.value.error_name == f"{names.MOUNT_ERROR}.MountFailed"
    assert f"failed at step {step} " in exc.value.text
    assert f"injected failure before step {step}" in exc.value.text
    assert "rolled back" in exc.value.text
    assert cryptohome_service.host.mountinfo() == before
    assert await cryptohome_client.session_state() == names.STOPPED
    calls = [m for m, _ in await cryptohome_client.get_calls()]
    assert "StartSession" not in calls  # login stopped at the failed MountEx
    await cryptohome_client.login("alice")  # one-shot


async def test_failed_start_session_unmounts_again(
        cryptohome_service: RunningCryptohome, cryptohome_client: Client) -> None:
    await cryptohome_client.sanitized_username("alice")
    before = cryptohome_service.host.mountinfo()
    await cryptohome_client.inject_failure("StartSession", 0)
    with pytest.raises(CallError) as exc:
        await cryptohome_client.login("alice")
    assert exc.value.error_name == f"{names.SESSION_ERROR}.InjectedFailure"
    assert cryptohome_service.host.mountinfo() == before


# ---- malformed arguments ----------------------------------------------------------------------


@pytest.mark.parametrize(("interface", "member", "signature", "body"), [
    (names.MISC_IFACE, "GetSanitizedUsername", "s", [""]),
    (names.MISC_IFACE, "GetSanitizedUsername", "s", ["bad\nname"]),
    (names.MISC_IFACE, "GetSanitizedUsername", "i", [42]),
    (names.MISC_IFACE, "GetSanitizedUsername", "", []),
    (names.MOUNT_IFACE, "MountEx", "sb", ["", False]),
    (names.MOUNT_IFACE, "MountEx", "s", ["alice"]),
    (names.MOUNT_IFACE, "MountEx", "bs", [False, "alice"]),
    (names.MOUNT_IFACE, "Unmount", "u", [7]),
    (names.MOUNT_IFACE, "Unmount", "s", ["x" * 300]),
    (names.CONTROL_IFACE, "InjectFailure", "si", ["Reboot", 0]),
    (names.CONTROL_IFACE, "InjectFailure", "ss", ["MountEx", "1"]),
    (names.CONTROL_IFACE, "InstallDaemon", "suuu", ["../etc", 0, 0, 0o755]),
    (names.CONTROL_IFACE, "InstallDaemon", "suuu", ["biod", 0, 0, 0o17777]),
])
async def test_malformed_arguments_are_invalid_args(
        cryptohome_client: Client, interface: str, member: str, signature: str,
        body: list[object]) -> None:
    with pytest.raises(CallError) as exc:
        await cryptohome_client.call(names.CRYPTOHOME_NAME, names.CRYPTOHOME_PATH, interface,
                                     member, signature, body)
    assert exc.value.error_name == names.INVALID_ARGS
    assert exc.value.text  # always a reason


@pytest.mark.parametrize(("member", "signature", "body"), [
    ("StartSession", "s", [""]),
    ("StartSession", "as", [["alice"]]),
    ("StopSession", "", []),
    ("RetrieveSessionState", "s", ["x"]),
])
async def test_malformed_session_arguments_are_invalid_args(
        cryptohome_client: Client, member: str, signature: str, body: list[object]) -> None:
    with pytest.raises(CallError) as exc:
        await cryptohome_client.call(names.SESSION_NAME, names.SESSION_PATH,
                                     names.SESSION_IFACE, member, signature, body)
    assert exc.value.error_name == names.INVALID_ARGS


async def test_guest_login_and_logout(
        cryptohome_service: RunningCryptohome, cryptohome_client: Client) -> None:
    """MountEx("$guest", guest=true) + StartSession: a guest session (IsGuestSessionActive),
    the ephemeral vault in mnt_chrome; logout unmounts it and the guest is gone."""
    _install_salt(cryptohome_service)
    await cryptohome_client.install_daemon("biod", 282, 282, 0o700)
    host = cryptohome_service.host
    result = await cryptohome_client.login(paths.GUEST_USER, guest=True)
    assert result.user_hash == _expected(SALT, paths.GUEST_USER)
    store = paths.user_store("biod", result.user_hash)
    assert paths.ephemeral_mount(result.user_hash) in result.mounted and store in result.mounted
    assert await cryptohome_client.is_guest_session_active()
    assert await cryptohome_client.primary_session() == ("", "")
    assert await cryptohome_client.list_mounted() == [result.user_hash]
    # the store bind made inside mnt_chrome propagated to the root namespace (peer stores)
    assert f" {store} " in await cryptohome_client.mountinfo()
    await cryptohome_client.logout(paths.GUEST_USER)
    assert not await cryptohome_client.is_guest_session_active()
    assert await cryptohome_client.list_mounted() == []
    assert f" {store} " not in await cryptohome_client.mountinfo()
    assert f" {store} " not in host.mountinfo("mnt_chrome")
    assert not host.exists(store)


async def test_guest_mount_needs_the_guest_user(cryptohome_client: Client) -> None:
    with pytest.raises(CallError) as exc:
        await cryptohome_client.login("alice", guest=True)
    assert exc.value.error_name == names.INVALID_ARGS
    assert "a guest mount is for the user '$guest', not 'alice'" in exc.value.text


# ---- a daemon's view, signed in over the bus ---------------------------------------------------


async def test_daemon_namespace_sees_the_store_of_a_bus_login(bus_world: World) -> None:
    """The whole story with the World helpers: a daemon started at boot (slave namespace) sees
    alice's store after a bus login, reacting to ``started``, and not after ``stopped``."""
    world = bus_world
    world.install_daemon("biod", 282, 282, 0o700)
    view = world.daemon("biod")
    async with world.bus.session_states() as states:
        result = await world.bus.login("alice")
        assert await _next(states) == names.STARTED
        assert result.user_hash == world.hash_of("alice")
        assert view.sees_store("alice")
        view.write("alice", "state.json", b"{}")
        await world.bus.logout("alice")
        assert [await _next(states), await _next(states)] == [names.STOPPING, names.STOPPED]
    assert not view.sees_store("alice")
    assert world.read_vault("alice", "biod", "state.json") == b"{}"
