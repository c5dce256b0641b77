"""Several people on one daemon: the socket's group, owners, and who may halt what."""

from __future__ import annotations

import grp
import os
import pwd
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.harness import REPO, manifest

pytestmark = [
    pytest.mark.integration,
    pytest.mark.needs_root,  # creates test users
]

GROUP = "dlaas-test"
ALICE, BOB, OUTSIDER = "dlaas-alice", "dlaas-bob", "dlaas-outsider"


@pytest.fixture(scope="module")
def lab_users():
    try:
        grp.getgrnam(GROUP)
    except KeyError:
        subprocess.run(["groupadd", GROUP], check=True)
    for user, groups in ((ALICE, [GROUP]), (BOB, [GROUP]), (OUTSIDER, [])):
        try:
            pwd.getpwnam(user)
        except KeyError:
            extra = ["-G", ",".join(groups)] if groups else []
            subprocess.run(
                ["useradd", "-M", "-U", "-s", "/usr/sbin/nologin", *extra, user], check=True
            )
    return {u: pwd.getpwnam(u) for u in (ALICE, BOB, OUTSIDER)}


def demoted(user: str) -> Callable[[], None]:
    """A preexec_fn: the child runs as `user`, with the groups a login would give."""
    p = pwd.getpwnam(user)

    def demote() -> None:
        os.setgroups(os.getgrouplist(user, p.pw_gid))
        os.setgid(p.pw_gid)
        os.setuid(p.pw_uid)

    return demote


def ctl_as(user: str, socket: Path, *args: str) -> subprocess.CompletedProcess:
    """The real dlaasctl, run by another user (with the system's Python: the client needs
    nothing beyond the standard library)."""
    env = {"DLAAS_SOCKET": str(socket), "PATH": "/usr/bin:/bin", "HOME": "/tmp"}
    return subprocess.run(
        ["/usr/bin/python3", "-m", "dlaasctl.cli", *args],
        cwd=REPO / "client",
        env=env,
        preexec_fn=demoted(user),
        capture_output=True,
        text=True,
        timeout=120,
    )


def user_folder(user: str, command: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="dlaas-u-", dir="/tmp"))
    (folder / "manifest.yml").write_text(yaml.safe_dump(manifest(command, name=f"{user}-run")))
    p = pwd.getpwnam(user)
    for path in (folder, folder / "manifest.yml"):
        os.chown(path, p.pw_uid, p.pw_gid)
    os.chmod(folder, 0o755)
    return folder


def test_two_users_share_a_daemon(make_daemon, lab_users):
    d = make_daemon(socket_group=GROUP, drop_settle="1s")
    os.chmod(d.root, 0o755)  # the test's folder holds the socket; people must reach it
    st = os.stat(d.socket)
    assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == grp.getgrnam(GROUP).gr_gid

    cmd = "id -u > $RESULT_DIR/uid.txt; echo running as $(id -u); sleep 60"
    r = ctl_as(ALICE, d.socket, "train", str(user_folder(ALICE, cmd) / "manifest.yml"))
    assert r.returncode == 0, r.stderr
    run_id = r.stdout.strip()
    run = d.wait(run_id, "PROCESSING")
    alice = lab_users[ALICE]
    assert run["owner"] == ALICE and run["owner_uid"] == alice.pw_uid

    refused = ctl_as(BOB, d.socket, "halt", run_id)
    assert refused.returncode == 1
    assert f"belongs to {ALICE}" in refused.stderr and "only its owner or root" in refused.stderr
    assert ctl_as(BOB, d.socket, "delete", run_id).returncode == 1
    listing = ctl_as(BOB, d.socket, "list")
    assert listing.returncode == 0 and ALICE in listing.stdout and "OWNER" in listing.stdout

    outsider = ctl_as(OUTSIDER, d.socket, "list")
    assert outsider.returncode == 3 and "permission denied" in outsider.stderr
    assert repr(GROUP) in outsider.stderr

    deadline = time.monotonic() + 30
    while "running as" not in d.ctl("logs", run_id).stdout and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ctl_as(ALICE, d.socket, "halt", run_id).returncode == 0
    assert d.wait(run_id, timeout=60)["status"] == "HALTED"
    assert f"running as {alice.pw_uid}" in d.ctl("logs", run_id).stdout  # the owner's uid
    mirrored = d.state / "inbox" / "results" / run_id / "uid.txt"
    assert mirrored.read_text().strip() == str(alice.pw_uid)
    assert mirrored.stat().st_uid == alice.pw_uid  # results on disk are theirs

    # a drop belongs to whoever owns the dropped files
    bob = lab_users[BOB]
    drop = d.state / "inbox" / "bobs-drop"
    drop.mkdir()
    (drop / "manifest.yml").write_text(yaml.safe_dump(manifest("echo hi", name="bob-drop")))
    for path in (drop, drop / "manifest.yml"):
        os.chown(path, bob.pw_uid, bob.pw_gid)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        runs = d.ctl_json("list")["runs"]
        mine = [r for r in runs if r["name"] == "bob-drop"]
        if mine:
            break
        time.sleep(0.2)
    assert mine and mine[0]["owner"] == BOB and mine[0]["owner_uid"] == bob.pw_uid
