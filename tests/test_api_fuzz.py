"""The API contract under fuzzing: schemathesis reads a real daemon's /v1/openapi.json and
sends the requests it generates from it (valid and invalid) over the daemon's socket.
No answer may be a server error, every status must be one the document declares for its
route, and every body must fit the declared schema.

Bounded for CI: a few dozen examples per operation, no shrinking. The daemon has a tiny
capacity, so a generated manifest that happened to be valid would be refused (C104), not
start containers; one seeded run and experiment give the fuzzer real ids to hit.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
import requests_unixsocket
import schemathesis
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from dlaasd.api import ENDPOINTS
from dlaasd.openapi import document
from tests.harness import Dlaasd, Minio, manifest, model, short_tmp

pytestmark = [pytest.mark.integration, pytest.mark.fuzz]

BASE = "http://dlaasd"  # DaemonSocket sends it to the socket
EXAMPLES = int(os.environ.get("DLAAS_FUZZ_EXAMPLES", "30"))  # per operation
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
    unsupported_method,
]


@pytest.fixture(scope="module")
def fuzzed(docker_client, tmp_path_factory):
    """A daemon with one finished run and one experiment; then with a tiny capacity. Its
    own MinIO: the buckets the fuzzer makes stay out of the other tests' way."""
    root = short_tmp("dlaas-f-")
    (root / "minio").mkdir()
    store = Minio(root / "minio")
    d = Dlaasd(root, store)
    try:  # stopped and removed even when the seeding fails
        store.start()
        yield seeded(d.start(), tmp_path_factory.mktemp("fuzz"))
    finally:
        d.cleanup()
        store.stop()
        shutil.rmtree(root, ignore_errors=True)


def seeded(d: Dlaasd, tmp: Path) -> Dlaasd:
    run_id = d.submit(model(tmp / "m", manifest("echo hi > $RESULT_DIR/out.txt")))
    d.wait(run_id)
    spec = {
        "name": "fuzz-seed",
        "manifest": manifest("echo fine", cpus=0.5),
        "hyper_parameters": [{"name": "lr", "double_values": [0.1]}],
        "method": "grid",
        "objective": {"name": "loss", "maximize_or_minimize": "minimize"},
    }
    (tmp / "experiment.yml").write_text(yaml.safe_dump(spec))
    exp_id = d.ctl_json("experiment", "run", str(tmp / "experiment.yml"))["id"]
    for trial in d.api.json("GET", f"/v1/experiments/{exp_id}")["runs"]:
        d.wait(trial["id"])
    d.stop()
    d.settings["capacity"] = {"cpus": 0.1, "memory": "8MiB"}
    d.start()
    d.seeded = {"id": [run_id, exp_id], "bucket": ["fuzz-data"]}
    d.api.request("PUT", "/v1/data/fuzz-data/a/b.txt", body=b"hello").read()
    return d


class DaemonSocket(requests_unixsocket.UnixAdapter):
    """Sends every request of a session to the daemon's socket (the URL's host is only a
    name: schemathesis joins paths onto an http:// base)."""

    def __init__(self, socket: Path):
        super().__init__()
        self.socket_url = "http+unix://" + quote(str(socket), safe="")

    def get_connection(self, url, proxies=None):
        return super().get_connection(self.socket_url, proxies)


@pytest.fixture(scope="module")
def session(fuzzed):
    with requests.Session() as s:
        s.mount(BASE, DaemonSocket(fuzzed.socket))
        yield s


@pytest.fixture(scope="module")
def api_schema(fuzzed, session):
    doc = session.get(BASE + "/v1/openapi.json").json()  # the daemon's own document
    schema = schemathesis.openapi.from_dict(doc)
    schema.config.update(base_url=BASE)

    @schema.hook
    def flatmap_path_parameters(context, path_parameters):
        """Often an id or bucket that exists, so that the fuzzer gets past the 404."""
        if not path_parameters:
            return st.just(path_parameters)
        real = {
            k: st.sampled_from([v, *fuzzed.seeded[k]])
            for k, v in path_parameters.items()
            if k in fuzzed.seeded
        }
        return st.fixed_dictionaries(
            {**{k: st.just(v) for k, v in path_parameters.items()}, **real}
        )

    return schema


# every operation of the route table: the test fails if the daemon's document lacks one
OPERATIONS = [(m, p) for p, ops in document(ENDPOINTS)["paths"].items() for m in ops]


@pytest.mark.parametrize("method, path", OPERATIONS)
def test_api_contract(api_schema, session, fuzzed, method, path):
    operation = api_schema[path][method]
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )

    @given(case=cases)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        phases=[Phase.generate],  # no shrinking: a failure is reported as it was found
        suppress_health_check=list(HealthCheck),
        derandomize=True,  # the same requests every run
        database=None,
    )
    def send(case):
        case.call_and_validate(session=session, checks=CHECKS, timeout=30)

    send()
    assert fuzzed.proc.poll() is None, fuzzed.log_tail()  # and it still serves
