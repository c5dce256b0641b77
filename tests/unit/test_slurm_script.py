"""The Slurm batch script and squeue's lines, without Slurm."""

from __future__ import annotations

from dlaasd.slurm import (
    FAILURES,
    Request,
    Site,
    SlurmJob,
    batch_script,
    describe_wait,
    directives,
    parse_squeue,
    time_minutes,
)

REQ = Request(
    run_id="training-abc",
    learners=2,
    gpus=1,
    cpus=1.5,
    memory=512 * 1024**2,
    time_limit=90,
    job_file="/state/runs/training-abc/node/job.json",
    output="/state/runs/training-abc/node/slurm.out",
    python="/opt/dlaas venv/bin/python",
)


def test_a_run_asks_for_what_its_manifest_asks_for():
    opts = directives(REQ, Site())
    assert opts[:5] == [
        "--job-name=dlaas-training-abc",
        "--nodes=2",
        "--ntasks-per-node=1",
        "--cpus-per-task=2",
        "--mem=512M",
    ]
    assert "--gres=gpu:1" in opts and "--time=2" in opts and "--no-requeue" in opts


def test_cpu_runs_ask_for_no_gpus_and_no_timeout_means_the_partitions_limit():
    opts = directives(Request(**{**REQ.__dict__, "gpus": 0, "time_limit": None}), Site())
    assert not any(o.startswith(("--gres", "--time")) for o in opts)


def test_the_sites_options_come_last_so_they_win():
    site = Site(partition="gpu", account="lab", qos="normal", options=("--constraint=v100",))
    opts = directives(REQ, site)
    assert opts[-4:] == ["--partition=gpu", "--account=lab", "--qos=normal", "--constraint=v100"]


def test_time_limits_round_up_to_whole_minutes():
    assert [time_minutes(s) for s in (1, 60, 61, 3600)] == [1, 1, 2, 60]


def test_the_script_trains_on_every_node_then_stores_once_with_quoted_paths():
    script = batch_script(REQ, Site())
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash"
    assert "#SBATCH --job-name=dlaas-training-abc" in lines
    train = next(ln for ln in lines if ln.startswith("srun "))
    assert "'/opt/dlaas venv/bin/python' -m dlaasd.node train" in train
    assert lines[-1] == "exec '/opt/dlaas venv/bin/python' -m dlaasd.node store " + REQ.job_file
    assert lines.index("trap '' TERM") < lines.index(train)


def test_squeue_lines_of_other_jobs_are_left_out():
    text = "12|dlaas-training-x|PENDING|Priority||/st|a\n13|someone-else|RUNNING|None|node1|\nbad\n"
    assert parse_squeue(text) == [
        SlurmJob("12", "dlaas-training-x", "PENDING", "Priority", "", "/st|a")
    ]
    job = parse_squeue(text)[0]
    assert job.run_id == "training-x" and job.waiting and not job.ended


def test_a_waiting_job_says_why():
    job = SlurmJob("7", "dlaas-r", "PENDING", "Resources", "")
    assert describe_wait(job) == "waiting in Slurm's queue (job 7: Resources)"
    assert "its turn" in describe_wait(SlurmJob("7", "dlaas-r", "PENDING", "None", ""))


def test_slurms_failures_have_codes():
    assert FAILURES["TIMEOUT"][0] == "C203"
    assert FAILURES["OUT_OF_MEMORY"][0] == "C202"
    assert FAILURES["NODE_FAIL"][0] == "S105"
