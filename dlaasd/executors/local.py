"""The local executor: Docker on this machine, through docker-py. A learner is a
container; its handle is the container's id.

Every container carries the label `dlaas.run-id`, so a restarted daemon finds the runs
it left. The training's output goes to $LOG_DIR/training-log.txt from inside the
container, so it keeps being written while the daemon is down.

All calls block; the phases run them in threads.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, NamedTuple

import docker
import docker.errors
import requests
from docker.transport.unixconn import UnixHTTPAdapter
from docker.types import DeviceRequest, Mount

from .. import measure
from ..codes import Code
from ..errors import RunError
from ..learners import entrypoint
from . import (
    LABEL_DAEMON,
    LABEL_LEARNER,
    LABEL_RUN,
    Executor,
    ExecutorUnavailable,
    Exit,
    Found,
    Health,
    LearnerSpec,
)
from ._deaths import Deaths

if TYPE_CHECKING:
    from ..config import Config

log = logging.getLogger(__name__)


def create(config: Config, daemon_label: str) -> LocalExecutor:
    return LocalExecutor(daemon_label)


class DockerUnavailable(ExecutorUnavailable):
    place = "the Docker Engine"


class LocalExecutor(Executor):
    places_runs = False  # dlaasd's FIFO places runs on this machine's GPUs
    stages_data = False  # the daemon stages in and out, in the run's folder

    def __init__(self, daemon_label: str = "") -> None:
        self.daemon_label = daemon_label
        self._client: docker.DockerClient | None = None
        self._images_seen: dict[str, float] = {}
        # containers this daemon's life started (api.start answered): an exit 0 of one
        # needs no inspection, nor its removal a look at its network
        self._started: dict[str, _Started] = {}
        self._deaths = Deaths(lambda: self.client.api, f"{LABEL_DAEMON}={daemon_label}")

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            try:
                # DOCKER_HOST is honoured; the pool is as large as the waits that may block
                self._client = docker.from_env(timeout=60, max_pool_size=256)
                _one_pool(self._client.api)
            except docker.errors.DockerException as exc:
                raise DockerUnavailable(_docker_hint(exc)) from exc
        return self._client

    def health(self) -> Health:
        try:
            version = self.client.version()
            return Health(True, version.get("Version", "?"))
        except (DockerUnavailable, docker.errors.DockerException, requests.RequestException) as exc:
            self._client = None
            return Health(False, _docker_hint(exc))

    # --- images ----------------------------------------------------------------

    def image_present(self, image: str, fresh: bool = False) -> bool:
        """Unless `fresh`, seen in the last 5 minutes counts: one inspect less for each
        submit and start (an image removed since then fails the create with S103 anyway)."""
        seen = self._images_seen.get(image)
        if seen and not fresh and time.monotonic() - seen < 300:
            return True
        try:
            self.client.api.inspect_image(image)  # low-level: no Image object made
        except docker.errors.ImageNotFound:
            return False
        except requests.RequestException as exc:
            raise DockerUnavailable(_docker_hint(exc)) from exc
        self._images_seen[image] = time.monotonic()
        return True

    def prepare(self, image: str, pull: bool) -> None:
        if self.image_present(image):
            return
        if not pull:
            raise RunError(
                Code.IMAGE_MISSING,
                f"image {image!r} is not on this machine and pulling is off "
                "(containers.pull_missing_images); build or pull it first",
            )
        log.info("event=image_pull image=%s", image)
        try:
            repo, _, tag = (
                image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "latest")
            )
            self.client.images.pull(repo, tag=tag)
        except (docker.errors.DockerException, requests.RequestException) as exc:
            raise RunError(
                Code.IMAGE_MISSING,
                f"image {image!r} is not on this machine and could not be "
                f"pulled ({_first_line(exc)}); build it (scripts/build-images) or map "
                "the framework to an image you have in the config",
            ) from exc

    # --- containers ------------------------------------------------------------

    def start(self, specs: Sequence[LearnerSpec]) -> list[str]:
        started: list[str] = []
        try:
            for spec in specs:
                if spec.learners > 1 and not spec.network_mode:
                    spec = replace(spec, network_mode=self._run_network(spec))
                started.append(self._start(spec))
        except RunError:
            for cid in started:
                self.remove(cid)
            raise
        return started

    def _run_network(self, spec: LearnerSpec) -> str:
        """The run's own network, where its learners reach each other by container name:
        internal (no route out) unless the manifest may use the network. Made once per
        run (Docker would take a second of the same name)."""
        name = f"dlaas-{spec.run_id}"
        api = self.client.api
        try:
            if not api.networks(filters={"label": f"{LABEL_RUN}={spec.run_id}"}):
                labels = {LABEL_RUN: spec.run_id, LABEL_DAEMON: self.daemon_label}
                api.create_network(name, driver="bridge", internal=not spec.network, labels=labels)
        except docker.errors.APIError as exc:  # before requests' errors: it is one of them
            raise RunError(
                Code.CONTAINER_NOT_STARTED,
                f"the run's network could not be made: {_first_line(exc)}",
            ) from exc
        except requests.RequestException as exc:
            raise DockerUnavailable(_docker_hint(exc)) from exc
        return name

    def _start(self, spec: LearnerSpec) -> str:
        """Create and start a container; return its id. RunError S101 if it cannot start.

        The low-level API: the high-level one inspects after every call, and a run's start
        is on the path a user waits on."""
        api = self.client.api
        device_requests = []
        if spec.gpus:
            device_requests.append(
                DeviceRequest(device_ids=list(spec.gpus), capabilities=[["gpu"]])
            )
        host_config = api.create_host_config(
            network_mode=spec.network_mode or ("bridge" if spec.network else "none"),
            cap_drop=["ALL"],
            cap_add=list(spec.cap_add) or None,
            security_opt=["no-new-privileges"],
            init=True,  # tini forwards halt's SIGTERM to the whole process group
            nano_cpus=int(spec.cpus * 1e9),
            mem_limit=spec.memory,
            memswap_limit=spec.memory,  # no swap: over the limit is an OOM kill (C202)
            shm_size=max(64 * 1024**2, spec.memory // 4),
            pids_limit=spec.pids_limit,
            mounts=[
                Mount(target=m.target, source=m.source, type="bind", read_only=m.read_only)
                for m in spec.mounts
            ],
            device_requests=device_requests or None,
            log_config={"type": "json-file", "config": {"max-size": "1m"}},
        )
        create: dict[str, Any] = dict(
            image=spec.image,
            entrypoint=entrypoint(spec.command),
            name=spec.name,
            labels={
                **spec.labels,
                LABEL_RUN: spec.run_id,
                LABEL_LEARNER: str(spec.learner),
                LABEL_DAEMON: self.daemon_label,
            },
            environment={**spec.env, "TINI_KILL_PROCESS_GROUP": "1"},
            working_dir=spec.env["MODEL_DIR"],
            user=spec.user,
            host_config=host_config,
        )
        try:
            try:
                cid: str = api.create_container(**create)["Id"]
            except docker.errors.APIError as exc:
                if exc.status_code != 409:
                    raise
                api.remove_container(spec.name, force=True)  # left by an attempt that died
                cid = api.create_container(**create)["Id"]
        except docker.errors.ImageNotFound as exc:
            raise RunError(
                Code.IMAGE_MISSING, f"image {spec.image!r} is not available: {_first_line(exc)}"
            ) from exc
        except docker.errors.APIError as exc:
            raise RunError(
                Code.CONTAINER_NOT_STARTED,
                f"the container could not be created: {_first_line(exc)}",
            ) from exc
        except requests.RequestException as exc:
            raise DockerUnavailable(_docker_hint(exc)) from exc
        watched = self._deaths.watching()  # before the start: a short one dies at once
        try:
            with engine():  # an engine that went away: the phase waits, then tries again
                api.start(cid)
        except docker.errors.APIError as exc:
            with engine():
                api.remove_container(cid, force=True)
            raise RunError(
                Code.CONTAINER_NOT_STARTED, f"the container could not start: {_first_line(exc)}"
            ) from exc
        self._started[cid] = _Started(host_config.get("NetworkMode", ""), watched)
        log.info("event=container_start run=%s container=%s", spec.run_id, cid[:12])
        return cid

    def _labelled(self, label: str) -> list[dict[str, Any]]:
        """Containers with `label` (low-level: the high-level list inspects each one)."""
        try:
            found: list[dict[str, Any]] = self.client.api.containers(
                all=True, filters={"label": label}
            )
            return found
        except requests.RequestException as exc:
            raise DockerUnavailable(_docker_hint(exc)) from exc

    def find(self, run_id: str) -> dict[int, Found]:
        """One only created (the daemon died between create and start) has not trained."""
        return {
            int(c["Labels"].get(LABEL_LEARNER, "1")): Found(c["Id"], c.get("State") == "created")
            for c in self._labelled(f"{LABEL_RUN}={run_id}")
        }

    def usage(self, handle: str) -> dict[str, int]:
        return measure.cgroup_reading(handle)  # read from the host: no call to the engine

    def leftovers(self) -> list[tuple[str, str]]:
        found = self._labelled(f"{LABEL_DAEMON}={self.daemon_label}")
        return [(c["Labels"].get(LABEL_RUN, ""), c["Id"]) for c in found]

    def wait(self, handle: str, timeout: float | None) -> Exit | None:
        """A container this daemon's life started that exits 0 ends at its `die` event:
        it started (the start was answered) and succeeded (an OOM kill or an error would
        not exit 0). The others, and one the event stream may have missed, are waited
        for and inspected (one found again after a restart, too)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        started = self._started.get(handle)
        if started:
            if self._exit_from_events(handle, started.watched, deadline) == 0:
                return Exit(0, False, "", started=True)
            if deadline is not None:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    return None
        try:
            with engine():
                status = self.client.api.wait(handle, timeout=timeout)
        except TimedOut:
            return None
        if status.get("StatusCode") == 0 and started:
            return Exit(0, False, "", started=True)
        return self.exit_info(handle)

    def _exit_from_events(self, handle: str, watched: int, deadline: float | None) -> int | None:
        """The container's exit code from the event stream; None once `deadline` passed,
        or if the stream may have missed its death: a look every LOOK_EVERY seconds
        finds it ended without an event."""
        while True:
            left = LOOK_EVERY if deadline is None else min(deadline - time.monotonic(), LOOK_EVERY)
            try:
                return self._deaths.exit_code(handle, watched, max(left, 0))
            except TimeoutError:
                if deadline is not None and time.monotonic() >= deadline:
                    return None
            with engine():
                try:
                    state = self.client.api.inspect_container(handle)["State"]
                except docker.errors.NotFound:
                    return None  # removed meanwhile: the engine's wait says so
            if not state.get("Running"):
                return None  # ended, its event dropped: the engine's wait answers

    def exit_info(self, container_id: str) -> Exit:
        with engine():
            state = self.client.api.inspect_container(container_id)["State"]
        return Exit(
            int(state.get("ExitCode", -1)),
            bool(state.get("OOMKilled")),
            state.get("Error", ""),
            started=not state.get("StartedAt", "").startswith("0001-01-01"),
        )

    def stop(self, handle: str, grace: float) -> None:
        with engine(), contextlib.suppress(docker.errors.NotFound):
            self.client.api.stop(handle, timeout=int(max(grace, 1)))

    def remove(self, handle: str) -> None:
        started = self._started.pop(handle, None)
        self._deaths.forget(handle)
        network = started.network if started else None
        with engine(), contextlib.suppress(docker.errors.NotFound):
            if network is None:  # started before a restart
                info = self.client.api.inspect_container(handle)
                network = info["HostConfig"].get("NetworkMode", "")
            self.client.api.remove_container(handle, force=True)
        if (network or "").startswith("dlaas-"):  # the run's own: gone with its last learner
            with engine(), contextlib.suppress(docker.errors.APIError):
                self.client.api.remove_network(network)

    def phase(self, run_id: str) -> str | None:
        return None  # the daemon stages, so it knows

    def waiting_reason(self, run_id: str) -> str | None:
        return None  # dlaasd's own queue says why a run waits


