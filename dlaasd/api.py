"""The REST API: aiohttp on the Unix socket. Thin handlers over the verbs (verbs/).

Every client mistake gets a 4xx with a JSON body {"error": {"message", "code"?,
"problems"?}}; bad input never gets a 500. The socket is 0600 (0660 with a group).
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import io
import json
import logging
import os
import shutil
import socket
import stat
import struct
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import BadHttpMessage

from dlaasctl import routes
from dlaasctl.routes import FLAGS, MAX_LIMIT, MAX_OFFSET, MAX_POSITION, MAX_PRIORITY, Route
from dlaasctl.ui import views

from . import accounting, diskspace, openapi, prometheus
from .access import Caller
from .codes import STATUSES, Code, Status
from .daemon import Daemon

if TYPE_CHECKING:  # dashboard.py imports this module
    from .dashboard import Dashboard
from .doctor import run_checks
from .errors import (
    Conflict,
    DlaasError,
    Forbidden,
    Internal,
    Invalid,
    NotFound,
    RunError,
    TooLarge,
    Unavailable,
)
from .objectstore import InvalidName, StoreUnavailable
from .runfolder import RunFolder, open_beneath
from .verbs import artifacts, data, delete, describe, experiments, halt
from .verbs import priority as priority_verb
from .verbs import status as status_verb
from .verbs import submit as submit_verb
from .verbs import usage as usage_verb
from .verbs.context import Context, visible_run

log = logging.getLogger(__name__)

DAEMON = web.AppKey("daemon", Daemon)
PROMETHEUS = web.AppKey("prometheus", prometheus.CollectorRegistry)
MAX_MANIFEST = 1024 * 1024
MAX_MODEL = 4 * 1024**3
# the text parts of the multipart forms, the required one first
RUN_PARTS = ("manifest",)
EXPERIMENT_PARTS = ("experiment", "manifest")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Endpoint:
    """A route of the table dlaasctl shares (dlaasctl/routes.py: method, path, query
    parameters), the handler that serves it, and what the OpenAPI document says of it."""

    route: Route
    handler: Handler
    body: str | None = None  # request body, in words
    returns: str = "application/json"
    schema: str | None = None  # of the JSON body on success, in openapi.SCHEMAS
    ok: int = 200
    errors: tuple[int, ...] = ()  # statuses it may answer besides `ok` (openapi.ERRORS)
    parts: tuple[str, ...] = ()  # a multipart body's text parts, the required one first
    streams: bool = False  # follow=1 streams JSON lines instead


ACTING_AS = "dlaas.acting_as"  # set only on the dashboard's private socket (dashboard.py)
# the app's dashboard, where the config enables one
DASHBOARD: web.AppKey[Dashboard] = web.AppKey("dashboard")


def caller_of(request: web.Request) -> Caller:
    """Who is on the other end of the socket (SO_PEERCRED), or whom the daemon's own
    dashboard asks for."""
    acting = request.get(ACTING_AS)
    if acting is not None:
        return acting
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if sock is None or sock.family != socket.AF_UNIX:
        return daemon_of(request).caller(os.geteuid(), os.getegid())
    fmt = "3i"
    _, uid, gid = struct.unpack(
        fmt, sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize(fmt))
    )
    return daemon_of(request).caller(uid, gid)


def context_of(request: web.Request) -> Context:
    """What the verbs need to serve this request, its caller included."""
    return daemon_of(request).context(caller_of(request))


def _int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise Invalid(f"query parameter {name!r}: found {raw!r}; expected a whole number") from None
    if not lo <= value <= hi:
        raise Invalid(f"query parameter {name!r}: found {value}; expected {lo} to {hi}")
    return value


def _flag(request: web.Request, name: str, default: bool = False) -> bool:
    raw = request.query.get(name)
    if raw is None:
        return default
    if raw not in FLAGS:
        raise Invalid(f"query parameter {name!r}: found {raw!r}; expected 1 or 0")
    return FLAGS[raw]


def daemon_of(request: web.Request) -> Daemon:
    return request.app[DAEMON]


# --- handlers ------------------------------------------------------------------------


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def status(request: web.Request) -> web.Response:
    return web.json_response(await status_verb.status(context_of(request)))


async def doctor(request: web.Request) -> web.Response:
    return web.json_response({"checks": await run_checks(context_of(request))})


async def gpus(request: web.Request) -> web.Response:
    return web.json_response({"gpus": status_verb.gpu_list(context_of(request))})


@contextlib.asynccontextmanager
async def form(request: web.Request, texts: tuple[str, ...], incoming: Path):
    """A multipart form: small text parts (a manifest, an experiment file) in memory, and
    the model archive streamed to a file in `incoming` (removed afterwards, unless it was
    taken)."""
    expected = f"the parts {', '.join(repr(t) for t in texts)} and, optionally, 'model' (a zip)"
    # the header as sent: aiohttp's content_type parses it with the email package (~1 ms)
    if not request.headers.get("Content-Type", "").lower().startswith("multipart/"):
        raise Invalid(f"send multipart/form-data with {expected}")
    incoming.mkdir(parents=True, exist_ok=True)
    parts: dict[str, bytes] = {}
    model: list[Path] = []  # where the archive is being written, once it is
    try:
        try:
            await _read_form(request, texts, incoming, parts, model)
        except (ValueError, BadHttpMessage) as exc:  # aiohttp's word on a malformed body
            raise Invalid(
                f"the multipart body is malformed ({_first_line(exc)}); send "
                f"multipart/form-data with a boundary in the Content-Type header and {expected}, "
                "each part with a Content-Disposition header naming it",
            ) from None
        yield parts, (model[0] if model else None)
    finally:
        for path in model:
            path.unlink(missing_ok=True)


def _incoming(ctx: Context) -> Path:
    """Where uploaded model archives are written, beside the runs they are moved into."""
    return ctx.config.state_path / "runs" / ".incoming"


async def _read_form(
    request: web.Request,
    texts: tuple[str, ...],
    incoming: Path,
    parts: dict[str, bytes],
    model: list[Path],
) -> None:
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            raise Invalid("a form part is itself multipart; send each part as plain bytes")
        if part.name in texts:
            if part.name in parts:
                raise Invalid(f"the {part.name!r} part appears twice; send it once")
            text = bytearray()
            while chunk := await part.read_chunk(64 * 1024):  # never more than the limit held
                text += chunk
                if len(text) > MAX_MANIFEST:
                    raise TooLarge(f"the {part.name} is larger than 1 MiB")
            parts[part.name] = bytes(text)
        elif part.name == "model" and not model:
            fd, name = tempfile.mkstemp(dir=incoming, suffix=".zip")
            model.append(Path(name))
            size = 0
            with os.fdopen(fd, "wb") as out:
                while chunk := await part.read_chunk(1024 * 1024):
                    size += len(chunk)
                    if size > MAX_MODEL:
                        raise TooLarge(
                            "the model archive is larger than 4 GiB; keep "
                            "data in the object store, not in the model code",
                        )
                    out.write(chunk)
        else:
            expected = ", ".join(repr(t) for t in (*texts, "model"))
            what = "appears twice" if part.name == "model" else "is not expected"
            raise Invalid(f"the form part {part.name!r} {what}; send {expected} once each")


def _first_line(exc: Exception) -> str:
    """aiohttp's HTTP errors start with '400, message:' and put the reason on a new line."""
    text = exc.message if isinstance(exc, BadHttpMessage) else str(exc)
    return " ".join(text.split()) or type(exc).__name__


