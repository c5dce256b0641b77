"""dlaasd.admission: images, network, volumes and impossible requests (no I/O)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlaasd import admission, config, manifest
from dlaasd.admission import AdmissionError, resolve_image

V100 = "Tesla V100-SXM2-16GB"

FRAMEWORKS = {
    "python": {"*": "dlaas/python:bookworm"},
    "pytorch": {"2.1": "pytorch/pytorch:2.1-cuda", "2.2": "pytorch/pytorch:2.2-cuda"},
    "tensorflow": {"*": "tensorflow/tensorflow:{version}"},
    "mxnet": {"1.9": "mx:1.9", "*": "mx:latest"},
}


def m_of(framework: str, extra: str = "") -> manifest.Manifest:
    return manifest.parse(f"name: a\nframework:\n{framework}  command: x\n{extra}")


def image(framework: str) -> str:
    return resolve_image(m_of(framework), FRAMEWORKS)


def refused(framework: str) -> AdmissionError:
    with pytest.raises(AdmissionError) as info:
        image(framework)
    return info.value


@pytest.fixture
def make_config(tmp_path):
    def make(text: str = "") -> config.Config:
        path = tmp_path / "dlaasd.yaml"
        path.write_text(
            f"state_dir: {tmp_path / 'state'}\nsocket: {tmp_path / 's.sock'}\n"
            f"drop_dir: {tmp_path / 'inbox'}\nsocket_group: ''\n"
            "capacity:\n  cpus: 8\n  memory: 16GiB\n" + text
        )
        return config.load(path, env={})

    return make


# --- resolve_image ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "framework, expected",
    [
        ("  name: python\n", "dlaas/python:bookworm"),
        ("  name: python\n  version: '3.11'\n", "dlaas/python:bookworm"),
        ("  name: pytorch\n  version: '2.1'\n", "pytorch/pytorch:2.1-cuda"),
        ("  name: pytorch\n  version: '2.2'\n", "pytorch/pytorch:2.2-cuda"),
        ("  name: mxnet\n  version: '1.9'\n", "mx:1.9"),  # exact version beats "*"
        ("  name: mxnet\n  version: '2.0'\n", "mx:latest"),
        ("  name: tensorflow\n  version: 1.5.0-py3\n", "tensorflow/tensorflow:1.5.0-py3"),
        ("  name: python\n  image: me/train:3\n", "me/train:3"),
        ("  name: nosuch\n  image: me/train:3\n", "me/train:3"),  # the image wins
        ("  name: custom\n  version: me/train:3\n", "me/train:3"),
        ("  name: custom\n  version: localhost:5000/x:1\n", "localhost:5000/x:1"),
        ("  name: custom\n  image: a/b:1\n  version: ignored/c:2\n", "a/b:1"),
    ],
)
def test_resolve_image(framework, expected):
    assert image(framework) == expected


@pytest.mark.parametrize(
    "framework, expected",
    [
        ("  name: python\n  image_tag: slim\n", "dlaas/python:slim"),
        (
            "  name: tensorflow\n  version: '2.15.0'\n  image_tag: 2.15.0-gpu\n",
            "tensorflow/tensorflow:2.15.0-gpu",
        ),
        ("  name: custom\n  version: localhost:5000/x:1\n  image_tag: v2\n", "localhost:5000/x:v2"),
        ("  name: custom\n  version: localhost:5000/x\n  image_tag: v2\n", "localhost:5000/x:v2"),
        (
            "  name: custom\n  version: localhost:5000/team/x\n  image_tag: v2\n",
            "localhost:5000/team/x:v2",
        ),
        ("  name: custom\n  version: busybox\n  image_tag: '1.36'\n", "busybox:1.36"),
        ("  name: python\n  image: me/train:3\n  image_tag: '4'\n", "me/train:4"),
    ],
)
def test_image_tag_replaces_the_tag(framework, expected):
    assert image(framework) == expected


def test_image_tag_on_a_digest_reference():
    framework = "  name: python\n  image: localhost:5000/a/b@sha256:abc\n  image_tag: v2\n"
    assert image(framework) == "localhost:5000/a/b:v2"


def test_unknown_framework_suggests_and_lists_the_known_ones():
    err = refused("  name: pytroch\n")
    assert err.code == "C101"
    (p,) = err.problems
    assert p.path == "framework.name"
    assert "did you mean 'pytorch'" in p.message
    assert "known: mxnet, python, pytorch, tensorflow, custom" in p.message
    assert "framework.image" in p.message


def test_unknown_framework_without_a_close_name():
    (p,) = refused("  name: caffe\n").problems
    assert "did you mean" not in p.message and "'caffe'" in p.message


def test_unknown_version_lists_the_versions_here():
    err = refused("  name: pytorch\n  version: '2.3'\n")
    assert err.code == "C101"
    (p,) = err.problems
    assert p.path == "framework.version"
    assert "2.1, 2.2" in p.message and "did you mean '2.2'" in p.message


def test_template_with_version_needs_a_version():
    (p,) = refused("  name: tensorflow\n").problems
    assert p.path == "framework.version" and p.message.startswith("missing")
    assert "tensorflow/tensorflow:{version}" in p.message


def test_embedded_config_frameworks(make_config):
    c = make_config()
    assert resolve_image(m_of("  name: python\n"), c.frameworks) == "dlaas/python:bookworm"
    assert resolve_image(m_of("  name: pytorch\n"), c.frameworks) == "dlaas/pytorch:bookworm"
    assert (
        resolve_image(m_of("  name: tensorflow\n  version: 2.15.0\n"), c.frameworks)
        == "tensorflow/tensorflow:2.15.0"
    )


# --- admit ------------------------------------------------------------------------------


def test_admit_gives_the_image(make_config):
    admitted = admission.admit(m_of("  name: python\n"), make_config(), [])
    assert admitted.image == "dlaas/python:bookworm" and admitted.warnings == []


def test_admit_unknown_framework_is_c101(make_config):
    with pytest.raises(AdmissionError) as info:
        admission.admit(m_of("  name: pytroch\n"), make_config(), [])
    assert info.value.code == "C101"
    assert "did you mean 'pytorch'" in str(info.value)


def test_network_refused_unless_allowed(make_config):
    m = m_of("  name: python\n", "network: true\n")
    with pytest.raises(AdmissionError) as info:
        admission.admit(m, make_config(), [])
    assert info.value.code == "C101"
    (p,) = info.value.problems
    assert p.path == "network" and "containers.allow_network" in p.message
    allowed = make_config("containers:\n  allow_network: true\n")
    assert admission.admit(m, allowed, []).image


def _volume(path: Path, sub: str = "") -> manifest.Manifest:
    data = f"    training_data: {{container: {sub}}}\n" if sub else ""
    return m_of(
        "  name: python\n",
        f"data_stores:\n  - id: v\n    type: mount_volume\n{data}    connection:\n"
        f"      path: {path}\n",
    )


def test_mount_volume_inside_an_allowed_folder(tmp_path, make_config):
    allowed = tmp_path / "data"
    (allowed / "mnist").mkdir(parents=True)
    c = make_config(f"containers:\n  allowed_volumes: [{allowed}]\n")
    assert admission.admit(_volume(allowed), c, []).image
    assert admission.admit(_volume(allowed / "mnist"), c, []).image
    assert admission.admit(_volume(allowed, "mnist"), c, []).image
    assert admission.volume_path(_volume(allowed, "mnist")) == (allowed / "mnist").resolve()


@pytest.mark.parametrize("where", ["other", "data2", "data/../other", "data/link"])
def test_mount_volume_outside_the_allowed_folders_is_refused(tmp_path, make_config, where):
    allowed = tmp_path / "data"
    allowed.mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "data2").mkdir()
    (allowed / "link").symlink_to(tmp_path / "other")  # resolves outside
    c = make_config(f"containers:\n  allowed_volumes: [{allowed}]\n")
    with pytest.raises(AdmissionError) as info:
        admission.admit(_volume(tmp_path / where), c, [])
    assert info.value.code == "C101"
    (p,) = info.value.problems
    assert p.path == "data_stores[0].connection.path"
    assert "containers.allowed_volumes" in p.message and str(allowed) in p.message


def test_mount_volume_refused_when_no_volume_is_allowed(tmp_path, make_config):
    with pytest.raises(AdmissionError) as info:
        admission.admit(_volume(tmp_path), make_config(), [])
    assert "none are configured" in str(info.value)


def test_network_and_volume_problems_together(tmp_path, make_config):
    m = m_of(
        "  name: python\n",
        f"network: true\ndata_stores:\n  - id: v\n    type: mount_volume\n    connection:\n"
        f"      path: {tmp_path}\n",
    )
    with pytest.raises(AdmissionError) as info:
        admission.admit(m, make_config(), [])
    assert [p.path for p in info.value.problems] == ["network", "data_stores[0].connection.path"]


def test_too_many_gpus_is_c104(make_config):
    with pytest.raises(AdmissionError) as info:
        admission.admit(m_of("  name: python\n", "gpus: 2\n"), make_config(), [V100])
    assert info.value.code == "C104"
    (p,) = info.value.problems
    assert p.path == "gpus" and "2 GPU(s) asked for; this machine has 1" in p.message


def test_gpus_fit(make_config):
    assert admission.admit(m_of("  name: python\n", "gpus: 2\n"), make_config(), [V100, V100])


def test_wrong_gpu_type_is_c104(make_config):
    m = m_of("  name: python\n", "gpus: 1\ngpu_type: nvidia-H100\n")
    with pytest.raises(AdmissionError) as info:
        admission.admit(m, make_config(), [V100])
    assert info.value.code == "C104"
    assert "of type 'nvidia-H100'" in str(info.value)


def test_cpus_and_memory_over_capacity_are_c104(make_config):
    m = m_of("  name: python\n", "cpus: 16\nmemory: 32GiB\n")
    with pytest.raises(AdmissionError) as info:
        admission.admit(m, make_config(), [])
    assert info.value.code == "C104"
    assert [p.path for p in info.value.problems] == ["cpus", "memory"]


def test_learners_multiply_the_request(make_config):
    m = m_of("  name: python\n", "gpus: 1\ncpus: 3\nmemory: 1GiB\nlearners: 3\n")
    req = admission.request_of("r1", m)
    assert (req.run_id, req.gpus, req.cpus, req.memory) == ("r1", 3, 9.0, 3 * 1024**3)
    with pytest.raises(AdmissionError) as info:
        admission.admit(m, make_config(), [V100, V100, V100])
    assert info.value.code == "C104"
    (p,) = info.value.problems
    assert p.path == "cpus" and "× 3 learners" in p.message


def test_c101_comes_before_c104(make_config):
    m = m_of("  name: python\n", "network: true\ngpus: 8\n")
    with pytest.raises(AdmissionError) as info:
        admission.admit(m, make_config(), [])
    assert info.value.code == "C101"


def test_on_kubernetes_a_gpu_type_the_cluster_maps_and_no_mounted_volume(tmp_path, make_config):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\n")
    allowed = tmp_path / "data"
    allowed.mkdir()
    c = make_config(
        f"executor: kubernetes\ncontainers:\n  allowed_volumes: [{allowed}]\n"
        f"kubernetes:\n  kubeconfig: {kubeconfig}\n"
        "  gpu_types: {a100: {nvidia.com/gpu.product: NVIDIA-A100-SXM4-80GB}}\n"
    )
    assert admission.admit(m_of("  name: python\n", "gpus: 1\ngpu_type: a100\n"), c, None).image
    with pytest.raises(AdmissionError) as info:
        admission.admit(m_of("  name: python\n", "gpus: 1\ngpu_type: v100\n"), c, None)
    assert info.value.code == "C104"
    (p,) = info.value.problems
    assert p.path == "gpu_type" and "a100" in p.message
    with pytest.raises(AdmissionError) as info:
        admission.admit(_volume(allowed), c, None)
    assert info.value.code == "C101"
    assert [p.path for p in info.value.problems] == ["data_stores[0].type"]
