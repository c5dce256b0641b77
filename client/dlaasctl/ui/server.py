"""The web dashboard's server: pages, live updates and the daemon's API, behind a token.

`dlaasctl ui` runs it as the calling user on 127.0.0.1: each API call goes to the daemon's
Unix socket from this process, so the daemon sees that user (SO_PEERCRED) and every owner
check holds as on the command line. The token is in the URL, as Jupyter does it; the first
page sets it as a cookie (SameSite=Strict), so links and downloads need not carry it.
Without it every path answers 403 and nothing else.

Pages update over server-sent events: the server polls the daemon (or follows its log and
metric streams) and sends what changed. Metric series are downsampled here, so a chart
gets at most a few thousand points whatever the run reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

import aiohttp
from aiohttp import web

from .. import routes as R
from . import views

STATIC = Path(__file__).parent / "static"
FINAL = ("COMPLETED", "FAILED", "HALTED")
POLL = 0.5  # seconds between looks at what a page shows
KEEPALIVE = 15.0


ACTING_AS_HEADER = "X-Dlaas-Acting-As"


@dataclass(frozen=True)
class User:
    uid: int
    gid: int
    name: str

    @property
    def privileged(self) -> bool:
        return self.uid == 0

    @property
    def header(self) -> str:
        return f"{self.uid}:{self.gid}"


class Refused(Exception):
    """The daemon's 4xx/5xx answer, passed on to the browser as it came."""

    def __init__(self, status: int, body: dict):
        self.status, self.body = status, body
        err = body.get("error", {}) if isinstance(body, dict) else {}
        super().__init__(err.get("message") or f"HTTP {status}")


class Daemon:
    """The daemon's API over a Unix socket: as the user this process runs as, or, on the
    daemon's own private socket, as `acting_as` (a header only that socket believes)."""

    def __init__(self, socket_path: Path, acting_as: User | None = None):
        self.socket_path = socket_path
        self.headers = {ACTING_AS_HEADER: acting_as.header} if acting_as else {}
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=str(self.socket_path)),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
                headers=self.headers,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def url(self, path: str) -> str:
        return "http://dlaasd" + path

    async def get(self, path: str):
        try:
            async with self.session.get(self.url(path)) as resp:
                body = await resp.json(content_type=None)
                if resp.status >= 400:
                    raise Refused(resp.status, body)
                return body
        except aiohttp.ClientConnectionError as exc:
            raise Refused(
                502, {"error": {"message": f"the daemon at {self.socket_path} is unreachable"}}
            ) from exc

    async def lines(self, path: str) -> AsyncIterator[bytes]:
        """A streamed answer (follow=1), as it comes."""
        async with self.session.get(self.url(path)) as resp:
            if resp.status >= 400:
                raise Refused(resp.status, await resp.json(content_type=None))
            async for chunk in resp.content.iter_any():
                yield chunk

    async def forward(self, request: web.Request, path: str) -> web.StreamResponse:
        """The browser's API call, sent on as it came (streamed both ways)."""
        headers = {
            k: v for k, v in request.headers.items() if k.lower() in ("content-type", "range")
        }
        data = request.content if request.can_read_body else None
        try:
            async with self.session.request(
                request.method, self.url(path), data=data, headers=headers
            ) as resp:
                out = web.StreamResponse(status=resp.status)
                for k in ("Content-Type", "Content-Length", "Allow"):
                    if k in resp.headers:
                        out.headers[k] = resp.headers[k]
                if "/results/" in path or "/definition/" in path:
                    name = path.rsplit("/", 1)[-1].split("?")[0]
                    out.headers["Content-Disposition"] = f"attachment; filename*=UTF-8''{name}"
                await out.prepare(request)
                async for chunk in resp.content.iter_any():
                    await out.write(chunk)
                await out.write_eof()
                return out
        except aiohttp.ClientConnectionError:
            message = f"the daemon at {self.socket_path} is unreachable"
            return web.json_response({"error": {"message": message}}, status=502)


class Access:
    """Who a token stands for, and how to reach the daemon as them."""

    cookie = "dlaas-ui"

    def user_of(self, token: str | None) -> User | None:
        raise NotImplementedError

    def daemon_for(self, user: User) -> Daemon:
        raise NotImplementedError

    async def close(self) -> None:
        pass


