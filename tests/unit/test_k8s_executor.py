"""How the Kubernetes executor reads a run's state as a learner's end, and the pod-side
steps of the node program that need no store (dlaasd/executors/kubernetes.py, node.py)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from dlaasd.codes import Code
from dlaasd.executors.kubernetes import _exit, unfinished
from dlaasd.k8s_cluster import LearnerExit, RunState, step_failure
from dlaasd.node import NodeJob, await_file, prepare_pod, termination_message
from dlaasd.outcome import Ended, decide


def outcome(*exits):
    return decide(Ended(exits=list(enumerate(exits, 1)), learners=len(exits), timeout=3, memory=1))


def test_a_learner_ends_as_its_pod_did_and_waits_while_it_runs():
    assert _exit(RunState("PROCESSING"), 1, False) is None
    assert _exit(RunState("QUEUED", "waiting"), 1, False) is None
    done = _exit(RunState("ENDED", exits={1: LearnerExit(0, reason="Completed")}), 1, False)
    assert done is not None and done.code == 0 and not done.error
    failed = _exit(RunState("ENDED", exits={1: LearnerExit(3, reason="Error")}), 1, False)
    assert outcome(failed).error_code == Code.TRAINING_FAILED and outcome(failed).exit_code == 3
    oom = _exit(RunState("STORING", exits={1: LearnerExit(137, True, "OOMKilled")}), 1, False)
    assert outcome(oom).error_code == Code.OUT_OF_MEMORY


def test_the_clusters_ends_map_to_codes():
    deadline = _exit(RunState("ENDED", "deadline", timed_out=True), 1, False)
    assert outcome(deadline).error_code == Code.TIMED_OUT  # its pods are gone: still C203
    pulled = RunState("ENDED", "x", failure=(Code.IMAGE_MISSING, "image 'x' cannot be pulled"))
    assert outcome(_exit(pulled, 1, False)).error_code == Code.IMAGE_MISSING
    gone = _exit(None, 1, False)  # deleted by someone else
    assert outcome(gone).error_code == Code.CLUSTER_ENDED_JOB
    halted = _exit(None, 1, True)  # deleted by dlaasd's halt
    assert halted is not None and halted.code == 143 and not halted.error_code


def test_a_learner_stopped_for_anothers_failure_does_not_hide_it():
    state = RunState("ENDED", "BackoffLimitExceeded", exits={2: LearnerExit(3, reason="Error")})
    # learner 2's failure is reported first; learner 1 ends once dlaasd stopped the run
    assert _exit(state, 1, False) is None
    second, first = _exit(state, 2, False), _exit(state, 1, True)
    assert first is not None and second is not None and second.code == 3
    ended = decide(Ended(exits=[(2, second), (1, first)], learners=2, timeout=0, memory=1))
    assert ended.error_code == Code.TRAINING_FAILED and "learner 2" in ended.message
    # a Job that ended without any learner's exit (its pods gone): ended all the same
    assert _exit(RunState("ENDED", "BackoffLimitExceeded"), 1, False) is not None


def test_a_failed_stage_in_says_its_code_and_sentence():
    text = termination_message(Code.DOWNLOAD_FAILED, "downloading the training data failed")
    assert text == "S302: downloading the training data failed"
    assert step_failure(text, 1, "p-0") == ("S302", "downloading the training data failed")
    code, sentence = step_failure("exec: python: not found", 127, "p-0")
    assert code == Code.DOWNLOAD_FAILED and "exit 127" in sentence and "not found" in sentence
    assert len(termination_message("S302", "x" * 10_000)) == 4000


def job(root: Path, **kw) -> NodeJob:
    fields = dict(
        run_id="training-abc",
        run_folder=str(root),
        report_dir=str(root / "reports"),
        node_dir=str(root / "node"),
        specs=[],
        data=None,
        results=None,
    )
    return NodeJob(**{**fields, **kw})  # type: ignore[arg-type]


def test_a_pods_job_folder_gets_its_folders_helpers_and_trial_config(tmp_path: Path):
    j = job(tmp_path, hyperparameters={"lr": 0.1})
    prepare_pod(j)
    folder = j.folder
    assert all(d.is_dir() for d in (folder.results, folder.checkpoints, folder.logs))
    assert (folder.job / ".dlaas" / "dlaas_emetrics.py").is_file()
    assert json.loads((folder.model_code / "config.json").read_text()) == {"lr": 0.1}


def test_the_node_job_says_where_the_model_is_and_reads_back(tmp_path: Path):
    from dlaasd.executors import Location
    from dlaasd.objectstore import Endpoint

    model = Location(Endpoint("http://s3:9000", "k", "s"), "dlaas-definitions", "r/model.zip")
    back = NodeJob.from_json(job(tmp_path, model=model).to_json())
    assert back.model == model


def test_the_store_sidecar_waits_for_the_trainings_end_or_a_stop(tmp_path: Path):
    after = tmp_path / "exit-code"
    stop = threading.Event()
    waiter = threading.Thread(target=lambda: results.append(await_file(after, stop, 0.01)))
    results: list[bool] = []
    waiter.start()
    after.write_text("0\n")
    waiter.join(60)
    assert results == [True]
    stop.set()  # a SIGTERM (the pod is being deleted): stop waiting, store what is there
    assert await_file(tmp_path / "never", stop, 0.01) is False


def test_an_ended_run_keeps_its_finished_job_but_not_one_stuck_on_a_failure():
    assert not unfinished(RunState("ENDED", finished=True))  # stays for the admins (TTL)
    assert not unfinished(RunState("STORING", exits={1: LearnerExit(0)}))  # ending now
    pulled = RunState("ENDED", "x", failure=(Code.IMAGE_MISSING, "cannot be pulled"))
    assert unfinished(pulled)  # its pod would wait for the image for ever: deleted
    assert unfinished(RunState("QUEUED")) and unfinished(RunState("PROCESSING"))
