"""Fair share on a real daemon: per-user limits, priorities, aging (no starvation)."""

from __future__ import annotations

import json
import os
import time

import pytest

from tests.harness import manifest, model
from tests.test_users import ALICE, BOB, GROUP, ctl_as, user_folder
from tests.test_users import lab_users as lab_users  # the fixture, for this module too

pytestmark = pytest.mark.integration

HELD = ("DOWNLOADING", "PROCESSING")


def train_as(user: str, d, folder, *extra: str) -> str:
    r = ctl_as(user, d.socket, "train", str(folder / "manifest.yml"), "--json", *extra)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["id"]


def start_order(d, run_ids: list[str]) -> list[str]:
    """The runs in the order they left the queue (their DOWNLOADING event)."""
    placed = {}
    for run_id in run_ids:
        for e in d.run(run_id)["history"]:
            if e["status"] == "DOWNLOADING":
                placed[run_id] = e["time"]
    return sorted(placed, key=placed.get)


@pytest.mark.needs_root
def test_a_user_at_their_limit_waits_and_another_users_later_run_starts(make_daemon, lab_users):
    d = make_daemon(
        socket_group=GROUP,
        capacity={"cpus": 4, "memory": "4GiB"},
        fair_share={"max_running_per_user": 2, "priority_min": 0, "priority_max": 5},
    )
    os.chmod(d.root, 0o755)
    folder = user_folder(ALICE, "sleep 120")
    alice = [train_as(ALICE, d, folder) for _ in range(3)]
    for run_id in alice[:2]:
        d.wait(run_id, *HELD)
    third = d.wait(alice[2], "QUEUED")
    deadline = time.monotonic() + 30
    while "user limit" not in third["status_message"] and time.monotonic() < deadline:
        time.sleep(0.2)
        third = d.run(alice[2])
    assert third["status"] == "QUEUED"
    assert third["status_message"].startswith(f"waiting: user limit: {ALICE} has 2 of 2 runs")

    bob = train_as(BOB, d, user_folder(BOB, "sleep 120"))
    d.wait(bob, *HELD)  # bob's later run starts; alice's third still waits
    assert d.run(alice[2])["status"] == "QUEUED"

    # a user's priority stays in the config's range; only root reorders the queue
    refused = ctl_as(
        ALICE, d.socket, "train", str(folder / "manifest.yml"), "--json", "--priority", "9"
    )
    assert refused.returncode == 1 and "priority 9 is not allowed" in refused.stderr
    assert "from 0 to 5" in refused.stderr
    assert ctl_as(ALICE, d.socket, "priority", alice[2], "5").returncode == 1
    assert d.ctl_json("priority", alice[2], "7")["priority"] == 7

    d.ctl("halt", alice[0])  # alice drops below her limit: her third run starts
    d.wait(alice[2], *HELD)
    for run_id in [*alice, bob]:
        d.ctl("halt", run_id)
    for run_id in [*alice, bob]:
        d.wait(run_id)

    # usage: a user sees their own; root everyone's
    mine = ctl_as(ALICE, d.socket, "usage", "--json")
    assert mine.returncode == 0, mine.stderr
    report = json.loads(mine.stdout)
    assert not report["everyone"] and len(report["runs"]) == 3
    assert {r["owner_name"] for r in report["runs"]} == {ALICE}
    everyone = d.ctl_json("usage", "--by", "owner")
    assert everyone["everyone"] and [g["key"] for g in everyone["groups"]] == [ALICE, BOB]


def test_a_high_priority_run_submitted_last_starts_first(make_daemon, tmp_path):
    d = make_daemon(
        capacity={"cpus": 1, "memory": "4GiB"}, fair_share={"priority_min": 0, "priority_max": 5}
    )
    blocker = d.submit(model(tmp_path / "b", manifest("sleep 120", cpus=1)))
    d.wait(blocker, *HELD)
    quick = model(tmp_path / "q", manifest("true", cpus=1))
    low = [d.submit(quick) for _ in range(2)]
    high = d.submit(quick, "--priority", "5")
    assert d.run(high)["priority"] == 5
    d.ctl("halt", blocker)
    for run_id in [*low, high]:
        d.wait(run_id)
    assert start_order(d, [*low, high]) == [high, *low]


def test_a_stream_of_higher_priority_runs_does_not_starve_a_waiting_one(make_daemon, tmp_path):
    """Aging 1s, priorities up to 2: the priority-0 run overtakes the priority-2 runs
    submitted more than about 2 seconds after it; without aging it would wait for all."""
    d = make_daemon(
        capacity={"cpus": 1, "memory": "4GiB"},
        fair_share={"priority_min": 0, "priority_max": 2, "aging": "1s"},
    )
    one = model(tmp_path / "one", manifest("sleep 1", cpus=1))
    blocker = d.submit(model(tmp_path / "b", manifest("sleep 5", cpus=1)))
    d.wait(blocker, *HELD)
    low = d.submit(one)
    stream = []
    while d.run(low)["status"] == "QUEUED" and len(stream) < 40:
        stream.append(d.submit(one, "--priority", "2"))
        time.sleep(0.5)
    assert d.run(low)["status"] != "QUEUED", "the priority-0 run never started"
    order = start_order(d, [low, *stream])
    # it overtook higher-priority runs submitted while it waited (all but the last one,
    # which may have come just after it started)
    overtaken = [r for r in stream[:-1] if r not in order[: order.index(low)]]
    assert overtaken, "no higher-priority run was waiting when it started"
    for run_id in [blocker, low, *stream]:
        d.ctl("halt", run_id)
