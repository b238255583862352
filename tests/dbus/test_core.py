"""cryptohome_sim.core without a bus: salt, hashes, mount/session rules, control state (pure
model; runs everywhere)."""

from __future__ import annotations

import hashlib

import pytest

from cryptohome_sim.core import (
    Call,
    Cryptohome,
    CryptohomeError,
    load_or_create_salt,
)
from daemonstore import mountinfo, paths, session
from daemonstore.dbus import names
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
    """SystemSaltLoader order: /home/.shadow/salt, then /var/lib/system_salt (facts §3)."""
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
    with pytest.raises(paths.BadName):
        core.sanitized_username(bad)


# ---- mounts and sessions ------------------------------------------------------------------------


def test_mount_start_stop_unmount_cycle() -> None:
    core = Cryptohome(ModelHost())
    user_hash, mounted = core.mount("alice")
    assert paths.vault_mount(user_hash) in mounted
    assert core.mounted_hashes() == [user_hash]
    assert core.session_state() == names.STOPPED
    core.start_session("alice")
    assert core.session_state() == names.STARTED
    assert core.primary_session() == ("alice", user_hash)
    with pytest.raises(CryptohomeError) as exc:
        core.unmount("alice")
    assert exc.value.kind == "SessionActive"
    users = core.begin_stop("alice")
    assert core.session_state() == names.STOPPING
    core.finish_stop(users)
    assert core.session_state() == names.STOPPED
    assert core.primary_session() == ("", "")
    unmounted = core.unmount("alice")
    assert paths.vault_mount(user_hash) in unmounted
    assert core.mounted_hashes() == []


def test_two_users_primary_is_the_first() -> None:
    core = Cryptohome(ModelHost())
    for user in ("alice", "bob"):
        core.mount(user)
        core.start_session(user)
    alice = core.sanitized_username("alice")
    bob = core.sanitized_username("bob")
    assert core.primary_session() == ("alice", alice)
    assert core.active_sessions() == {"alice": alice, "bob": bob}
    core.finish_stop(core.begin_stop("alice"))
    assert core.session_state() == names.STARTED  # bob is still signed in
    assert core.primary_session() == ("bob", bob)
    core.finish_stop(core.begin_stop(""))  # "" stops everyone, as ChromeOS's StopSession
    assert core.session_state() == names.STOPPED


@pytest.mark.parametrize(("call", "kind"), [
    (lambda c: c.start_session("nobody"), "NotMounted"),
    (lambda c: c.begin_stop("nobody"), "SessionDoesNotExist"),
    (lambda c: c.begin_stop(""), "SessionDoesNotExist"),
    (lambda c: c.unmount("nobody"), "NotMounted"),
    (lambda c: c.mount("guest", guest=True), "InvalidArgs"),   # the guest is "$guest"
    (lambda c: c.mount(paths.GUEST_USER), "InvalidArgs"),      # "$guest" needs guest=True
    (lambda c: c.unmount(paths.GUEST_USER), "NotMounted"),
])
def test_refusals(call, kind: str) -> None:  # type: ignore[no-untyped-def]
    core = Cryptohome(ModelHost())
    with pytest.raises(CryptohomeError) as exc:
        call(core)
    assert exc.value.kind == kind


def test_guest_mounts_in_mnt_chrome_and_unmounts_without_a_trace() -> None:
    """MountEx("$guest", guest=True): the ephemeral vault inside mnt_chrome
    (daemonstore.session.guest);
    the session is a guest session; Unmount drops the tmpfs and every mount point."""
    host = _host_with_salt()
    core = Cryptohome(host)
    before = host.mountinfo()
    user_hash, mounted = core.mount(paths.GUEST_USER, guest=True)
    assert user_hash == _expected(SALT, "$guest")
    assert mounted[0] == paths.ephemeral_mount(user_hash)
    assert guest.CHROME_NS in host.namespaces()
    # nothing of the guest is mounted in the root namespace's own tree but the propagated
    # store binds (there are no stores here): the vault lives in mnt_chrome only
    assert paths.ephemeral_mount(user_hash) not in host.mountinfo()
    assert f" {paths.ephemeral_mount(user_hash)} " in host.mountinfo(guest.CHROME_NS)
    assert core.mounted_hashes() == [user_hash]
    assert not core.is_guest_session_active()
    core.start_session(paths.GUEST_USER)
    assert core.is_guest_session_active()
    assert core.primary_session() == ("", "")  # a guest is never the primary user
    with pytest.raises(CryptohomeError) as exc:
        core.mount(paths.GUEST_USER, guest=True)
    assert exc.value.kind == "AlreadyMounted"
    core.finish_stop(core.begin_stop(""))
    assert not core.is_guest_session_active()
    assert core.unmount(paths.GUEST_USER) == mounted[::-1]  # LIFO
    assert core.mounted_hashes() == []
    # only the pinned mnt_chrome file stays (session_manager's, not the guest's)
    after = mountinfo.parse(host.mountinfo())
    assert [e.mount_point for e in after if e.fstype == "nsfs"] == [paths.MNT_CHROME]
    assert [e for e in after if e.fstype != "nsfs"] == mountinfo.parse(before)


