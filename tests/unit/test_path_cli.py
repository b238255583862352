"""``daemonstore path DAEMON USER [--cache] [--root DIR]``: the store path from the salt, read
through a Host's ``read_file`` (a model host here, and the real read-only reader on a temporary
directory: reading needs no namespace, nothing is mounted)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from daemonstore import command, paths
from daemonstore.cli import main
from daemonstore.daemon.salt import SaltMissing, read_salt, user_store_path
from daemonstore.model import ModelHost
from daemonstore.world import World

SALT = bytes(range(16))


def run(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, ["path", *args])
    return res.exit_code, res.output


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "home/.shadow").mkdir(parents=True)
    (tmp_path / "home/.shadow/salt").write_bytes(SALT)
    return tmp_path


def test_path_and_cache_path(root: Path) -> None:
    want = paths.sanitize_username(SALT, "alice@example.com")
    assert run("biod", "alice@example.com", "--root", str(root)) == (
        0, f"/run/daemon-store/biod/{want}\n")
    assert run("biod", "Alice@Example.COM", "--cache", "--root", str(root)) == (
        0, f"/run/daemon-store-cache/biod/{want}\n")  # ASCII lower-cased first


def test_same_hash_as_a_world_signing_in(monkeypatch: pytest.MonkeyPatch) -> None:
    world = World.model(seed=5)
    world.install_daemon("foo", 0, 0)
    user_hash = world.login("bob")
    monkeypatch.setattr(command, "open_reader", lambda root: world.host)
    assert run("foo", "bob") == (0, f"/run/daemon-store/foo/{user_hash}\n")


def test_fallback_salt_location(tmp_path: Path) -> None:
    (tmp_path / "var/lib").mkdir(parents=True)
    (tmp_path / "var/lib/system_salt").write_bytes(b"other salt")
    code, out = run("d", "u", "--root", str(tmp_path))
    want = paths.sanitize_username(b"other salt", "u")
    assert (code, out) == (0, f"/run/daemon-store/d/{want}\n")


@pytest.mark.parametrize(("args", "reason"), [
    (["bi/od", "alice"], "daemon name 'bi/od' does not match"),
    (["..", "alice"], "contains '..'"),
    (["biod", ""], "user name '' is empty"),
])
def test_bad_names_exit_2_with_one_line(root: Path, args: list[str], reason: str) -> None:
    code, out = run(*args, "--root", str(root))
    assert code == 2 and reason in out and len(out.strip().splitlines()) == 1


def test_missing_salt_exits_2(tmp_path: Path) -> None:
    code, out = run("biod", "alice", "--root", str(tmp_path))
    assert code == 2
    assert out.strip() == (f"Error: --root {tmp_path}: no system salt (/home/.shadow/salt: No such "
                           "file or directory; /var/lib/system_salt: No such file or directory); "
                           "cryptohome creates it at the first sign-in")


def test_symlinked_salt_is_not_trusted(tmp_path: Path) -> None:
    (tmp_path / "home/.shadow").mkdir(parents=True)
    (tmp_path / "real").write_bytes(SALT)
    os.symlink("/real", tmp_path / "home/.shadow/salt")
    code, out = run("biod", "alice", "--root", str(tmp_path))
    assert code == 2 and "/home/.shadow/salt: Too many levels of symbolic links" in out


def test_unusable_root_exits_2(tmp_path: Path) -> None:
    code, out = run("biod", "alice", "--root", str(tmp_path / "missing"))
    assert code == 2 and out.startswith(f"Error: --root {tmp_path / 'missing'}: ")


def test_read_salt_sizes() -> None:
    host = ModelHost()
    with pytest.raises(SaltMissing, match="No such file"):
        read_salt(host)
    host.mkdir("/home/.shadow", parents=True)
    host.write_file(paths.SALT, b"")
    with pytest.raises(SaltMissing, match="unusable size 0"):
        read_salt(host)
    host.write_file(paths.SALT, b"s")
    want = paths.sanitize_username(b"s", "u")
    assert user_store_path(host, "d", "u") == f"/run/daemon-store/d/{want}"
