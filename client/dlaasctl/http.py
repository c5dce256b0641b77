"""HTTP over the daemon's Unix socket, with the standard library only.

A minimal HTTP/1.1 client (one request a connection, Content-Length or chunked bodies)
rather than http.client: that one imports the email package, a third of dlaasctl's start
time, and every command of a script that loops over runs pays it.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path

from .routes import Route


class Unreachable(Exception):
    """No daemon answers on the socket (exit code 3)."""


class Dropped(Unreachable):
    """The daemon went away in the middle of a response."""


class ApiError(Exception):
    """The daemon refused the request; carries its JSON error body (exit code 1)."""

    def __init__(self, status: int, body: dict):
        self.status = status
        err = body.get("error", body) if isinstance(body, dict) else {"message": str(body)}
        self.message = err.get("message", f"HTTP {status}")
        self.code = err.get("code")
        self.problems = err.get("problems", [])
        self.warnings = err.get("warnings", [])
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


class Response:
    """A response read from a socket: status, headers, and the body once or in chunks."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.file = sock.makefile("rb")
        status_line = self.file.readline()
        if not status_line:
            raise ConnectionResetError("the daemon closed the connection without answering")
        self.status = int(status_line.split()[1])
        self.headers: dict[str, str] = {}
        while (line := self.file.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            self.headers[name.strip().lower()] = value.strip()
        self.chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        length = self.headers.get("content-length")
        self.left = int(length) if length and not self.chunked else None

    def chunks(self, size: int = 64 * 1024) -> Iterator[bytes]:
        try:
            if self.chunked:
                while (n := self._chunk_size()) > 0:
                    yield self._exactly(n)
                    self.file.readline()  # the CRLF after each chunk
            elif self.left is not None:
                while self.left > 0:
                    data = self.file.read(min(size, self.left))
                    if not data:
                        raise Dropped("the response ended early (was the daemon stopped?)")
                    self.left -= len(data)
                    yield data
            else:  # until the daemon closes the connection
                while data := self.file.read1(size):
                    yield data
        finally:
            self.close()

    def _chunk_size(self) -> int:
        line = self.file.readline()
        if not line:
            raise Dropped("the daemon closed the connection before the end (was it stopped?)")
        return int(line.split(b";")[0], 16)

    def _exactly(self, n: int) -> bytes:
        data = self.file.read(n)
        if len(data) != n:
            raise Dropped("the daemon closed the connection before the end (was it stopped?)")
        return data

    def read(self) -> bytes:
        return b"".join(self.chunks())

    def close(self) -> None:
        self.file.close()
        self.sock.close()


class Client:
    def __init__(self, socket_path: Path, timeout: float | None = 60):
        self.socket_path = socket_path
        self.timeout = timeout

    def request(
        self,
        method: str,
        path: str,
        body: bytes | Iterable[bytes] | None = None,
        headers: dict | None = None,
        timeout: float | None = -1,
    ) -> Response:
        """Send a request; return the response (status < 400) for the caller to read."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout if timeout == -1 else timeout)
        head = {"Host": "localhost", "Connection": "close", **(headers or {})}
        if isinstance(body, bytes):
            head["Content-Length"] = str(len(body))
        elif body is None and method in ("POST", "PUT"):
            head["Content-Length"] = "0"
        lines = [f"{method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in head.items()), "", ""]
        try:
            sock.connect(str(self.socket_path))
            try:
                sock.sendall("\r\n".join(lines).encode("latin-1"))
                for chunk in [body] if isinstance(body, bytes) else body or ():
                    sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the daemon refused the upload early: its answer says why
            resp = Response(sock)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            sock.close()
            raise Unreachable(self._hint(exc)) from None
        except PermissionError:
            sock.close()
            raise Unreachable(denied_hint(self.socket_path)) from None
        except (TimeoutError, ConnectionResetError, BrokenPipeError) as exc:
            sock.close()
            raise Unreachable(f"the daemon at {self.socket_path} did not answer: {exc}") from None
        if resp.status >= 400:
            raw = resp.read()
            try:
                answer = json.loads(raw)
            except ValueError:
                message = raw.decode(errors="replace") or f"HTTP {resp.status}"
                answer = {"error": {"message": message}}
            raise ApiError(resp.status, answer)
        return resp

    def _hint(self, exc: OSError) -> str:
        why = "no such socket" if isinstance(exc, FileNotFoundError) else "connection refused"
        return (
            f"the dlaasd daemon is not reachable at {self.socket_path} ({why}).\n"
            f"{start_hint(self.socket_path)}; "
            "point dlaasctl elsewhere with --socket or DLAAS_SOCKET."
        )

    def json(self, method: str, path: str, timeout: float | None = -1):
        """A request whose answer is JSON."""
        return json.loads(self.request(method, path, timeout=timeout).read() or b"null")

    def call(self, route: Route, **params: str | int | None) -> dict:
        """A request on a route of the table dlaasd shares (routes.py); its JSON answer."""
        return self.json(route.method, route.url(**params))

    def stream(self, path: str, timeout: float | None = None) -> Iterator[bytes]:
        yield from self.request("GET", path, timeout=timeout).chunks()

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

    def multipart(
        self, path: str, fields: dict[str, bytes], files: dict[str, Path | bytes]
    ) -> dict:
        """POST multipart/form-data, streaming the files (given as paths, or as bytes)."""
        boundary = os.urandom(16).hex()
        parts: list[bytes | Path] = []
        for name, value in fields.items():
            parts += [_part_head(boundary, name, f"{name}.yml"), value, b"\r\n"]
        for name, file in files.items():
            filename = file.name if isinstance(file, Path) else f"{name}.zip"
            parts += [_part_head(boundary, name, filename), file, b"\r\n"]
        parts.append(f"--{boundary}--\r\n".encode())
        length = sum(p.stat().st_size if isinstance(p, Path) else len(p) for p in parts)
        headers = {
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Content-Length": str(length),
        }
        resp = self.request("POST", path, body=_chain(parts), headers=headers, timeout=None)
        return json.loads(resp.read())


def start_hint(socket_path: Path) -> str:
    """How to start the daemon again, the way it was started last (the daemon leaves
    <socket>.started beside its socket; see dlaasd/started.py)."""
    try:
        info = json.loads(socket_path.with_name(socket_path.name + ".started").read_text())
    except (OSError, ValueError):
        info = {}
    return start_advice(info if isinstance(info, dict) else {})


def start_advice(info: dict) -> str:
    how = info.get("how")
    if how == "systemd":
        unit = info.get("unit") or "dlaasd.service"
        ctl, journal = (
            ("systemctl --user", "journalctl --user")
            if info.get("user_manager")
            else ("sudo systemctl", "journalctl")
        )
        return (
            f"It ran as the systemd service {unit}: `{ctl} start {unit}` "
            f"(why it stopped: `{journal} -u {unit}`)"
        )
    if how == "container":
        name = info.get("name") or "dlaasd"
        return (
            f"It ran in the Docker container {name!r}: `docker start {name}` "
            f"(why it stopped: `docker logs {name}`)"
        )
    if how == "foreground" and info.get("command"):
        user = info.get("user")
        who = f" as {user}" if user else ""
        return f"It ran in the foreground{who}: start it again with `{info['command']}`"
    return (
        "Start it in the foreground with `dlaasd`, or as a service with "
        "`sudo systemctl start dlaasd`"
    )


def denied_hint(socket_path: Path) -> str:
    """Why this user may not use the socket, from its real mode, owner and group."""
    import grp
    import pwd

    try:
        st = os.stat(socket_path)
    except PermissionError:
        return (
            f"permission denied on {socket_path}: a folder on the way to it is closed to "
            f"you ({_closed_folder(socket_path)}); ask the admin which socket to use"
        )
    except OSError as exc:
        return f"permission denied on {socket_path} ({exc.strerror})"

    def name(lookup, ident: int) -> str:
        try:
            return lookup(ident)[0]
        except KeyError:
            return str(ident)

    owner, group = name(pwd.getpwuid, st.st_uid), name(grp.getgrgid, st.st_gid)
    try:
        me = pwd.getpwuid(os.getuid()).pw_name
        member = me in grp.getgrgid(st.st_gid).gr_mem
    except KeyError:
        me, member = str(os.getuid()), False
    return denied_advice(
        str(socket_path), st.st_mode & 0o777, owner, group, me, member, st.st_gid in os.getgroups()
    )


def denied_advice(
    path: str, mode: int, owner: str, group: str, me: str, listed: bool, active: bool
) -> str:
    """`listed`: /etc/group names me in the group; `active`: this login has it already."""
    head = f"permission denied on {path} (mode {mode:04o}, owner {owner}, group {group})"
    if not mode & 0o060:
        return (
            f"{head}: only {owner} may use it. On a shared machine the admin sets "
            f"`socket_group: GROUP` in dlaasd's config, restarts it and adds you to GROUP; "
            f"else run dlaasctl as {owner}"
        )
    if listed and not active:
        return (
            f"{head}: you are in the group {group!r}, but this login is not yet; "
            f"log out and in again (or run `newgrp {group}`)"
        )
    return (
        f"{head}: only {owner} and the group {group!r} may use it; ask the admin to add you "
        f"(`sudo usermod -aG {group} {me}`), then log in again"
    )


def _closed_folder(path: Path) -> str:
    for parent in reversed(path.parents):
        if not os.access(parent, os.X_OK):
            try:
                st = os.stat(parent)
                return f"{parent} is mode {st.st_mode & 0o777:04o}"
            except OSError:
                return f"{parent}"
    return "unknown"


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
