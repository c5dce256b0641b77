from __future__ import annotations

import os
import shutil

import docker
import pytest

from tests.harness import PYTHON_IMAGE, Dlaasd, Minio, short_tmp
from tests.slurm_testbed import SlurmCluster

NOT_ROOT = pytest.StashKey[list[str]]()


def pytest_collection_modifyitems(config, items):
    """Tests marked `alone` run after every other test (they disturb what the others share).
    Tests marked needs_root are skipped for other users, with a reason, and listed in the
    summary: running as a user must not hide that they were left out."""
    items.sort(key=lambda item: item.get_closest_marker("alone") is not None)  # stable
    if os.geteuid() == 0:
        return
    left_out = config.stash.setdefault(NOT_ROOT, [])
    skip = pytest.mark.skip(reason="needs_root: run scripts/test as root to include it")
    for item in items:
        if item.get_closest_marker("needs_root"):
            item.add_marker(skip)
            left_out.append(item.nodeid)


def pytest_terminal_summary(terminalreporter, config):
    left_out = config.stash.get(NOT_ROOT, [])
    if left_out:
        terminalreporter.section("needs root: not run", yellow=True)
        uid = os.geteuid()
        terminalreporter.write_line(
            f"these need root and were not run as uid {uid} (scripts/test as root runs them):"
        )
        for nodeid in left_out:
            terminalreporter.write_line(f"  {nodeid}")


@pytest.fixture(scope="session")
def docker_client():
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.fail(f"the Docker Engine is not reachable ({exc}); start dockerd (CI: .ci/run)")
    try:
        client.images.get(PYTHON_IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"image {PYTHON_IMAGE} is missing; build it with scripts/build-images")
    return client


@pytest.fixture(scope="session")
def minio():
    """One real MinIO server shared by the session's daemons (external store mode)."""
    root = short_tmp("dlaas-minio-")
    server = Minio(root).start()
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def make_daemon(docker_client, minio):
    """Start daemons for one test; each is stopped and cleaned up afterwards."""
    started: list[Dlaasd] = []
    roots = []

    def make(
        start: bool = True, bundled: bool = False, server: Minio | None = None, **kw
    ) -> Dlaasd:
        """bundled: dlaasd starts its own MinIO; server: another MinIO than the shared one;
        other keywords are config sections merged over the test defaults."""
        root = short_tmp("dlaas-t-")
        roots.append(root)
        d = Dlaasd(root, None if bundled else (server or minio), **kw)
        started.append(d)
        return d.start() if start else d

    yield make
    for d in started:
        d.cleanup()
    for root in roots:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def daemon(docker_client, minio):
    """A daemon shared by the tests of one module (the runs do not interfere)."""
    root = short_tmp("dlaas-m-")
    d = Dlaasd(root, minio).start()
    yield d
    d.cleanup()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def slurm():
    """A real Slurm cluster (munged, slurmctld, slurmd node1 and node2 with two fake GPUs
    each), started once for the session; SLURM_CONF points the clients and daemons at it."""
    cluster = SlurmCluster(short_tmp("dlaas-slurm-")).start()
    before = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    yield cluster
    if before is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = before
    cluster.stop()


@pytest.fixture(scope="session")
def kube():
    """A real Kubernetes control plane with Kueue and fake GPU nodes (tests/k8s_testbed.py).
    Fails, with the command that builds them, where its programs are not built."""
    from tests.k8s_testbed import KubeTestbed

    root = short_tmp("dlaas-k8s-")
    try:
        testbed = KubeTestbed(root).start()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield testbed
    testbed.stop()
    shutil.rmtree(root, ignore_errors=True)
