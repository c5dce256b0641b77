"""How a run's pods read as its phase and failures (dlaasd/k8s_cluster.py), pure."""

from __future__ import annotations

import httpx2
import pytest
from lightkube import ApiError
from lightkube.resources.core_v1 import Pod

from dlaasd.codes import DOWNLOADING, PROCESSING, STORING
from dlaasd.k8s_cluster import INDEX, KubeUnavailable, _exits, _phase, _pod_failure, api


def pod(index: int = 0, learner: dict | None = None, init: dict | None = None, **status) -> Pod:
    statuses = {}
    if learner is not None:
        statuses["containerStatuses"] = [
            {"name": "learner", "image": "dlaas/python", "imageID": "", "ready": False,
             "restartCount": 0, "state": learner}
        ]  # fmt: skip
    if init is not None:
        statuses["initContainerStatuses"] = [
            {"name": "stage-in", "image": "dlaas/dlaasd", "imageID": "", "ready": False,
             "restartCount": 0, "state": init}
        ]  # fmt: skip
    return Pod.from_dict(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"p-{index}", "annotations": {INDEX: str(index)}},
            "spec": {"containers": [{"name": "learner"}]},
            "status": {**statuses, **status},
        }
    )


RUNNING = {"running": {"startedAt": "2026-11-30T14:00:00Z"}}
WAITING = {"waiting": {"reason": "PodInitializing"}}


def ended(code: int, reason: str = "Completed") -> dict:
    return {"terminated": {"exitCode": code, "reason": reason}}


def test_phase_follows_the_learners_containers():
    assert _phase([]) == DOWNLOADING  # no pods yet: Kueue admitted it, the Job makes them
    assert _phase([pod(learner=WAITING, init=RUNNING)]) == DOWNLOADING  # staging in
    assert _phase([pod(0, RUNNING), pod(1, WAITING)]) == DOWNLOADING  # one still staging
    assert _phase([pod(0, RUNNING), pod(1, ended(0))]) == PROCESSING
    assert _phase([pod(0, ended(0)), pod(1, ended(1, "Error"))]) == STORING


def test_exits_by_learner_with_oom_kills():
    exits = _exits([pod(0, ended(0)), pod(1, ended(137, "OOMKilled")), pod(2, RUNNING)])
    assert set(exits) == {1, 2}  # learner = completion index + 1; learner 3 still runs
    assert exits[1].code == 0 and not exits[1].oom_killed
    assert exits[2].code == 137 and exits[2].oom_killed


def test_the_clusters_own_failures_get_codes_and_sentences():
    pull = {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}
    code, sentence = _pod_failure(pod(learner=pull))
    assert code == "S103" and "'dlaas/python'" in sentence and "ImagePullBackOff" in sentence
    code, sentence = _pod_failure(pod(init={"waiting": {"reason": "ErrImagePull"}}))
    assert code == "S103" and "'dlaas/dlaasd'" in sentence
    config = {"waiting": {"reason": "CreateContainerConfigError", "message": "no secret"}}
    assert _pod_failure(pod(learner=config))[0] == "S101"
    evicted = pod(learner=RUNNING, reason="Evicted", message="The node was low on memory.")
    code, sentence = _pod_failure(evicted)
    assert code == "S105" and "low on memory" in sentence
    assert _pod_failure(pod(learner=WAITING)) is None  # waiting for its init steps: fine
    assert _pod_failure(pod(learner=ended(1, "Error"))) is None  # the training's own failure


def api_error(code: int) -> ApiError:
    request = httpx2.Request("GET", "https://cluster/apis/batch/v1/namespaces/dlaas/jobs/j")
    status = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code}
    return ApiError(request=request, response=httpx2.Response(code, json=status, request=request))


def test_an_answer_of_the_api_server_is_not_taken_for_an_unreachable_one():
    # lightkube's ApiError is an httpx2.HTTPError too: a 404 must stay a 404
    with pytest.raises(ApiError), api("reading Job j"):
        raise api_error(404)
    for code in (403, 503):
        with pytest.raises(KubeUnavailable), api("reading Job j"):
            raise api_error(code)
    with pytest.raises(KubeUnavailable, match="not reachable"), api("reading Job j"):
        raise httpx2.ConnectError("connection refused")
