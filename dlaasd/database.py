"""SQLite state through sqlite-utils: runs and their status history. The only writer.

WAL mode, so readers (the API) never wait for the scheduler's writes. JSON columns
(gpus, staging, outcome) are decoded on the way out.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from collections.abc import Callable, Generator, Iterable
from datetime import UTC, datetime
from pathlib import Path

import sqlite_utils
from sqlite_utils.db import jsonify_if_needed

from . import accounting
from .codes import FINAL, Status
from .errors import Ambiguous, NotFound
from .records import Event, Experiment, Run, RunSummary, from_row
from .scheduler import Request

log = logging.getLogger(__name__)

JSON_COLUMNS = ("gpus", "staging", "outcome", "hyperparameters", "warnings", "measured")
# What a listing shows: not the manifest, staging or outcome, which only `show` needs.
SUMMARY = (
    "id, name, owner_uid, owner_name, status, status_message, error_code, exit_code, gpus, "
    "priority, "
    "cpus, memory, gpu_count, gpu_type, learners, framework, image, submitted, started, "
    "completed, results, experiment_id, halt_requested, halt_reason, hyperparameters"
)

RUN_COLUMNS = {
    "id": str,
    "name": str,
    "description": str,
    "owner_uid": int,
    "owner_name": str,
    "status": str,
    "status_message": str,
    "error_code": str,
    "exit_code": int,
    "gpus": str,  # JSON list of GPU UUIDs, kept after the run for history
    "cpus": float,  # in all (every learner)
    "memory": int,  # bytes, in all
    "gpu_count": int,  # in all
    "gpu_type": str,
    "learners": int,
    "framework": str,
    "image": str,
    "manifest": str,  # the YAML text as submitted
    "submitted": str,
    "started": str,
    "completed": str,
    "halt_requested": int,
    "halt_reason": str,
    "outcome": str,  # JSON: the final status decided when training ended, set in STORING
    "results": str,  # s3://bucket/prefix/
    "staging": str,  # JSON: transfer statistics
    "experiment_id": str,
    "hyperparameters": str,  # JSON, for experiment trials
    "source": str,  # "api" or "inbox:<name>"
    "warnings": str,  # JSON list: what submit said about the manifest
    "measured": str,  # JSON: learner -> what its container used (dlaasd/measure.py)
    "priority": int,  # higher starts first (fair_share); FIFO within a priority
}

OUTBOX_COLUMNS = {
    "id": int,
    "key": str,  # the idempotency key
    "kind": str,  # webhook | command
    "target": str,
    "subject": str,  # the run's or experiment's id
    "payload": str,  # JSON
    "env": str,  # JSON
    "attempts": int,
    "next_try": float,  # epoch seconds
    "created": float,
    "delivered": float,
    "gave_up": float,
    "last_error": str,
}

# One row per ended run, kept after `delete` (Slurm's accounting outlives its jobs).
USAGE_COLUMNS = {
    "run_id": str,
    "name": str,
    "owner_uid": int,
    "owner_name": str,
    "experiment_id": str,
    "framework": str,
    "status": str,
    "error_code": str,
    "gpus": int,
    "cpus": float,
    "memory": int,
    "submitted": str,
    "allocated": str,
    "ended": str,
    "waiting_seconds": float,
    "staging_in_seconds": float,
    "training_seconds": float,
    "storing_seconds": float,
    "allocated_seconds": float,
    "gpu_seconds": float,
    "cpu_seconds": float,
    "memory_gib_seconds": float,
    "cpu_used_seconds": float,
    "memory_peak_bytes": int,
    "gpu_utilization": float,
    "bytes_staged_in": int,
    "bytes_staged_out": int,
    "learners": str,  # JSON list of accounting.LearnerUsage
}


EXPERIMENT_COLUMNS = {
    "id": str,
    "name": str,
    "description": str,
    "owner_uid": int,
    "owner_name": str,
    "spec": str,  # the experiment file as submitted (YAML)
    "objective": str,  # the metric's name
    "goal": str,  # maximize | minimize
    "method": str,
    "trials": int,
    "submitted": str,
    "halt_requested": int,
}


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class Database:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        # every manifest and status is in it: dlaasd's user alone reads it (SQLite gives the
        # -wal and -shm files the database's mode); an older dlaasd's 0644 is tightened
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600))
        for part in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            if part.exists() and not part.is_symlink():
                os.chmod(part, 0o600)
        # one thread only (the event loop): SQLite would serialise, but sqlite-utils'
        # savepoints interleave; the check turns such a slip into a clear error
        conn = sqlite3.connect(str(path))
        self.db = sqlite_utils.Database(conn)
        self.db.enable_wal()
        self.db.execute("PRAGMA synchronous=NORMAL")  # WAL keeps this crash-safe
        self.db.execute("PRAGMA busy_timeout=5000")
        runs = self.db.table("runs")
        if not runs.exists():
            runs.create(RUN_COLUMNS, pk="id", defaults={"halt_requested": 0})
        else:  # a database from an older dlaasd: add the columns it lacks
            for name, kind in RUN_COLUMNS.items():
                if name not in runs.columns_dict:
                    runs.add_column(name, kind)
        runs.create_index(["status"], if_not_exists=True)
        # the queue's two lines in the order they start: a decision reads a line's head only
        self.db.execute(
            "create index if not exists runs_queue "
            "on runs(status, gpu_count > 0, coalesce(priority, 0) desc)"
        )
        runs.create_index(["experiment_id"], if_not_exists=True)
        runs.create_index(["source"], if_not_exists=True)
        metrics = self.db.table("metrics")  # time series of every run's metrics
        if not metrics.exists():
            metrics.create({"run_id": str, "step": int, "name": str, "value": float, "time": float})
        metrics.create_index(["run_id", "name", "step"], if_not_exists=True)
        experiments = self.db.table("experiments")
        if not experiments.exists():
            experiments.create(EXPERIMENT_COLUMNS, pk="id", defaults={"halt_requested": 0})
        mirrored = self.db.table("mirrored")  # files of the drop folder's data/ already uploaded
        if not mirrored.exists():
            mirrored.create({"path": str, "size": int, "mtime_ns": int}, pk="path")
        events = self.db.table("events")
        if not events.exists():
            events.create({"run_id": str, "time": str, "status": str, "message": str})
        events.create_index(["run_id"], if_not_exists=True)
        usage = self.db.table("usage")
        if not usage.exists():  # a database from before accounting: its ended runs too
            usage.create(USAGE_COLUMNS, pk="run_id")
            finals = list(FINAL)
            marks = ", ".join("?" * len(finals))
            ended = self.db.execute(f"select id from runs where status in ({marks})", finals)
            with self.db.conn:
                for (run_id,) in ended.fetchall():
                    usage.insert(_usage_row(self.usage_now(run_id)))
        for name, kind in USAGE_COLUMNS.items():  # from an older dlaasd
            if name not in usage.columns_dict:
                usage.add_column(name, kind)
        usage.create_index(["ended"], if_not_exists=True)
        outbox = self.db.table("outbox")  # notices of final statuses still to deliver
        if not outbox.exists():
            outbox.create(OUTBOX_COLUMNS, pk="id")
        outbox.create_index(["key"], unique=True, if_not_exists=True)
        outbox.create_index(["delivered", "next_try"], if_not_exists=True)
        # called in the transaction of a final status: the outbox rows it makes
        self.on_final: list[Callable[[Database, Run], list[dict]]] = []

    # --- reading ---------------------------------------------------------------

    def get(self, run_id: str) -> Run:
        rows = list(self.db.query("select * from runs where id = ?", [run_id]))
        if not rows:
            raise NotFound(f"no run {run_id!r}")
        return from_row(Run, _decode(rows[0]))

    def value(self, run_id: str, column: str):
        """One plain column of a run: what a loop that polls needs, without the whole row."""
        row = self.db.execute(f"select {column} from runs where id = ?", [run_id]).fetchone()
        if row is None:
            raise NotFound(f"no run {run_id!r}")
        return row[0]

    def resolve(self, ref: str, table: str = "runs") -> str:
        """A full id, or a unique prefix of one, with or without "training-" (or
        "experiment-" for table experiments)."""
        kind = "training" if table == "runs" else "experiment"
        if self.db.execute(f"select 1 from {table} where id = ?", [ref]).fetchone():
            return ref
        found: set[str] = set()
        for prefix in {ref, f"{kind}-{ref}"}:
            sql = f"select id from {table} where substr(id, 1, ?) = ? limit 5"
            found.update(r[0] for r in self.db.execute(sql, [len(prefix), prefix]))
        if not found:
            raise NotFound(f"no {kind} {ref!r}")
        if len(found) > 1:
            raise Ambiguous(f"{ref!r} names several: {', '.join(sorted(found))}", sorted(found))
        return found.pop()

    def runs(
        self,
        limit: int = 50,
        offset: int = 0,
        status: Iterable[str] | None = None,
        experiment_id: str | None = None,
        owner_uid: int | None = None,
        newest_first: bool = True,
    ) -> tuple[list[RunSummary], int]:
        where: list[str] = []
        params: list[str | int] = []
        if status:
            status = list(status)
            where.append(f"status in ({', '.join('?' * len(status))})")
            params += status
        if experiment_id:
            where.append("experiment_id = ?")
            params.append(experiment_id)
        if owner_uid is not None:
            where.append("owner_uid = ?")
            params.append(owner_uid)
        clause = (" where " + " and ".join(where)) if where else ""
        order = "desc" if newest_first else "asc"
        total = self.db.execute(f"select count(*) from runs{clause}", params).fetchone()[0]
        rows = self.db.query(
            f"select {SUMMARY} from runs{clause} order by rowid {order} limit ? offset ?",
            [*params, limit, offset],
        )
        return [from_row(RunSummary, _decode(r)) for r in rows], total

    def any_queued(self) -> bool:
        return (
            self.db.execute("select 1 from runs where status = 'QUEUED' limit 1").fetchone()
            is not None
        )

    def queued(self) -> list[Request]:
        """What the QUEUED runs ask for, in submit order (the scheduler asks every pass)."""
        sql = (
            "select id, gpu_count, cpus, memory, gpu_type, owner_name, priority, submitted "
            "from runs where status = 'QUEUED' order by rowid"
        )
        at = datetime.now(UTC)
        return [
            Request(i, g, c, m, t or "", o or "", p or 0, (at - _time(s)).total_seconds())
            for i, g, c, m, t, o, p, s in self.db.execute(sql)
        ]

    def queue_line(self, gpus: bool) -> Generator[Request, None, None]:
        """The QUEUED runs that ask for GPUs (or for none), in the order they start
        (priority, then submit order), read lazily through the runs_queue index (close it
        to release its cursor when not read to the end)."""
        sql = (
            "select id, gpu_count, cpus, memory, gpu_type, owner_name, priority, submitted "
            "from runs where status = 'QUEUED' and (gpu_count > 0) = ? "
            "order by coalesce(priority, 0) desc, rowid"
        )
        at = datetime.now(UTC)
        cursor = self.db.execute(sql, [int(gpus)])
        try:
            for i, g, c, m, t, o, p, s in cursor:
                waited = (at - _time(s)).total_seconds()
                yield Request(i, g, c, m, t or "", o or "", p or 0, waited)
        finally:
            cursor.close()

    def in_status(self, statuses: Iterable[str]) -> list[RunSummary]:
        wanted = list(statuses)
        marks = ", ".join("?" * len(wanted))
        sql = f"select {SUMMARY} from runs where status in ({marks}) order by rowid"
        return [from_row(RunSummary, _decode(r)) for r in self.db.query(sql, wanted)]

    def holding(self, statuses: Iterable[str]) -> list[tuple[str, str, float, int, list[str]]]:
        """(id, owner's name, CPUs, memory, GPU UUIDs) of the runs in `statuses`: what a
        scheduling pass reads of the placed runs, without making a record of each."""
        wanted = list(statuses)
        marks = ", ".join("?" * len(wanted))
        sql = f"select id, owner_name, cpus, memory, gpus from runs where status in ({marks})"
        return [
            (i, o or "", c or 0.0, m or 0, json.loads(g) if g else [])
            for i, o, c, m, g in self.db.execute(sql, wanted)
        ]

    def owners(self, unfinished: bool = False) -> dict[str, int]:
        """run id -> the owner's uid, of every run (`unfinished`: of those not ended)."""
        sql = "select id, owner_uid from runs"
        if unfinished:
            sql += f" where status not in ({', '.join('?' * len(FINAL))})"
        return dict(self.db.execute(sql, list(FINAL) if unfinished else []).fetchall())

    def owner_uid(self, run_id: str) -> int | None:
        row = self.db.execute("select owner_uid from runs where id = ?", [run_id]).fetchone()
        return row[0] if row else None

    def exists(self, run_id: str) -> bool:
        return self.db.execute("select 1 from runs where id = ?", [run_id]).fetchone() is not None

    def manifests(self) -> list[tuple[str, str]]:
        """(run id, manifest text) of every run: what an upgrade goes through."""
        return self.db.execute("select id, manifest from runs").fetchall()

    def experiment_specs(self) -> list[tuple[str, str]]:
        """(experiment id, spec text) of every experiment: what an upgrade goes through."""
        return self.db.execute("select id, spec from experiments").fetchall()

    def scrub(self) -> None:
        """Leave no copy of what was overwritten (an upgrade's secrets) in the database's
        free pages or its WAL: rewrite it, then empty the WAL."""
        self.db.execute("VACUUM")
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def by_source(self, source: str) -> str | None:
        row = self.db.execute("select id from runs where source = ?", [source]).fetchone()
        return row[0] if row else None

    def mirrored(self) -> dict[str, tuple[int, int]]:
        rows = self.db.table("mirrored").rows
        return {r["path"]: (r["size"], r["mtime_ns"]) for r in rows}

    def mark_mirrored(self, path: str, size: int, mtime_ns: int) -> None:
        self.db.table("mirrored").upsert(
            {"path": path, "size": size, "mtime_ns": mtime_ns}, pk="path"
        )

    def events(self, run_id: str) -> list[Event]:
        sql = "select time, status, message from events where run_id = ? order by rowid"
        return [Event(t, Status(s), m) for t, s, m in self.db.execute(sql, [run_id])]

    def counts(self) -> dict[str, int]:
        return dict(self.db.execute("select status, count(*) from runs group by status").fetchall())

    # --- writing ---------------------------------------------------------------

    def insert_run(self, row: dict) -> None:
        row = {
            **row,
            "submitted": row.get("submitted") or now(),
            "status": row.get("status", "QUEUED"),
        }
        with self.db.conn:
            self.db.table("runs").insert(_encode(row))
            self._event(row["id"], row["status"], row.get("status_message", ""))

    def update(self, run_id: str, **fields) -> None:
        self._set(run_id, _encode(fields))

    def _set(self, run_id: str, fields: dict) -> None:
        """One UPDATE of a run's columns (named by the code, never by a user).
        sqlite-utils' update reads the table's schema twice and the row first: three
        statements more on every status change, note and figure."""
        if not fields:
            return
        sets = ", ".join(f"[{k}] = ?" for k in fields)
        args = [jsonify_if_needed(v) for v in fields.values()]
        with self.db.atomic():
            cursor = self.db.execute(f"update runs set {sets} where id = ?", [*args, run_id])
            if cursor.rowcount != 1:
                raise NotFound(f"no run {run_id!r}")

    def transition(self, run_id: str, status: str, message: str = "", **fields) -> Run | None:
        """Move a run to `status`, recording the event; final statuses stamp `completed`
        and return the run as it ended (read for its usage and notices anyway)."""
        fields = {"status": status, "status_message": message, **fields}
        if status in FINAL and "completed" not in fields:
            fields["completed"] = now()
        with self.db.conn:
            self._set(run_id, _encode(fields))
            self._event(run_id, status, message)
            if status in FINAL:  # in the same transaction: no ended run without its usage
                run = self.get(run_id)
                self._save_usage(_usage_row(self.usage_now(run_id, run)))
                # nor without its notices (at least once)
                for hook in self.on_final:
                    try:
                        rows = hook(self, run)
                    except Exception:  # no notice is worth a run's final status
                        log.exception("event=on_final_failed run=%s", run_id)
                        continue
                    for row in rows:
                        self.db.table("outbox").insert(row, ignore=True)  # a key once
                return run
        return None

    def _save_usage(self, row: dict) -> None:
        """A run's usage row, made or replaced in one statement (sqlite-utils' upsert
        reads the table's schema first)."""
        names = ", ".join(f"[{k}]" for k in row)
        marks = ", ".join("?" * len(row))
        sets = ", ".join(f"[{k}] = excluded.[{k}]" for k in row if k != "run_id")
        self.db.execute(
            f"insert into usage ({names}) values ({marks}) "
            f"on conflict(run_id) do update set {sets}",
            [jsonify_if_needed(v) for v in row.values()],
        )

    def note(self, run_id: str, message: str) -> None:
        """Update the status message without a status change (retries, progress)."""
        self._set(run_id, {"status_message": message})

    def _event(self, run_id: str, status: str, message: str) -> None:
        self.db.execute(
            "insert into events (run_id, time, status, message) values (?, ?, ?, ?)",
            [run_id, now(), status, message],
        )

    def delete(self, run_id: str) -> None:
        with self.db.conn:
            self.db.execute("delete from events where run_id = ?", [run_id])
            self.db.execute("delete from metrics where run_id = ?", [run_id])
            self.db.execute("delete from runs where id = ?", [run_id])

    # --- usage -----------------------------------------------------------------------

    def usage_now(self, run_id: str, run: Run | None = None) -> accounting.Usage:
        """A run's usage from its status history (up to now, if it has not ended);
        `run`: its record, if the caller read it already."""
        events = self.db.execute(
            "select time, status from events where run_id = ? order by rowid", [run_id]
        ).fetchall()
        return accounting.usage_of(run or self.get(run_id), events)

    def usage(self, run_id: str) -> dict | None:
        """The usage kept for an ended run (also after `delete`), else None."""
        rows = list(self.db.query("select * from usage where run_id = ?", [run_id]))
        return _usage_json(rows[0]) if rows else None

    def usage_rows(
        self, since: str | None = None, until: str | None = None, owner_uid: int | None = None
    ) -> list[dict]:
        """The usage of runs that ended in [since, until), oldest first."""
        where: list[str] = []
        params: list[str | int] = []
        if since:
            where.append("ended >= ?")
            params.append(since)
        if until:
            where.append("ended < ?")
            params.append(until)
        if owner_uid is not None:
            where.append("owner_uid = ?")
            params.append(owner_uid)
        clause = (" where " + " and ".join(where)) if where else ""
        sql = f"select * from usage{clause} order by ended, run_id"
        return [_usage_json(r) for r in self.db.query(sql, params)]

    # --- notifications (dlaasd/notifications.py) ----------------------------------------

    def outbox_due(self, now: float, limit: int) -> list[dict]:
        sql = (
            "select * from outbox where delivered is null and gave_up is null and next_try <= ?"
            " order by next_try, id limit ?"
        )
        return list(self.db.query(sql, [now, limit]))

    def outbox(self, subject: str) -> list[dict]:
        return list(self.db.query("select * from outbox where subject = ? order by id", [subject]))

    def outbox_delivered(self, row_id: int) -> None:
        with self.db.conn:
            self.db.table("outbox").update(row_id, {"delivered": datetime.now(UTC).timestamp()})

    def outbox_retry(self, row_id: int, attempts: int, next_try: float, error: str) -> None:
        with self.db.conn:
            self.db.table("outbox").update(
                row_id, {"attempts": attempts, "next_try": next_try, "last_error": error}
            )

    def outbox_gave_up(self, row_id: int, attempts: int, error: str) -> None:
        with self.db.conn:
            self.db.table("outbox").update(
                row_id,
                {
                    "attempts": attempts,
                    "gave_up": datetime.now(UTC).timestamp(),
                    "last_error": error,
                },
            )

    # --- metrics ----------------------------------------------------------------------

    def add_metrics(self, run_id: str, points: list) -> None:
        with self.db.conn:
            self.db.conn.executemany(
                "insert into metrics (run_id, step, name, value, time) values (?, ?, ?, ?, ?)",
                [(run_id, p.step, p.name, p.value, p.time) for p in points],
            )

    def clear_metrics(self, run_id: str) -> None:
        with self.db.conn:
            self.db.execute("delete from metrics where run_id = ?", [run_id])

    def metrics(self, run_id: str, after: int = 0, name: str | None = None) -> list[dict]:
        """Points in the order they came; `after` a rowid, to fetch only newer ones."""
        sql = (
            "select rowid as seq, step, name, value, time from metrics"
            " where run_id = ? and rowid > ?"
        )
        params: list = [run_id, after]
        if name:
            sql += " and name = ?"
            params.append(name)
        return list(self.db.query(sql + " order by rowid", params))

    def metric_names(self, run_ids: Iterable[str]) -> list[str]:
        ids = list(run_ids)
        marks = ", ".join("?" * len(ids))
        sql = f"select distinct name from metrics where run_id in ({marks}) order by name"
        return [r[0] for r in self.db.execute(sql, ids)]

    def curves(self, run_ids: Iterable[str], name: str) -> dict[str, list[tuple[int, float]]]:
        """(step, value) of metric `name` for each run, in the order reported."""
        ids = list(run_ids)
        out: dict[str, list[tuple[int, float]]] = {i: [] for i in ids}
        marks = ", ".join("?" * len(ids))
        sql = (
            f"select run_id, step, value from metrics where run_id in ({marks}) and name = ? "
            "order by rowid"
        )
        for run_id, step, value in self.db.execute(sql, [*ids, name]):
            out[run_id].append((step, value))
        return out

    # --- experiments ------------------------------------------------------------------

    def insert_experiment(self, row: dict) -> None:
        with self.db.conn:
            self.db.table("experiments").insert({**row, "submitted": row.get("submitted") or now()})

    def experiment(self, exp_id: str) -> Experiment:
        rows = list(self.db.query("select * from experiments where id = ?", [exp_id]))
        if not rows:
            raise NotFound(f"no experiment {exp_id!r}")
        return from_row(Experiment, rows[0])

    def experiments(self, limit: int = 50) -> list[Experiment]:
        sql = "select * from experiments order by rowid desc limit ?"
        return [from_row(Experiment, r) for r in self.db.query(sql, [limit])]

    def update_experiment(self, exp_id: str, **fields) -> None:
        self.db.table("experiments").update(exp_id, fields)


def _usage_row(u: accounting.Usage) -> dict:
    row = u.to_json()
    row.pop("final")
    row["learners"] = json.dumps(row["learners"])
    return row


def _usage_json(row: dict) -> dict:
    return {**row, "final": True, "learners": json.loads(row["learners"] or "[]")}


def _encode(row: dict) -> dict:
    return {k: json.dumps(v) if k in JSON_COLUMNS and v is not None else v for k, v in row.items()}


def _decode(row: dict) -> dict:
    for k in JSON_COLUMNS:
        if row.get(k):
            row[k] = json.loads(row[k])
    return row
