"""The scenario language parser: every op form, every error, and the to_line round trip (pure)."""

from __future__ import annotations

import errno
import pickle

import pytest

from daemonstore.host import Propagation
from daemonstore.ops import (
    Bind,
    Make,
    Mkdir,
    MountTmpfs,
    Move,
    NewNamespace,
    Op,
    ScenarioSyntaxError,
    Umount,
    UseNamespace,
    parse,
    parse_line,
    to_text,
)
from tests.scenario_files import SCENARIO_FILES, scenario_id

S, SL, P, U = (Propagation.SHARED, Propagation.SLAVE, Propagation.PRIVATE,
               Propagation.UNBINDABLE)

VALID: list[tuple[str, Op]] = [
    ("mkdir /a", Mkdir(("/a",))),
    ("mkdir /a /b/c", Mkdir(("/a", "/b/c"))),
    ("mkdir -p /a", Mkdir(("/a",))),
    ("mount -t tmpfs mnt /mnt", MountTmpfs("mnt", "/mnt")),
    ("mount --bind /a /b", Bind("/a", "/b")),
    ("mount --rbind /a /b", Bind("/a", "/b", recursive=True)),
    ("mount --move /a /b", Move("/a", "/b")),
    ("mount --make-shared /a", Make("/a", S)),
    ("mount --make-slave /a", Make("/a", SL)),
    ("mount --make-private /a", Make("/a", P)),
    ("mount --make-unbindable /a", Make("/a", U)),
    ("mount --make-rshared /", Make("/", S, recursive=True)),
    ("mount --make-rslave /a", Make("/a", SL, recursive=True)),
    ("mount --make-rprivate /a", Make("/a", P, recursive=True)),
    ("mount --make-runbindable /a", Make("/a", U, recursive=True)),
    ("umount /a", Umount("/a")),
    ("umount -l /a", Umount("/a", detach=True)),
    ("ns kid", NewNamespace("kid")),
    ("ns kid --propagation slave", NewNamespace("kid", "slave")),
    ("ns kid --propagation private", NewNamespace("kid", "private")),
    ("ns kid --propagation shared", NewNamespace("kid", "shared")),
    ("ns kid --propagation unchanged", NewNamespace("kid")),
    ("ns kid --propagation=slave", NewNamespace("kid", "slave")),
    ("use init", UseNamespace("init")),
    ("  mount   --bind\t/a /b   # trailing comment", Bind("/a", "/b")),
    ("mount -t tmpfs 'my disk' '/with space'", MountTmpfs("my disk", "/with space")),
    ("mkdir /a#b", Mkdir(("/a",))),  # "#" starts a comment anywhere outside quotes
    ("mkdir '/a#b'", Mkdir(("/a#b",))),
]


@pytest.mark.parametrize(("line", "op"), VALID, ids=[v[0] for v in VALID])
def test_parse_valid(line: str, op: Op) -> None:
    assert parse_line(line, 7) == op
    assert parse_line(line, 7).line == 7  # type: ignore[union-attr]


@pytest.mark.parametrize(("line", "op"), VALID, ids=[v[0] for v in VALID])
def test_to_line_round_trip(line: str, op: Op) -> None:
    assert parse_line(op.to_line()) == op
    assert str(op) == op.to_line()


def test_canonical_spellings() -> None:
    assert Make("/a", "shared", recursive=True).to_line() == "mount --make-rshared /a"
    assert NewNamespace("k", "unchanged").to_line() == "ns k"
    assert NewNamespace("k", "slave").to_line() == "ns k --propagation slave"
    assert Umount("/x", detach=True).to_line() == "umount -l /x"
    assert Mkdir(("/a", "/b")).to_line() == "mkdir /a /b"


