"""A run as Kubernetes objects (dlaasd/k8s_objects.py): pure mapping, no cluster."""

from __future__ import annotations

import json

import pytest

from dlaasd import k8s_objects as ko

ENV = {
    "OMP_NUM_THREADS": "2",
    "MODEL_DIR": "/job/model-code",
    "LOG_DIR": "/job/logs",
    "LEARNER_ID": "1",
    "NUM_LEARNERS": "1",
    "CUDA_VISIBLE_DEVICES": "GPU-1234",
    "TRAINING_ID": "training-abcdefghi",
}
SETTINGS = ko.KubeSettings(
    namespace="research",
    local_queue="team-a",
    node_selector={"pool": "training"},
    tolerations=({"key": "gpu", "operator": "Exists", "effect": "NoSchedule"},),
    gpu_types={"a100": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}},
)


def shape(**kw) -> ko.JobShape:
    fields = dict(
        run_id="training-abcdefghi",
        image="dlaas/pytorch:2.3",
        command="python train.py --epochs 3",
        env=ENV,
        cpus=1.5,
        memory=3 * 1024**3,
        user="1000:1000",
    )
    return ko.JobShape(**{**fields, **kw})


def by_kind(objects: list[dict]) -> dict[str, dict]:
    return {o["kind"]: o for o in objects}


def pod(job: dict) -> dict:
    return job["spec"]["template"]["spec"]


def learner(job: dict) -> dict:
    return pod(job)["containers"][0]