def test_guest_mount_failure_rolls_back_inside_mnt_chrome() -> None:
    host = _host_with_salt()
    core = Cryptohome(host)
    core.inject_failure("MountEx", 30)
    with pytest.raises(CryptohomeError) as exc:
        core.mount(paths.GUEST_USER, guest=True)
    assert exc.value.kind == "MountFailed" and "failed at step 30" in str(exc.value)
    assert core.mounted_hashes() == []
    assert "tmpfs ephemeral" not in host.mountinfo(guest.CHROME_NS)
    core.mount(paths.GUEST_USER, guest=True)  # and the next try works


def test_regular_user_and_guest_side_by_side() -> None:
    core = Cryptohome(_host_with_salt())
    g, _ = core.mount(paths.GUEST_USER, guest=True)
    a, _ = core.mount("alice")
    assert core.mounted_hashes() == [a, g]
    core.unmount("alice")
    assert core.mounted_hashes() == [g]
    core.unmount(paths.GUEST_USER)
    assert core.mounted_hashes() == []


def test_loop_vault_is_refused_on_the_model() -> None:
    core = Cryptohome(ModelHost(), vault="loop")
    with pytest.raises(CryptohomeError) as exc:
        core.mount("alice")
    assert exc.value.kind == "MountFailed" and "needs the kernel backend" in str(exc.value)
    with pytest.raises(ValueError, match="vault must be one of dir, loop"):
        Cryptohome(ModelHost(), vault="zfs")



def test_double_mount_and_double_start_are_refused() -> None:
    core = Cryptohome(ModelHost())
    core.mount("alice")
    with pytest.raises(CryptohomeError) as exc:
        core.mount("alice")
    assert exc.value.kind == "AlreadyMounted"
    core.start_session("alice")
    with pytest.raises(CryptohomeError) as exc:
        core.start_session("alice")
    assert exc.value.kind == "SessionExists"


def test_a_user_mounted_without_the_service_counts() -> None:
    """ListMounted and StartSession read the host, so World.login-style sign-ins are seen."""
    host = ModelHost()
    core = Cryptohome(host)
    user_hash = core.sanitized_username("carol")
    session.sign_in(host, user_hash)
    assert core.mounted_hashes() == [user_hash]
    core.start_session("carol")
    assert core.primary_session() == ("carol", user_hash)


# ---- control ---------------------------------------------------------------------------------


def test_injected_mount_failure_rolls_back_with_reason() -> None:
    host = ModelHost()
    core = Cryptohome(host)
    core.salt  # noqa: B018 - create the salt first, so only the sign-in is compared
    before = host.mountinfo()
    core.inject_failure("MountEx", 5)
    with pytest.raises(CryptohomeError) as exc:
        core.mount("alice")
    assert exc.value.kind == "MountFailed"
    assert "failed at step 5" in str(exc.value) and "injected" in str(exc.value)
    assert host.mountinfo() == before
    core.mount("alice")  # one-shot: the next call goes through


@pytest.mark.parametrize(("method", "step"), [("Nope", 0), ("MountEx", -1), ("Unmount", 2)])
def test_inject_failure_validates(method: str, step: int) -> None:
    with pytest.raises(CryptohomeError) as exc:
        Cryptohome(ModelHost()).inject_failure(method, step)
    assert exc.value.kind == "InvalidArgs"


def test_injected_failure_in_other_methods() -> None:
    core = Cryptohome(ModelHost())
    core.inject_failure("GetSanitizedUsername", 0)
    with pytest.raises(CryptohomeError) as exc:
        core.sanitized_username("alice")
    assert exc.value.kind == "InjectedFailure"
    core.sanitized_username("alice")
    core.inject_failure("Unmount", 0)
    core.clear_failures()
    with pytest.raises(CryptohomeError, match="not mounted"):
        core.unmount("alice")


def test_call_log() -> None:
    core = Cryptohome(ModelHost())
    core.log_call("MountEx", "alice", False)
    core.log_call("SessionStateChanged", "started")
    assert core.calls() == [Call("MountEx", ("alice", "false")),
                            Call("SessionStateChanged", ("started",))]
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
    user_hash, mounted = core.mount("alice")
    assert paths.user_store("biod", user_hash) in mounted
    assert paths.user_store("biod", user_hash, cache=True) in mounted
    with pytest.raises(CryptohomeError) as exc:
        core.install_daemon("biod", 0, 0, 0o755)
    assert exc.value.kind == "Exists"


def test_install_daemon_reports_startup_refusal() -> None:
    core = Cryptohome(ModelHost())
    with pytest.raises(CryptohomeError) as exc:
        core.install_daemon("loose", 0, 0, 0o777)  # world-writable: startup skips it
    assert exc.value.kind == "StartupFailed"
    assert "writable" in str(exc.value)