class OneUser(Access):
    """`dlaasctl ui`: one token, for the user who started it."""

    def __init__(self, token: str, user: User, daemon: Daemon):
        self.token, self.user, self.daemon = token, user, daemon
        # named after the token: two dashboards on one host (ports share cookies) coexist
        self.cookie = "dlaas-ui-" + hashlib.sha256(token.encode()).hexdigest()[:12]

    def user_of(self, token: str | None) -> User | None:
        if token and hmac.compare_digest(token.encode(), self.token.encode()):
            return self.user
        return None

    def daemon_for(self, user: User) -> Daemon:
        return self.daemon

    async def close(self) -> None:
        await self.daemon.close()


ACCESS = web.AppKey("access", Access)
USER = "dlaas.user"


def token_of(request: web.Request, access: Access) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth.startswith("token "):
        return auth[6:]
    return request.query.get("token") or request.cookies.get(access.cookie)


@web.middleware
async def guard(request: web.Request, handler):
    """A wrong or missing token: 403 and nothing else, whatever the path. A change asked
    from another site's page (a form posting here) is refused by its Origin."""
    access = request.app[ACCESS]
    user = access.user_of(token_of(request, access))
    if user is None:
        return web.Response(status=403, text="403: a wrong or missing token\n")
    if request.method not in ("GET", "HEAD"):
        origin = request.headers.get("Origin")
        if origin and origin != f"{request.scheme}://{request.host}":
            return web.Response(status=403, text="403: a request from another site\n")
    request[USER] = user
    try:
        return await handler(request)
    except Refused as exc:
        return web.json_response(exc.body, status=exc.status)


def daemon_of(request: web.Request) -> Daemon:
    return request.app[ACCESS].daemon_for(request[USER])


# --- pages and the API ------------------------------------------------------------------


async def index(request: web.Request) -> web.StreamResponse:
    access = request.app[ACCESS]
    resp = web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})
    if request.query.get("token"):  # the guard let it in: it is right
        resp.set_cookie(access.cookie, request.query["token"], httponly=True, samesite="Strict")
    return resp


async def forward(request: web.Request) -> web.StreamResponse:
    path = "/v1/" + quote(request.match_info["tail"])
    query = [(k, v) for k, v in request.query.items() if k != "token"]
    return await daemon_of(request).forward(
        request, path + ("?" + urlencode(query) if query else "")
    )


async def whoami(request: web.Request) -> web.Response:
    user: User = request[USER]
    return web.json_response({"uid": user.uid, "name": user.name, "privileged": user.privileged})


def _q(request: web.Request, name: str) -> str:
    return request.query.get(name, "").strip()


def _page_args(request: web.Request) -> tuple[int, int]:
    try:
        limit = min(max(int(request.query.get("limit", 50)), 1), 500)
        offset = max(int(request.query.get("offset", 0)), 0)
    except ValueError:
        raise Refused(400, {"error": {"message": "limit and offset: whole numbers"}}) from None
    return limit, offset


async def runs_view(d: Daemon, request: web.Request) -> dict:
    """A page of runs, filtered, with each queued one's place in the queue."""
    limit, offset = _page_args(request)
    owner, name = _q(request, "owner"), _q(request, "name")
    base = {k: _q(request, k) for k in ("status", "experiment") if _q(request, k)}
    if owner or name:  # the daemon filters by status and experiment; these are ours
        body = await d.get(R.LIST_RUNS.url(**base, limit=R.MAX_LIMIT))
        rows = [r for r in body["runs"] if views.matches(r, owner, name)]
        total, rows = len(rows), rows[offset : offset + limit]
    else:
        body = await d.get(R.LIST_RUNS.url(**base, limit=limit, offset=offset))
        rows, total = body["runs"], body["total"]
    positions, queued = {}, None
    if any(r["status"] == "QUEUED" for r in rows):
        q = await d.get(R.LIST_RUNS.url(status="QUEUED", limit=R.MAX_LIMIT))
        queued = q["total"]
        positions = views.queue_positions(q["runs"], q["total"])
    return {
        "runs": [{**r, "position": positions.get(r["id"])} for r in rows],
        "total": total,
        "limit": limit,
        "offset": offset,
        "queued": queued,
    }