INVALID: list[tuple[str, str]] = [
    ("frobnicate /a", "unknown operation 'frobnicate'"),
    ("rmdir /a", "unknown operation 'rmdir'"),
    ("mkdir", "missing arguments"),
    ("mkdir a", "must be absolute"),
    ("mkdir /a -m", "unknown mkdir option"),
    ("mount", "missing arguments"),
    ("mount -t tmpfs x", "missing arguments"),
    ("mount -t tmpfs x /a /b", "too many arguments"),
    ("mount -t ext4 x /a", "unsupported filesystem type 'ext4'"),
    ("mount -t tmpfs x a", "must be absolute"),
    ("mount --bind /a", "missing arguments"),
    ("mount --bind a /b", "source must be absolute"),
    ("mount --rbind /a b", "target must be absolute"),
    ("mount --move /a", "missing arguments"),
    ("mount --move /a /b /c", "too many arguments"),
    ("mount --make-shared", "missing arguments"),
    ("mount --make-shared x", "must be absolute"),
    ("mount --make-sharde /a", "unknown propagation option '--make-sharde'"),
    ("mount --make-rfoo /a", "unknown propagation option"),
    ("mount --make- /a", "unknown propagation option"),
    ("mount --remount /a", "unknown mount option '--remount'"),
    ("umount", "missing arguments"),
    ("umount -l", "missing arguments"),
    ("umount -f /a", "unknown umount option '-f'"),
    ("umount a", "must be absolute"),
    ("umount /a /b", "too many arguments"),
    ("ns", "missing arguments"),
    ("ns kid --propagation", "missing arguments"),
    ("ns kid --propagation rslave", "bad propagation 'rslave'"),
    ("ns kid --propagation unbindable", "bad propagation 'unbindable'"),
    ("ns kid --propagation slave extra", "too many arguments"),
    ("ns kid --flag", "unknown ns option '--flag'"),
    ("ns ../x", "bad namespace name"),
    ("use", "missing arguments"),
    ("use a b", "too many arguments"),
    ("use -x", "bad namespace name"),
    ("mkdir '/unterminated", "no closing quotation"),
]


@pytest.mark.parametrize(("line", "reason"), INVALID, ids=[v[0] for v in INVALID])
def test_parse_invalid(line: str, reason: str) -> None:
    text = "# a comment\n\nmkdir /ok\n" + line + "\n"
    with pytest.raises(ScenarioSyntaxError) as info:
        parse(text)
    assert info.value.line == 4
    assert reason in info.value.reason
    assert str(info.value).startswith("line 4: ")


def test_comments_and_blank_lines_keep_physical_line_numbers() -> None:
    ops = parse("# head\n\n   \nmkdir /a  # why\n#mount --bind /a /b\numount /a\n")
    assert [(op.line, op.to_line()) for op in ops] == [(4, "mkdir /a"), (6, "umount /a")]


def test_line_number_takes_no_part_in_equality() -> None:
    assert parse_line("mkdir /a", 3) == Mkdir(("/a",))
    assert {parse_line("umount /a", 1), parse_line("umount /a", 9)} == {Umount("/a")}


def test_ops_are_frozen_and_picklable() -> None:
    ops = parse("mkdir /a\nmount --make-rslave /a\nns k --propagation slave\n")
    with pytest.raises(AttributeError):
        ops[0].paths = ("/b",)  # type: ignore[misc]
    again = pickle.loads(pickle.dumps(ops))
    assert again == ops and [o.line for o in again] == [1, 2, 3]


def test_bad_namespace_propagation_rejected_by_constructor() -> None:
    with pytest.raises(ValueError):
        NewNamespace("k", "rshared")
    with pytest.raises(ValueError):
        Make("/a", "sideways")


@pytest.mark.parametrize("path", SCENARIO_FILES, ids=scenario_id)
def test_every_shipped_scenario_round_trips(path) -> None:  # type: ignore[no-untyped-def]
    ops = parse(path.read_text())
    assert ops
    assert parse(to_text(ops)) == ops


class _RecordingHost:
    """Just enough Host for Mkdir.apply: records calls, fails on /bad."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, bool]] = []

    def mkdir(self, path: str, mode: int = 0o755, *, parents: bool = False,
              safe: bool = False) -> None:
        self.calls.append((path, mode, parents))
        if path.startswith("/bad"):
            raise OSError(errno.ENOTDIR, "Not a directory", path)


def test_mkdir_is_mkdir_p_0755_and_tries_every_operand() -> None:
    host = _RecordingHost()
    with pytest.raises(OSError) as info:
        Mkdir(("/a", "/bad1", "/bad2", "/b")).apply(host)  # type: ignore[arg-type]
    assert info.value.filename == "/bad1"  # the first failure is the one reported
    assert host.calls == [(p, 0o755, True) for p in ("/a", "/bad1", "/bad2", "/b")]
