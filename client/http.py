"""HTTP over the daemon's Unix socket, with the standard library only (fast start)."""

from __future__ import annotations

import http.client
import json
import os
import socket
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path


class Unreachable(Exception):
    """No daemon answers on the socket (exit code 3)."""


class ApiError(Exception):
    """The daemon refused the request; carries its JSON error body (exit code 1)."""

    def __init__(self, status: int, body: dict):
        self.status = status
        err = body.get("error", body) if isinstance(body, dict) else {"message": str(body)}
        self.message = err.get("message", f"HTTP {status}")
        self.code = err.get("code")
        self.problems = err.get("problems", [])
        super().__init__(self.message)


def candidate_sockets() -> list[Path]:
    """Where a daemon may listen, most likely first (the user's own, then the system's)."""
    user = []
    if os.environ.get("XDG_RUNTIME_DIR"):
        user.append(Path(os.environ["XDG_RUNTIME_DIR"]) / "dlaas" / "dlaasd.sock")
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    user.append(Path(state) / "dlaas" / "dlaasd.sock")
    system = [Path("/run/dlaas/dlaasd.sock")]
    return system + user if os.geteuid() == 0 else user + system


def default_socket() -> Path:
    if os.environ.get("DLAAS_SOCKET"):
        return Path(os.environ["DLAAS_SOCKET"])
    candidates = candidate_sockets()
    return next((p for p in candidates if p.exists()), candidates[0])


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float | None = None):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.socket_path))
        except OSError:
            sock.close()
            raise
        self.sock = sock


class Client:
    def __init__(self, socket_path: Path, timeout: float | None = 60):
        self.socket_path = socket_path
        self.timeout = timeout

    def request(
        self,
        method: str,
        path: str,
        body=None,
        headers: dict | None = None,
        timeout: float | None = -1,
    ) -> http.client.HTTPResponse:
        """Send a request; return the response (status < 400) for the caller to read."""
        conn = UnixConnection(self.socket_path, self.timeout if timeout == -1 else timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise Unreachable(self._hint(exc)) from None
        except PermissionError:
            raise Unreachable(
                f"permission denied on {self.socket_path}; ask the admin to add you to the "
                f"group {_group_of(self.socket_path)!r} (then log in again)"
            ) from None
        except (TimeoutError, ConnectionResetError, BrokenPipeError) as exc:
            # the daemon closes the connection early when it refuses an upload
            raise Unreachable(f"the daemon at {self.socket_path} did not answer: {exc}") from None
        if resp.status >= 400:
            raw = resp.read()
            try:
                body = json.loads(raw)
            except ValueError:
                body = {"error": {"message": raw.decode(errors="replace") or f"HTTP {resp.status}"}}
            raise ApiError(resp.status, body)
        return resp

    def _hint(self, exc: OSError) -> str:
        why = "no such socket" if isinstance(exc, FileNotFoundError) else "connection refused"
        return (
            f"the dlaasd daemon is not reachable at {self.socket_path} ({why}).\n"
            "Start it in the foreground with `dlaasd`, or as a service with "
            "`sudo systemctl start dlaasd`; point dlaasctl elsewhere with --socket or DLAAS_SOCKET."
        )

    def json(self, method: str, path: str, body: dict | None = None, timeout: float | None = -1):
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data else {}
        resp = self.request(method, path, data, headers, timeout=timeout)
        return json.loads(resp.read() or b"null")

    def stream(self, path: str, timeout: float | None = None) -> Iterator[bytes]:
        resp = self.request("GET", path, timeout=timeout)
        while chunk := resp.read1(64 * 1024):
            yield chunk

    def upload(self, path: str, file: Path, progress=None) -> dict:
        size = file.stat().st_size
        resp = self.request(
            "PUT",
            path,
            body=_file_chunks(file, progress),
            headers={"Content-Length": str(size)},
            timeout=None,
        )
        return json.loads(resp.read())

    def multipart(self, path: str, fields: dict[str, bytes], files: dict[str, Path]) -> dict:
        """POST multipart/form-data, streaming the files."""
        boundary = uuid.uuid4().hex
        parts: list[bytes | Path] = []
        for name, value in fields.items():
            parts += [_part_head(boundary, name, f"{name}.yml"), value, b"\r\n"]
        for name, file in files.items():
            parts += [_part_head(boundary, name, file.name), file, b"\r\n"]
        parts.append(f"--{boundary}--\r\n".encode())
        length = sum(p.stat().st_size if isinstance(p, Path) else len(p) for p in parts)
        headers = {
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Content-Length": str(length),
        }
        resp = self.request("POST", path, body=_chain(parts), headers=headers, timeout=None)
        return json.loads(resp.read())


def _group_of(path: Path) -> str:
    import grp

    try:
        return grp.getgrgid(os.stat(path).st_gid).gr_name
    except (OSError, KeyError):
        return "dlaas"


def _part_head(boundary: str, name: str, filename: str) -> bytes:
    return (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
        f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode()


def _chain(parts: Iterable[bytes | Path]) -> Iterator[bytes]:
    for p in parts:
        if isinstance(p, Path):
            yield from _file_chunks(p)
        else:
            yield p


def _file_chunks(path: Path, progress=None) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(1024 * 1024):
            if progress:
                progress(len(chunk))
            yield chunk