async def run_view(d: Daemon, run_id: str) -> dict:
    try:
        run = await d.get(R.SHOW_RUN.url(id=run_id))
    except Refused as exc:
        if exc.status != 403:
            raise
        # another's run: what the queue shows of it (its details are its owner's)
        listed = await d.get(R.LIST_RUNS.url(limit=R.MAX_LIMIT))
        run = next((r for r in listed["runs"] if r["id"] == run_id), None)
        if run is None:
            raise
        run["private"] = str(exc)
    if run["status"] == "QUEUED":
        q = await d.get(R.LIST_RUNS.url(status="QUEUED", limit=R.MAX_LIMIT))
        run["position"] = views.queue_positions(q["runs"], q["total"]).get(run["id"])
    if run["status"] in FINAL:
        with contextlib.suppress(Refused):
            run["files"] = (await d.get(R.RESULTS.url(id=run_id)))["files"]
    return run


async def experiment_view(d: Daemon, exp_id: str) -> dict:
    e = await d.get(R.SHOW_EXPERIMENT.url(id=exp_id, curves=1))
    trials = e.get("runs", [])
    e["curves"] = views.aligned({t["id"]: t.pop("curve", []) for t in trials})
    e["scatter"] = [views.objective_vs(trials, h) for h in views.hyperparameter_names(trials)]
    e["best_yaml"] = views.best_yaml(e)
    return e


async def machine_view(d: Daemon) -> dict:
    status, gpus = await asyncio.gather(d.get(R.STATUS.url()), d.get(R.GPUS.url()))
    return {"status": status, "gpus": gpus["gpus"]}


async def metrics_view(d: Daemon, run_id: str, request: web.Request) -> dict:
    try:
        target = min(max(int(request.query.get("points", views.MAX_POINTS)), 10), 20_000)
    except ValueError:
        raise Refused(400, {"error": {"message": "points: a whole number"}}) from None
    body = await d.get(R.METRICS.url(id=run_id, points=target))  # thinned by the daemon
    points = body["points"]
    return {
        "id": run_id,
        "series": views.series(points, target),
        "last_seq": points[-1]["seq"] if points else 0,
    }


def json_handler(view: Callable[..., Awaitable[dict]], *names: str):
    async def handler(request: web.Request) -> web.Response:
        args = [request.match_info[n] for n in names]
        needs_request = view in (runs_view, metrics_view)
        extra = [request] if needs_request else []
        return web.json_response(await view(daemon_of(request), *args, *extra))

    return handler


# --- live updates (server-sent events) ----------------------------------------------------

Event = tuple[str, object]


async def watch(fetch: Callable[[], Awaitable[object]], name: str, until=None):
    """`fetch`'s answer whenever it changes (looked at every POLL seconds or more), until
    `until(answer)` says it will not change any more. A refusal is sent once, as 'problem'."""
    last = None
    while True:
        began = time.monotonic()
        try:
            value = await fetch()
            problem = None
        except Refused as exc:
            value, problem = None, {"status": exc.status, "message": str(exc)}
        current = json.dumps(value if problem is None else problem, sort_keys=True)
        if current != last:
            last = current
            yield ("problem", problem) if problem else (name, value)
        if problem and problem["status"] in (403, 404):
            return
        if value is not None and until and until(value):
            return
        # a costly look (a filter over 10,000 runs) is taken less often: at most a fifth
        # of the daemon's time goes to one page
        await asyncio.sleep(max(POLL, 4 * (time.monotonic() - began)))


async def follow_log(d: Daemon, run_id: str, offset: int):
    """The run's log from byte `offset`, as text chunks, until the run ends."""
    path = R.LOGS.url(id=run_id, follow=1, offset=offset)
    tail = b""
    with contextlib.suppress(Refused, aiohttp.ClientError):
        async for chunk in d.lines(path):
            data = tail + chunk
            cut = len(data)  # never split a UTF-8 character between two events
            while cut > 0 and cut > len(data) - 4 and (data[cut - 1] & 0xC0) == 0x80:
                cut -= 1
            if cut and data[cut - 1] >= 0xC0:
                cut -= 1
            text, tail = data[:cut], data[cut:]
            if text:
                offset += len(text)
                yield "log", {"text": text.decode(errors="replace"), "offset": offset}


async def follow_metrics(d: Daemon, run_id: str, after: int):
    """New metric points after seq `after`, in batches, until the run ends."""
    path = R.METRICS.url(id=run_id, follow=1, after=after)
    buffer = b""
    with contextlib.suppress(Refused, aiohttp.ClientError):
        async for chunk in d.lines(path):
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            points = [json.loads(line) for line in complete if line.strip()]
            if points:
                yield "metrics", points


