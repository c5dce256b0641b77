"""Metrics for Prometheus (prometheus_client), read from the database at each scrape.

Not counters kept in memory: every figure comes from the state dlaasd keeps (the runs and
the usage table, which outlives `delete`), so a restart loses nothing and the counters
agree with `dlaasctl usage` by construction. Served at GET /v1/metrics on the socket and,
where the config gives `prometheus.address`, on that TCP address.

Not to be confused with dlaasd/metrics.py, which reads the *training* metrics of a run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from aiohttp import web
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .codes import STATUSES

log = logging.getLogger(__name__)

# seconds: from a quick test to a week-long training
BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 86400, 3 * 86400, 7 * 86400)
RESOURCES = {"gpu": "gpu_seconds", "cpu": "cpu_seconds", "memory_gib": "memory_gib_seconds"}


def histogram(
    name: str, doc: str, values: Iterable[float], buckets: Sequence[float] = BUCKETS
) -> HistogramMetricFamily:
    """A histogram of `values` (cumulative buckets, as Prometheus wants them)."""
    values = sorted(values)
    counts, i = [], 0
    for le in buckets:
        while i < len(values) and values[i] <= le:
            i += 1
        counts.append((str(float(le)), i))
    counts.append(("+Inf", len(values)))
    return HistogramMetricFamily(name, doc, buckets=counts, sum_value=sum(values))


class DlaasCollector:
    """Every dlaas_* metric, from the daemon's database and its GPU inventory."""

    def __init__(self, daemon):
        self.daemon = daemon

    def collect(self) -> Iterable[Metric]:
        daemon = self.daemon
        counts = daemon.db.counts()
        runs = GaugeMetricFamily("dlaas_runs", "Runs by status, now", labels=["status"])
        for status in STATUSES:
            runs.add_metric([status], counts.get(status, 0))
        yield runs

        gpus = GaugeMetricFamily("dlaas_gpus", "GPUs of this machine", labels=["state"])
        gpus.add_metric(["total"], len(daemon.gpus.list()))
        gpus.add_metric(["allocated"], len(daemon.held().gpus))
        yield gpus

        q = daemon.db.db.execute
        ended = CounterMetricFamily(
            "dlaas_runs_ended",
            "Runs that reached a final status, by status and error code",
            labels=["status", "error_code"],
        )
        sql = "select status, coalesce(error_code, ''), count(*) from usage group by 1, 2"
        for status, code, n in q(sql):
            ended.add_metric([status, code], n)
        yield ended

        seconds = CounterMetricFamily(
            "dlaas_resource_seconds",
            "Resource-seconds allocated to ended runs (allocation to results stored), by owner "
            "and resource (gpu, cpu, memory_gib); what `dlaasctl usage` reports",
            labels=["owner", "resource"],
        )
        sums = ", ".join(f"total({c})" for c in RESOURCES.values())
        for owner, *values in q(f"select owner_name, {sums} from usage group by owner_name"):
            for resource, value in zip(RESOURCES, values, strict=True):
                seconds.add_metric([owner, resource], value)
        yield seconds

        staged = CounterMetricFamily(
            "dlaas_staging_bytes",
            "Bytes staged by ended runs: training data in (not from the cache), results out",
            labels=["direction"],
        )
        inbound, outbound = q(
            "select total(bytes_staged_in), total(bytes_staged_out) from usage"
        ).fetchone()
        staged.add_metric(["in"], inbound)
        staged.add_metric(["out"], outbound)
        yield staged

        rows = q("select waiting_seconds, allocated_seconds, allocated from usage").fetchall()
        yield histogram(
            "dlaas_run_wait_seconds",
            "Time ended runs waited in the queue before their resources were allocated",
            [w for w, _, allocated in rows if allocated],
        )
        yield histogram(
            "dlaas_run_duration_seconds",
            "Time ended runs held their resources: allocation to results stored",
            [d for _, d, allocated in rows if allocated],
        )


def registry(daemon) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(DlaasCollector(daemon))
    ProcessCollector(registry=reg)  # dlaasd's own CPU, memory, open files
    return reg


def exposition(reg: CollectorRegistry) -> web.Response:
    return web.Response(body=generate_latest(reg), headers={"Content-Type": CONTENT_TYPE_LATEST})


def parse_address(text: str) -> tuple[str, int]:
    """ "127.0.0.1:9464", "[::1]:9464", or a bare port (":9464", "9464") on loopback."""
    host, _, port = text.strip().rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("")
    return host, int(port)


async def serve_tcp(reg: CollectorRegistry, address: str) -> web.AppRunner:
    """GET /metrics (and /v1/metrics) on a TCP address, for a Prometheus server."""

    async def scrape(request: web.Request) -> web.Response:
        return exposition(reg)

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    app.router.add_get("/v1/metrics", scrape)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    host, port = parse_address(address)
    await web.TCPSite(runner, host, port).start()
    log.info("event=prometheus_listening address=%s:%d", host, port)
    return runner
