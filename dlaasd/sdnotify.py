"""A tiny sd_notify(3) client: tell systemd (Type=notify) that dlaasd is ready, alive, stopping.

No dependencies: one AF_UNIX datagram per message to $NOTIFY_SOCKET (a path, or an abstract
name written with a leading '@'). Without $NOTIFY_SOCKET (dlaasd run by hand, in a test,
in Docker) every call is a no-op that returns False.

    notifier = Notifier.from_env()        # reads, then unsets, NOTIFY_SOCKET and WATCHDOG_*
    notifier.ready("serving on /run/dlaas/dlaasd.sock")
    task = asyncio.create_task(notifier.keep_alive())   # WATCHDOG=1 at half WatchdogSec
    notifier.stopping()

`from_env` removes the variables from os.environ (as sd_notify's unset_environment does)
so that child processes, the bundled MinIO above all, do not talk to systemd in
dlaasd's name: MinIO sends READY=1 itself when it finds NOTIFY_SOCKET.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Mapping, MutableMapping

log = logging.getLogger(__name__)

ENV_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def socket_address(value: str | None) -> str | None:
    """The address to send to: '@name' is the abstract socket '\\0name'; None if unusable."""
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None  # vsock:... (systemd >= 254, in VMs) and anything else: not supported


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings: half of $WATCHDOG_USEC, or None if the watchdog is
    off (unset, not a positive number, or $WATCHDOG_PID names another process)."""
    env = os.environ if env is None else env
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    return usec / 2 / 1_000_000


def _line(value: str) -> str:
    # One message is newline-separated KEY=VALUE lines: a newline in STATUS would start
    # a new assignment.
    return " ".join(str(value).split("\n"))


class Notifier:
    """Sends sd_notify messages to one socket address (None: sends nothing)."""

    def __init__(self, address: str | None, interval: float | None = None):
        self.address = address
        self.interval = interval if address else None
        self._warned = False

    @classmethod
    def from_env(cls, env: MutableMapping[str, str] | None = None, unset: bool = True) -> Notifier:
        env = os.environ if env is None else env
        raw = env.get("NOTIFY_SOCKET")
        address = socket_address(raw)
        if raw and address is None:
            log.warning("event=sd_notify_unsupported notify_socket=%r", raw)
        notifier = cls(address, watchdog_interval(env))
        if unset:
            for var in ENV_VARS:
                env.pop(var, None)
        return notifier

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *assignments: str) -> bool:
        """Send KEY=VALUE lines in one datagram. True if sent; errors are logged, not raised
        (a daemon must not die because its supervisor went away)."""
        if not self.address or not assignments:
            return False
        message = "\n".join(assignments).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.sendto(message, self.address)
            return True
        except OSError as exc:
            if not self._warned:  # once: a lost supervisor would otherwise log every ping
                self._warned = True
                log.warning("event=sd_notify_failed address=%r error=%r", self.address, str(exc))
            return False

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1", *([f"STATUS={_line(status)}"] if status else []))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={_line(text)}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str = "") -> bool:
        return self.notify("STOPPING=1", *([f"STATUS={_line(status)}"] if status else []))

    async def keep_alive(self) -> None:
        """Send WATCHDOG=1 every `interval` seconds until cancelled; returns at once when
        systemd set no watchdog. It runs on the event loop, so a loop that hangs stops the
        pings and systemd restarts dlaasd (runs in containers are left alone)."""
        if not self.interval:
            return
        while True:
            self.watchdog()
            await asyncio.sleep(self.interval)


def notify(*assignments: str, env: Mapping[str, str] | None = None) -> bool:
    """One-off sd_notify to $NOTIFY_SOCKET, leaving the environment as it is."""
    env = os.environ if env is None else env
    return Notifier(socket_address(env.get("NOTIFY_SOCKET"))).notify(*assignments)
