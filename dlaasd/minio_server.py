"""The bundled MinIO server: started, watched and stopped by dlaasd in user mode.

Bound to 127.0.0.1; its data and generated credentials (mode 0600) live in the state
folder. The process gets PR_SET_PDEATHSIG, so a dlaasd killed with SIGKILL does not
leave a MinIO behind holding the port and the data folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import time
import urllib.request
from pathlib import Path

from .objectstore import Endpoint

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1


class MinioError(RuntimeError):
    pass


def _die_with_parent() -> None:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port: int) -> bool:
    """Nobody listens on it. Connections of the last MinIO waiting out TIME_WAIT do not
    count: MinIO binds with SO_REUSEADDR too."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _ended(pid: int, seconds: float) -> bool:
    """Wait for a process to end: gone, or a zombie, whose files (its port too) are closed.
    (An exiting process loses its command line before its files: that tells nothing.)"""
    deadline = time.monotonic() + seconds
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except (OSError, IndexError):
            return True
        if state in ("Z", "X"):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def find_binary(name: str) -> str:
    """`name` on PATH, or where scripts/install-minio puts it (systemd's PATH lacks those)."""
    if "/" in name:
        path = name if os.access(name, os.X_OK) else None
    else:
        extra = os.pathsep.join(["/usr/local/bin", str(Path.home() / ".local" / "bin")])
        path = shutil.which(name) or shutil.which(name, path=extra)
    if not path:
        raise MinioError(
            f"the MinIO server binary {name!r} was not found; run scripts/install-minio "
            "(builds it with `go install`), or set store.minio_binary in the config, or set "
            "store.endpoint to use an S3 endpoint you already have"
        )
    return path


class BundledMinio:
    def __init__(self, state_dir: Path, binary: str = "minio", address: str = "127.0.0.1:0"):
        self.dir = state_dir / "minio"
        self.data = self.dir / "data"
        self.binary = binary
        self.address = address
        self.proc: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self._stopping = False
        self._supervisor: asyncio.Task | None = None
        # a MinIO left by a killed dlaasd holds the port and the data for a moment
        orphan = self._end_orphan()
        self.endpoint = Endpoint(
            f"http://{self._pick_address(orphan)}", *self._credentials(), identity=self._identity()
        )

    # --- identity that survives restarts ----------------------------------------

    def _credentials(self) -> tuple[str, str]:
        """Generated on first start, then kept (mode 0600)."""
        path = self.dir / "credentials.json"
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not path.exists():
            creds = {
                "access_key": "dlaas" + secrets.token_hex(6),
                "secret_key": secrets.token_urlsafe(30),
            }
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(creds, f)
        os.chmod(path, 0o600)
        creds = json.loads(path.read_text())
        return creds["access_key"], creds["secret_key"]

    def _identity(self) -> str:
        """This store's id, made at first start and kept: the data cache's key for it,
        whatever port it listens on."""
        path = self.dir / "store-id"
        if not path.exists():
            tmp = self.dir / "store-id.tmp"
            tmp.write_text(f"bundled-{secrets.token_hex(8)}\n")
            os.replace(tmp, path)
        return path.read_text().strip()

    def _end_orphan(self, wait: float = 10) -> bool:
        """The MinIO a killed dlaasd left on this state folder got SIGTERM from the kernel
        (PR_SET_PDEATHSIG) and is shutting down: wait for it to let go of its port and
        data, then end it. This dlaasd holds the state folder's lock: it is nobody else's.
        True if there was one."""
        try:
            pid = int((self.dir / "pid").read_text())
        except (OSError, ValueError):
            return False
        if not self._is_ours(pid):
            return False
        if not _ended(pid, wait):
            log.warning("event=minio_orphan_killed pid=%d", pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _ended(pid, wait)
        return True

    def _is_ours(self, pid: int) -> bool:
        """A live MinIO serving this state folder's data (not a reused pid)."""
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return b"server" in argv and str(self.data).encode() in argv

    def _pick_address(self, orphan: bool = False) -> str:
        """Port 0 means: the port chosen at first start, or a new one if it is taken (after
        an orphan ended, once its last threads closed the port: a few moments)."""
        host, _, port = self.address.rpartition(":")
        if port != "0":
            return self.address
        saved = self.dir / "address"
        if saved.exists():
            old = saved.read_text().strip()
            old_port = int(old.rpartition(":")[2])
            deadline = time.monotonic() + (5 if orphan else 0)
            while not port_free(old_port):
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.05)
            else:
                return old
        address = f"{host or '127.0.0.1'}:{free_port()}"
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        saved.write_text(address)
        return address

    @property
    def url(self) -> str:
        return self.endpoint.url

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc and self.proc.returncode is None else None

    # --- running ----------------------------------------------------------------

    async def start(self, timeout: float = 60) -> None:
        binary = find_binary(self.binary)
        self.data.mkdir(parents=True, exist_ok=True)
        self._stopping = False
        await self._spawn(binary, timeout)
        self._supervisor = asyncio.create_task(self._supervise(binary), name="minio-supervisor")

    async def _spawn(self, binary: str, timeout: float) -> None:
        address = self.endpoint.url.removeprefix("http://")
        env = {
            **os.environ,
            "MINIO_ROOT_USER": self.endpoint.access_key,
            "MINIO_ROOT_PASSWORD": self.endpoint.secret_key,
            "MINIO_BROWSER": "off",
            "MINIO_UPDATE": "off",
            "MINIO_CI_CD": "1",  # quiet banner; no root-drive checks in containers
        }
        with open(self.dir / "minio.log", "ab") as logfile:  # the process keeps its own copy
            self.proc = await asyncio.create_subprocess_exec(
                binary,
                "server",
                "--quiet",
                "--address",
                address,
                str(self.data),
                env=env,
                stdout=logfile,
                stderr=logfile,
                stdin=asyncio.subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
            )
        (self.dir / "pid").write_text(f"{self.proc.pid}\n")  # for the next start, if we die
        log.info("event=minio_start pid=%s address=%s", self.proc.pid, address)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.returncode is not None:
                raise MinioError(
                    f"MinIO exited at start (code {self.proc.returncode}): {self.log_tail()}"
                )
            if await asyncio.to_thread(self.ready):
                return
            await asyncio.sleep(0.1)
        raise MinioError(f"MinIO did not become ready in {timeout:.0f}s: {self.log_tail()}")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/minio/health/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = (self.dir / "minio.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(text[-lines:]) or "(empty log)"

    async def _supervise(self, binary: str) -> None:
        """Restart MinIO when it dies, backing off up to 30 s between tries."""
        delay = 0.5
        while not self._stopping:
            assert self.proc is not None
            code = await self.proc.wait()
            if self._stopping:
                return
            log.warning("event=minio_died code=%s restarts=%d", code, self.restarts)
            while not self._stopping:
                await asyncio.sleep(delay)
                try:
                    self.restarts += 1
                    await self._spawn(binary, timeout=60)
                    delay = 0.5
                    break
                except (MinioError, OSError) as exc:
                    log.error("event=minio_restart_failed error=%r", str(exc))
                    if self.proc and self.proc.returncode is None:
                        self.proc.kill()
                    delay = min(delay * 2, 30)

    async def stop(self, timeout: float = 10) -> None:
        self._stopping = True
        if self._supervisor:
            self._supervisor.cancel()
        if self.proc and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        log.info("event=minio_stop")