async def submit(request: web.Request) -> web.Response:
    ctx = context_of(request)
    async with form(request, RUN_PARTS, _incoming(ctx)) as (parts, model):
        if "manifest" not in parts:
            raise Invalid("the 'manifest' part is missing")
        priority = _int(request, "priority", 0, -MAX_PRIORITY, MAX_PRIORITY)
        given = priority if "priority" in request.query else None
        result = await submit_verb.submit(ctx, parts["manifest"], model, priority=given)
    return web.json_response(result, status=201)


async def set_priority(request: web.Request) -> web.Response:
    if "priority" not in request.query:
        raise Invalid("query parameter 'priority' is missing; give a whole number")
    priority = _int(request, "priority", 0, -MAX_PRIORITY, MAX_PRIORITY)
    ctx = context_of(request)
    run = priority_verb.set_priority(ctx, request.match_info["id"], priority)
    return web.json_response(describe.describe(ctx, run, full=False))


async def list_runs(request: web.Request) -> web.Response:
    limit = _int(request, "limit", 50, 1, MAX_LIMIT)
    offset = _int(request, "offset", 0, 0, MAX_OFFSET)
    statuses = [s.upper() for s in request.query.getall("status", []) for s in s.split(",") if s]
    bad = [s for s in statuses if s not in STATUSES]
    if bad:
        raise Invalid(
            f"query parameter 'status': {bad[0]!r} is not a status; allowed: {', '.join(STATUSES)}",
        )
    runs, total = describe.runs(
        context_of(request),
        limit,
        offset,
        [Status(s) for s in statuses],
        request.query.get("experiment"),
    )
    return web.json_response({"runs": runs, "total": total, "limit": limit, "offset": offset})


