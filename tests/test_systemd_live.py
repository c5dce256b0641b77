"""The lab-machine service under a real systemd, installed as the README says.

A container boots systemd 252 (Debian 12) as PID 1 (scripts/build-systemd-image; how it
runs on a host whose PID 1 is not systemd: ../shared/testbeds/systemd.md). Inside it,
`scripts/install-service` runs as an admin would: from a copy of this checkout, with
dlaasd's dependencies as wheels built here (`pip wheel`; no network inside), and the MinIO
binary an admin put in /usr/local/bin without a version stamp and without Go to build one.
No libnss-systemd either: MinIO's DynamicUser= has no passwd entry.

Training containers are siblings on this host's Docker Engine (its socket is mounted in),
so the state folder is bind-mounted at the same path inside and out; the container has
no network. Everything is found by its unique name and label and removed afterwards.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from dlaasd.minio_server import find_binary
from tests.harness import REPO, manifest

pytestmark = pytest.mark.integration

IMAGE = "dlaas/systemd-test:bookworm"
SRC = "/opt/dlaas-src"  # the admin's checkout, inside
MAX_EXPOSURE = 2.5
MINIO_MAX_EXPOSURE = 1.5
WAIT = 180  # seconds for anything that should happen (generous: CI shares its cores)


def sh(*args: str | Path, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=timeout, **kw
    )


class Machine:
    """The systemd container: commands run in it as root or as a user, like a login."""

    def __init__(self, name: str, state: Path):
        self.name = name
        self.state = state

    def run(
        self, script: str, user: str = "", input: str | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess:
        # runuser: the user's groups from /etc/group, as at a login
        who = ["runuser", "-u", user, "--"] if user else []
        return sh(
            "docker", "exec", "-i", "-w", "/", self.name, *who, "bash", "-c", script,
            input=input, timeout=timeout,
        )  # fmt: skip

    def ok(self, script: str, **kw) -> str:
        r = self.run(script, **kw)
        assert r.returncode == 0, f"{script!r} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
        return r.stdout

    def prop(self, unit: str, name: str) -> str:
        return self.ok(f"systemctl show -p {name} --value {unit}").strip()

    def journal(self, unit: str = "dlaasd", after: str = "") -> str:
        cursor = f"--after-cursor='{after}'" if after else ""
        return self.ok(f"journalctl -u {unit} -o cat --no-pager {cursor}")

    def cursor(self, unit: str = "dlaasd") -> str:
        out = self.ok(f"journalctl -u {unit} -n 0 --show-cursor --no-pager")
        found = re.search(r"-- cursor: (\S+)", out)
        return found.group(1) if found else ""

    def ctl(self, user: str, *args: str) -> subprocess.CompletedProcess:
        return self.run("dlaasctl " + " ".join(args), user=user)

    def show(self, user: str, run_id: str) -> dict:
        return json.loads(self.ok(f"dlaasctl show {run_id} --json", user=user))

    def wait(self, user: str, run_id: str, *statuses: str) -> dict:
        wanted = set(statuses or ("COMPLETED", "FAILED", "HALTED"))
        run = until(
            lambda: (r := self.show(user, run_id))["status"] in wanted and r, f"{run_id} {wanted}"
        )
        return run

    def install(self) -> str:
        """scripts/install-service as the README says, with pip finding only the wheels."""
        return self.ok(
            f"PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheels {SRC}/scripts/install-service 2>&1",
            timeout=900,
        )


def until(predicate, what: str, timeout: float = WAIT):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def boot_state(m: Machine) -> str:
    """Once systemd listens on its bus, its state when it finished booting; "" before
    (systemctl then says "offline", which is no state to judge the boot by)."""
    state = m.run("systemctl is-system-running --wait", timeout=120).stdout.strip()
    return "" if state == "offline" else state


def build_wheels() -> Path:
    """dlaasd's dependencies and its build backend as wheels, for pip without an index."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    wanted = [*project["project"]["dependencies"], *project["build-system"]["requires"]]
    cache = (
        Path.home()
        / ".cache"
        / "dlaas"
        / f"systemd-test-wheels-py{sys.version_info[0]}{sys.version_info[1]}"
    )
    cache.mkdir(parents=True, exist_ok=True)
    r = sh(sys.executable, "-m", "pip", "wheel", "-q", "--find-links", cache, "-w", cache, *wanted)
    assert r.returncode == 0, f"pip wheel failed:\n{r.stderr[-3000:]}"
    return cache


