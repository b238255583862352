"""cryptohome_sim.core without a bus: salt, hashes, accounts and auth sessions, ChromeOS's
mount and session rules, control state (pure model; runs everywhere)."""

from __future__ import annotations

import hashlib

import pytest
from click.testing import CliRunner

from cryptohome_sim import cli
from cryptohome_sim.core import (
    AUTH_SESSION_LIMIT,
    CALL_LOG_LIMIT,
    BadRequest,
    Call,
    Cryptohome,
    CryptohomeError,
    SessionRefused,
)
from daemonstore import mountinfo, paths, session
from daemonstore.daemon.salt import load_or_create_salt
from daemonstore.dbus import names
from daemonstore.dbus.proto import UserDataAuth_pb2 as uda
from daemonstore.model import ModelHost
from daemonstore.session import guest

SALT = bytes(range(16))


def _host_with_salt(salt: bytes = SALT, path: str = paths.SALT) -> ModelHost:
    host = ModelHost()
    host.mkdir(path.rsplit("/", 1)[0], 0o755, parents=True)
    host.write_file(path, salt)
    return host


def _expected(salt: bytes, username: str) -> str:
    """Independent of paths.sanitize_username: ASCII-only lower-casing of the UTF-8 bytes."""
    lowered = bytes(b | 0x20 if 0x41 <= b <= 0x5A else b for b in username.encode("utf-8"))
    return hashlib.sha1(salt + lowered).hexdigest()


# ---- salt ---------------------------------------------------------------------------------------


def test_salt_created_if_missing_16_bytes_0644() -> None:
    host = ModelHost()
    salt = load_or_create_salt(host, lambda n: b"\x07" * n)
    assert salt == b"\x07" * 16
    assert host.read_file(paths.SALT) == salt
    assert host.stat(paths.SALT).perm == 0o644
    assert host.stat(paths.SHADOW).perm == 0o700


def test_existing_salt_is_kept() -> None:
    host = _host_with_salt(b"legacy-salt")
    assert load_or_create_salt(host) == b"legacy-salt"


def test_empty_legacy_salt_is_replaced() -> None:
    host = _host_with_salt(b"")
    assert load_or_create_salt(host, lambda n: b"\x01" * n) == b"\x01" * 16
    assert host.read_file(paths.SALT) == b"\x01" * 16


def test_fallback_salt_is_read_when_legacy_missing() -> None:
    """SystemSaltLoader order: /home/.shadow/salt, then /var/lib/system_salt (docs/chromeos.md
    §3)."""
    host = _host_with_salt(b"system", paths.SALT_FALLBACK)
    assert load_or_create_salt(host) == b"system"
    assert not host.exists(paths.SALT)


@pytest.mark.parametrize("username", ["alice@example.com", "Alice@Example.COM", "ÄLICE",
                                      "İstanbul", "ﬀ"])
def test_sanitized_username_vectors(username: str) -> None:
    core = Cryptohome(_host_with_salt())
    got = core.sanitized_username(username)
    assert got == _expected(SALT, username)
    assert len(got) == 40 and got == got.lower()


def test_sanitized_username_known_value() -> None:
    core = Cryptohome(_host_with_salt())
    assert core.sanitized_username("Alice") == hashlib.sha1(SALT + b"alice").hexdigest()
    # ASCII tolower only: Python's str.lower() would turn Ä into ä and give another hash
    assert core.sanitized_username("ÄB") == hashlib.sha1(SALT + "Äb".encode()).hexdigest()
    assert core.sanitized_username("ÄB") != hashlib.sha1(SALT + "äb".encode()).hexdigest()


@pytest.mark.parametrize("bad", ["", "a\nb", "x" * 257, "del\x7f"])
def test_bad_user_names_are_refused(bad: str) -> None:
    core = Cryptohome(ModelHost())
    with pytest.raises(BadRequest):
        core.sanitized_username(bad)
    with pytest.raises(BadRequest):
        core.start_auth_session(bad, ephemeral=False)


# ---- helpers: Chrome's sign-in, as calls on the core --------------------------------------------


def _prepare(core: Cryptohome, user: str) -> str:
    sid, exists = core.start_auth_session(user, ephemeral=False)
    if exists:
        core.authenticate_auth_factor(sid)
    else:
        core.create_persistent_user(sid)
    return core.prepare_persistent_vault(sid)


