"""The hardening rules the model enforces too (so attacks are tested without root), and the gaps
the hardening work closed, each on the model (SECURITY.md lists them; the kernel side of each is
in tests/hardening)."""

from __future__ import annotations

import errno

import pytest

from daemonstore import paths, session
from daemonstore.model import ModelHost
from daemonstore.ops import BindDir
from daemonstore.world import World

FOO = ("foo", 20100, 20100, 0o700)


@pytest.fixture
def world() -> World:
    w = World.model()
    w.install_daemon(*FOO)
    w.daemon("foo")
    w.login("alice")
    w.logout("alice")
    return w


# ---- safe chown/chmod never act on a fifo (hard links and devices: the kernel, same rule) ------


@pytest.mark.parametrize("call", ["chown", "chmod"])
def test_safe_chown_and_chmod_refuse_a_fifo(call: str) -> None:
    host = ModelHost()
    host.mkfifo("/fifo", 0o600)
    args = (0, 0) if call == "chown" else (0o666,)
    with pytest.raises(OSError) as info:
        getattr(host, call)("/fifo", *args, safe=True)
    assert info.value.errno == errno.EPERM and "fifo" in info.value.strerror
    getattr(host, call)("/fifo", *args)  # without safe: as the kernel allows it
    host.write_file("/file", b"x")
    getattr(host, call)("/file", *args, safe=True)  # a regular file with one link: fine


# ---- re-check after acting: a bind that did not land where planned ---------------------------


def test_a_bind_that_lands_elsewhere_is_taken_off_and_refused(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """The source is swapped between the type check and the bind (the model has no rename, so
    the bind is made to take another directory): the re-check sees it, takes the mount off,
    and sign-in rolls back with ESTALE."""
    h = world.hash_of("alice")
    host = world.host
    host.mkdir(f"{paths.vault(h)}/root/decoy", 0o700)
    real_bind = host.bind
    source = f"{paths.vault_mount(h)}/root/foo"

    def bind(src: str, dst: str, **kwargs: object) -> None:
        if src == source:
            src = f"{paths.vault_mount(h)}/root/decoy"
        real_bind(src, dst, **kwargs)  # type: ignore[arg-type]

    before = {ns: host.mountinfo(ns) for ns in host.namespaces()}
    monkeypatch.setattr(host, "bind", bind)
    with pytest.raises(session.SignInError) as info:
        world.login("alice")
    monkeypatch.undo()
    exc = info.value
    assert exc.errno == errno.ESTALE and exc.rollback == []
    assert "did not land where planned" in str(exc) and "taken off again" in str(exc)
    assert {ns: host.mountinfo(ns) for ns in host.namespaces()} == before


def test_the_recheck_never_takes_off_a_mount_it_did_not_make(world: World) -> None:
    """A bind that made no new mount at the target (nothing changed there): ESTALE, and the
    mount that was already there stays."""
    host = world.host
    host.mkdir("/src", 0o755)
    host.mkdir("/dst", 0o755)
    host.mount_tmpfs("someone-elses", "/dst")
    step = BindDir("/src", "/dst")
    mounts = host.mountinfo()

    class NoBind:
        def __getattr__(self, name: str) -> object:
            if name == "bind":
                return lambda *a, **k: None
            return getattr(host, name)

    with pytest.raises(OSError) as info:
        step.apply(NoBind())  # type: ignore[arg-type]
    assert info.value.errno == errno.ESTALE and "taken off" not in info.value.strerror
    assert host.mountinfo() == mounts


# ---- writes before mount ------------------------------------------------------------------------


def test_writes_before_mount_are_reported_at_sign_in_and_sign_out(world: World) -> None:
    h = world.hash_of("alice")
    target = paths.user_store("foo", h)  # left empty by the sign-out, as on ChromeOS
    for name in ("a", "b", "c", "d"):
        world.host.write_file(f"{target}/{name}", b"early")
    plan = session.plan_sign_in(world.host, h)
    [warning] = [w for w in plan.warnings if target in w]
    assert "4 entries ('a', 'b', 'c', ...)" in warning and "never deleted" in warning
    world.login("alice")
    out = world.logout("alice")
    assert any(target in w and "writes before mount" in w for w in out.warnings)
    assert world.host.read_file(f"{target}/d") == b"early"


# ---- a failed sign-out leaves /home/chronos/user; the next one takes it -----------------------


def test_a_second_sign_out_takes_a_leftover_chronos_user(world: World,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    h = world.hash_of("alice")
    world.login("alice")
    real_umount = world.host.umount

    def umount(target: str, **kwargs: object) -> None:
        if target == paths.HOME_CHRONOS_USER:
            raise OSError(errno.EIO, "injected", target)
        real_umount(target, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(world.host, "umount", umount)
    first = world.logout("alice")
    monkeypatch.undo()
    assert first.failed == [paths.HOME_CHRONOS_USER]
    assert h not in session.mounted_users(world.host)  # the vault went; chronos/user did not
    second = world.logout("alice")
    assert second.unmounted == [paths.HOME_CHRONOS_USER] and second.ok
    assert not [e for e in world.host.mountinfo().splitlines() if " /home/chronos/user " in e]


# ---- names that are not valid UTF-8 -------------------------------------------------------------


def test_a_non_utf8_template_name_is_refused_not_a_crash() -> None:
    with pytest.raises(paths.BadName):
        paths.check_daemon_name("caf\udcff")  # os.listdir's spelling of the byte 0xff
    with pytest.raises(paths.BadName) as info:
        paths.check_username("x\udcff")
    assert "not valid UTF-8" in str(info.value)