def copy_checkout(name: str) -> None:
    """The working tree (tracked and new files, not what git ignores) into SRC."""
    files = sh("git", "-C", REPO, "ls-files", "-z", "-c", "-o", "--exclude-standard").stdout
    existing = "\0".join(f for f in files.split("\0") if f and (REPO / f).exists())
    tar = subprocess.run(
        ["tar", "-C", str(REPO), "--null", "-T", "-", "-cf", "-"],
        input=existing.encode(), capture_output=True, check=True,
    )  # fmt: skip
    r = subprocess.run(
        ["docker", "exec", "-i", name, "sh", "-c", f"mkdir -p {SRC} && tar -C {SRC} -xf -"],
        input=tar.stdout, capture_output=True,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr


@pytest.fixture(scope="module")
def machine(docker_client):
    r = sh(REPO / "scripts" / "build-systemd-image", timeout=1200)
    assert r.returncode == 0, f"build-systemd-image failed:\n{r.stdout}\n{r.stderr}"
    wheels = build_wheels()
    state = Path(tempfile.mkdtemp(prefix="dlaas-systemd-", dir="/var/tmp"))
    state.chmod(0o711)
    name = f"dlaas-systemd-test-{secrets.token_hex(4)}"
    m = Machine(name, state)
    try:  # the state folder goes even when the container does not start
        r = sh(
            "docker", "run", "-d", "--name", name, "--label", "dlaas.test=systemd",
            "--network", "none",
            # systemd as PID 1 here: ../shared/testbeds/systemd.md
            "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
            "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
            "--security-opt", "systempaths=unconfined",
            "--cgroupns=host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
            "--tmpfs", "/run", "--tmpfs", "/run/lock", "--stop-signal", "SIGRTMIN+3",
            "-v", "/var/run/docker.sock:/run/docker.sock",
            "-v", f"{state}:{state}",
            "-v", f"{wheels}:/wheels:ro",
            "--entrypoint", "/bin/sh", IMAGE, "-c", "mount --make-rshared / && exec /sbin/init",
        )  # fmt: skip
        assert r.returncode == 0, f"docker run failed: {r.stderr}"
        booted = until(lambda: boot_state(m), "systemd to boot")
        assert booted in ("running", "degraded"), m.ok("systemctl --failed --no-pager")
        copy_checkout(name)
        r = sh("docker", "cp", find_binary("minio"), f"{name}:/usr/local/bin/minio")
        assert r.returncode == 0, r.stderr
        m.install_log = m.install()
        m.ok("useradd -m alice && useradd -m bob && usermod -aG dlaas alice")
        yield m
    finally:
        print(m.run("journalctl -u dlaasd -u dlaas-minio --no-pager -n 60").stdout)
        for c in docker_client.containers.list(
            all=True, filters={"label": f"dlaas.daemon={state}"}
        ):
            c.remove(force=True)
        m.run(f"rm -rf {state}/*")  # files of the container's users
        sh("docker", "rm", "-f", name, timeout=120)
        shutil.rmtree(state, ignore_errors=True)


def configure_for_trainings(m: Machine) -> None:
    """What an admin does to move the state: state_dir in dlaasd.yaml and a drop-in. The
    state must be at the host's path (training containers are the host's siblings); under
    /var/tmp, which the unit's PrivateTmp= hides, it is bound in with BindPaths=."""
    if m.prop("dlaasd", "DropInPaths"):
        return
    config = yaml.safe_load(m.ok("cat /etc/dlaas/dlaasd.yaml"))
    config["state_dir"] = str(m.state)
    config["drop_dir"] = "/var/lib/dlaas/inbox"  # the one tmpfiles.d makes
    m.ok("cat > /etc/dlaas/dlaasd.yaml", input=yaml.safe_dump(config))
    m.ok(
        "mkdir -p /etc/systemd/system/dlaasd.service.d && "
        "cat > /etc/systemd/system/dlaasd.service.d/state.conf",
        input=f"[Service]\nBindPaths={m.state}\nWatchdogSec=5s\n",
    )
    m.ok("systemctl daemon-reload && systemctl restart dlaasd")


def submit(m: Machine, user: str, name: str) -> str:
    """A run that trains until the test says so (a file `go` in its results folder)."""
    command = (
        "echo started; while [ ! -e $RESULT_DIR/go ]; do sleep 0.2; done; "
        "echo trained by $(id -u) > $RESULT_DIR/model.txt"
    )
    folder = f"~/{name}"
    m.ok(f"mkdir -p {folder} && cat > {folder}/manifest.yml", user=user,
         input=yaml.safe_dump(manifest(command, name=name)))  # fmt: skip
    out = m.ok(f"dlaasctl train {folder}/manifest.yml {folder}", user=user)
    run_id = out.strip().splitlines()[0]
    m.wait(user, run_id, "PROCESSING")
    until(lambda: "started" in m.ok(f"dlaasctl logs {run_id}", user=user), f"{run_id} started")
    return run_id


def release(m: Machine, run_id: str) -> None:
    # from inside, as root there: the run's folder is its owner's, not the test's
    # (the test may run as a user in the docker group)
    m.ok(f"touch {m.state}/runs/{run_id}/job/results/go")


def finished_with_results(m: Machine, user: str, run_id: str) -> None:
    run = m.wait(user, run_id)
    assert run["status"] == "COMPLETED", run
    uid = m.ok(f"id -u {user}").strip()
    m.ok(f"cd ~ && rm -rf {run_id} && dlaasctl download {run_id}", user=user)
    assert m.ok(f"cat ~/{run_id}/model.txt", user=user).strip() == f"trained by {uid}"


def log_time(line: str) -> datetime:
    """The time stamp dlaasd's log lines begin with (UTC in the container)."""
    stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    return stamp.replace(tzinfo=UTC)


# --- installed as the README says ------------------------------------------------------------


def test_both_units_are_active_with_the_admins_minio(machine):
    m = machine
    for unit in ("dlaas-minio.service", "dlaasd.service"):
        assert m.run(f"systemctl is-active {unit}").stdout.strip() == "active", m.journal(unit)
    assert "minio: using /usr/local/bin/minio" in m.install_log, m.install_log
    assert not m.run("command -v go").stdout
    status = json.loads(m.ok("dlaasctl status --json"))
    assert status["store"]["ok"] and status["docker"]["ok"], status
    assert "mcConfigDir" not in m.journal("dlaas-minio")


def test_tmpfiles_makes_the_drop_folder_and_dlaasd_keeps_it(machine):
    for folder in ("/var/lib/dlaas/inbox", "/var/lib/dlaas/inbox/data"):
        assert machine.ok(f"stat -c '%a %U %G' {folder}").split() == ["3770", "root", "dlaas"]


def test_the_config_is_read_only_to_the_daemon(machine):
    """Checked in the daemon's own mount namespace, where the unit's sandbox applies."""
    pid = machine.prop("dlaasd", "MainPID")
    inside = f"nsenter --target {pid} --mount --"
    r = machine.run(f"{inside} touch /etc/dlaas/probe")
    assert r.returncode != 0 and "Read-only file system" in r.stderr, r
    machine.ok(f"{inside} sh -c 'touch /var/lib/dlaas/probe && rm /var/lib/dlaas/probe'")


@pytest.mark.parametrize(
    ("unit", "limit"), [("dlaasd", MAX_EXPOSURE), ("dlaas-minio", MINIO_MAX_EXPOSURE)]
)
def test_exposure_of_the_running_units(machine, unit, limit):
    out = machine.ok(f"systemd-analyze security --no-pager {unit}.service")
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out)
    assert found, out
    print(f"{unit}: exposure {found.group(1)}")
    assert float(found.group(1)) <= limit, out


