"""Real processes for tests and benchmarks: a MinIO server and dlaasd daemons.

Nothing here is a mock: MinIO is the real server binary, dlaasd is started as its own
process and spoken to over its socket, with the real `dlaasctl`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import docker
import yaml

from dlaasctl.http import Client
from dlaasd.minio_server import find_binary, free_port

PYTHON_IMAGE = "dlaas/python:bookworm"
REPO = Path(__file__).resolve().parent.parent


def short_tmp(prefix: str) -> Path:
    """Unix socket paths must stay under 108 bytes: keep test folders short."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


class Minio:
    """A MinIO server on a free loopback port, with fresh credentials."""

    def __init__(self, root: Path):
        self.root = root
        self.port = free_port()
        self.access_key = "test" + secrets.token_hex(4)
        self.secret_key = secrets.token_urlsafe(24)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> Minio:
        env = {
            **os.environ,
            "MINIO_ROOT_USER": self.access_key,
            "MINIO_ROOT_PASSWORD": self.secret_key,
            "MINIO_BROWSER": "off",
            "MINIO_CI_CD": "1",
        }
        log = open(self.root / "minio.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                find_binary("minio"),
                "server",
                "--quiet",
                "--address",
                f"127.0.0.1:{self.port}",
                str(self.root / "data"),
            ],
            env=env,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/minio/health/ready", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"MinIO did not start: {(self.root / 'minio.log').read_text()[-2000:]}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=20)

    def config(self) -> dict:
        return {"endpoint": self.url, "access_key": self.access_key, "secret_key": self.secret_key}

    def client(self):
        from minio import Minio as SDK

        return SDK(f"127.0.0.1:{self.port}", self.access_key, self.secret_key, secure=False)


class Dlaasd:
    """One dlaasd process with its own state folder and socket."""

    def __init__(
        self,
        root: Path,
        minio: Minio | None = None,
        simulate_gpus: int | None = None,
        **config: object,
    ):
        self.root = root
        self.state = root / "state"
        self.socket = root / "dlaasd.sock"
        self.log = root / "dlaasd.log"
        self.simulate_gpus = simulate_gpus
        self.settings: dict = {
            "capacity": {"cpus": 2, "memory": "4GiB"},
            "containers": {"halt_grace": "3s"},
            "log_level": "debug",
        }
        if minio:
            self.settings["store"] = minio.config()
        for k, v in config.items():
            if isinstance(v, dict) and isinstance(self.settings.get(k), dict):
                self.settings[k] = {**self.settings[k], **v}
            else:
                self.settings[k] = v
        self.proc: subprocess.Popen | None = None

    @property
    def env(self) -> dict:
        env = {**os.environ, "DLAAS_SOCKET": str(self.socket), "PYTHONUNBUFFERED": "1"}
        env.pop("DLAAS_SIMULATE_GPUS", None)
        if self.simulate_gpus is not None:
            env["DLAAS_SIMULATE_GPUS"] = str(self.simulate_gpus)
        return env

    def start(self, timeout: float = 60) -> Dlaasd:
        config = self.root / "dlaasd.yaml"
        config.write_text(yaml.safe_dump(self.settings))
        log = open(self.log, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dlaasd.main",
                "--config",
                str(config),
                "--state-dir",
                str(self.state),
                "--socket",
                str(self.socket),
            ],
            env=self.env,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dlaasd exited ({self.proc.returncode}):\n{self.log_tail()}")
            if self.socket.exists():
                try:
                    self.api.json("GET", "/v1/health", timeout=2)
                    return self
                except Exception:
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"dlaasd did not answer in {timeout}s:\n{self.log_tail()}")

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGUSR1)  # its threads' stacks, into the log
                time.sleep(1)
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(
                    f"dlaasd did not stop within {timeout}s of signal {sig}; "
                    f"what it was doing:\n{self.log_tail(120)}"
                ) from None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def cleanup(self) -> None:
        """Stop the daemon and remove any container it left (a test that failed mid-run)."""
        self.stop()
        try:
            dc = docker.from_env()
            for c in dc.containers.list(all=True, filters={"label": f"dlaas.daemon={self.state}"}):
                c.remove(force=True)
        except docker.errors.DockerException:
            pass

    @property
    def api(self) -> Client:
        return Client(self.socket)

    def ctl(
        self, *args: str, timeout: float = 300, input: str | None = None
    ) -> subprocess.CompletedProcess:
        """Run the real dlaasctl against this daemon."""
        return dlaasctl(*args, env=self.env, timeout=timeout, input=input)

    def ctl_json(self, *args: str, **kw) -> dict:
        r = self.ctl(*args, "--json", **kw)
        assert r.returncode == 0, f"dlaasctl {' '.join(args)} failed ({r.returncode}):\n{r.stderr}"
        return json.loads(r.stdout)

    def run(self, run_id: str) -> dict:
        return self.api.json("GET", f"/v1/runs/{run_id}")

    def wait(self, run_id: str, *statuses: str, timeout: float = 120) -> dict:
        """Poll until the run reaches one of `statuses` (default: any final one)."""
        wanted = set(statuses or ("COMPLETED", "FAILED", "HALTED"))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.run(run_id)
            if run["status"] in wanted:
                return run
            time.sleep(0.1)
        raise AssertionError(f"{run_id} did not reach {wanted}: {run}\n{self.log_tail()}")

    def submit(self, folder: Path, *extra: str) -> str:
        r = self.ctl("train", str(folder / "manifest.yml"), str(folder), *extra)
        assert r.returncode == 0, f"train failed ({r.returncode}): {r.stderr}\n{self.log_tail()}"
        return r.stdout.strip().splitlines()[0]


