"""Word when a run or an experiment reaches its final status: a command from the config
(pueue's callback: the facts in its environment) and webhooks (an HTTP POST of the JSON).

At least once, never blocking the queue: the notices to send are written to the `outbox`
table in the same transaction as the final status (Database.on_final), so a daemon
killed right after a run ended sends them when it starts again. A task of their own
delivers them in threads, with a timeout, and retries with backoff until
`notify.retry_for` has passed. Each notice has an idempotency key (the Idempotency-Key
header, DLAAS_IDEMPOTENCY_KEY): the same for every attempt, so a receiver that got one
twice (the daemon died between the POST and marking it sent) can tell.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from . import __version__
from .codes import FINAL
from .records import Run

log = logging.getLogger(__name__)

MAX_DELAY = 300.0  # seconds between attempts, at most
PARALLEL = 8  # notices delivered at once


@dataclass(frozen=True)
class Notice:
    """One message to one target, as kept in the outbox."""

    key: str  # the idempotency key
    kind: str  # "webhook" or "command"
    target: str  # the URL, or the command's first word
    subject: str  # the run's or experiment's id
    payload: dict  # the JSON POSTed; the command gets `env`
    env: dict[str, str]

    def row(self, now: float) -> dict:
        return {
            "key": self.key,
            "kind": self.kind,
            "target": self.target,
            "subject": self.subject,
            "payload": json.dumps(self.payload),
            "env": json.dumps(self.env),
            "attempts": 0,
            "next_try": now,
            "created": now,
        }


def allowed(url: str, prefixes: list[str]) -> bool:
    """Whether a manifest's webhook URL is one the config allows (by prefix)."""
    return any(url.startswith(p) for p in prefixes if p)


def key_of(subject: str, status: str, target: str) -> str:
    digest = hashlib.sha256(f"{subject}\0{status}\0{target}".encode()).hexdigest()[:24]
    return f"{subject}-{status.lower()}-{digest}"


def facts_env(kind: str, facts: dict) -> dict[str, str]:
    """The command's environment: what it needs to say what happened."""
    return {
        "DLAAS_KIND": kind,
        "DLAAS_ID": facts["id"],
        "DLAAS_RUN_ID": facts["id"] if kind == "run" else "",
        "DLAAS_EXPERIMENT_ID": facts.get("experiment_id") or "",
        "DLAAS_NAME": facts.get("name") or "",
        "DLAAS_OWNER": facts.get("owner") or "",
        "DLAAS_STATUS": facts["status"],
        "DLAAS_ERROR_CODE": facts.get("error_code") or "",
        "DLAAS_RESULTS": facts.get("results") or "",
        "DLAAS_MESSAGE": facts.get("status_message") or "",
    }


def notices(
    kind: str,
    facts: dict,
    command: list[str],
    webhooks: list[str],
) -> list[Notice]:
    """The notices one final status makes: the command, and a POST to each webhook."""
    status = facts["status"]
    env = facts_env(kind, facts)
    body = {"event": f"{kind}.{status.lower()}", kind: facts}
    out = []
    if command:
        key = key_of(facts["id"], status, "command")
        out.append(Notice(key, "command", command[0], facts["id"], body, env))
    for url in dict.fromkeys(webhooks):  # each once, in order
        key = key_of(facts["id"], status, url)
        out.append(Notice(key, "webhook", url, facts["id"], body, env))
    return out


def backoff(attempts: int) -> float:
    """Seconds before attempt `attempts + 1`: 1, 2, 4... up to MAX_DELAY."""
    return min(2.0 ** max(attempts - 1, 0), MAX_DELAY)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A webhook goes to the URL the config allowed, not wherever it redirects."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_opener = urllib.request.build_opener(_NoRedirects)


