"""Two members of the lab and an outsider on one daemon, each trying to read the others'
secrets, code, logs and results: through every command, the API and the files on disk."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import re
import secrets
import shutil
import sqlite3
import stat
import subprocess
import tempfile
import zipfile
from pathlib import Path

import pytest
import yaml

from tests.harness import REPO, Minio, manifest, short_tmp
from tests.test_inbox import wait_for
from tests.test_upgrade import FIXTURES, old_state  # noqa: F401
from tests.test_users import (  # noqa: F401
    ALICE,
    BOB,
    GROUP,
    OUTSIDER,
    ctl_as,
    demoted,
    lab_users,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.usefixtures("lab_users"),
    pytest.mark.needs_root,  # creates test users
]

PLACEHOLDER = "********"


@pytest.fixture(scope="module")
def their_store():
    """Alice's own S3 endpoint, named in her manifest's `connection` (its keys appear
    nowhere else: not in the daemon's config)."""
    root = short_tmp("dlaas-s3-")
    server = Minio(root).start()
    client = server.client()
    client.make_bucket("alice-data")
    client.make_bucket("alice-results")
    (root / "x.txt").write_text("training data\n")
    client.fput_object("alice-data", "x.txt", str(root / "x.txt"))
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


def owned_by(user: str, prefix: str = "dlaas-p-") -> Path:
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    p = pwd.getpwnam(user)
    os.chown(folder, p.pw_uid, p.pw_gid)
    return folder


def alice_manifest(store: Minio, token: str) -> dict:
    cmd = (
        'cp "$DATA_DIR/x.txt" "$RESULT_DIR/data.txt"; '
        'printf %s "$HF_TOKEN" | sha256sum > "$RESULT_DIR/token.sha"; '
        'echo "alice trains with $PLAIN"'
    )
    return manifest(
        cmd,
        name="alice-secret-run",
        env={"HF_TOKEN": token, "PLAIN": "plain-value"},
        data_stores=[
            {
                "id": "own",
                "type": "s3_datastore",
                "training_data": {"container": "alice-data"},
                "training_results": {"container": "alice-results"},
                "connection": {
                    "auth_url": store.url,
                    "user_name": store.access_key,
                    "password": store.secret_key,
                },
            }
        ],
    )


def python_as(user: str, code: str, payload: object, *args: str) -> object:
    """Run `code` with the system's Python as `user` (beside the client's source, which
    needs nothing beyond the standard library): JSON `payload` in, JSON out."""
    r = subprocess.run(
        ["/usr/bin/python3", "-c", code, *args],
        cwd=REPO / "client",
        input=json.dumps(payload),
        preexec_fn=demoted(user),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def readable_by(user: str, paths: list[Path]) -> list[str]:
    """Which of `paths` the user can open (run as that user, in a child)."""
    code = (
        "import json, sys\n"
        "ok = []\n"
        "for p in json.load(sys.stdin):\n"
        "    try:\n"
        "        open(p, 'rb').close(); ok.append(p)\n"
        "    except OSError:\n"
        "        pass\n"
        "print(json.dumps(ok))\n"
    )
    return python_as(user, code, [str(x) for x in paths])


def files_under(root: Path, *skip: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if Path(dirpath) / d not in skip]
        out += [Path(dirpath) / f for f in filenames]
    return out


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def check_private(d, run_id: str, owner: str) -> None:
    """The state folder's modes, and what each user can really open in it."""
    state, uid = d.state, pwd.getpwnam(owner).pw_uid
    assert mode(state) == 0o711
    for db in state.glob("dlaas.db*"):
        assert mode(db) == 0o600, db
    for entry in state.iterdir():  # everything but the drop folder: root's alone
        if entry.name != "inbox":
            assert entry.stat().st_uid == 0 and mode(entry) & 0o066 == 0, (entry, oct(mode(entry)))
    run = state / "runs" / run_id
    assert mode(state / "runs") == 0o711 and mode(run) == 0o711
    assert mode(run / "manifest.yml") == 0o600 and run.stat().st_uid == 0
    assert (run / "job").stat().st_uid == uid and mode(run / "job") == 0o700
    assert mode(state / "secrets") == 0o700
    mirrored = state / "inbox" / "results" / run_id
    assert mirrored.stat().st_uid == uid and mode(mirrored) == 0o700

    files = files_under(state, state / "inbox") + files_under(mirrored)
    assert any(f.name == "dlaas.db" for f in files) and any(f.name == "data.txt" for f in files)
    for user in (BOB, OUTSIDER):
        assert readable_by(user, files) == []
    # the owner: her runs' job folders and mirrored results, nothing else
    hers = tuple(
        f"{folder}/"
        for folder in [*(state / "runs").glob("*/job"), *(state / "inbox" / "results").iterdir()]
        if folder.stat().st_uid == uid
    )
    mine = readable_by(owner, files)
    assert f"{run}/job/logs/training-log.txt" in mine
    assert mine and all(p.startswith(hers) for p in mine), mine


def never_contains(paths: list[Path], *values: str) -> None:
    """Not in any file, nor in any file of a zip (stored compressed). A file removed
    meanwhile (a run tidying its folder after its final status) holds nothing any more."""
    for path in paths:
        try:
            contents = {str(path): path.read_bytes()}
        except FileNotFoundError:
            continue
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                contents |= {f"{path}:{n}": zf.read(n) for n in zf.namelist()}
        for where, data in contents.items():
            for v in values:
                assert v.encode() not in data, f"{v!r} found in {where}"


def test_members_see_the_queue_but_not_each_others_runs(make_daemon, their_store):
    d = make_daemon(socket_group=GROUP, drop_settle="1s")
    os.chmod(d.root, 0o755)  # the test's folder holds the socket; people must reach it
    token = "hf_" + secrets.token_hex(12)
    password = their_store.secret_key

    folder = owned_by(ALICE)
    (folder / "manifest.yml").write_text(yaml.safe_dump(alice_manifest(their_store, token)))
    os.chown(folder / "manifest.yml", pwd.getpwnam(ALICE).pw_uid, -1)
    r = ctl_as(ALICE, d.socket, "train", str(folder / "manifest.yml"))
    assert r.returncode == 0, r.stderr
    run_id = r.stdout.strip()
    assert d.wait(run_id)["status"] == "COMPLETED", d.log_tail()

    # the owner sees everything, with the secrets replaced
    shown = ctl_as(ALICE, d.socket, "show", run_id, "--json")
    assert shown.returncode == 0, shown.stderr
    run = json.loads(shown.stdout)
    kept = yaml.safe_load(run["manifest"])
    assert kept["env"] == {"HF_TOKEN": PLACEHOLDER, "PLAIN": "plain-value"}
    assert kept["data_stores"][0]["connection"]["password"] == PLACEHOLDER
    assert token not in shown.stdout and password not in shown.stdout
    dest = owned_by(ALICE)
    r = ctl_as(ALICE, d.socket, "download", run_id, "--definition", "--dest", str(dest / "def"))
    assert r.returncode == 0, r.stderr
    definition = (dest / "def" / "manifest.yml").read_text()
    assert PLACEHOLDER in definition and token not in definition and password not in definition
    # ... and the run had them where it needed them: its container the token, the
    # staging the password of her own store (data in, results out)
    r = ctl_as(ALICE, d.socket, "download", run_id, "--dest", str(dest / "res"))
    assert r.returncode == 0, r.stderr
    assert (dest / "res" / "data.txt").read_text() == "training data\n"
    sha = hashlib.sha256(token.encode()).hexdigest()
    assert (dest / "res" / "token.sha").read_text().split()[0] == sha
    assert ctl_as(ALICE, d.socket, "logs", run_id).stdout.strip() == "alice trains with plain-value"

    # another member sees the queue, and nothing of the run itself
    listing = ctl_as(BOB, d.socket, "list", "--json")
    assert listing.returncode == 0, listing.stderr
    assert [r["owner"] for r in json.loads(listing.stdout)["runs"] if r["id"] == run_id] == [ALICE]
    for args in (
        ("show", run_id),
        ("show", run_id, "--json"),
        ("logs", run_id),
        ("metrics", run_id),
        ("download", run_id, "--dest", "/tmp/bob-took-it"),
        ("download", run_id, "--definition", "--dest", "/tmp/bob-took-it"),
        ("data", "download", f"dlaas-definitions/{run_id}", "/tmp/bob-took-it"),
    ):
        r = ctl_as(BOB, d.socket, *args)
        assert r.returncode == 1, (args, r.stdout, r.stderr)
        assert f"{run_id} belongs to {ALICE}" in r.stderr, (args, r.stderr)
        assert token not in r.stdout + r.stderr and "alice trains" not in r.stdout
    assert not Path("/tmp/bob-took-it").exists()
    r = ctl_as(BOB, d.socket, "data", "ls", "dlaas-definitions", "--json")
    assert r.returncode == 0, r.stderr
    assert run_id not in r.stdout  # her definition is not even listed
    statuses = api_as(
        BOB,
        d.socket,
        [
            f"/v1/runs/{run_id}",
            f"/v1/runs/{run_id}/logs",
            f"/v1/runs/{run_id}/metrics",
            f"/v1/runs/{run_id}/results",
            f"/v1/runs/{run_id}/results/data.txt",
            f"/v1/runs/{run_id}/definition",
            f"/v1/runs/{run_id}/definition/manifest.yml",
            f"/v1/data/dlaas-definitions/{run_id}/manifest.yml",
            f"/v1/data/dlaas-definitions?prefix={run_id}/",
        ],
    )
    assert set(statuses.values()) == {403}, statuses
    doc = d.api.json("GET", "/v1/openapi.json")
    assert not [p for p in statuses if "403" not in declared(doc, "get", p)], "403 undeclared"

    # the outsider cannot use the socket, and is told why in the socket's own terms
    r = ctl_as(OUTSIDER, d.socket, "list")
    assert r.returncode == 3
    assert f"mode 0660, owner root, group {GROUP}" in r.stderr
    assert f"sudo usermod -aG {GROUP} {OUTSIDER}" in r.stderr

    # an experiment: its trials are hers too, and its inline manifest's secret is kept apart
    spec = {
        "name": "alice-sweep",
        "manifest": manifest("true", name="sweep", env={"SWEEP_TOKEN": token}),
        "hyper_parameters": [{"name": "lr", "double_values": [0.1]}],
        "method": "grid",
        "objective": {"name": "accuracy", "maximize_or_minimize": "maximize"},
    }
    (folder / "experiment.yml").write_text(yaml.safe_dump(spec))
    r = ctl_as(ALICE, d.socket, "experiment", "run", str(folder / "experiment.yml"), "--json")
    assert r.returncode == 0, r.stderr
    created = json.loads(r.stdout)
    r = ctl_as(BOB, d.socket, "experiment", "show", created["id"])
    assert r.returncode == 1 and f"{created['id']} belongs to {ALICE}" in r.stderr, r.stderr
    shown = f"/v1/experiments/{created['id']}"
    assert api_as(BOB, d.socket, [shown]) == {shown: 403}
    assert "403" in declared(doc, "get", shown)
    r = ctl_as(BOB, d.socket, "experiment", "list", "--json")
    [theirs] = [e for e in json.loads(r.stdout)["experiments"] if e["id"] == created["id"]]
    assert theirs["owner"] == ALICE and "best_hyperparameters" not in theirs
    assert ctl_as(ALICE, d.socket, "experiment", "show", created["id"]).returncode == 0
    assert d.wait(created["runs"][0])["status"] == "COMPLETED"

    # the secrets are nowhere but in the vault: not in the database, the run's folder,
    # the drop folder, the daemon's log or the definitions bucket
    vault = d.state / "secrets" / f"{run_id}.json"
    assert mode(vault) == 0o600 and token in vault.read_text()
    stored = d.api.request("GET", f"/v1/data/dlaas-definitions/{run_id}/manifest.yml").read()
    assert PLACEHOLDER.encode() in stored and token.encode() not in stored
    everything = files_under(d.state, d.state / "secrets") + [d.log]
    never_contains(everything, token, password)
    check_private(d, run_id, ALICE)

    # after a restart: the same
    d.stop()
    d.start()
    check_private(d, run_id, ALICE)

    # `visibility: lab` opens a run to the group (its secrets stay hidden)
    d.stop()
    d.settings["visibility"] = "lab"
    d.start()
    shown = ctl_as(BOB, d.socket, "show", run_id, "--json")
    assert shown.returncode == 0, shown.stderr
    assert token not in shown.stdout and PLACEHOLDER in shown.stdout
    assert ctl_as(BOB, d.socket, "logs", run_id).stdout.strip() == "alice trains with plain-value"
    halt = ctl_as(BOB, d.socket, "halt", run_id)  # seeing is not changing
    assert halt.returncode == 1 and f"belongs to {ALICE}" in halt.stderr
    assert ctl_as(OUTSIDER, d.socket, "show", run_id).returncode == 3

    # the admin group sees every run under the default rule
    d.stop()
    d.settings["visibility"] = "queue"
    d.settings["admin_group"] = BOB  # useradd -U: bob's own group
    d.start()
    assert ctl_as(BOB, d.socket, "show", run_id).returncode == 0
    assert ctl_as(BOB, d.socket, "logs", run_id).returncode == 0

    # an upgrade: a state folder an older dlaasd left, looser modes and secrets in the
    # database, the run's folder and the definitions bucket
    d.stop()
    d.settings.pop("admin_group")
    original = yaml.safe_dump(alice_manifest(their_store, token))
    with sqlite3.connect(d.state / "dlaas.db") as db:
        db.execute("update runs set manifest = ? where id = ?", [original, run_id])
    (d.state / "runs" / run_id / "manifest.yml").write_text(original)
    shutil.rmtree(d.state / "secrets")  # an older dlaasd had none
    for dirpath, dirnames, filenames in os.walk(d.state):
        if Path(dirpath) == d.state / "inbox":
            dirnames.clear()
            continue
        for name in dirnames:
            os.chmod(Path(dirpath) / name, 0o755)
        for name in filenames:
            os.chmod(Path(dirpath) / name, 0o644)
    d.start()
    check_private(d, run_id, ALICE)
    assert token in vault.read_text()
    with sqlite3.connect(d.state / "dlaas.db") as db:
        (text,) = db.execute("select manifest from runs where id = ?", [run_id]).fetchone()
    assert token not in text and password not in text and PLACEHOLDER in text
    stored = d.api.request("GET", f"/v1/data/dlaas-definitions/{run_id}/manifest.yml").read()
    assert token.encode() not in stored
    never_contains(files_under(d.state, d.state / "secrets") + [d.log], token, password)
    # the run still works with its secrets: delete --purge reaches her own store
    r = ctl_as(ALICE, d.socket, "delete", run_id, "--purge", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["objects_removed"] >= 2
    assert not vault.exists()


def declared(doc: dict, method: str, path: str) -> dict:
    """The responses the OpenAPI document declares for a concrete request path."""
    path = path.split("?")[0]
    for template, methods in doc["paths"].items():
        parts = re.split(r"\{(\w+)\}", template)  # the names at odd places
        pattern = "".join(
            re.escape(p) if i % 2 == 0 else ("[^/]+" if p in ("id", "bucket") else ".+")
            for i, p in enumerate(parts)
        )
        if re.fullmatch(pattern, path) and method in methods:
            return methods[method]["responses"]
    raise AssertionError(f"no route for {method.upper()} {path}")


def api_as(user: str, socket: Path, paths: list[str]) -> dict[str, int]:
    """The HTTP status of GET `paths`, asked over the socket by `user` directly (the API,
    not the client's commands)."""
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from dlaasctl.http import ApiError, Client\n"
        "c = Client(Path(sys.argv[1]))\n"
        "out = {}\n"
        "for p in json.load(sys.stdin):\n"
        "    try:\n"
        "        c.request('GET', p).read(); out[p] = 200\n"
        "    except ApiError as exc:\n"
        "        out[p] = exc.status\n"
        "print(json.dumps(out))\n"
    )
    return python_as(user, code, paths, str(socket))


def test_drops_are_their_owners_alone(make_daemon):
    d = make_daemon(socket_group=GROUP, drop_settle="1s")
    os.chmod(d.root, 0o755)
    bob = pwd.getpwnam(BOB)
    token = "tok-" + secrets.token_hex(8)

    def drop(name: str, text: str) -> None:
        path = d.state / "inbox" / name
        tmp = d.state / "inbox" / f".{name}"
        tmp.write_text(text)
        os.chown(tmp, bob.pw_uid, bob.pw_gid)
        os.chmod(tmp, 0o644)  # careless: readable by everyone
        os.rename(tmp, path)

    bad = manifest("true", name="bad", memory="1KiB", env={"MY_SECRET": token})
    drop("bad.yml", yaml.safe_dump(bad))
    good = manifest("echo hi", name="bob-drop", env={"API_TOKEN": token})
    drop("good.yml", yaml.safe_dump(good))
    report = d.state / "inbox" / ".rejected" / "bad.yml.error.txt"

    def taken() -> str | None:  # bad.yml rejected and good.yml queued: the queued run's id
        runs = [r for r in d.ctl_json("list")["runs"] if r["name"] == "bob-drop"]
        return runs[0]["id"] if report.exists() and runs else None

    run_id = wait_for(taken, what="both drops taken")
    assert report.stat().st_uid == bob.pw_uid and mode(report) == 0o600
    rejected = d.state / "inbox" / ".rejected" / "bad.yml"
    assert mode(rejected) == 0o600  # the careless 0644 taken away
    d.wait(run_id)
    accepted = d.state / "inbox" / ".accepted" / run_id
    assert accepted.stat().st_uid == bob.pw_uid and mode(accepted) == 0o700
    assert readable_by(ALICE, [report, rejected, accepted / "good.yml"]) == []
    assert len(readable_by(BOB, [report, rejected, accepted / "good.yml"])) == 3
    never_contains([report, *files_under(d.state, d.state / "inbox", d.state / "secrets")], token)
    never_contains([d.log], token)
    assert token not in d.run(run_id)["manifest"]


def test_a_root_only_socket_and_a_stopped_daemon_are_explained(make_daemon):
    d = make_daemon()
    os.chmod(d.root, 0o755)
    assert mode(d.socket) == 0o600
    r = ctl_as(BOB, d.socket, "list")
    assert r.returncode == 3
    assert "mode 0600, owner root, group root" in r.stderr and "only root may use it" in r.stderr
    assert "add you" not in r.stderr

    d.stop()
    r = d.ctl("list")
    assert r.returncode == 3
    assert "It ran in the foreground as root: start it again with `dlaasd --config" in r.stderr
    assert f"--state-dir {d.state}" in r.stderr and "systemctl" not in r.stderr
    doctor = d.ctl("doctor", "--json")
    fix = json.loads(doctor.stdout)["checks"][0]["fix"]
    assert fix.startswith("it ran in the foreground as root: start it again with `dlaasd --config")


@pytest.mark.parametrize("old_state", FIXTURES, ids=lambda p: p.name, indirect=True)
def test_the_state_of_an_earlier_release_is_made_private(old_state):  # noqa: F811
    """The 0.1.0 fixture's folder has the modes that release left: 0644 database, 0755
    run and result folders. The first start of this code tightens them all."""
    d, facts = old_state
    state = d.state
    assert mode(state) == 0o711
    for db in state.glob("dlaas.db*"):
        assert mode(db) == 0o600, db
    for entry in state.iterdir():
        if entry.name != "inbox":
            assert mode(entry) & 0o066 == 0, (entry, oct(mode(entry)))
    assert mode(state / "runs") == 0o711 and mode(state / "runs" / ".incoming") == 0o700
    for run_id in facts["runs"]:
        run = state / "runs" / run_id
        assert mode(run) == 0o711 and mode(run / "manifest.yml") == 0o600
        if (run / "job").exists():
            assert mode(run / "job") == 0o700
        if (state / "inbox" / "results" / run_id).exists():
            assert mode(state / "inbox" / "results" / run_id) == 0o700
    files = files_under(state, state / "inbox") + files_under(state / "inbox" / "results")
    assert files and readable_by(BOB, files) == [] and readable_by(OUTSIDER, files) == []
