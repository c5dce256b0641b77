"""The system service files: units verify, sandboxing scores, sysusers/tmpfiles, installer.

Nothing here starts a service (PID 1 need not be systemd): the units are checked with
`systemd-analyze verify` against a staged root that `scripts/install-service --root`
fills, so ExecStart= is checked at the path the installer really creates (with stand-in
executables for the venv and MinIO, which --skip-python/--skip-minio leave out).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from dlaasd import config as configuration
from tests.harness import REPO

SYSTEMD = REPO / "systemd"
INSTALL = REPO / "scripts" / "install-service"
UNITS = ["dlaasd.service", "dlaas-minio.service"]
MAX_EXPOSURE = 4.0

assert shutil.which("systemd-analyze"), "systemd-analyze is missing: scripts/setup installs it"


def sh(*args: str | Path, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, **kw)


def about_ours(output: str) -> list[str]:
    """Lines of systemd's output that concern our files (warnings elsewhere are not ours)."""
    return [
        line
        for line in output.splitlines()
        if any(name in line for name in (*UNITS, "dlaas.conf", "dlaas.sysusers", "dlaas.tmpfiles"))
    ]


def install(root: Path, *extra: str) -> subprocess.CompletedProcess:
    r = sh(INSTALL, "--root", root, "--skip-python", "--skip-minio", *extra, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


@pytest.fixture(scope="module")
def staged(tmp_path_factory) -> Path:
    """A root that install-service filled, plus the host's own units and stand-ins for
    the executables the units run."""
    root = tmp_path_factory.mktemp("root")
    install(root)
    host_units = next(
        (p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if p.is_dir()),
        None,
    )
    if host_units:  # sysinit.target, basic.target, ...: what every service depends on
        shutil.copytree(host_units, root / "usr/lib/systemd/system", symlinks=True)
    for exe in ("opt/dlaas/bin/dlaasd", "opt/dlaas/bin/dlaasctl", "usr/local/bin/minio"):
        path = root / exe
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    return root


# --- units ----------------------------------------------------------------------------


def test_units_verify_cleanly(staged):
    r = sh("systemd-analyze", "verify", f"--root={staged}", *UNITS)
    assert r.returncode == 0, r.stdout + r.stderr
    assert about_ours(r.stdout + r.stderr) == []


def test_verify_would_catch_a_mistake(staged, tmp_path):
    """The check above means something: a misspelt key in a copy is reported."""
    root = tmp_path / "root"
    # (not the *shadow files: systemd-sysusers writes them mode 0000, for root's eyes only)
    shutil.copytree(staged, root, symlinks=True, ignore=shutil.ignore_patterns("*shadow"))
    unit = root / "usr/local/lib/systemd/system/dlaasd.service"
    unit.write_text(unit.read_text().replace("KillMode=mixed", "KillMode=mixed\nKilMode=x"))
    r = sh("systemd-analyze", "verify", f"--root={root}", "dlaasd.service")
    assert "KilMode" in r.stdout + r.stderr


@pytest.mark.parametrize("unit", UNITS)
def test_sandbox_exposure_is_at_most_4(unit):
    r = sh("systemd-analyze", "security", "--offline=true", "--no-pager", SYSTEMD / unit)
    out = r.stdout + r.stderr
    found = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", out)
    assert found, out
    exposure = float(found.group(1))
    assert exposure <= MAX_EXPOSURE, f"{unit}: exposure {exposure} > {MAX_EXPOSURE}\n{out}"


def unit_settings(unit: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in (SYSTEMD / unit).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_dlaasd_unit_keeps_runs_alive_and_notifies():
    s = unit_settings("dlaasd.service")
    assert s["Type"] == ["notify"] and s["NotifyAccess"] == ["main"]
    assert s["KillMode"] == ["mixed"]  # never control-group: not that it could reach runs
    assert s["Restart"] == ["on-failure"]
    assert "WatchdogSec" in s
    assert s["ExecStart"][0].split()[0] == "/usr/local/bin/dlaasd"
    assert "User" not in s and "DynamicUser" not in s  # root, on purpose (see the unit)


def test_minio_address_and_keys_agree_between_units_and_config():
    s = unit_settings("dlaas-minio.service")
    address = next(
        v.split("=", 1)[1] for v in s["Environment"] if v.startswith("DLAAS_MINIO_ADDRESS=")
    )
    assert address.startswith("127.0.0.1:")
    example = yaml.safe_load((SYSTEMD / "dlaasd.yaml.example").read_text())
    assert example["store"]["endpoint"] == f"http://{address}"
    assert example["store"]["credentials_file"] == "/etc/dlaas/credentials/store.json"
    loaded = [v.split(":", 1)[1] for v in s["LoadCredential"]]
    assert loaded == [
        "/etc/dlaas/credentials/minio-root-user",
        "/etc/dlaas/credentials/minio-root-password",
    ]


# --- sysusers.d, tmpfiles.d ------------------------------------------------------------


def test_sysusers_creates_the_dlaas_group(tmp_path):
    r = sh("systemd-sysusers", f"--root={tmp_path}", "--dry-run", SYSTEMD / "dlaas.sysusers")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "Creating group 'dlaas'" in out
    assert not re.search(r"ignoring|invalid|failed", out, re.I), out


def test_tmpfiles_create_the_folders_with_their_modes(tmp_path):
    config = SYSTEMD / "dlaas.tmpfiles"
    if os.geteuid() != 0:  # owner "-": the caller, since only root may chown to root
        config = tmp_path / "dlaas.conf"
        config.write_text(re.sub(r" root \w+ ", " - - ", (SYSTEMD / "dlaas.tmpfiles").read_text()))
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    # as install-service does: the group first (tmpfiles resolves it in the root's /etc/group)
    r = sh("systemd-sysusers", f"--root={root}", SYSTEMD / "dlaas.sysusers")
    assert r.returncode == 0, r.stdout + r.stderr
    r = sh("systemd-tmpfiles", f"--root={root}", "--create", config)
    assert r.returncode == 0, r.stdout + r.stderr
    assert about_ours(r.stderr) == [] and "ignoring" not in r.stderr, r.stderr
    modes = {
        "var/lib/dlaas": 0o711,
        "var/lib/dlaas/inbox": 0o3770,  # dlaasd's unit may not set setgid itself
        "var/lib/dlaas/inbox/data": 0o3770,
        "run/dlaas": 0o755,
        "etc/dlaas": 0o755,
        "etc/dlaas/credentials": 0o700,
    }
    for path, mode in modes.items():
        assert stat.S_IMODE((root / path).stat().st_mode) == mode, path
    if os.geteuid() == 0:
        dlaas = next(
            int(line.split(":")[2])
            for line in (root / "etc/group").read_text().splitlines()
            if line.startswith("dlaas:")
        )
        assert (root / "var/lib/dlaas/inbox").stat().st_gid == dlaas


# --- the sample config ------------------------------------------------------------------


def test_sample_config_loads(tmp_path):
    creds = tmp_path / "store.json"
    creds.write_text(json.dumps({"access_key": "a" * 12, "secret_key": "s" * 30}))
    text = (SYSTEMD / "dlaasd.yaml.example").read_text()
    text = text.replace("/etc/dlaas/credentials/store.json", str(creds))
    if not configuration._group_exists("dlaas"):  # not on this machine (yet)
        text = text.replace("socket_group: dlaas", 'socket_group: ""')
    path = tmp_path / "dlaasd.yaml"
    path.write_text(text)
    c = configuration.load(path, env={})
    assert c.store.endpoint == "http://127.0.0.1:9000"
    assert (c.store.access_key, c.store.secret_key) == ("a" * 12, "s" * 30)
    assert c.socket == "/run/dlaas/dlaasd.sock"
    assert c.state_dir == "/var/lib/dlaas"


# --- scripts/install-service ----------------------------------------------------------


def test_install_dry_run_prints_every_step_and_changes_nothing():
    before = {p: p.exists() for p in (Path("/opt/dlaas"), Path("/etc/dlaas"))}
    r = sh(INSTALL, "--dry-run", timeout=60)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    for expected in (
        "-m venv /opt/dlaas",
        f"pip install --quiet --upgrade {REPO}",
        "ln -sfn /opt/dlaas/bin/dlaasd /usr/local/bin/dlaasd",
        "ln -sfn /opt/dlaas/bin/dlaasctl /usr/local/bin/dlaasctl",
        "scripts/install-minio",
        "/usr/local/lib/systemd/system/dlaasd.service",
        "/usr/local/lib/systemd/system/dlaas-minio.service",
        "/etc/sysusers.d/dlaas.conf",
        "/etc/tmpfiles.d/dlaas.conf",
        "systemd-sysusers",
        "systemd-tmpfiles --create",
        "/etc/dlaas/dlaasd.yaml",
        "/etc/dlaas/credentials",
        "systemctl daemon-reload",
        "systemctl enable dlaas-minio.service dlaasd.service",
        "systemctl start dlaas-minio.service dlaasd.service",
        "dry run: nothing was changed",
    ):
        assert expected in out, f"{expected!r} missing from:\n{out}"
    assert {p: p.exists() for p in before} == before


def test_install_no_start_starts_nothing():
    r = sh(INSTALL, "--dry-run", "--no-start", timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    commands = [line for line in r.stdout.splitlines() if line.startswith("+ ")]
    assert any("systemctl enable" in c for c in commands)
    assert not [c for c in commands if re.search(r"systemctl (start|restart|try-restart)", c)]


def test_install_into_a_root_is_complete_and_idempotent(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    install(root)
    creds = root / "etc/dlaas/credentials"
    keys = json.loads((creds / "store.json").read_text())
    assert (creds / "minio-root-user").read_text() == keys["access_key"]
    assert (creds / "minio-root-password").read_text() == keys["secret_key"]
    assert len(keys["secret_key"]) >= 30
    for name in ("store.json", "minio-root-user", "minio-root-password"):
        assert stat.S_IMODE((creds / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE(creds.stat().st_mode) == 0o700
    assert (root / "etc/dlaas/dlaasd.yaml").read_text() == (
        SYSTEMD / "dlaasd.yaml.example"
    ).read_text()
    for unit in UNITS:
        assert (root / "usr/local/lib/systemd/system" / unit).read_bytes() == (
            SYSTEMD / unit
        ).read_bytes()
    wants = root / "etc/systemd/system/multi-user.target.wants"
    assert sorted(p.name for p in wants.iterdir()) == sorted(UNITS)
    assert (root / "etc/systemd/system/dlaasd.service.wants/dlaas-minio.service").is_symlink()
    assert os.readlink(root / "usr/local/bin/dlaasd") == "/opt/dlaas/bin/dlaasd"
    assert "dlaas:" in (root / "etc/group").read_text()

    # Again: nothing changes, the keys stay.
    (root / "etc/dlaas/dlaasd.yaml").write_text("log_level: debug\n")  # the admin's edit
    second = install(root).stdout
    assert "+ install" not in second, second
    assert "keys exist, kept" in second
    assert json.loads((creds / "store.json").read_text()) == keys
    assert (root / "etc/dlaas/dlaasd.yaml").read_text() == "log_level: debug\n"

    # A lost store.json comes back from MinIO's files, with the same keys.
    (creds / "store.json").unlink()
    install(root)
    assert json.loads((creds / "store.json").read_text()) == keys


# --- scripts/install-minio ------------------------------------------------------------


def test_install_minio_keeps_a_minio_the_admin_put_there(tmp_path):
    """No version stamp: not ours to replace, and nothing is built (Go may be absent)."""
    from dlaasd.minio_server import find_binary

    shutil.copy(find_binary("minio"), tmp_path / "minio")
    before = (tmp_path / "minio").read_bytes()
    r = sh(REPO / "scripts" / "install-minio", env={**os.environ, "DLAAS_BIN_DIR": str(tmp_path)})
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"minio: using {tmp_path}/minio (" in r.stdout, r.stdout
    assert (tmp_path / "minio").read_bytes() == before
    assert not (tmp_path / ".minio-version").exists()


def test_dlaasd_only_reads_its_configuration_folder():
    """ConfigurationDirectory= would make /etc/dlaas writable to the daemon."""
    s = unit_settings("dlaasd.service")
    assert "ConfigurationDirectory" not in s
    assert "ReadWritePaths" not in s and s["ProtectSystem"] == ["strict"]
