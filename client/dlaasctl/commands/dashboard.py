"""The web dashboard: ui."""

from __future__ import annotations

import argparse

from .. import routes
from ..http import Client
from . import Command, arg


def ui(c: Client, a: argparse.Namespace) -> int:
    if a.daemon:  # the daemon's own dashboard: just this user's URL of it
        answer = c.call(routes.DASHBOARD)
        print(f"the daemon's dashboard, for {answer['user']}:\n    {answer['url']}")
        return 0
    c.call(routes.HEALTH)  # no daemon: say so now, not in the browser
    from ..ui.command import main  # aiohttp: only this command pays for importing it

    return main(c.socket_path, a.port, not a.no_browser)


COMMANDS = {
    "ui": Command(
        ui,
        "the web dashboard on 127.0.0.1 (a URL with a token; pages update live)",
        [
            arg(
                "--port",
                type=int,
                help="listen on this port; 0: any free one (default: 8470 or the next free)",
            ),
            arg("--no-browser", action="store_true", help="print the URL, open no browser"),
            arg(
                "--daemon",
                action="store_true",
                help="print your URL of the dashboard the daemon serves (dashboard.address)",
            ),
        ],
        json=False,
    ),
}
