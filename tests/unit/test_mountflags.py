"""The MS_* table (daemonstore.mountflags) that the kernel backend, the jail and the audit share:
names to numbers and back, in systemd's ``mount_flags_to_string`` spelling."""

from __future__ import annotations

import pytest

from daemonstore import mountflags
from daemonstore.mountflags import MS_FLAGS as MS


@pytest.mark.parametrize(("flags", "text"), [
    (MS["MS_BIND"] | MS["MS_REC"], "MS_BIND|MS_REC"),
    (MS["MS_REMOUNT"] | MS["MS_BIND"] | MS["MS_RDONLY"], "MS_RDONLY|MS_REMOUNT|MS_BIND"),
    (MS["MS_SLAVE"] | MS["MS_REC"], "MS_REC|MS_SLAVE"),
    (0, "0"),
    (MS["MS_SHARED"] | (1 << 30), "MS_SHARED|0x40000000"),
])
def test_mount_flags_to_string(flags: int, text: str) -> None:
    assert mountflags.to_string(flags) == text
    assert mountflags.parse(text) == flags


@pytest.mark.parametrize(("text", "flags"), [
    ("MS_BIND|MS_REC", 0x5000), ("ms_bind | ms_rec", 0x5000), ("4096|16384", 0x5000),
    ("0x1000|MS_REC", 0x5000), ("", 0), ("MS_NOSUID|MS_NODEV|MS_NOEXEC", 14),
])
def test_parse_mount_flags(text: str, flags: int) -> None:
    assert mountflags.parse(text) == flags


@pytest.mark.parametrize("text", ["MS_BOGUS", "MS_BIND||MS_REC", "-1", "bind"])
def test_parse_mount_flags_rejects_junk(text: str) -> None:
    with pytest.raises(ValueError):
        mountflags.parse(text)


def test_every_ms_name_round_trips() -> None:
    for name, bit in MS.items():
        assert mountflags.to_string(bit) == name
