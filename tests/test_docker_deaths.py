"""A container's end, from the Docker Engine's event stream (its `die` event comes before
the engine answers a wait call), with the engine's own wait whenever the stream may have
missed it."""

from __future__ import annotations

import os
import threading
import time

import pytest

from dlaasd.executors import LABEL_DAEMON, Exit, LearnerSpec, Mount, local
from dlaasd.executors._deaths import Deaths
from dlaasd.executors.local import LocalExecutor
from dlaasd.runfolder import IN_CONTAINER, RunFolder
from tests.harness import PYTHON_IMAGE

pytestmark = pytest.mark.integration


@pytest.fixture
def label():
    return f"test-deaths-{os.getpid()}-{time.monotonic_ns()}"


@pytest.fixture
def containers(docker_client, label):
    """Start a container with the daemon label, `sh -c command`; removed afterwards."""
    made = []

    def start(command: str) -> str:
        c = docker_client.containers.run(
            PYTHON_IMAGE,
            ["sh", "-c", command],
            labels={LABEL_DAEMON: label},
            network_mode="none",
            detach=True,
        )
        made.append(c)
        return c.id

    yield start
    for c in made:
        c.remove(force=True)


def test_the_stream_gives_a_containers_exit_code_to_each_ask_until_it_is_removed(
    docker_client, containers, label
):
    deaths = Deaths(lambda: docker_client.api, f"{LABEL_DAEMON}={label}")
    watched = deaths.watching()
    assert watched, "the event stream did not subscribe"
    ok, failed = containers("sleep 0.5"), containers("exit 3")
    docker_client.api.wait(failed)  # dead before anyone asks: kept for the ask
    assert deaths.exit_code(failed, watched, 10) == 3
    assert deaths.exit_code(ok, watched, 10) == 0
    assert deaths.exit_code(ok, watched, 0.2) == 0  # asked again (a run resumed): at once
    deaths.forget(ok)  # removed: nothing kept of it
    with pytest.raises(TimeoutError):
        deaths.exit_code(ok, watched, 0.2)


def test_a_waiter_is_told_to_ask_the_engine_when_the_stream_ends(docker_client, containers, label):
    deaths = Deaths(lambda: docker_client.api, f"{LABEL_DAEMON}={label}")
    watched = deaths.watching()
    running = containers("sleep 30")
    with pytest.raises(TimeoutError):
        deaths.exit_code(running, watched, 0.2)
    answer: list[int | None] = []
    waiter = threading.Thread(target=lambda: answer.append(deaths.exit_code(running, watched, 20)))
    waiter.start()
    time.sleep(0.2)
    deaths.stream.close()  # as when the engine stops
    waiter.join(5)
    assert answer == [None]  # not an exit code: the engine's wait answers it
    # subscribed again, a container started under the old subscription is not watched
    deadline = time.monotonic() + 10
    while deaths.watching() in (0, watched):
        assert time.monotonic() < deadline, "the stream did not subscribe again"
        time.sleep(0.1)
    assert deaths.exit_code(running, watched, 5) is None
    again = deaths.watching()
    short = containers("exit 7")
    assert deaths.exit_code(short, again, 10) == 7


def spec(folder: RunFolder, command: str, label: str) -> LearnerSpec:
    logs = folder.learner_logs(1)
    logs.mkdir(parents=True, exist_ok=True)
    return LearnerSpec(
        run_id=f"deaths-{label[-8:]}",
        learner=1,
        learners=1,
        image=PYTHON_IMAGE,
        command=command,
        env={**IN_CONTAINER, "LOG_DIR": f"/job/{logs.relative_to(folder.job)}", "HOME": "/tmp"},
        user=f"{os.getuid()}:{os.getgid()}",  # the folder's owner
        cpus=0.5,
        memory=256 * 1024**2,
        mounts=(Mount(str(folder.job), "/job", False),),
    )


@pytest.mark.parametrize("stream", ["up", "down", "dropped"])
def test_the_executor_ends_a_learner_with_its_exit_either_way(
    docker_client, tmp_path, label, stream, monkeypatch
):
    folder = RunFolder(tmp_path / "run")
    folder.prepare()
    executor = LocalExecutor(label)
    engines_wait = executor.client.api.wait
    if stream == "up":  # an exit 0 comes from the stream alone
        waited_for = []
        monkeypatch.setattr(
            executor.client.api,
            "wait",
            lambda c, **kw: waited_for.append(c) or engines_wait(c, **kw),
        )
    if stream == "down":  # never subscribed: every wait is the engine's
        monkeypatch.setattr(executor._deaths, "watching", lambda: 0)
    if stream == "dropped":  # the engine dropped every event: the look finds the end
        monkeypatch.setattr(local, "LOOK_EVERY", 0.2)
        original = executor._deaths.exit_code

        def dropped(container, subscription, timeout):
            if timeout is None:
                return original(container, subscription, None)  # a halt's wait: not here
            time.sleep(timeout)
            raise TimeoutError

        monkeypatch.setattr(executor._deaths, "exit_code", dropped)
    try:
        (ok,) = executor.start([spec(folder, "true", label)])
        assert executor.wait(ok, 30) == Exit(0, False, "", started=True)
        if stream == "up":
            assert ok not in waited_for
        executor.remove(ok)
        (failed,) = executor.start([spec(folder, "exit 4", label)])
        ended = executor.wait(failed, 30)
        assert ended is not None and ended.code == 4 and ended.started
        executor.remove(failed)
        (slow,) = executor.start([spec(folder, "sleep 30", label)])
        assert executor.wait(slow, 0.5) is None  # the timeout passed
    finally:
        for _, handle in executor.leftovers():
            executor.remove(handle)


def test_two_waiters_on_one_container_both_get_its_end(docker_client, containers, label):
    """A run resumed while a wait of its earlier attempt still runs in its thread."""
    deaths = Deaths(lambda: docker_client.api, f"{LABEL_DAEMON}={label}")
    watched = deaths.watching()
    running = containers("sleep 1; exit 5")
    answers: list[int | None] = []
    waiters = [
        threading.Thread(target=lambda: answers.append(deaths.exit_code(running, watched, 20)))
        for _ in range(2)
    ]
    for waiter in waiters:
        waiter.start()
    for waiter in waiters:
        waiter.join(25)
    assert answers == [5, 5]
