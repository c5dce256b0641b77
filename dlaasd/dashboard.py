"""The web dashboard served by the daemon itself, on `dashboard.address` (TCP).

The pages and their server are dlaasctl's (`dlaasctl ui`); what differs is who a token
stands for. Each user asks for their URL over the Unix socket (`dlaasctl ui --daemon`,
`GET /v1/dashboard`), where the daemon knows them by SO_PEERCRED, and gets a random token
of their own. The dashboard then asks the daemon's API as that user, over a second socket
that only the daemon can reach (its folder is 0700): the one place the acting-as header is
believed. So every owner check holds as on the command line.
"""

from __future__ import annotations

import hashlib
import logging
import pwd
import socket
from pathlib import Path

from aiohttp import web

from dlaasctl.ui.server import ACTING_AS_HEADER, Access, Daemon, User, new_token, start

from . import api
from .access import Caller
from .errors import Invalid
from .prometheus import parse_address

log = logging.getLogger(__name__)


class Tokens(Access):
    """A token per user, made when they first ask; kept in memory (a restart makes new
    ones: ask again)."""

    cookie = "dlaas-dashboard"

    def __init__(self, private_socket: Path):
        self.private_socket = private_socket
        self._by_hash: dict[bytes, User] = {}
        self._token_of: dict[int, str] = {}
        self._daemons: dict[int, Daemon] = {}

    def token_for(self, caller: Caller) -> tuple[str, User]:
        try:
            name = pwd.getpwuid(caller.uid).pw_name
        except KeyError:
            name = str(caller.uid)
        user = User(caller.uid, caller.gid, name)
        if caller.uid not in self._token_of:
            token = new_token()
            self._token_of[caller.uid] = token
            self._by_hash[_digest(token)] = user
        return self._token_of[caller.uid], user

    def user_of(self, token: str | None) -> User | None:
        # looked up by its hash: the time a miss takes tells nothing of the tokens
        return self._by_hash.get(_digest(token)) if token else None

    def daemon_for(self, user: User) -> Daemon:
        if user.uid not in self._daemons:
            self._daemons[user.uid] = Daemon(self.private_socket, acting_as=user)
        return self._daemons[user.uid]

    async def close(self) -> None:
        for d in self._daemons.values():
            await d.close()


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@web.middleware
async def acting_as(request: web.Request, handler):
    """The private socket's requests come from the dashboard, naming the user it serves."""
    raw = request.headers.get(ACTING_AS_HEADER, "")
    uid, _, gid = raw.partition(":")
    if not (uid.isdigit() and gid.isdigit()):
        raise Invalid(f"the dashboard's socket needs {ACTING_AS_HEADER}: UID:GID")
    request[api.ACTING_AS] = api.daemon_of(request).caller(int(uid), int(gid))
    return await handler(request)


class Dashboard:
    """The private API socket and the TCP site, started and stopped together."""

    def __init__(self, tokens: Tokens, url_base: str, runners: list[web.AppRunner]):
        self.tokens, self.url_base, self.runners = tokens, url_base, runners

    def url_for(self, caller: Caller) -> dict:
        token, user = self.tokens.token_for(caller)
        return {"url": f"{self.url_base}/?token={token}", "user": user.name}

    async def stop(self) -> None:
        for runner in self.runners:
            await runner.cleanup()


async def serve(private_app: web.Application, state: Path, address: str) -> Dashboard:
    """`private_app`: the API app for the private socket (made by api.make_app, not yet
    started)."""
    private_app.middlewares.append(acting_as)
    private = state / "dashboard" / "api.sock"
    api_runner = await api.serve(private_app, private)  # 0600 in a 0700 folder
    tokens = Tokens(private)
    host, port = parse_address(address)
    site_runner, bound = await start(tokens, host, port)
    shown = socket.gethostname() if host in ("0.0.0.0", "::") else host
    shown = f"[{shown}]" if ":" in shown else shown
    log.info("event=dashboard_listening address=%s:%d", host, bound)
    return Dashboard(tokens, f"http://{shown}:{bound}", [site_runner, api_runner])
