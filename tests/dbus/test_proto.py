"""The committed protobuf subset against ChromeOS's system_api (docs/chromeos.md §8.1): full
message names (packages), field numbers and enum values, read from the generated module's
descriptors; and the .proto source next to it says the same (runs everywhere, no bus)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from daemonstore.dbus.proto import UserDataAuth_pb2 as uda
from daemonstore.dbus.proto import rpc_pb2

PROTO_DIR = Path(uda.__file__).parent

#: message -> {field: number}, from docs/chromeos.md §8.1
FIELDS = {
    "GetSanitizedUsernameRequest": {"username": 1},
    "GetSanitizedUsernameReply": {"sanitized_username": 1},
    "GetSystemSaltRequest": {},
    "GetSystemSaltReply": {"salt": 1},
    "StartAuthSessionRequest": {"account_id": 1, "intent": 3, "is_ephemeral_user": 4},
    "StartAuthSessionReply": {"error": 1, "auth_session_id": 2, "user_exists": 3,
                              "broadcast_id": 8},
    "InvalidateAuthSessionRequest": {"auth_session_id": 1},
    "InvalidateAuthSessionReply": {"error": 1},
    "CreatePersistentUserRequest": {"auth_session_id": 1},
    "CreatePersistentUserReply": {"error": 1, "sanitized_username": 2},
    "AuthenticateAuthFactorRequest": {"auth_session_id": 1, "auth_input": 3,
                                      "auth_factor_labels": 4},
    "AuthenticateAuthFactorReply": {"error": 1},
    "PreparePersistentVaultRequest": {"auth_session_id": 1, "block_ecryptfs": 2,
                                      "encryption_type": 3},
    "PreparePersistentVaultReply": {"error": 1, "sanitized_username": 2},
    "PrepareEphemeralVaultRequest": {"auth_session_id": 1},
    "PrepareEphemeralVaultReply": {"error": 1, "sanitized_username": 2},
    "PrepareGuestVaultRequest": {},
    "PrepareGuestVaultReply": {"error": 1, "sanitized_username": 2},
    "UnmountRequest": {},
    "UnmountReply": {"error": 1},
    "IsMountedRequest": {"username": 1},
    "IsMountedReply": {"is_mounted": 1, "is_ephemeral_mount": 2},
    "RemoveRequest": {"identifier": 1, "auth_session_id": 2},
    "RemoveReply": {"error": 1},
    "LowDiskSpace": {"disk_free_bytes": 1},
}
ERRORS = {"NOT_SET": 0, "ACCOUNT_NOT_FOUND": 1, "AUTHORIZATION_KEY_NOT_FOUND": 2,
          "AUTHORIZATION_KEY_FAILED": 3, "NOT_IMPLEMENTED": 4, "MOUNT_FATAL": 5,
          "MOUNT_MOUNT_POINT_BUSY": 6, "BACKING_STORE_FAILURE": 13, "INVALID_ARGUMENT": 33}


@pytest.mark.parametrize("message", sorted(FIELDS))
def test_message_names_packages_and_field_numbers(message: str) -> None:
    desc = uda.DESCRIPTOR.message_types_by_name[message]
    assert desc.full_name == f"user_data_auth.{message}"
    assert {f.name: f.number for f in desc.fields} == FIELDS[message]


def test_account_identifier_and_enums() -> None:
    account = rpc_pb2.AccountIdentifier.DESCRIPTOR
    assert account.full_name == "cryptohome.AccountIdentifier"
    assert {f.name: f.number for f in account.fields} == {"email": 1, "account_id": 2}
    for name, value in ERRORS.items():
        assert uda.CryptohomeErrorCode.Value(f"CRYPTOHOME_ERROR_{name}") == value
    assert [uda.AuthIntent.Value(f"AUTH_INTENT_{n}") for n in
            ("UNSPECIFIED", "DECRYPT", "VERIFY_ONLY", "WEBAUTHN")] == [0, 1, 2, 3]
    assert uda.StartAuthSessionRequest.DESCRIPTOR.fields_by_name[
        "account_id"].message_type is account


def test_the_committed_module_matches_the_proto_source() -> None:
    """Every message and ``name = number`` of the .proto is in the generated descriptors (a
    .proto edited without running regenerate.sh fails here)."""
    text = (PROTO_DIR / "UserDataAuth.proto").read_text()
    found = re.findall(r"^message (\w+) \{(\}|.*?^\})", text, re.M | re.S)
    assert len(found) == text.count("\nmessage ")
    for message, body in found:
        desc = uda.DESCRIPTOR.message_types_by_name[message]
        declared = {n: int(v) for n, v in re.findall(r"(\w+) = (\d+);", body)}
        assert {f.name: f.number for f in desc.fields} == declared, message