def post(url: str, payload: bytes, key: str, timeout: float) -> None:
    """POST the JSON; any answer but 2xx is an error (raised)."""
    req = urllib.request.Request(
        url,
        data=payload,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Idempotency-Key": key,
            "User-Agent": f"dlaasd/{__version__}",
        },
    )
    with _opener.open(req, timeout=timeout) as resp:
        if not 200 <= resp.status < 300:
            raise OSError(f"answered {resp.status}")


def run_command(command: list[str], env: dict[str, str], key: str, timeout: float) -> None:
    """The config's command with the facts in its environment; exit 0 or an error."""
    done = subprocess.run(
        command,
        env={**os.environ, **env, "DLAAS_IDEMPOTENCY_KEY": key},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
        raise OSError(f"exited with {done.returncode}: {tail[0][:200]}")


class Outbox:
    """Delivers the outbox's notices: a task beside the scheduler, never in its way."""

    def __init__(self, db, settings, wake_every: float = 1.0):
        self.db = db
        self.settings = settings
        self.wake_every = wake_every
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="notifications")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def poke(self) -> None:
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            try:
                await self.deliver_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("event=notify_error")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.wake_every)
            self._wake.clear()

    async def deliver_due(self) -> None:
        due = self.db.outbox_due(time.time(), PARALLEL)
        if due:
            await asyncio.gather(*(self._deliver(row) for row in due))

    async def _deliver(self, row: dict) -> None:
        timeout = self.settings.timeout
        try:
            if row["kind"] == "webhook":
                await asyncio.to_thread(
                    post, row["target"], row["payload"].encode(), row["key"], timeout
                )
            else:
                env = json.loads(row["env"])
                await asyncio.to_thread(
                    run_command, self.settings.command, env, row["key"], timeout
                )
        except (OSError, subprocess.SubprocessError, ValueError) as exc:
            error = _say(exc)
            attempts = row["attempts"] + 1
            if time.time() - row["created"] > self.settings.retry_for:
                self.db.outbox_gave_up(row["id"], attempts, error)
                log.error(
                    "event=notify_gave_up key=%s kind=%s target=%s attempts=%d error=%r",
                    row["key"],
                    row["kind"],
                    row["target"],
                    attempts,
                    error,
                )
                return
            self.db.outbox_retry(row["id"], attempts, time.time() + backoff(attempts), error)
            log.warning(
                "event=notify_retry key=%s target=%s attempt=%d error=%r",
                row["key"],
                row["target"],
                attempts,
                error,
            )
            return
        self.db.outbox_delivered(row["id"])
        log.info("event=notified key=%s kind=%s target=%s", row["key"], row["kind"], row["target"])


def _say(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"answered {exc.code}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__


def final_hook(
    config, describe: Callable[[Run], dict], describe_experiment: Callable[[str], dict | None]
) -> Callable[[object, Run], list[dict]]:
    """What Database.on_final calls in the transaction of a final status: the outbox rows
    for the run, and for its experiment if that was its last trial to end."""
    settings = config.notify

    def rows(db, run: Run) -> list[dict]:
        if not settings.command and not settings.webhooks and not settings.allowed_webhooks:
            return []
        now = time.time()
        facts = describe(run)
        hooks = [*settings.webhooks, *manifest_webhooks(run, settings.allowed_webhooks)]
        out = [n.row(now) for n in notices("run", facts, settings.command, hooks)]
        if run.experiment_id:
            exp = describe_experiment(run.experiment_id)
            if exp and exp["status"] in FINAL:
                out += [
                    n.row(now)
                    for n in notices("experiment", exp, settings.command, settings.webhooks)
                ]
        return out

    return rows


def manifest_webhooks(run: Run, prefixes: list[str]) -> list[str]:
    """The manifest's `notify.webhooks` the config (still) allows."""
    from . import manifest

    try:
        m = manifest.parse(run.manifest or "")
    except manifest.ManifestError:
        return []
    return [u for u in (m.notify.webhooks if m.notify else []) if allowed(u, prefixes)]