async def show_run(request: web.Request) -> web.Response:
    return web.json_response(describe.show(context_of(request), request.match_info["id"]))


async def delete_run(request: web.Request) -> web.Response:
    ctx, purge = context_of(request), _flag(request, "purge")
    return web.json_response(await delete.delete(ctx, request.match_info["id"], purge=purge))


async def halt_run(request: web.Request) -> web.Response:
    ctx = context_of(request)
    run = await halt.halt(ctx, request.match_info["id"])
    return web.json_response(describe.describe(ctx, run, full=False))


async def logs(request: web.Request) -> web.StreamResponse:
    """The training log; with follow=1, streamed until the run ends."""
    ctx = context_of(request)
    run = visible_run(ctx, request.match_info["id"], "logs")
    learner = _int(request, "learner", 1, 1, max(run.learners or 1, 1))
    follow = _flag(request, "follow")
    pos = _int(request, "offset", 0, 0, MAX_POSITION)  # where a dropped stream left off
    folder, path = artifacts.log_file(ctx, run, learner)
    resp = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
    await resp.prepare(request)
    while True:
        ended = describe.ended(ctx, run.id)  # read before the file: nothing is missed
        pos = await _send_from(resp, folder, path, pos)
        if not follow or ended:
            break
        await ctx.wait_change(run.id, 0.2)
    await resp.write_eof()
    return resp


async def _send_from(resp: web.StreamResponse, folder: RunFolder, path: Path, pos: int) -> int:
    try:
        with folder.open(path) as f:
            f.seek(pos)
            while chunk := f.read(256 * 1024):
                await resp.write(chunk)
                pos += len(chunk)
    except FileNotFoundError:
        pass
    return pos


async def list_artifacts(request: web.Request) -> web.Response:
    kind = "definition" if request.path.rstrip("/").endswith("/definition") else "results"
    ctx = context_of(request)
    return web.json_response(await artifacts.listing(ctx, request.match_info["id"], kind))


async def get_artifact(request: web.Request) -> web.StreamResponse:
    kind = "definition" if "/definition/" in request.path else "results"
    ctx = context_of(request)
    where = await artifacts.file(ctx, request.match_info["id"], kind, request.match_info["path"])
    if isinstance(where, artifacts.Local):
        return await _stream_local(request, where.root, where.path, kind)
    return await _stream_object(request, where.objects, where.bucket, where.prefix)


async def _stream_local(
    request: web.Request, root: Path, path: Path, kind: str
) -> web.StreamResponse:
    """A file of the run's folder, read through a descriptor opened without following a
    link: the run's owner (and its training) may swap a listed file for one meanwhile."""
    try:
        f = await asyncio.to_thread(open_beneath, root, path.relative_to(root))
    except FileNotFoundError:
        raise NotFound(f"{root.name} has no {kind} file {path.name!r} (any more)") from None
    with f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise NotFound(f"{root.name} has no {kind} file {path.name!r}: not a file")
        left = st.st_size  # what Content-Length says, even if the file grows meanwhile

        def chunks():
            nonlocal left
            while left > 0 and (chunk := f.read(min(left, 1024 * 1024))):
                left -= len(chunk)
                yield chunk

        return await _send(request, str(st.st_size), chunks())


async def _stream_object(
    request: web.Request, objects, bucket: str, key: str
) -> web.StreamResponse:
    try:
        obj = await asyncio.to_thread(objects.get, bucket, key)
    except RunError as exc:
        gone = exc.code == Code.DOWNLOAD_FAILED
        raise (NotFound if gone else Forbidden)(exc.message) from None
    try:
        length = obj.headers.get("Content-Length", "")
        return await _send(request, length, obj.stream(1024 * 1024))
    finally:
        obj.close()
        obj.release_conn()


async def _send(request: web.Request, length: str, chunks) -> web.StreamResponse:
    """Stream bytes (the same type whatever the file's name), each read in a thread."""
    resp = web.StreamResponse(
        headers={"Content-Type": "application/octet-stream", "Content-Length": length}
    )
    await resp.prepare(request)
    while chunk := await asyncio.to_thread(next, chunks, b""):
        await resp.write(chunk)
    await resp.write_eof()
    return resp


