from daemonstore.dbus.proto import rpc_pb2 as _rpc_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CryptohomeErrorCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CRYPTOHOME_ERROR_NOT_SET: _ClassVar[CryptohomeErrorCode]
    CRYPTOHOME_ERROR_ACCOUNT_NOT_FOUND: _ClassVar[CryptohomeErrorCode]
    CRYPTOHOME_ERROR_AUTHORIZATION_KEY_NOT_FOUND: _ClassVar[CryptohomeErrorCode]
    CRYPTOHOME_ERROR_AUTHORIZATION_KEY_FAILED: _ClassVar[CryptohomeErrorCode]
    CRYPTOHOME_ERROR_NOT_IMPLEMENTED: _ClassVar[CryptohomeErrorCode]
    CRYPTOHOME_ERROR_MOUNT_FATAL: _ClassVar[CryptohomeErrorCode]
    CRYPTOHOME_ERROR_MOUNT_MOUNT_POINT_BUSY: _ClassVar[CryptohomeErrorCode]
    CRYPTOHOME_ERROR_BACKING_STORE_FAILURE: _ClassVar[CryptohomeErrorCode]
    CRYPTOHOME_ERROR_REMOVE_FAILED: _ClassVar[CryptohomeErrorCode]
    CRYPTOHOME_ERROR_INVALID_ARGUMENT: _ClassVar[CryptohomeErrorCode]

