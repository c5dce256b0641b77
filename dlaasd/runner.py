"""Docker, through docker-py: create, start, wait, stop, and find containers again.

Every container carries the label `dlaas.run-id`, so a restarted daemon finds the runs
it left. The training's output goes to $LOG_DIR/training-log.txt from inside the
container, so it keeps being written while the daemon is down.

All calls block; the lifecycle runs them in threads.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field

import docker
import docker.errors
import requests
from docker.types import DeviceRequest, Mount

from .codes import RunError
from .runfolder import OOM_MARK

log = logging.getLogger(__name__)

LABEL_RUN = "dlaas.run-id"
LABEL_LEARNER = "dlaas.learner"
LABEL_DAEMON = "dlaas.daemon"  # the state folder of the dlaasd that started it

# The command runs under `sh -c` in MODEL_DIR; its output goes to the training log. On
# halt, tini sends SIGTERM to the whole group; the traps keep the shells alive until the
# training has handled it (a shell that died first would end the container at once).
# Docker's OOMKilled is not set by every engine (Debian's 20.10 on cgroup v1 leaves it
# false), so once the command ends the shell also notes the cgroup's OOM kills, if any.
SCRIPT_HEAD = """exec >>"$LOG_DIR/training-log.txt" 2>&1
trap "exit 143" TERM
(trap "exit 143" TERM
"""
SCRIPT_TAIL = f"""
)
rc=$?
n=$(sed -n 's/^oom_kill //p' /sys/fs/cgroup/memory.events \\
  /sys/fs/cgroup/memory/memory.oom_control 2>/dev/null | head -n 1)
