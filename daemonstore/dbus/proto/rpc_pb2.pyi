from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class AccountIdentifier(_message.Message):
    __slots__ = ("email", "account_id")
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    email: str
    account_id: str
    def __init__(self, email: _Optional[str] = ..., account_id: _Optional[str] = ...) -> None: ...
