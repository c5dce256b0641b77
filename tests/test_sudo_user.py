"""The README's two commands as a new user would run them: a fresh account with
password-less sudo, the repository in its home folder, Docker Engine running and the user
not in its group. Setup must see "running, but this user may not use it" (not "not
running"), add the user to the group with sudo and carry on in the same run, or stop with
the one command to run where the user said no.

The user gets the working tree as git sees it (tracked and new files, not what
.gitignore leaves out such as .venv): what a clone of this commit would hold, plus what is
not committed yet. pip installs from wheels of this environment's packages, so the user's
set-up downloads nothing; MinIO and the framework images are the ones root set up.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from tests.harness import REPO, short_tmp

# a fresh venv, the demo's training and a few tests, one after another: minutes
pytestmark = [pytest.mark.integration, pytest.mark.needs_root, pytest.mark.timeout(1800)]

USER = "dlaas-sudoer"
SUDOERS = Path("/etc/sudoers.d/dlaas-test-sudoer")
DOCKER_GROUP = "docker"
USER_PATH = "/usr/local/bin:/usr/bin:/bin"  # a user's login PATH on Debian: no sbin


def in_docker_group() -> bool:
    return USER in grp.getgrnam(DOCKER_GROUP).gr_mem


def copy_working_tree(dest: Path) -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = REPO / name
        if source.is_file():  # not a file deleted but not committed yet
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


@pytest.fixture(scope="module")
def wheels():
    """Wheels of every package in this environment (from pip's cache, no new downloads
    where it is warm), for the user's pip (pytest's own tmp folders are root's only)."""
    folder = short_tmp("dlaas-wheels-")
    os.chmod(folder, 0o755)
    frozen = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (folder / "requirements.txt").write_text(frozen)
    # and the build backend pyproject.toml names, with what hatchling asks for to build an
    # editable install (editables), which the user's scripts/setup makes
    build = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"]
    build.append("editables")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", folder]
        + ["-r", folder / "requirements.txt", *build],
        check=True,
        timeout=900,
    )
    for wheel in folder.iterdir():
        os.chmod(wheel, 0o644)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def pip_env(wheels) -> dict[str, str]:
    """The user's pip takes the wheels, and only them where its python3 is this one's
    version (the wheels fit); another version may fetch what it lacks from the index."""
    theirs = subprocess.run(
        ["python3", "-c", "import sys; print(sys.version_info[:2])"],
        env={"PATH": USER_PATH},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    env = {"PIP_FIND_LINKS": str(wheels), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    if theirs == str(sys.version_info[:2]):
        env["PIP_NO_INDEX"] = "1"
    return env


def kill_processes_of(uid: int) -> None:
    """Stop what the test user left running (the demo's dlaasd and its MinIO)."""
    pids = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            uids = next(x for x in status.read_text().splitlines() if x.startswith("Uid:"))
        except (OSError, StopIteration):
            continue
        if int(uids.split()[1]) == uid:
            pids.append(int(status.parent.name))
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        for _ in range(100):
            if not any(Path(f"/proc/{pid}").exists() for pid in pids):
                return
            time.sleep(0.2)


@pytest.fixture(scope="module")
def sudoer(docker_client):
    """A fresh user with password-less sudo, not in the docker group, with the repository
    in its home folder; removed afterwards with everything it started."""
    assert shutil.which("sudo"), "sudo is missing: scripts/setup installs it"
    subprocess.run(["userdel", "-r", USER], capture_output=True)  # a leftover of a killed run
    subprocess.run(["useradd", "-m", "-s", "/bin/bash", USER], check=True)
    SUDOERS.write_text(f"{USER} ALL=(ALL:ALL) NOPASSWD: ALL\n")
    os.chmod(SUDOERS, 0o440)
    user = pwd.getpwnam(USER)
    home = Path(user.pw_dir)
    clone = home / "dlaasd"
    copy_working_tree(clone)
    subprocess.run(["chown", "-R", f"{USER}:{user.pw_gid}", clone], check=True)
    assert not in_docker_group()
    try:
        yield user, clone
    finally:
        kill_processes_of(user.pw_uid)
        state = home / ".local/state/dlaas"
        for c in docker_client.containers.list(
            all=True, filters={"label": f"dlaas.daemon={state}"}
        ):
            c.remove(force=True)
        SUDOERS.unlink(missing_ok=True)
        subprocess.run(["userdel", "-r", USER], capture_output=True)


def as_user(user, clone: Path, pip_env: dict, *command: str, timeout: float = 1800):
    """A command run by the user as from a login shell without a terminal (as CI would):
    the user's own environment, PATH without sbin, no tty to ask on."""
    env = {
        "HOME": user.pw_dir,
        "USER": USER,
        "LOGNAME": USER,
        "SHELL": "/bin/bash",
        "PATH": USER_PATH,
        "LANG": "C.UTF-8",
        **pip_env,
    }
    r = subprocess.run(
        ["runuser", "-u", USER, "--", "env", "-i", *(f"{k}={v}" for k, v in env.items())]
        + list(command),
        cwd=clone,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )
    print(f"$ {' '.join(command)}  (as {USER}, exit status {r.returncode})\n{r.stdout}")
    return r.returncode, r.stdout


def test_said_no_stops_with_the_one_command(sudoer, pip_env):
    user, clone = sudoer
    rc, out = as_user(user, clone, pip_env, "scripts/setup", "--no-docker-group", timeout=120)
    assert rc == 3, out
    assert "The Docker Engine is running" in out and f"user {USER} may not use it" in out
    assert "Access to the Docker socket is root on this machine" in out
    assert f"  sudo usermod -aG {DOCKER_GROUP} {USER}\n" in out
    assert "not running" not in out and "did not start" not in out
    # it stopped there: nothing else was set up, nothing was granted
    assert not (clone / ".venv").exists()
    assert not in_docker_group()


def test_demo_then_tests_as_a_user_with_sudo(sudoer, pip_env):
    user, clone = sudoer
    rc, out = as_user(user, clone, pip_env, "scripts/demo")
    assert rc == 0, out
    assert f"Adding {USER} to the group {DOCKER_GROUP}: sudo usermod" in out
    assert f"Continuing in the group {DOCKER_GROUP} (sg {DOCKER_GROUP})" in out
    assert in_docker_group()
    assert "minio: up to date" in out and "minio: building" not in out  # root's build
    assert "a dlaasd is already running" not in out
    run_id = re.search(r"^Done: (training-\w+) trained", out, re.M).group(1)

    # the user's daemon, in user mode, says the run COMPLETED
    ctl = clone / ".venv/bin/dlaasctl"
    rc, shown = as_user(user, clone, pip_env, str(ctl), "show", run_id, "--json")
    assert rc == 0 and json.loads(shown)["status"] == "COMPLETED", shown
    assert (Path(user.pw_dir) / ".local/state/dlaas/dlaasd.sock").is_socket()
    results = list((clone / "results" / run_id).iterdir())
    assert results
    # in the docker group as a new login would have it: the user's own group stays primary
    assert {p.stat().st_gid for p in results} == {user.pw_gid}

    # scripts/test as this user: what needs root is listed as not run, the rest runs
    rc, out = as_user(
        user, clone, pip_env, "scripts/test", "tests/test_users.py", "tests/unit/test_units.py"
    )
    assert rc == 0, out
    assert "not root: the tests marked needs_root" in out
    assert f"these need root and were not run as uid {user.pw_uid}" in out
    assert "  tests/test_users.py::test_two_users_share_a_daemon" in out
    assert re.search(r"\d+ passed", out), out
