"""`dlaasctl ui`: the dashboard for the calling user, on 127.0.0.1, until Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import pwd
import signal
import socket
import sys
import webbrowser
from pathlib import Path

from .server import Daemon, OneUser, User, new_token, start

DEFAULT_PORT = 8470
TRIES = 20  # without --port, the next free one of these


def me() -> User:
    uid, gid = os.getuid(), os.getgid()
    try:
        return User(uid, gid, pwd.getpwuid(uid).pw_name)
    except KeyError:
        return User(uid, gid, str(uid))


async def serve(socket_path: Path, port: int | None, open_browser: bool) -> None:
    access = OneUser(new_token(), me(), Daemon(socket_path))
    if port is None:
        runner, bound = await start(access, "127.0.0.1", DEFAULT_PORT, TRIES)
    else:  # 0: any free port
        runner, bound = await start(access, "127.0.0.1", port)
    url = f"http://127.0.0.1:{bound}/?token={access.token}"
    host = socket.gethostname()
    print(f"dlaasctl ui: the dashboard of {access.user.name}, until Ctrl-C:\n    {url}")
    print(
        f"From another machine: ssh -N -L {bound}:127.0.0.1:{bound} {host}, "
        "then open the same URL there.",
        flush=True,
    )
    if open_browser:
        webbrowser.open(url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(socket_path: Path, port: int | None, open_browser: bool) -> int:
    try:
        asyncio.run(serve(socket_path, port, open_browser))
    except OSError as exc:
        where = (
            f"port {port}"
            if port is not None
            else f"ports {DEFAULT_PORT}-{DEFAULT_PORT + TRIES - 1}"
        )
        print(
            f"dlaasctl: ui: cannot listen on 127.0.0.1 {where}: {exc.strerror}; "
            "choose another with --port",
            file=sys.stderr,
        )
        return 1
    return 0