class AuthIntent(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUTH_INTENT_UNSPECIFIED: _ClassVar[AuthIntent]
    AUTH_INTENT_DECRYPT: _ClassVar[AuthIntent]
    AUTH_INTENT_VERIFY_ONLY: _ClassVar[AuthIntent]
    AUTH_INTENT_WEBAUTHN: _ClassVar[AuthIntent]
CRYPTOHOME_ERROR_NOT_SET: CryptohomeErrorCode
CRYPTOHOME_ERROR_ACCOUNT_NOT_FOUND: CryptohomeErrorCode
CRYPTOHOME_ERROR_AUTHORIZATION_KEY_NOT_FOUND: CryptohomeErrorCode
CRYPTOHOME_ERROR_AUTHORIZATION_KEY_FAILED: CryptohomeErrorCode
CRYPTOHOME_ERROR_NOT_IMPLEMENTED: CryptohomeErrorCode
CRYPTOHOME_ERROR_MOUNT_FATAL: CryptohomeErrorCode
CRYPTOHOME_ERROR_MOUNT_MOUNT_POINT_BUSY: CryptohomeErrorCode
CRYPTOHOME_ERROR_BACKING_STORE_FAILURE: CryptohomeErrorCode
CRYPTOHOME_ERROR_REMOVE_FAILED: CryptohomeErrorCode
CRYPTOHOME_ERROR_INVALID_ARGUMENT: CryptohomeErrorCode
AUTH_INTENT_UNSPECIFIED: AuthIntent
AUTH_INTENT_DECRYPT: AuthIntent
AUTH_INTENT_VERIFY_ONLY: AuthIntent
AUTH_INTENT_WEBAUTHN: AuthIntent

class PasswordAuthInput(_message.Message):
    __slots__ = ("secret",)
    SECRET_FIELD_NUMBER: _ClassVar[int]
    secret: bytes
    def __init__(self, secret: _Optional[bytes] = ...) -> None: ...

class AuthInput(_message.Message):
    __slots__ = ("password_input",)
    PASSWORD_INPUT_FIELD_NUMBER: _ClassVar[int]
    password_input: PasswordAuthInput
    def __init__(self, password_input: _Optional[_Union[PasswordAuthInput, _Mapping]] = ...) -> None: ...

class GetSanitizedUsernameRequest(_message.Message):
    __slots__ = ("username",)
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    username: str
    def __init__(self, username: _Optional[str] = ...) -> None: ...

class GetSanitizedUsernameReply(_message.Message):
    __slots__ = ("sanitized_username",)
    SANITIZED_USERNAME_FIELD_NUMBER: _ClassVar[int]
    sanitized_username: str
    def __init__(self, sanitized_username: _Optional[str] = ...) -> None: ...

class GetSystemSaltRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetSystemSaltReply(_message.Message):
    __slots__ = ("salt",)
    SALT_FIELD_NUMBER: _ClassVar[int]
    salt: bytes
    def __init__(self, salt: _Optional[bytes] = ...) -> None: ...

class StartAuthSessionRequest(_message.Message):
    __slots__ = ("account_id", "intent", "is_ephemeral_user")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    INTENT_FIELD_NUMBER: _ClassVar[int]
    IS_EPHEMERAL_USER_FIELD_NUMBER: _ClassVar[int]
    account_id: _rpc_pb2.AccountIdentifier
    intent: AuthIntent
    is_ephemeral_user: bool
    def __init__(self, account_id: _Optional[_Union[_rpc_pb2.AccountIdentifier, _Mapping]] = ..., intent: _Optional[_Union[AuthIntent, str]] = ..., is_ephemeral_user: _Optional[bool] = ...) -> None: ...

class StartAuthSessionReply(_message.Message):
    __slots__ = ("error", "auth_session_id", "user_exists", "broadcast_id")
    ERROR_FIELD_NUMBER: _ClassVar[int]
    AUTH_SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    USER_EXISTS_FIELD_NUMBER: _ClassVar[int]
    BROADCAST_ID_FIELD_NUMBER: _ClassVar[int]
    error: CryptohomeErrorCode
    auth_session_id: bytes
    user_exists: bool
    broadcast_id: bytes
    def __init__(self, error: _Optional[_Union[CryptohomeErrorCode, str]] = ..., auth_session_id: _Optional[bytes] = ..., user_exists: _Optional[bool] = ..., broadcast_id: _Optional[bytes] = ...) -> None: ...

class InvalidateAuthSessionRequest(_message.Message):
    __slots__ = ("auth_session_id",)
    AUTH_SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    auth_session_id: bytes
    def __init__(self, auth_session_id: _Optional[bytes] = ...) -> None: ...

class InvalidateAuthSessionReply(_message.Message):
    __slots__ = ("error",)
    ERROR_FIELD_NUMBER: _ClassVar[int]
    error: CryptohomeErrorCode
    def __init__(self, error: _Optional[_Union[CryptohomeErrorCode, str]] = ...) -> None: ...

class CreatePersistentUserRequest(_message.Message):
    __slots__ = ("auth_session_id",)
    AUTH_SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    auth_session_id: bytes
    def __init__(self, auth_session_id: _Optional[bytes] = ...) -> None: ...

class CreatePersistentUserReply(_message.Message):
    __slots__ = ("error", "sanitized_username")
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SANITIZED_USERNAME_FIELD_NUMBER: _ClassVar[int]
    error: CryptohomeErrorCode
    sanitized_username: str
    def __init__(self, error: _Optional[_Union[CryptohomeErrorCode, str]] = ..., sanitized_username: _Optional[str] = ...) -> None: ...

class AuthenticateAuthFactorRequest(_message.Message):
    __slots__ = ("auth_session_id", "auth_input", "auth_factor_labels")
    AUTH_SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    AUTH_INPUT_FIELD_NUMBER: _ClassVar[int]
    AUTH_FACTOR_LABELS_FIELD_NUMBER: _ClassVar[int]
    auth_session_id: bytes
    auth_input: AuthInput
    auth_factor_labels: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, auth_session_id: _Optional[bytes] = ..., auth_input: _Optional[_Union[AuthInput, _Mapping]] = ..., auth_factor_labels: _Optional[_Iterable[str]] = ...) -> None: ...

class AuthenticateAuthFactorReply(_message.Message):
    __slots__ = ("error",)
    ERROR_FIELD_NUMBER: _ClassVar[int]
    error: CryptohomeErrorCode
    def __init__(self, error: _Optional[_Union[CryptohomeErrorCode, str]] = ...) -> None: ...