LOOK_EVERY = 30.0  # seconds between looks at a container whose death no event told


class _Started(NamedTuple):
    network: str  # its network mode
    watched: int  # the subscription of the event stream that sees it die (0: none)


class _OnePoolAdapter(UnixHTTPAdapter):
    """docker-py keeps a connection pool per URL, and each container's id makes new URLs:
    every call on a new container made a pool (a queue of max_pool_size slots), a socket,
    and later closed them, most of the CPU a short run cost the daemon. One pool for the
    engine's socket serves every URL and keeps its connections alive."""

    def get_connection(self, url: str, proxies: Any = None) -> Any:
        return super().get_connection("", proxies)


def _one_pool(api: docker.APIClient) -> None:
    """Give a client on a Unix socket one connection pool, and no look at the proxy
    variables on every call (requests reads the whole environment each time; a Unix
    socket takes no proxy anyway)."""
    adapter = api.adapters.get("http+docker://")
    if type(adapter) is not UnixHTTPAdapter:  # tcp://, ssh://: as docker-py makes them
        return
    one = _OnePoolAdapter(
        f"http+unix://{adapter.socket_path}", adapter.timeout, max_pool_size=adapter.max_pool_size
    )
    api.mount("http+docker://", one)
    adapter.close()
    api.trust_env = False