async def send_events(request: web.Request, sources: list[AsyncIterator[Event]]):
    """Server-sent events from several sources at once, until the browser leaves."""
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        }
    )
    await resp.prepare(request)
    queue: asyncio.Queue[Event] = asyncio.Queue()

    async def pump(source: AsyncIterator[Event]) -> None:
        async for event in source:
            await queue.put(event)

    tasks = [asyncio.create_task(pump(s)) for s in sources]
    try:
        while True:
            try:
                name, data = await asyncio.wait_for(queue.get(), KEEPALIVE)
                await resp.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
            except TimeoutError:
                await resp.write(b": still here\n\n")
    except (ConnectionResetError, aiohttp.ClientConnectionResetError):
        pass  # the page was closed
    finally:
        for t in tasks:
            t.cancel()
    return resp


def _int_query(request: web.Request, name: str) -> int:
    try:
        return max(int(request.query.get(name, 0)), 0)
    except ValueError:
        raise Refused(400, {"error": {"message": f"{name}: a whole number"}}) from None


async def runs_events(request: web.Request) -> web.StreamResponse:
    d = daemon_of(request)
    return await send_events(request, [watch(lambda: runs_view(d, request), "runs")])


async def run_events(request: web.Request) -> web.StreamResponse:
    d, run_id = daemon_of(request), request.match_info["id"]
    log_offset, after = _int_query(request, "log_offset"), _int_query(request, "after")

    def done(run: dict) -> bool:
        return run["status"] in FINAL and "files" in run

    sources = [
        watch(lambda: run_view(d, run_id), "run", done),
        follow_log(d, run_id, log_offset),
        follow_metrics(d, run_id, after),
    ]
    return await send_events(request, sources)


async def experiment_events(request: web.Request) -> web.StreamResponse:
    d, exp_id = daemon_of(request), request.match_info["id"]
    return await send_events(request, [watch(lambda: experiment_view(d, exp_id), "experiment")])


async def usage_events(request: web.Request) -> web.StreamResponse:
    d = daemon_of(request)
    choice = {k: _q(request, k) or None for k in ("since", "until", "by")}
    return await send_events(request, [watch(lambda: d.get(R.USAGE.url(**choice)), "usage")])


async def machine_events(request: web.Request) -> web.StreamResponse:
    d = daemon_of(request)
    return await send_events(request, [watch(lambda: machine_view(d), "machine")])


# --- the app ------------------------------------------------------------------------------


def make_app(access: Access) -> web.Application:
    app = web.Application(middlewares=[guard], client_max_size=4 * 1024**3)
    app[ACCESS] = access
    r = app.router
    r.add_get("/", index)
    r.add_static("/static/", STATIC, append_version=False)
    r.add_get("/ui/whoami", whoami)
    r.add_get("/ui/runs", json_handler(runs_view))
    r.add_get("/ui/runs/{id}", json_handler(run_view, "id"))
    r.add_get("/ui/runs/{id}/metrics", json_handler(metrics_view, "id"))
    r.add_get("/ui/experiments/{id}", json_handler(experiment_view, "id"))
    r.add_get("/ui/machine", json_handler(machine_view))
    r.add_get("/ui/events/runs", runs_events)
    r.add_get("/ui/events/runs/{id}", run_events)
    r.add_get("/ui/events/experiments/{id}", experiment_events)
    r.add_get("/ui/events/machine", machine_events)
    r.add_get("/ui/events/usage", usage_events)
    r.add_route("*", "/v1/{tail:.*}", forward)

    async def close(app: web.Application) -> None:
        await access.close()

    app.on_cleanup.append(close)
    return app


def new_token() -> str:
    return secrets.token_urlsafe(24)


async def start(
    access: Access, host: str = "127.0.0.1", port: int = 0, tries: int = 1
) -> tuple[web.AppRunner, int]:
    """Listen on host:port (0: any free port; busy: the next of `tries` ports)."""
    runner = web.AppRunner(make_app(access), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    for p in range(port, port + tries) if port else [0]:
        site = web.TCPSite(runner, host, p, reuse_address=True)
        try:
            await site.start()
        except OSError:
            if not port or p == port + tries - 1:
                await runner.cleanup()
                raise
            continue
        bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return runner, bound
    raise AssertionError("unreachable")