# --- data in the object store ----------------------------------------------------------


async def data_buckets(request: web.Request) -> web.Response:
    return web.json_response({"buckets": await data.list_buckets(context_of(request))})


async def data_list(request: web.Request) -> web.Response:
    """The objects under a prefix; with missing=empty, a bucket not there yet lists none."""
    prefix = request.query.get("prefix", "")
    recursive = _flag(request, "recursive", default=True)
    missing = request.query.get("missing")
    if missing not in (None, "empty"):
        raise Invalid(f"query parameter 'missing': found {missing!r}; expected 'empty'")
    name = request.match_info["bucket"]
    ctx = context_of(request)
    listed = await data.list_objects(ctx, name, prefix, recursive, missing_ok=missing == "empty")
    return web.json_response(listed)


class _BodyReader(io.RawIOBase):
    """A request body as a blocking file, for the SDK's upload in a worker thread."""

    def __init__(self, content, loop: asyncio.AbstractEventLoop):
        self.content = content
        self.loop = loop

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        coro = self.content.read(n if n and n > 0 else 1024 * 1024)
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()


async def data_put(request: web.Request) -> web.Response:
    ctx = context_of(request)
    key = data.checked_key(ctx, request.match_info["key"], write=True)
    if request.content_length is None:
        raise web.HTTPLengthRequired(text="send a Content-Length")
    reader = _BodyReader(request.content, asyncio.get_running_loop())
    name, size = request.match_info["bucket"], request.content_length
    return web.json_response(await data.put(ctx, name, key, reader, size), status=201)


async def data_get(request: web.Request) -> web.StreamResponse:
    ctx = context_of(request)
    where = data.locate(ctx, request.match_info["bucket"], request.match_info["key"])
    return await _stream_object(request, where.objects, where.bucket, where.prefix)


async def run_metrics(request: web.Request) -> web.StreamResponse:
    """A run's metric points; with follow=1, new ones as JSON lines until the run ends."""
    ctx = context_of(request)
    run = visible_run(ctx, request.match_info["id"], "metrics")
    after = _int(request, "after", 0, 0, MAX_POSITION)
    name = request.query.get("name") or None
    most = _int(request, "points", 0, 10, 1_000_000)
    if not _flag(request, "follow"):
        points = describe.metrics(ctx, run.id, after, name)
        if most:  # a chart's worth, not the whole series (the dashboard's long runs)
            points = views.thin(points, most)
        return web.json_response({"id": run.id, "status": run.status, "points": points})
    resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await resp.prepare(request)
    while True:
        ended = describe.ended(ctx, run.id)  # before reading: nothing is missed
        for point in describe.metrics(ctx, run.id, after, name):
            await resp.write(json.dumps(point).encode() + b"\n")
            after = point["seq"]
        if ended:
            break
        await ctx.wait_change(run.id, 0.5)
    await resp.write_eof()
    return resp


# --- experiments -----------------------------------------------------------------------


async def create_experiment(request: web.Request) -> web.Response:
    ctx = context_of(request)
    async with form(request, EXPERIMENT_PARTS, _incoming(ctx)) as (parts, model):
        if "experiment" not in parts:
            raise Invalid("the 'experiment' part is missing")
        result = await experiments.create(ctx, parts["experiment"], parts.get("manifest"), model)
    return web.json_response(result, status=201)


async def list_experiments(request: web.Request) -> web.Response:
    limit = _int(request, "limit", 50, 1, MAX_LIMIT)
    return web.json_response({"experiments": experiments.summaries(context_of(request), limit)})


async def show_experiment(request: web.Request) -> web.Response:
    ctx, curves = context_of(request), _flag(request, "curves")
    return web.json_response(experiments.show(ctx, request.match_info["id"], curves))


async def halt_experiment(request: web.Request) -> web.Response:
    ctx = context_of(request)
    return web.json_response(await experiments.halt(ctx, request.match_info["id"]))


async def prometheus_metrics(request: web.Request) -> web.Response:
    return prometheus.exposition(request.app[PROMETHEUS])


def _bound(request: web.Request, name: str) -> str | None:
    raw = request.query.get(name)
    try:
        return accounting.parse_bound(raw) if raw else None
    except (ValueError, OverflowError, OSError):
        raise Invalid(
            f"query parameter {name!r}: found {raw!r}; expected a date or time such as "
            "2026-11-30 or 2026-11-30T12:00:00Z, or a duration ago such as 7d or 12h",
        ) from None