class PreparePersistentVaultRequest(_message.Message):
    __slots__ = ("auth_session_id", "block_ecryptfs", "encryption_type")
    AUTH_SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    BLOCK_ECRYPTFS_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTION_TYPE_FIELD_NUMBER: _ClassVar[int]
    auth_session_id: bytes
    block_ecryptfs: bool
    encryption_type: int
    def __init__(self, auth_session_id: _Optional[bytes] = ..., block_ecryptfs: _Optional[bool] = ..., encryption_type: _Optional[int] = ...) -> None: ...

class PreparePersistentVaultReply(_message.Message):
    __slots__ = ("error", "sanitized_username")
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SANITIZED_USERNAME_FIELD_NUMBER: _ClassVar[int]
    error: CryptohomeErrorCode
    sanitized_username: str
    def __init__(self, error: _Optional[_Union[CryptohomeErrorCode, str]] = ..., sanitized_username: _Optional[str] = ...) -> None: ...

class PrepareEphemeralVaultRequest(_message.Message):
    __slots__ = ("auth_session_id",)
    AUTH_SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    auth_session_id: bytes
    def __init__(self, auth_session_id: _Optional[bytes] = ...) -> None: ...

class PrepareEphemeralVaultReply(_message.Message):
    __slots__ = ("error", "sanitized_username")
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SANITIZED_USERNAME_FIELD_NUMBER: _ClassVar[int]
    error: CryptohomeErrorCode
    sanitized_username: str
    def __init__(self, error: _Optional[_Union[CryptohomeErrorCode, str]] = ..., sanitized_username: _Optional[str] = ...) -> None: ...

class PrepareGuestVaultRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PrepareGuestVaultReply(_message.Message):
    __slots__ = ("error", "sanitized_username")
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SANITIZED_USERNAME_FIELD_NUMBER: _ClassVar[int]
    error: CryptohomeErrorCode
    sanitized_username: str
    def __init__(self, error: _Optional[_Union[CryptohomeErrorCode, str]] = ..., sanitized_username: _Optional[str] = ...) -> None: ...

class UnmountRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class UnmountReply(_message.Message):
    __slots__ = ("error",)
    ERROR_FIELD_NUMBER: _ClassVar[int]
    error: CryptohomeErrorCode
    def __init__(self, error: _Optional[_Union[CryptohomeErrorCode, str]] = ...) -> None: ...

class IsMountedRequest(_message.Message):
    __slots__ = ("username",)
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    username: str
    def __init__(self, username: _Optional[str] = ...) -> None: ...

class IsMountedReply(_message.Message):
    __slots__ = ("is_mounted", "is_ephemeral_mount")
    IS_MOUNTED_FIELD_NUMBER: _ClassVar[int]
    IS_EPHEMERAL_MOUNT_FIELD_NUMBER: _ClassVar[int]
    is_mounted: bool
    is_ephemeral_mount: bool
    def __init__(self, is_mounted: _Optional[bool] = ..., is_ephemeral_mount: _Optional[bool] = ...) -> None: ...

class RemoveRequest(_message.Message):
    __slots__ = ("identifier", "auth_session_id")
    IDENTIFIER_FIELD_NUMBER: _ClassVar[int]
    AUTH_SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    identifier: _rpc_pb2.AccountIdentifier
    auth_session_id: bytes
    def __init__(self, identifier: _Optional[_Union[_rpc_pb2.AccountIdentifier, _Mapping]] = ..., auth_session_id: _Optional[bytes] = ...) -> None: ...

class RemoveReply(_message.Message):
    __slots__ = ("error",)
    ERROR_FIELD_NUMBER: _ClassVar[int]
    error: CryptohomeErrorCode
    def __init__(self, error: _Optional[_Union[CryptohomeErrorCode, str]] = ...) -> None: ...

class LowDiskSpace(_message.Message):
    __slots__ = ("disk_free_bytes",)
    DISK_FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    disk_free_bytes: int
    def __init__(self, disk_free_bytes: _Optional[int] = ...) -> None: ...
