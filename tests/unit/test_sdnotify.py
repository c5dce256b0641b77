"""sd_notify client: real AF_UNIX datagram sockets stand in for systemd's notify socket."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dlaasd import sdnotify
from dlaasd.sdnotify import Notifier, socket_address, watchdog_interval


@contextlib.contextmanager
def listener(abstract: bool = False) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket and the NOTIFY_SOCKET value systemd would give for it."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.settimeout(5)
    if abstract:
        name = f"dlaas-test-notify-{secrets.token_hex(6)}"
        s.bind("\0" + name)
        value = "@" + name
        folder = None
    else:
        folder = tempfile.mkdtemp(prefix="dlaas-n-", dir="/tmp")  # sun_path is 108 bytes
        value = os.path.join(folder, "notify")
        s.bind(value)
    try:
        yield s, value
    finally:
        s.close()
        if folder:
            Path(value).unlink(missing_ok=True)
            os.rmdir(folder)


def received(s: socket.socket) -> list[str]:
    return s.recv(4096).decode().split("\n")


def nothing_waiting(s: socket.socket) -> bool:
    s.setblocking(False)
    try:
        s.recv(4096)
        return False
    except BlockingIOError:
        return True
    finally:
        s.settimeout(5)


def test_ready_status_watchdog_stopping_arrive_as_datagrams():
    with listener() as (s, path):
        n = Notifier.from_env({"NOTIFY_SOCKET": path})
        assert n.enabled
        assert n.ready("serving on /run/dlaas/dlaasd.sock")
        assert received(s) == ["READY=1", "STATUS=serving on /run/dlaas/dlaasd.sock"]
        assert n.status("3 runs active")
        assert received(s) == ["STATUS=3 runs active"]
        assert n.watchdog()
        assert received(s) == ["WATCHDOG=1"]
        assert n.stopping()
        assert received(s) == ["STOPPING=1"]


def test_abstract_socket_name_with_at_sign():
    with listener(abstract=True) as (s, value):
        assert value.startswith("@")
        assert Notifier.from_env({"NOTIFY_SOCKET": value}).ready()
        assert received(s) == ["READY=1"]


def test_module_level_notify_reads_the_environment(monkeypatch):
    with listener() as (s, path):
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        assert sdnotify.notify("READY=1", "STATUS=up")
        assert received(s) == ["READY=1", "STATUS=up"]
        assert os.environ["NOTIFY_SOCKET"] == path  # left for the caller


def test_from_env_unsets_the_variables_so_children_do_not_notify(monkeypatch):
    with listener() as (s, path):
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        monkeypatch.setenv("WATCHDOG_USEC", "60000000")
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
        n = Notifier.from_env()
        for var in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            assert var not in os.environ
        assert n.interval == 30.0
        assert n.watchdog()
        assert received(s) == ["WATCHDOG=1"]


def test_from_env_can_leave_the_environment_alone():
    env = {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "2000000"}
    Notifier.from_env(env, unset=False)
    assert env == {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "2000000"}


def test_no_notify_socket_is_a_no_op(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = Notifier.from_env({})
    assert not n.enabled
    assert n.interval is None
    assert not n.ready("x")
    assert not n.watchdog()
    assert not n.stopping()
    assert not sdnotify.notify("READY=1")


def test_a_vanished_socket_is_logged_not_raised(caplog):
    folder = tempfile.mkdtemp(prefix="dlaas-n-", dir="/tmp")
    try:
        n = Notifier(os.path.join(folder, "gone"))
        assert not n.ready()
        assert not n.watchdog()
        warnings = [r for r in caplog.records if "sd_notify_failed" in r.getMessage()]
        assert len(warnings) == 1  # once, not at every watchdog ping
    finally:
        os.rmdir(folder)


def test_newlines_in_status_cannot_inject_assignments():
    with listener() as (s, path):
        Notifier(path).status("line one\nREADY=1")
        assert received(s) == ["STATUS=line one READY=1"]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "60000000"}, 30.0),
        ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())}, 0.5),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "1"}, None),  # another process's
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec(env, expected):
    assert watchdog_interval(env) == expected


def test_socket_address_forms():
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@abstract") == "\0abstract"
    assert socket_address("vsock:2:1234") is None
    assert socket_address("") is None
    assert socket_address(None) is None


def test_keep_alive_pings_at_the_interval_until_cancelled():
    async def ping_a_few(n: Notifier, s: socket.socket) -> list[str]:
        task = asyncio.create_task(n.keep_alive())
        got = []
        for _ in range(3):
            got += await asyncio.to_thread(received, s)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return got

    with listener() as (s, path):
        n = Notifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "20000"})  # 10 ms
        assert n.interval == 0.01
        assert asyncio.run(ping_a_few(n, s)) == ["WATCHDOG=1"] * 3


def test_keep_alive_returns_at_once_without_a_watchdog():
    with listener() as (s, path):
        n = Notifier.from_env({"NOTIFY_SOCKET": path})
        asyncio.run(asyncio.wait_for(n.keep_alive(), 1))
        assert nothing_waiting(s)
