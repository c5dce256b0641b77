"""How this dlaasd was started (a systemd service, a container, a command in the
foreground), in a small file beside its socket: whoever later finds the daemon stopped is
told by dlaasctl how to start it again the same way. The file stays after a stop; it
holds no secret (0644, like the socket's folder)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pwd
import re
import shlex
import socket
import sys
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)

# dlaasctl reads it under the same name: <socket>.started (it never imports dlaasd)
SUFFIX = ".started"


def started_file(socket_path: Path) -> Path:
    return socket_path.with_name(socket_path.name + SUFFIX)


def systemd_unit(cgroup: str) -> tuple[str, bool] | None:
    """The service a process runs in, from /proc/self/cgroup's text, and whether a user's
    own service manager runs it (`systemctl --user`). None for a shell's scope."""
    for line in cgroup.splitlines():
        path = line.rsplit(":", 1)[-1]
        last = path.rstrip("/").rsplit("/", 1)[-1]
        if re.fullmatch(r"[\w@.\\-]+\.service", last) and not last.startswith("user@"):
            return last, "/user@" in path
    return None


def how_started(
    env: Mapping[str, str] | None = None,
    argv: list[str] | None = None,
    cgroup: str | None = None,
    in_container: bool | None = None,
    container_name=None,
) -> dict:
    """{"how": "systemd", "unit"} | {"how": "container", "name"} | {"how": "foreground",
    "command", "user"}. Call it before the systemd variables are taken from the env."""
    env = os.environ if env is None else env
    argv = sys.argv if argv is None else argv
    if cgroup is None:
        cgroup = _read("/proc/self/cgroup")
    unit = systemd_unit(cgroup)
    if unit and (env.get("INVOCATION_ID") or env.get("NOTIFY_SOCKET")):
        return {"how": "systemd", "unit": unit[0], "user_manager": unit[1]}
    if in_container is None:  # the container's own process: its init, or under `--init`
        in_container = any(
            os.path.exists(p) for p in ("/.dockerenv", "/run/.containerenv")
        ) and 1 in (os.getpid(), os.getppid())
    if in_container:
        host = socket.gethostname()
        return {"how": "container", "name": (container_name or _container_name)(host)}
    try:
        user = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        user = str(os.geteuid())
    return {"how": "foreground", "command": shlex.join(["dlaasd", *argv[1:]]), "user": user}


def write(socket_path: Path, info: dict) -> None:
    path = started_file(socket_path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "w") as f:
            json.dump(info, f)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:  # only a hint for later: never a reason not to start
        log.warning("event=started_file_failed path=%s error=%r", path, str(exc))


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _container_name(host: str) -> str:
    """The container's name, from the Docker Engine whose socket it drives; else the
    hostname, which Docker sets to the container's short id."""
    with contextlib.suppress(Exception):
        import docker

        return docker.from_env(timeout=3).containers.get(host).name
    return host