[ "${{n:-0}}" -gt 0 ] && echo "$n" >"$LOG_DIR/{OOM_MARK}"
exit $rc
"""


@dataclass
class ContainerSpec:
    run_id: str
    learner: int
    image: str
    command: str
    env: dict[str, str]
    user: str  # uid:gid
    cpus: float
    memory: int
    mounts: list[tuple[str, str, bool]]  # (host path, container path, read only)
    gpus: list[str] = field(default_factory=list)  # UUIDs for the NVIDIA runtime
    network: bool = False
    pids_limit: int = 4096
    cap_add: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)  # beside dlaasd's own
    # Docker's network mode when set ("host": a cluster's learners reach each other
    # across nodes); else none, or bridge where the manifest may use the network
    network_mode: str = ""

    @property
    def name(self) -> str:
        return f"dlaas-{self.run_id}" + (f"-{self.learner}" if self.learner > 1 else "")


@dataclass
class Exit:
    code: int
    oom_killed: bool
    error: str = ""
    # Docker answers a wait on a container that was created but never started with
    # exit code 0 at once: that is no training, whatever the code says
    started: bool = True


class DockerUnavailable(Exception):
    pass


class Runner:
    def __init__(self, daemon_label: str = "") -> None:
        self.daemon_label = daemon_label
        self._client: docker.DockerClient | None = None
        self._images_seen: dict[str, float] = {}

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            try:
                # DOCKER_HOST is honoured; the pool is as large as the waits that may block
                self._client = docker.from_env(timeout=60, max_pool_size=256)
            except docker.errors.DockerException as exc:
                raise DockerUnavailable(_docker_hint(exc)) from exc
        return self._client

    def ping(self) -> tuple[bool, str]:
        try:
            version = self.client.version()
            return True, version.get("Version", "?")
        except (DockerUnavailable, docker.errors.DockerException, requests.RequestException) as exc:
            self._client = None
            return False, _docker_hint(exc)

    # --- images ----------------------------------------------------------------

    def image_present(self, image: str) -> bool:
        try:
            self.client.images.get(image)
            return True
        except docker.errors.ImageNotFound:
            return False
        except requests.RequestException as exc:
            raise DockerUnavailable(_docker_hint(exc)) from exc

    def ensure_image(self, image: str, pull: bool) -> None:
        seen = self._images_seen.get(image)
        if seen and time.monotonic() - seen < 300:  # one inspect less on the way to a start;
            return  # an image removed since then fails the create with S103 anyway
        if self.image_present(image):
            self._images_seen[image] = time.monotonic()
            return
        if not pull:
            raise RunError(
                "S103",
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
                "S103",
                f"image {image!r} is not on this machine and could not be "
                f"pulled ({_first_line(exc)}); build it (scripts/build-images) or map "
                "the framework to an image you have in the config",
            ) from exc

    # --- containers ------------------------------------------------------------

    def start(self, spec: ContainerSpec) -> str:
        """Create and start a container; return its id. RunError S101 if it cannot start.

        The low-level API: the high-level one inspects after every call, and a run's start
        is on the path a user waits on."""
        api = self.client.api
        device_requests = []
        if spec.gpus:
            device_requests.append(DeviceRequest(device_ids=spec.gpus, capabilities=[["gpu"]]))
        host_config = api.create_host_config(
            network_mode=spec.network_mode or ("bridge" if spec.network else "none"),
            cap_drop=["ALL"],
            cap_add=spec.cap_add or None,
            security_opt=["no-new-privileges"],
            init=True,  # tini forwards halt's SIGTERM to the whole process group
            nano_cpus=int(spec.cpus * 1e9),
            mem_limit=spec.memory,
            memswap_limit=spec.memory,  # no swap: over the limit is an OOM kill (C202)
            shm_size=max(64 * 1024**2, spec.memory // 4),
            pids_limit=spec.pids_limit,
            mounts=[
                Mount(target=c, source=h, type="bind", read_only=ro) for h, c, ro in spec.mounts
            ],
            device_requests=device_requests or None,
            log_config={"type": "json-file", "config": {"max-size": "1m"}},
        )
        create = dict(
            image=spec.image,
            entrypoint=["/bin/sh", "-c", SCRIPT_HEAD + spec.command + SCRIPT_TAIL],
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
                cid = api.create_container(**create)["Id"]
            except docker.errors.APIError as exc:
                if exc.status_code != 409:
                    raise
                api.remove_container(spec.name, force=True)  # left by an attempt that died
                cid = api.create_container(**create)["Id"]
        except docker.errors.ImageNotFound as exc:
            raise RunError(
                "S103", f"image {spec.image!r} is not available: {_first_line(exc)}"
            ) from exc
        except docker.errors.APIError as exc:
            raise RunError(
                "S101", f"the container could not be created: {_first_line(exc)}"
            ) from exc
        except requests.RequestException as exc:
            raise DockerUnavailable(_docker_hint(exc)) from exc
        try:
            with engine():  # an engine that went away: the lifecycle waits, then tries again
                api.start(cid)
        except docker.errors.APIError as exc:
            with engine():
                api.remove_container(cid, force=True)
            raise RunError("S101", f"the container could not start: {_first_line(exc)}") from exc
        log.info("event=container_start run=%s container=%s", spec.run_id, cid[:12])
        return cid

    def _labelled(self, label: str) -> list[dict]:
        """Containers with `label` (low-level: the high-level list inspects each one)."""
        try:
            return self.client.api.containers(all=True, filters={"label": label})
        except requests.RequestException as exc:
            raise DockerUnavailable(_docker_hint(exc)) from exc

    def find(self, run_id: str) -> list[str]:
        """Ids of the containers of a run, learner 1 first."""
        return [cid for cid, _ in sorted(self.learners(run_id).items())]

    def learners(self, run_id: str) -> dict[int, tuple[str, bool]]:
        """learner -> (container id, whether it ever started) for a run's containers. One
        only created (the daemon died between create and start) has not trained at all."""
        return {
            int(c["Labels"].get(LABEL_LEARNER, "1")): (c["Id"], c.get("State") != "created")
            for c in self._labelled(f"{LABEL_RUN}={run_id}")
        }

    def containers_of_daemon(self) -> list[tuple[str, str]]:
        """(run id, container id) of every container this daemon started."""
        found = self._labelled(f"{LABEL_DAEMON}={self.daemon_label}")
        return [(c["Labels"].get(LABEL_RUN, ""), c["Id"]) for c in found]

    def wait(self, container_id: str, timeout: float | None) -> Exit | None:
        """Block until the container exits (its Exit), or None after `timeout` seconds."""
        try:
            with engine():
                self.client.api.wait(container_id, timeout=timeout)
        except TimedOut:
            return None
        return self.exit_info(container_id)

    def exit_info(self, container_id: str) -> Exit:
        with engine():
            state = self.client.api.inspect_container(container_id)["State"]
        return Exit(
            int(state.get("ExitCode", -1)),
            bool(state.get("OOMKilled")),
            state.get("Error", ""),
            started=not state.get("StartedAt", "").startswith("0001-01-01"),
        )

    def stop(self, container_id: str, grace: float) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds."""
        with engine(), contextlib.suppress(docker.errors.NotFound):
            self.client.api.stop(container_id, timeout=int(max(grace, 1)))

    def remove(self, container_id: str) -> None:
        with engine(), contextlib.suppress(docker.errors.NotFound):
            self.client.api.remove_container(container_id, force=True)


class TimedOut(Exception):
    pass


@contextlib.contextmanager
def engine():
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