def _stop(core: Cryptohome) -> None:
    core.begin_stop()
    core.finish_stop()


def _refused(code: int, call: object) -> CryptohomeError:
    with pytest.raises(CryptohomeError) as exc:
        call()  # type: ignore[operator]
    assert exc.value.code == code, (exc.value.code_name, str(exc.value))
    return exc.value


# ---- auth sessions and accounts ------------------------------------------------------------------


def test_new_user_is_created_then_exists() -> None:
    core = Cryptohome(_host_with_salt(), random_bytes=lambda n: b"\x01" * n)
    sid, exists = core.start_auth_session("alice", ephemeral=False)
    assert (sid, exists) == (b"\x01" * 16, False)
    assert core.create_persistent_user(sid) == _expected(SALT, "alice")
    _refused(uda.CRYPTOHOME_ERROR_INVALID_ARGUMENT, lambda: core.create_persistent_user(sid))
    _sid2, exists = core.start_auth_session("ALICE", ephemeral=False)  # same account
    assert exists
    assert core.known_users() == {"alice": _expected(SALT, "alice")}


def test_persistent_vault_of_a_user_never_created_is_account_not_found() -> None:
    host = ModelHost()
    core = Cryptohome(host)
    sid, exists = core.start_auth_session("mallory", ephemeral=False)
    assert not exists
    _refused(uda.CRYPTOHOME_ERROR_ACCOUNT_NOT_FOUND, lambda: core.authenticate_auth_factor(sid))
    _refused(uda.CRYPTOHOME_ERROR_ACCOUNT_NOT_FOUND, lambda: core.prepare_persistent_vault(sid))
    assert session.mounted_users(host) == []


def test_an_existing_user_must_authenticate_first_and_any_factor_does() -> None:
    core = Cryptohome(ModelHost())
    core.add_user("alice")
    sid, exists = core.start_auth_session("alice", ephemeral=False)
    assert exists
    _refused(uda.CRYPTOHOME_ERROR_INVALID_ARGUMENT, lambda: core.prepare_persistent_vault(sid))
    core.authenticate_auth_factor(sid)  # no credentials are kept: any factor authenticates
    assert core.prepare_persistent_vault(sid) == core.hash_of("alice")


def test_invalidated_or_unknown_auth_session_is_refused() -> None:
    core = Cryptohome(ModelHost())
    sid, _ = core.start_auth_session("alice", ephemeral=False)
    core.invalidate_auth_session(sid)
    for call in (core.create_persistent_user, core.prepare_persistent_vault,
                 core.invalidate_auth_session, core.authenticate_auth_factor):
        _refused(uda.CRYPTOHOME_ERROR_INVALID_ARGUMENT, lambda c=call: c(sid))


def test_auth_sessions_are_bounded() -> None:
    counter = iter(range(10**6))
    core = Cryptohome(ModelHost(), random_bytes=lambda n: next(counter).to_bytes(n, "big"))
    first, _ = core.start_auth_session("alice", ephemeral=False)
    for _ in range(AUTH_SESSION_LIMIT):
        core.start_auth_session("alice", ephemeral=False)
    _refused(uda.CRYPTOHOME_ERROR_INVALID_ARGUMENT, lambda: core.invalidate_auth_session(first))


# ---- mounts and sessions ------------------------------------------------------------------------


def test_prepare_start_stop_unmount_cycle() -> None:
    host = ModelHost()
    core = Cryptohome(host)
    user_hash = _prepare(core, "alice")
    assert paths.vault_mount(user_hash) in host.mountinfo()
    assert core.mounted_hashes() == [user_hash]
    assert core.is_mounted("alice") == (True, False) and core.is_mounted("") == (True, False)
    assert core.session_state() == names.STOPPED
    core.start_session("alice")
    assert core.session_state() == names.STARTED
    assert core.primary_session() == ("alice", user_hash)
    core.begin_stop()
    assert core.session_state() == names.STOPPING
    core.finish_stop()
    assert core.session_state() == names.STOPPED
    assert core.primary_session() == ("", "")
    unmounted = core.unmount()
    assert paths.vault_mount(user_hash) in unmounted
    assert core.mounted_hashes() == [] and core.is_mounted("") == (False, False)