def env_of(container: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"]}


def test_one_learner_is_a_suspended_queued_indexed_job_and_a_secret():
    objects = ko.objects(shape(), SETTINGS, '{"keys": "x"}', daemon_label="d1")
    assert [o["kind"] for o in objects] == ["Secret", "Job"]  # no Service for one learner
    job = by_kind(objects)["Job"]
    assert job["metadata"]["name"] == "dlaas-training-abcdefghi"
    assert job["metadata"]["namespace"] == "research"
    assert job["metadata"]["labels"] == {
        "dlaas.run-id": "training-abcdefghi",
        "dlaas.daemon": "d1",
        "kueue.x-k8s.io/queue-name": "team-a",
    }
    spec = job["spec"]
    assert spec["suspend"] is True
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == 1
    assert spec["backoffLimit"] == 0
    assert spec["ttlSecondsAfterFinished"] == 3600
    assert "activeDeadlineSeconds" not in spec  # no timeout in the manifest
    assert pod(job)["restartPolicy"] == "Never"
    assert "subdomain" not in pod(job)


def test_requests_equal_limits_with_gpus_and_the_timeout_as_deadline():
    job = ko.job(shape(gpus=2, timeout=90.5), SETTINGS)
    resources = learner(job)["resources"]
    assert resources["requests"] == resources["limits"]
    assert resources["limits"] == {
        "cpu": "1500m",
        "memory": str(3 * 1024**3),
        "nvidia.com/gpu": "2",
    }
    assert job["spec"]["activeDeadlineSeconds"] == 91
    assert ko.resources(shape(cpus=2))["limits"]["cpu"] == "2"
    assert "nvidia.com/gpu" not in ko.resources(shape(gpus=0))["limits"]


def test_gpu_type_maps_to_the_configured_node_labels_beside_the_sites_selector():
    job = ko.job(shape(gpus=1, gpu_type="a100"), SETTINGS)
    assert pod(job)["nodeSelector"] == {
        "pool": "training",
        "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB",
    }
    assert pod(job)["tolerations"] == [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]
    with pytest.raises(ko.UnknownGpuType, match=r"'k80'.*kubernetes.gpu_types.*a100"):
        ko.job(shape(gpus=1, gpu_type="k80"), SETTINGS)


def test_the_environment_is_the_local_executors_plus_the_learners_own_numbers():
    job = ko.job(shape(), SETTINGS)
    env = env_of(learner(job))
    # as the local executor's, less the GPUs (the device plugin gives them)
    assert {k: v for k, v in ENV.items() if k != "CUDA_VISIBLE_DEVICES"}.items() <= env.items()
    assert "CUDA_VISIBLE_DEVICES" not in env
    assert "MASTER_ADDR" not in env  # one learner: no torchrun variables
    script = learner(job)["command"][2]
    assert "export LEARNER_ID=$((JOB_COMPLETION_INDEX + 1)) RANK=$JOB_COMPLETION_INDEX" in script
    assert "NODE_RANK=$JOB_COMPLETION_INDEX" in script
    assert "python train.py --epochs 3" in script


def test_learners_get_a_headless_service_and_the_torchrun_variables():
    objects = by_kind(ko.objects(shape(learners=3, gpus=1), SETTINGS, "{}"))
    service, job = objects["Service"], objects["Job"]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == {"dlaas.run-id": "training-abcdefghi"}
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 3
    assert pod(job)["subdomain"] == service["metadata"]["name"] == "dlaas-training-abcdefghi"
    env = env_of(learner(job))
    assert env["MASTER_ADDR"] == "dlaas-training-abcdefghi-0.dlaas-training-abcdefghi"
    assert env["MASTER_PORT"] == "29500"
    assert env["WORLD_SIZE"] == env["NUM_LEARNERS"] == "3"


def test_the_store_keys_are_in_the_secret_never_in_the_job():
    node_job = json.dumps({"endpoint": "http://s3:9000", "secret_key": "s3cr3t-v4lue"})
    objects = by_kind(ko.objects(shape(), SETTINGS, node_job))
    assert objects["Secret"]["stringData"]["node-job.json"] == node_job
    assert "s3cr3t-v4lue" not in json.dumps(objects["Job"])
    volumes = {v["name"]: v for v in pod(objects["Job"])["volumes"]}
    assert volumes["node-job"]["secret"]["secretName"] == objects["Secret"]["metadata"]["name"]


def test_the_manifests_secret_env_values_are_in_the_secret_and_referred_to_by_the_job():
    env = {**ENV, "HF_TOKEN": "hf_t0k3n", "PLAIN": "plain"}
    names = ko.secret_names(env, ["*TOKEN*", "*PASSWORD*"])
    assert names == {"HF_TOKEN"}
    objects = by_kind(ko.objects(shape(env=env, secret_env=names), SETTINGS, "{}"))
    assert objects["Secret"]["stringData"]["env.HF_TOKEN"] == "hf_t0k3n"
    assert "hf_t0k3n" not in json.dumps(objects["Job"])
    entries = {e["name"]: e for e in learner(objects["Job"])["env"]}
    assert entries["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": objects["Secret"]["metadata"]["name"],
        "key": "env.HF_TOKEN",
    }
    assert entries["PLAIN"]["value"] == "plain"


def test_staging_in_is_an_init_step_and_storing_a_sidecar_of_the_node_program():
    job = ko.job(shape(), SETTINGS)
    init = {c["name"]: c for c in pod(job)["initContainers"]}
    assert init["stage-in"]["command"][:4] == ["python", "-m", "dlaasd.node", "stage-in"]
    assert "restartPolicy" not in init["stage-in"]  # runs to its end before the training
    assert init["store"]["command"][:4] == ["python", "-m", "dlaasd.node", "store"]
    assert init["store"]["restartPolicy"] == "Always"  # a sidecar, beside the training
    script = learner(job)["command"][2]
    assert ko.EXIT_FILE in script and ko.STORED_FILE in script  # the two meet by files


def test_pods_run_as_the_runs_user_without_privileges_or_api_access():
    job = ko.job(shape(), SETTINGS)
    assert pod(job)["securityContext"]["runAsUser"] == 1000
    assert pod(job)["automountServiceAccountToken"] is False
    for container in pod(job)["containers"] + pod(job)["initContainers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context["runAsNonRoot"] is True
    with pytest.raises(ValueError, match="root"):
        ko.job(shape(user="0:0"), SETTINGS)
