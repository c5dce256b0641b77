"""The local executor's Docker client: one connection pool for the engine's socket.

docker-py keys its pools by URL, and each container's id makes new URLs: without the
shared pool every call on a new container built a pool and opened a socket (most of
the CPU a short run cost the daemon)."""

from __future__ import annotations

import docker.errors
import pytest

from dlaasd.executors.local import LocalExecutor


def test_calls_on_different_containers_share_one_pool_and_connection():
    api = LocalExecutor("test-pool").client.api
    for name in ("dlaas-test-pool-a", "dlaas-test-pool-b", "dlaas-test-pool-c"):
        with pytest.raises(docker.errors.NotFound):
            api.inspect_container(name)  # a request each, on a URL of its own
    adapter = api.get_adapter(api.base_url)
    assert len(adapter.pools) == 1
    (key,) = adapter.pools.keys()
    pool = adapter.pools[key]
    idle = [c for c in list(pool.pool.queue) if c is not None]
    assert len(idle) == 1  # one socket, kept alive between the calls
    assert api.trust_env is False  # no proxy lookup on a Unix socket