@pytest.mark.parametrize("tidy", [False, True], ids=["faithful", "remove-store-targets"])
def test_unmount_leaves_the_empty_store_targets_unless_asked(tidy: bool) -> None:
    """cryptohome never removes /run/daemon-store/<d>/<h> (docs/chromeos.md §7 item 1); the
    option (``--remove-store-targets``) does."""
    host = ModelHost()
    core = Cryptohome(host, remove_store_targets=tidy)
    core.install_daemon("foo", 20100, 20100, 0o700)
    for user in ("alice", "$guest"):
        user_hash = (_prepare(core, user) if user == "alice" else core.prepare_guest_vault())
        core.unmount()
        targets = [paths.user_store("foo", user_hash, cache) for cache in (False, True)]
        assert [host.exists(t) for t in targets] == [not tidy] * 2, user
        assert [e for e in mountinfo.parse(host.mountinfo()) if e.mount_point in targets] == []
        if not tidy:
            assert [(host.stat(t).perm, host.listdir(t)) for t in targets] == [(0o700, [])] * 2


@pytest.mark.parametrize("flag", [False, True])
def test_the_cli_flag_reaches_the_core(flag: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """``cryptohome-sim --remove-store-targets`` makes the core that serves (no bus needed:
    the service is replaced; the CLI's signal handlers are kept off the pytest process)."""
    made: list[Cryptohome] = []

    async def serve(core: Cryptohome, address: str, kind: str, *_ids: object) -> int:
        made.append(core)  # *_ids: the caller ids cryptohome-sim's check gets (callers)
        return 0

    monkeypatch.setattr(cli, "_serve", serve)
    monkeypatch.setattr(cli.signal, "signal", lambda *args: None)
    args = ["--model", "--address", "unix:path=/nonexistent"]
    res = CliRunner().invoke(cli.main, args + ["--remove-store-targets"] * flag)
    assert res.exit_code == 0, res.output
    assert [core.remove_store_targets for core in made] == [flag]


def test_stop_session_ends_every_session_and_unmount_every_user() -> None:
    core = Cryptohome(ModelHost())
    for user in ("alice", "bob"):
        _prepare(core, user)
        core.start_session(user)
    alice, bob = core.hash_of("alice"), core.hash_of("bob")
    assert core.primary_session() == ("alice", alice)
    assert core.active_sessions() == {"alice": alice, "bob": bob}
    _stop(core)  # ChromeOS has no per-user StopSession
    assert core.session_state() == names.STOPPED and core.active_sessions() == {}
    assert sorted(core.mounted_hashes()) == sorted([alice, bob])
    core.unmount()
    assert core.mounted_hashes() == []
    with pytest.raises(SessionRefused) as exc:
        core.begin_stop()
    assert exc.value.kind == "SessionDoesNotExist"


def test_start_session_refusals() -> None:
    core = Cryptohome(ModelHost())
    with pytest.raises(SessionRefused) as exc:
        core.start_session("nobody")
    assert exc.value.kind == "NotMounted"
    _prepare(core, "alice")
    core.start_session("alice")
    with pytest.raises(SessionRefused) as exc:
        core.start_session("ALICE")  # the same account
    assert exc.value.kind == "SessionExists"


def test_double_prepare_is_mount_point_busy() -> None:
    core = Cryptohome(ModelHost())
    _prepare(core, "alice")
    _refused(uda.CRYPTOHOME_ERROR_MOUNT_MOUNT_POINT_BUSY, lambda: _prepare(core, "alice"))


def test_guest_mounts_in_mnt_chrome_and_unmounts_without_a_trace() -> None:
    """PrepareGuestVault: the ephemeral vault inside mnt_chrome; a guest session is
    incognito; Unmount drops the tmpfs and every mount point."""
    host = _host_with_salt()
    core = Cryptohome(host)
    before = host.mountinfo()
    user_hash = core.prepare_guest_vault()
    assert user_hash == _expected(SALT, "$guest")
    assert guest.CHROME_NS in host.namespaces()
    assert paths.ephemeral_mount(user_hash) not in host.mountinfo()
    assert f" {paths.ephemeral_mount(user_hash)} " in host.mountinfo(guest.CHROME_NS)
    assert core.is_mounted("") == (True, True)
    assert core.is_mounted(paths.GUEST_USER) == (True, True)
    assert not core.is_guest_session_active()
    core.start_session(paths.GUEST_USER)
    assert core.is_guest_session_active()
    assert core.primary_session() == ("", "")  # a guest is never the primary user
    _refused(uda.CRYPTOHOME_ERROR_MOUNT_FATAL, core.prepare_guest_vault)
    _stop(core)
    assert not core.is_guest_session_active()
    core.unmount()
    assert core.mounted_hashes() == []
    after = mountinfo.parse(host.mountinfo())
    assert [e.mount_point for e in after if e.fstype == "nsfs"] == [paths.MNT_CHROME]
    assert [e for e in after if e.fstype != "nsfs"] == mountinfo.parse(before)


def test_guest_is_refused_while_anyone_is_mounted() -> None:
    """"Can not mount guest while other sessions are active" (userdataauth.cc)."""
    host = ModelHost()
    core = Cryptohome(host)
    _prepare(core, "alice")
    error = _refused(uda.CRYPTOHOME_ERROR_MOUNT_FATAL, core.prepare_guest_vault)
    assert "other sessions are active" in str(error)
    assert guest.mounted_guests(host) == []
    core.unmount()
    core.prepare_guest_vault()  # nobody mounted: fine
    # and a regular user cannot join a guest session
    _refused(uda.CRYPTOHOME_ERROR_MOUNT_FATAL, lambda: _prepare(core, "bob"))


def test_ephemeral_user_gets_a_tmpfs_vault() -> None:
    host = ModelHost()
    core = Cryptohome(host)
    sid, exists = core.start_auth_session("kiosk@example.com", ephemeral=True)
    assert not exists
    _refused(uda.CRYPTOHOME_ERROR_INVALID_ARGUMENT, lambda: core.prepare_persistent_vault(sid))
    user_hash = core.prepare_ephemeral_vault(sid)
    assert guest.mounted_guests(host) == [user_hash]
    assert core.is_mounted("kiosk@example.com") == (True, True)
    core.start_session("kiosk@example.com")
    assert core.primary_session() == ("kiosk@example.com", user_hash)  # not incognito
    assert not core.is_guest_session_active()
    assert core.known_users() == {}  # nothing persistent was created
    _stop(core)
    core.unmount()
    assert core.mounted_hashes() == []


def test_guest_mount_failure_rolls_back_inside_mnt_chrome() -> None:
    host = _host_with_salt()
    core = Cryptohome(host)
    core.inject_failure("PrepareGuestVault", 30)
    error = _refused(uda.CRYPTOHOME_ERROR_MOUNT_FATAL, core.prepare_guest_vault)
    assert "failed at step 30" in str(error)
    assert core.mounted_hashes() == []
    assert "tmpfs ephemeral" not in host.mountinfo(guest.CHROME_NS)
    core.prepare_guest_vault()  # and the next try works


def test_loop_vault_is_refused_on_the_model() -> None:
    core = Cryptohome(ModelHost(), vault="loop")
    error = _refused(uda.CRYPTOHOME_ERROR_MOUNT_FATAL, lambda: _prepare(core, "alice"))
    assert "needs the kernel backend" in str(error)
    with pytest.raises(ValueError, match="vault must be one of dir, loop"):
        Cryptohome(ModelHost(), vault="zfs")


def test_a_user_mounted_without_the_service_counts() -> None:
    """IsMounted, StartSession and PrepareGuestVault read the host, so World.login-style
    sign-ins are seen."""
    host = ModelHost()
    core = Cryptohome(host)
    user_hash = core.sanitized_username("carol")
    session.sign_in(host, user_hash)
    assert core.mounted_hashes() == [user_hash]
    assert core.is_mounted("carol") == (True, False)
    core.start_session("carol")
    assert core.primary_session() == ("carol", user_hash)
    _refused(uda.CRYPTOHOME_ERROR_MOUNT_FATAL, core.prepare_guest_vault)


def test_remove_deletes_the_vault_and_forgets_the_account() -> None:
    host = ModelHost()
    core = Cryptohome(host)
    user_hash = _prepare(core, "alice")
    _refused(uda.CRYPTOHOME_ERROR_REMOVE_FAILED, lambda: core.remove("alice"))
    core.unmount()
    assert host.exists(paths.shadow(user_hash))
    core.remove("alice")
    assert not host.exists(paths.shadow(user_hash))
    assert core.known_users() == {}
    _refused(uda.CRYPTOHOME_ERROR_ACCOUNT_NOT_FOUND, lambda: core.remove("alice"))
    sid, exists = core.start_auth_session("alice", ephemeral=False)
    assert not exists


def test_no_daemon_stores_mounts_vaults_and_homes_only() -> None:
    host = ModelHost()
    core = Cryptohome(host, daemon_stores=False)
    core.install_daemon("biod", 282, 282, 0o700)
    user_hash = _prepare(core, "alice")
    mounted = {e.mount_point for e in mountinfo.parse(host.mountinfo())}
    assert paths.vault_mount(user_hash) in mounted
    assert paths.home_user(user_hash) in mounted
    assert paths.user_store("biod", user_hash) not in mounted
    assert paths.user_store("biod", user_hash, cache=True) not in mounted
    core.unmount()
    assert paths.vault_mount(user_hash) not in host.mountinfo()


# ---- control ---------------------------------------------------------------------------------


def test_injected_mount_failure_rolls_back_with_reason() -> None:
    host = ModelHost()
    core = Cryptohome(host)
    core.salt  # noqa: B018 - create the salt first, so only the sign-in is compared
    core.add_user("alice")
    before = host.mountinfo()
    core.inject_failure("PreparePersistentVault", 5)
    error = _refused(uda.CRYPTOHOME_ERROR_MOUNT_FATAL, lambda: _prepare(core, "alice"))
    assert "failed at step 5" in str(error) and "injected" in str(error)
    assert host.mountinfo() == before
    _prepare(core, "alice")  # one-shot: the next call goes through


@pytest.mark.parametrize(("method", "step"), [("Nope", 0), ("PreparePersistentVault", -1),
                                              ("Unmount", 2), ("MountEx", 0)])
def test_inject_failure_validates(method: str, step: int) -> None:
    with pytest.raises(BadRequest):
        Cryptohome(ModelHost()).inject_failure(method, step)


def test_injected_failure_in_other_methods() -> None:
    core = Cryptohome(ModelHost())
    core.inject_failure("GetSanitizedUsername", 0)
    _refused(uda.CRYPTOHOME_ERROR_MOUNT_FATAL, lambda: core.sanitized_username("alice"))
    core.sanitized_username("alice")
    core.inject_failure("Unmount", 0)
    core.clear_failures()
    assert core.unmount() == []
    core.inject_failure("StartSession", 0)
    with pytest.raises(SessionRefused, match="injected"):
        core.start_session("alice")


def test_call_log_is_bounded() -> None:
    core = Cryptohome(ModelHost())
    core.log_call("StartSession", "alice", False)
    core.log_call("SessionStateChanged", "started")
    assert core.calls() == [Call("StartSession", ("alice", "false")),
                            Call("SessionStateChanged", ("started",))]
    for i in range(CALL_LOG_LIMIT + 5):
        core.log_call("IsMounted", i)
    calls = core.calls()
    assert len(calls) == CALL_LOG_LIMIT
    assert calls[-1] == Call("IsMounted", (str(CALL_LOG_LIMIT + 4),))
    core.clear_calls()
    assert core.calls() == []


def test_add_user_returns_the_hash() -> None:
    core = Cryptohome(_host_with_salt())
    assert core.add_user("Bob") == _expected(SALT, "Bob")
    assert core.known_users() == {"Bob": _expected(SALT, "Bob")}


def test_install_daemon_makes_shared_stores_and_sign_in_uses_them() -> None:
    host = ModelHost()
    core = Cryptohome(host)
    applied = core.install_daemon("biod", 282, 282, 0o700)
    assert "mount --make-shared /run/daemon-store/biod" in applied
    template = host.stat(paths.template("biod"))
    assert (template.uid, template.gid, template.perm) == (282, 282, 0o700)
    assert b":282:282:" in host.read_file("/etc/passwd")
    user_hash = _prepare(core, "alice")
    assert f" {paths.user_store('biod', user_hash)} " in host.mountinfo()
    assert f" {paths.user_store('biod', user_hash, cache=True)} " in host.mountinfo()
    with pytest.raises(BadRequest, match="already exists"):
        core.install_daemon("biod", 0, 0, 0o755)


def test_install_daemon_reports_startup_refusal() -> None:
    core = Cryptohome(ModelHost())
    with pytest.raises(BadRequest, match="world-writable"):
        core.install_daemon("loose", 0, 0, 0o777)  # world-writable: startup skips it