async def usage(request: web.Request) -> web.Response:
    """Usage of the runs that ended in a period: the caller's own, everyone's for root
    and the admin group."""
    by = request.query.get("by", "owner")
    since, until = _bound(request, "since"), _bound(request, "until")
    return web.json_response(usage_verb.usage(context_of(request), since, until, by))


async def dashboard_url(request: web.Request) -> web.Response:
    """The caller's own URL of the daemon's dashboard (a token of their own)."""
    dashboard = request.app.get(DASHBOARD)
    if dashboard is None:
        raise NotFound(
            "this daemon serves no dashboard (its config has no dashboard.address); "
            "run `dlaasctl ui` for one of your own",
        )
    return web.json_response(dashboard.url_for(caller_of(request)))


async def openapi_doc(request: web.Request) -> web.Response:
    return web.json_response(openapi.document(ENDPOINTS))


ENDPOINTS = [
    Endpoint(routes.HEALTH, health, schema="Health"),
    Endpoint(routes.STATUS, status, schema="Status"),
    Endpoint(routes.GPUS, gpus, schema="Gpus"),
    Endpoint(routes.DOCTOR, doctor, schema="Doctor"),
    Endpoint(
        routes.SUBMIT,
        submit,
        body="multipart/form-data: 'manifest' (manifest.yml), 'model' (zip, optional)",
        parts=RUN_PARTS,
        schema="Submitted",
        ok=201,
        errors=(400, 413, 507),
    ),
    Endpoint(routes.LIST_RUNS, list_runs, schema="RunList", errors=(400,)),
    Endpoint(routes.SHOW_RUN, show_run, schema="Run", errors=(400, 403, 404)),
    Endpoint(
        routes.DELETE_RUN, delete_run, schema="Deleted", errors=(400, 403, 404, 409, 503, 507)
    ),
    Endpoint(routes.HALT_RUN, halt_run, schema="RunSummary", errors=(400, 403, 404, 409, 507)),
    Endpoint(
        routes.SET_PRIORITY, set_priority, schema="RunSummary", errors=(400, 403, 404, 409, 507)
    ),
    Endpoint(routes.LOGS, logs, returns="text/plain", errors=(400, 403, 404)),
    Endpoint(routes.RESULTS, list_artifacts, schema="Files", errors=(400, 403, 404)),
    Endpoint(
        routes.RESULT_FILE,
        get_artifact,
        returns="application/octet-stream",
        errors=(400, 403, 404, 503),
    ),
    Endpoint(routes.DEFINITION, list_artifacts, schema="Files", errors=(400, 403, 404)),
    Endpoint(
        routes.DEFINITION_FILE,
        get_artifact,
        returns="application/octet-stream",
        errors=(400, 403, 404, 503),
    ),
    Endpoint(routes.METRICS, run_metrics, schema="Metrics", streams=True, errors=(400, 403, 404)),
    Endpoint(
        routes.CREATE_EXPERIMENT,
        create_experiment,
        body="multipart/form-data: 'experiment' (YAML), 'manifest' (when the experiment names "
        "a file), 'model' (zip, optional)",
        parts=EXPERIMENT_PARTS,
        schema="ExperimentCreated",
        ok=201,
        errors=(400, 413, 507),
    ),
    Endpoint(routes.LIST_EXPERIMENTS, list_experiments, schema="ExperimentList", errors=(400,)),
    Endpoint(routes.SHOW_EXPERIMENT, show_experiment, schema="Experiment", errors=(400, 403, 404)),
    Endpoint(
        routes.HALT_EXPERIMENT, halt_experiment, schema="Experiment", errors=(400, 403, 404, 507)
    ),
    Endpoint(routes.BUCKETS, data_buckets, schema="Buckets", errors=(400, 503)),
    Endpoint(routes.OBJECTS, data_list, schema="Objects", errors=(400, 403, 404, 503)),
    Endpoint(
        routes.PUT_OBJECT,
        data_put,
        body="the object's bytes, with Content-Length",
        schema="Uploaded",
        ok=201,
        errors=(400, 403, 411, 503, 507),
    ),
    Endpoint(
        routes.GET_OBJECT, data_get, returns="application/octet-stream", errors=(400, 403, 404, 503)
    ),
    Endpoint(routes.USAGE, usage, schema="Usage", errors=(400,)),
    Endpoint(routes.DASHBOARD, dashboard_url, schema="DashboardUrl", errors=(404,)),
    Endpoint(routes.PROMETHEUS, prometheus_metrics, returns="text/plain"),
    Endpoint(routes.OPENAPI, openapi_doc, schema="OpenAPI"),
]
# the handler of each route of the shared table
SERVES = {e.route: e for e in ENDPOINTS}