def test_only_members_of_dlaas_use_the_socket_and_the_drop_folder(machine):
    m = machine
    assert m.ctl("alice", "status").returncode == 0
    r = m.ctl("bob", "status")
    assert r.returncode != 0 and "dlaas" in r.stderr, r  # says which group to join
    m.ok("mkdir /var/lib/dlaas/inbox/.alice-probe && rmdir /var/lib/dlaas/inbox/.alice-probe",
         user="alice")  # fmt: skip
    r = m.run("mkdir /var/lib/dlaas/inbox/.bob-probe", user="bob")
    assert r.returncode != 0 and "Permission denied" in r.stderr, r
    assert m.run("ls /var/lib/dlaas/inbox", user="bob").returncode != 0


# --- trainings across restarts ------------------------------------------------------------------


def test_restart_during_a_training_keeps_it_and_readiness_follows_recovery(machine):
    m = machine
    configure_for_trainings(m)
    run_id = submit(m, "alice", "restart")
    cursor = m.cursor()
    m.ok("systemctl restart dlaasd")
    # Type=notify: restart returned once READY=1 came; by then the socket answers and the
    # run was found again, and the log says recovery came before readiness.
    assert m.show("alice", run_id)["status"] == "PROCESSING"
    lines = m.journal(after=cursor).splitlines()
    recovered = next(line for line in lines if f"event=recover run={run_id}" in line)
    active = datetime.strptime(
        m.ok("systemctl show -p ActiveEnterTimestamp --timestamp=us+utc --value dlaasd").strip(),
        "%a %Y-%m-%d %H:%M:%S.%f UTC",
    ).replace(tzinfo=UTC)
    assert log_time(recovered) <= active, (recovered, active)
    release(m, run_id)
    finished_with_results(m, "alice", run_id)


