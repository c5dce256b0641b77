"""What each FfDL-shaped manifest in tests/corpus/ffdl must meet, on two machines.

SMALL is the test daemon (tests/harness.py): 2 CPUs, 4GiB for runs, no GPU, and here
pulling off, so that an image this machine lacks is refused at submit (S103) instead of
pulled. BIG has what they ask for: 4 GPUs, 32 CPUs, 64GiB, /cosdata allowed as a volume.
On SMALL each file is accepted, or refused for a reason of this machine, named; on BIG
each one is accepted.
"""

from __future__ import annotations

from pathlib import Path

CORPUS = Path(__file__).parent / "corpus" / "ffdl"

TF_BUCKETS = ("tf_training_data -> tf-training-data", "tf_trained_model -> tf-trained-model")
IN_CLUSTER = "FfDL's in-cluster object store"
SEPARATE = "no network between them"
GPU_TAG = "names a GPU image, but gpus is 0"

# file -> (image, on SMALL: "accepted" | ("C104", fields) | ("C101", field) | "S103",
#          what submit says about it: pieces of warnings, each "a -> b" a bucket mapping)
EXPECTED: dict[str, tuple[str, object, tuple[str, ...]]] = {
    "c10d-dist-onnx.yml": (
        "tomcli/pytorch:0925mpi",
        ("C104", ("gpus", "cpus", "memory")),
        (IN_CLUSTER, SEPARATE),
    ),
    "c10d-native-parallelism.yml": (
        "tomcli/pytorch:0925mpi",
        ("C104", ("gpus", "cpus", "memory")),
        (IN_CLUSTER, SEPARATE),
    ),
    "c10d-mpi-parallelism.yml": (
        "tomcli/pytorch:0925mpi",
        ("C104", ("gpus", "cpus", "memory")),
        (IN_CLUSTER, SEPARATE),
    ),
    "c10d-onnx-mpi.yml": (
        "tomcli/pytorch:0925mpi",
        ("C104", ("gpus", "cpus", "memory")),
        (IN_CLUSTER, SEPARATE),
    ),
    "caffe-model-gpu.yml": ("bvlc/caffe:gpu", ("C104", ("gpus",)), (*TF_BUCKETS, IN_CLUSTER)),
    "caffe-model.yml": ("bvlc/caffe:cpu", "S103", (*TF_BUCKETS, IN_CLUSTER)),
    "caffe2-model.yml": (
        "caffe2ai/caffe2:c2v0.8.1.cpu.full.ubuntu14.04",
        "S103",
        (*TF_BUCKETS, IN_CLUSTER),
    ),
    "converter-sample.yml": (
        "tensorflow/tensorflow:latest-gpu-py3",
        "S103",
        ("auth_url, user_name and password are empty or a placeholder", GPU_TAG),
    ),
    "fashion-train-cpu.yml": (
        "tensorflow/tensorflow:latest-py3",
        ("C104", ("cpus", "memory")),
        (IN_CLUSTER,),
    ),
    "fashion-train-gpu.yml": (
        "tensorflow/tensorflow:latest-gpu-py3",
        ("C104", ("gpus", "cpus", "memory")),
        (IN_CLUSTER,),
    ),
    "h2o-model.yml": (
        "opsh2oai/h2o3-ffdl:latest",
        "S103",
        (
            "h2o3_training_data -> h2o3-training-data",
            "h2o3_trained_model -> h2o3-trained-model",
            IN_CLUSTER,
            SEPARATE,
        ),
    ),
    "horovod-pytorch.yml": (
        "uber/horovod:0.13.10-tf1.9.0-torch0.4.0-py3.5",
        ("C104", ("cpus", "memory")),
        (*TF_BUCKETS, IN_CLUSTER, SEPARATE),
    ),
    "horovod-tensorflow.yml": (
        "uber/horovod:0.13.10-tf1.9.0-torch0.4.0-py3.5",
        "S103",
        (*TF_BUCKETS, IN_CLUSTER, SEPARATE),
    ),
    # a real endpoint elsewhere, with its own (valid) bucket names: used as written
    "keras-test-py3.yml": ("tensorflow/tensorflow:1.5.0-py3", "S103", ()),
    "metrics-keys.yml": (
        "dlaas/pytorch:bookworm",
        "accepted",
        (
            "storage ('10Gb') is not used",
            "evaluation_metrics.image_tag ('latest') is not used",
            "evaluation_metrics.line_lookahead (4) is not used",
            "evaluation_metrics.eventTypes is not used",
            "Mnist_Data -> mnist-data",
            "Mnist_Results -> mnist-results",
        ),
    ),
    "pytorch-dist-onnx.yml": (
        "dlaas/pytorch:bookworm",
        ("C104", ("gpus", "cpus", "memory")),
        (
            "mnist_pytorch -> mnist-pytorch",
            "mnist_trained_model -> mnist-trained-model",
            IN_CLUSTER,
        ),
    ),
    "pytorch-launch-dist.yml": (
        "tomcli/pytorch:latest",
        ("C104", ("gpus", "cpus", "memory")),
        (*TF_BUCKETS, IN_CLUSTER, SEPARATE),
    ),
    "pytorch-model.yml": ("dlaas/pytorch:bookworm", "accepted", (*TF_BUCKETS, IN_CLUSTER)),
    "tf-distributed.yml": (
        "tensorflow/tensorflow:1.5.0-py3",
        "S103",
        (*TF_BUCKETS, IN_CLUSTER, SEPARATE),
    ),
    "tf-model-for-test.yml": (
        "tensorflow/tensorflow:1.5.0-py3",
        "S103",
        (*TF_BUCKETS, "auth_url is empty or a placeholder"),
    ),
    "tf-model-gpu.yml": (
        "tensorflow/tensorflow:1.5.0-gpu-py3",
        ("C104", ("gpus",)),
        (*TF_BUCKETS, IN_CLUSTER),
    ),
    # a host folder: its container is a subfolder, not a bucket; type and name unused
    "tf-model-hostmount.yml": (
        "tensorflow/tensorflow:1.5.0-py3",
        ("C101", ("data_stores[0].connection.path",)),
        ("connection.type ('host_mount') is not used", "connection.name"),
    ),
    "tf-model.yml": ("tensorflow/tensorflow:1.5.0-py3", "S103", (*TF_BUCKETS, IN_CLUSTER)),
    "tf-summary-model-gpu.yml": (
        "tensorflow/tensorflow:1.5.0-gpu",
        ("C104", ("gpus",)),
        (*TF_BUCKETS, IN_CLUSTER),
    ),
    "tf-summary-model.yml": ("tensorflow/tensorflow:1.5.0", "S103", (*TF_BUCKETS, IN_CLUSTER)),
}

# The training data buckets, by the manifests' names, that a user uploads first.
DATA_BUCKETS = sorted(
    {
        "tf_training_data",
        "h2o3_training_data",
        "fashion-mnist",
        "trainingdata",
        "mnist_pytorch",
        "training-data-bucket-name",
        "Mnist_Data",
    }
)


def said(piece: str, warnings: list[str]) -> bool:
    """Whether a piece of EXPECTED is in the warnings ("a -> b": a bucket mapping)."""
    if " -> " in piece:
        name, stored = piece.split(" -> ")
        piece = f"bucket {name!r} is stored as {stored!r}"
    return any(piece in w for w in warnings)
