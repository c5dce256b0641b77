"""The API socket is made without touching the process's umask, which runs resumed at
start share: a run folder made meanwhile must get its usual mode (a 0600 job folder
cannot be entered by the training, which then fails before it starts)."""

from __future__ import annotations

import asyncio
import os
import stat
import threading

from aiohttp import web

from dlaasd.api import serve


def test_serving_leaves_the_umask_alone_and_the_socket_private(tmp_path):
    stop = threading.Event()
    modes: set[int] = set()

    def make_folders() -> None:  # what a resumed run's thread does at the same moment
        n = 0
        while not stop.is_set():
            folder = tmp_path / "runs" / str(n)
            folder.mkdir(parents=True)
            modes.add(stat.S_IMODE(folder.stat().st_mode))
            n += 1

    async def start_and_stop() -> int:
        runner = await serve(web.Application(), tmp_path / "sock" / "dlaasd.sock")
        mode = stat.S_IMODE((tmp_path / "sock" / "dlaasd.sock").stat().st_mode)
        await runner.cleanup()
        return mode

    old = os.umask(0o022)
    worker = threading.Thread(target=make_folders)
    worker.start()
    try:
        socket_modes = {asyncio.run(start_and_stop()) for _ in range(30)}
    finally:
        stop.set()
        worker.join()
        os.umask(old)
    assert socket_modes == {0o600}
    assert modes == {0o755}, sorted(oct(m) for m in modes)
    assert [p.name for p in (tmp_path / "sock").iterdir()] == ["dlaasd.sock"]  # no staging left