def test_the_watchdog_restarts_a_stopped_daemon_and_the_run_is_found_again(machine):
    m = machine
    configure_for_trainings(m)
    run_id = submit(m, "alice", "watchdog")
    pid = m.prop("dlaasd", "MainPID")
    cursor = m.cursor()
    m.ok(f"kill -STOP {pid}")
    until(
        lambda: (
            m.prop("dlaasd", "MainPID") not in (pid, "0")
            and m.run("systemctl is-active dlaasd").stdout.strip() == "active"
        ),
        "the watchdog's restart",
    )
    assert "Watchdog timeout" in m.journal(after=cursor)
    assert f"event=recover run={run_id}" in m.journal(after=cursor)
    release(m, run_id)
    finished_with_results(m, "alice", run_id)


def test_a_drop_runs_as_the_dropper_and_its_results_are_theirs(machine):
    m = machine
    configure_for_trainings(m)
    text = yaml.safe_dump(manifest("echo dropped > $RESULT_DIR/out.txt", name="dropped"))
    m.ok("mkdir -p ~/drop && cat > ~/drop/manifest.yml && cp -r ~/drop /var/lib/dlaas/inbox/",
         user="alice", input=text)  # fmt: skip
    accepted = "/var/lib/dlaas/inbox/.accepted"
    run_id = until(lambda: m.ok(f"ls {accepted}").split(), "the drop taken")[0]
    results = f"/var/lib/dlaas/inbox/results/{run_id}"
    until(lambda: m.run(f"test -e {results}/out.txt").returncode == 0, "results mirrored")
    assert m.show("alice", run_id)["status"] == "COMPLETED"
    owners = m.ok(f"find {results} -printf '%u\\n' | sort -u").split()
    assert owners == ["alice"], owners
    assert m.ok(f"cat {results}/out.txt", user="alice").strip() == "dropped"
    assert m.run(f"cat {results}/out.txt", user="bob").returncode != 0


def test_install_service_again_is_an_upgrade_that_interrupts_nothing(machine):
    m = machine
    configure_for_trainings(m)
    run_id = submit(m, "alice", "upgrade")
    daemon, store = m.prop("dlaasd", "MainPID"), m.prop("dlaas-minio", "MainPID")
    m.ok(f"echo '# upgraded' >> {SRC}/systemd/dlaasd.service")  # a new release's unit
    out = m.install()
    assert "systemctl restart dlaasd.service" in out, out
    assert m.prop("dlaasd", "MainPID") != daemon  # runs the new code
    assert m.prop("dlaas-minio", "MainPID") == store  # unchanged: left serving
    assert m.ok("grep -c '# upgraded' /usr/local/lib/systemd/system/dlaasd.service").strip() == "1"
    assert m.show("alice", run_id)["status"] == "PROCESSING"
    release(m, run_id)
    finished_with_results(m, "alice", run_id)


def test_a_drop_folder_tmpfiles_did_not_make_is_refused_with_the_fix(machine):
    """The sandbox may not set the setgid bit: dlaasd says how to have tmpfiles.d do it."""
    m = machine
    configure_for_trainings(m)
    config = m.ok("cat /etc/dlaas/dlaasd.yaml")
    moved = yaml.safe_load(config) | {"drop_dir": "/var/lib/dlaas/drops"}
    try:
        m.ok("cat > /etc/dlaas/dlaasd.yaml", input=yaml.safe_dump(moved))
        cursor = m.cursor()
        assert m.run("systemctl restart dlaasd").returncode != 0
        said = m.journal(after=cursor)
        assert "drop folder /var/lib/dlaas/drops: cannot make it group 'dlaas', mode 3770" in said
        advice = "d /var/lib/dlaas/drops 3770 root dlaas -"
        assert advice in said, said
        lines = f"{advice}\nd /var/lib/dlaas/drops/data 3770 root dlaas -\n"
        m.ok("cat >> /etc/tmpfiles.d/dlaas.conf && systemd-tmpfiles --create", input=lines)
        m.ok("systemctl restart dlaasd")
        m.ok("runuser -u alice -- touch /var/lib/dlaas/drops/data/.probe")
    finally:
        m.ok("cat > /etc/dlaas/dlaasd.yaml", input=config)
        m.ok("systemctl restart dlaasd")