def model(root: Path, manifest: dict | str, files: dict[str, str] | None = None) -> Path:
    """A folder with manifest.yml and code, as a user would make one."""
    root.mkdir(parents=True, exist_ok=True)
    text = manifest if isinstance(manifest, str) else yaml.safe_dump(manifest, sort_keys=False)
    (root / "manifest.yml").write_text(text)
    for name, content in (files or {}).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(content)
    return root


def dlaasctl(
    *args: str, env: dict, timeout: float = 300, input: str | None = None
) -> subprocess.CompletedProcess:
    """The real dlaasctl, as a user runs it; `env` names the socket (DLAAS_SOCKET)."""
    return subprocess.run(
        [sys.executable, "-m", "dlaasctl.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
    )


def no_daemon(tmp_path: Path) -> dict:
    """An environment whose socket has no daemon behind it."""
    return {**os.environ, "DLAAS_SOCKET": str(tmp_path / "none.sock")}


def manifest(command: str, name: str = "test", image: str = PYTHON_IMAGE, **fields) -> dict:
    m = {
        "name": name,
        "version": "1.0",
        "gpus": 0,
        "cpus": 0.5,
        "memory": "256MiB",
        "framework": {"name": "python", "version": "3", "command": command},
    }
    if image != PYTHON_IMAGE:
        m["framework"]["image"] = image
    m.update(fields)
    return m


class DockerGate:
    """The Docker Engine's socket, passed through a socket of our own: `on_request(method,
    path)` sees each request line before Docker does, and a request it answers False to
    never reaches Docker (its connection is dropped). A daemon given this socket as
    DOCKER_HOST can be stopped at an exact step of its talk with the real engine."""

    REQUEST = re.compile(rb"^(GET|HEAD|POST|PUT|DELETE) (\S+) HTTP/1\.[01]\r$", re.MULTILINE)

    def __init__(self, path: Path, on_request, engine: str = "/var/run/docker.sock"):
        self.path = path
        self.on_request = on_request
        self.engine = engine
        self.server = socket.socket(socket.AF_UNIX)
        self.server.bind(str(path))
        self.server.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"unix://{self.path}"

    def close(self) -> None:
        self.server.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:  # closed
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.socket(socket.AF_UNIX)
        upstream.connect(self.engine)
        threading.Thread(target=_pump, args=(upstream, client), daemon=True).start()
        try:
            while chunk := client.recv(65536):
                for m in self.REQUEST.finditer(chunk):
                    if not self.on_request(m[1].decode(), m[2].decode()):
                        return
                upstream.sendall(chunk)
        except OSError:
            pass
        finally:
            client.close()
            upstream.close()


def _pump(src: socket.socket, dest: socket.socket) -> None:
    try:
        while chunk := src.recv(65536):
            dest.sendall(chunk)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dest.shutdown(socket.SHUT_WR)


def stop_in_reverse(procs: list[subprocess.Popen], grace: float = 20) -> None:
    """Stop the processes a testbed started, last first, each by its pid: SIGTERM, then
    SIGKILL after `grace` seconds."""
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
