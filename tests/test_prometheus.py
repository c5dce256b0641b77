"""GET /v1/metrics on a real daemon: parsed with prometheus_client's own parser, its
counters agree with `dlaasctl usage`, and the same on the configured TCP address."""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dlaasd.minio_server import free_port
from tests.harness import manifest, model

pytestmark = pytest.mark.integration


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """(sample name, sorted labels) -> value, of every sample of an exposition."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_parse_and_agree_with_usage(make_daemon, tmp_path):
    port = free_port()
    d = make_daemon(simulate_gpus=2, prometheus={"address": f"127.0.0.1:{port}"})
    ok = d.submit(model(tmp_path / "ok", manifest("echo hi > $RESULT_DIR/out.txt", gpus=1)))
    bad = d.submit(model(tmp_path / "bad", manifest("exit 3")))
    assert d.wait(ok)["status"] == "COMPLETED" and d.wait(bad)["error_code"] == "C201"
    holding = d.submit(model(tmp_path / "h", manifest("sleep 60", gpus=2)))
    d.wait(holding, "PROCESSING")
    waiting = d.submit(model(tmp_path / "w", manifest("sleep 60", gpus=1)))  # no GPU left

    text = d.api.request("GET", "/v1/metrics").read().decode()
    m = samples(text)
    report = d.ctl_json("usage")
    total = report["total"]
    assert m[("dlaas_runs_ended_total", (("error_code", ""), ("status", "COMPLETED")))] == 1
    assert m[("dlaas_runs_ended_total", (("error_code", "C201"), ("status", "FAILED")))] == 1
    owner = report["runs"][0]["owner_name"]
    for resource, key in (("gpu", "gpu_seconds"), ("cpu", "cpu_seconds")):
        labels = (("owner", owner), ("resource", resource))
        assert m[("dlaas_resource_seconds_total", labels)] == pytest.approx(total[key], abs=0.01)
    assert total["gpu_seconds"] > 0
    assert m[("dlaas_gpus", (("state", "total"),))] == 2
    assert m[("dlaas_gpus", (("state", "allocated"),))] == 2
    assert m[("dlaas_runs", (("status", "PROCESSING"),))] == 1
    assert m[("dlaas_runs", (("status", "COMPLETED"),))] == 1
    assert m[("dlaas_runs", (("status", "QUEUED"),))] == 1
    assert m[("dlaas_run_wait_seconds_count", ())] == 2
    assert m[("dlaas_run_duration_seconds_count", ())] == 2
    assert m[("dlaas_run_duration_seconds_sum", ())] == pytest.approx(
        sum(r["allocated_seconds"] for r in report["runs"]), abs=0.01
    )
    assert m[("dlaas_staging_bytes_total", (("direction", "out"),))] > 0

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        tcp = samples(r.read().decode())
    assert tcp[("dlaas_runs_ended_total", (("error_code", "C201"), ("status", "FAILED")))] == 1
    d.ctl("halt", waiting)
    d.ctl("halt", holding)