class TimedOut(Exception):
    pass


@contextlib.contextmanager
def engine() -> Iterator[None]:
    """Transport failures (the engine stopped, or restarts) become DockerUnavailable,
    which the lifecycle waits out; a read timeout becomes TimedOut."""
    try:
        yield
    except requests.exceptions.ReadTimeout as exc:
        raise TimedOut() from exc
    except requests.exceptions.ConnectionError as exc:
        if "Read timed out" in str(exc):
            raise TimedOut() from exc
        raise DockerUnavailable(_docker_hint(exc)) from exc
    except requests.exceptions.RequestException as exc:  # a response cut off, too
        raise DockerUnavailable(_docker_hint(exc)) from exc


def _first_line(exc: BaseException) -> str:
    text = getattr(exc, "explanation", None) or str(exc)
    return str(text).strip().splitlines()[0] if str(text).strip() else type(exc).__name__


def _docker_hint(exc: BaseException) -> str:
    if "permission denied" in str(exc).lower():  # running, but this user may not use it
        return (
            f"the Docker Engine refuses this user ({_first_line(exc)}); scripts/setup adds you "
            "to the docker group (or: sudo usermod -aG docker $USER), then log in again "
            "(or start dlaasd from a shell started with: newgrp docker)"
        )
    return (
        f"the Docker Engine is not reachable ({_first_line(exc)}); start it "
        "(systemctl start docker, or dockerd) and check access to /var/run/docker.sock"
    )