@web.middleware
async def json_errors(request: web.Request, handler):
    try:
        return await handler(request)
    except DlaasError as exc:
        return web.json_response(error_body(exc), status=http_status(exc))
    except InvalidName as exc:  # a name our own checks let through: still the caller's
        return web.json_response(error_body(Invalid(str(exc))), status=400)
    except StoreUnavailable as exc:
        down = Unavailable(f"the object store is unavailable: {exc}")
        return web.json_response(error_body(down), status=http_status(down))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
        if exc.status == 404:
            message = f"no such route: {request.method} {request.path}; see /v1/openapi.json"
        elif exc.status == 405:
            message = f"{request.method} is not allowed on {request.path}"
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return web.json_response({"error": {"message": message}}, status=exc.status, headers=allow)
    except (ConnectionResetError, asyncio.CancelledError):
        raise
    except Exception as exc:
        if diskspace.is_disk_full(exc):  # the request itself was fine: say what to free
            state = daemon_of(request).config.state_path
            log.error("event=disk_full path=%s error=%r", request.path, str(exc))
            error = diskspace.error(state, f"taking {request.method} {request.path}")
            return web.json_response(error_body(error), status=http_status(error))
        log.exception("event=api_error path=%s", request.path)
        internal = Internal(f"internal error: {exc}")
        return web.json_response(error_body(internal), status=http_status(internal))


# no room: not the request's fault
NO_SPACE = frozenset({Code.UPLOAD_FAILED, Code.DISK_FULL})


def http_status(exc: DlaasError) -> int:
    """The one place a domain error becomes an HTTP status."""
    if isinstance(exc, RunError):
        return 507 if exc.code in NO_SPACE else 400
    for kind, status in HTTP_STATUS:
        if isinstance(exc, kind):
            return status
    return 500


HTTP_STATUS: tuple[tuple[type[DlaasError], int], ...] = (
    (TooLarge, 413),  # before Invalid, which it is
    (Invalid, 400),
    (Forbidden, 403),
    (NotFound, 404),
    (Conflict, 409),
    (Unavailable, 503),
    (Internal, 500),
)


def error_body(exc: DlaasError) -> dict:
    """{"error": {"message", "code"?, "problems"?, "warnings"?}}: components/schemas/Error."""
    body: dict = {"message": exc.message}
    if exc.code:
        body["code"] = exc.code
    if exc.problems:
        body["problems"] = [p.to_json() for p in exc.problems]
    if exc.warnings:
        body["warnings"] = exc.warnings
    return {"error": body}


def make_app(daemon: Daemon) -> web.Application:
    app = web.Application(middlewares=[json_errors], client_max_size=MAX_MANIFEST * 2)
    app[DAEMON] = daemon
    app[PROMETHEUS] = prometheus.registry(daemon)
    for route in routes.ROUTES:  # a route without a handler fails here, at start
        app.router.add_route(route.method, route.path, SERVES[route].handler)
    return app


async def serve(app: web.Application, path: Path, group: str = "") -> web.AppRunner:
    """Listen on the Unix socket, never world-accessible: 0600, or 0660 for `group`."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755 if group else 0o700)
    if path.exists() or path.is_symlink():
        if _in_use(path):
            raise SystemExit(f"dlaasd: another daemon is listening on {path}")
        path.unlink()
    # at shutdown, open `logs --follow` streams are cut after a second, not waited for
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    # Bound in a folder of its own (0700), given its mode, then moved into place: no moment
    # where the socket is open to others. Not with umask: that is the whole process's, and
    # runs resumed at start make their folders in threads meanwhile.
    staging = Path(tempfile.mkdtemp(prefix=".s", dir=path.parent))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        bound = staging / "s"
        sock.bind(str(bound))
        if group:
            os.chown(bound, -1, grp.getgrnam(group).gr_gid)
        os.chmod(bound, 0o660 if group else 0o600)
        os.rename(bound, path)
    except BaseException:
        sock.close()
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    await web.SockSite(runner, sock).start()
    return runner


def _in_use(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(str(path))
            return True
        except OSError:
            return False
