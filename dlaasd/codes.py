"""Run statuses and error codes: FfDL's names, which users and scripts depend on.

Both are string enums: each member is its own name on the wire and in the database."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    QUEUED = "QUEUED"
    DOWNLOADING = "DOWNLOADING"
    PROCESSING = "PROCESSING"
    STORING = "STORING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    HALTED = "HALTED"


QUEUED = Status.QUEUED
DOWNLOADING = Status.DOWNLOADING
PROCESSING = Status.PROCESSING
STORING = Status.STORING
COMPLETED = Status.COMPLETED
FAILED = Status.FAILED
HALTED = Status.HALTED

STATUSES = tuple(Status)
FINAL = frozenset({COMPLETED, FAILED, HALTED})
# Runs in these phases hold their GPUs, CPUs and memory.
HOLDING_RESOURCES = frozenset({DOWNLOADING, PROCESSING})
ACTIVE = frozenset({DOWNLOADING, PROCESSING, STORING})


class Code(StrEnum):
    """An error code, one cause each; `meaning` is what others are told of a failure
    (README's table starts each row with it)."""

    meaning: str

    def __new__(cls, code: str, meaning: str) -> Code:
        member = str.__new__(cls, code)
        member._value_ = code
        member.meaning = meaning
        return member

    BAD_MANIFEST = "C101", "bad manifest"
    BAD_MODEL = "C102", "bad model archive"
    BAD_CREDENTIALS = "C103", "bad credentials for the object store"
    IMPOSSIBLE_REQUEST = "C104", "impossible resource request"
    TRAINING_FAILED = "C201", "the training command exited non-zero"
    OUT_OF_MEMORY = "C202", "killed for using more memory than the manifest allows"
    TIMED_OUT = "C203", "timed out"
    INTERNAL = "S100", "an internal error of dlaasd (a bug)"
    CONTAINER_NOT_STARTED = "S101", "the container could not start"
    PLACE_LOST = (
        "S102",
        "the place the training ran went away (the Docker Engine or a node stopped)",
    )
    IMAGE_MISSING = "S103", "the framework image is not available"
    CLUSTER_ENDED_JOB = (
        "S105",
        "the cluster ended the job (a node failed, preemption, an administrator)",
    )
    DOWNLOAD_FAILED = "S302", "training data download failed"
    UPLOAD_FAILED = "S303", "results upload failed"
    DISK_FULL = "S304", "no space left on the state folder's disk"


def meaning(code: str) -> str:
    """What a stored code means (a code no longer known: itself)."""
    known = _BY_VALUE.get(code)
    return known.meaning if known else code


_BY_VALUE = {c.value: c for c in Code}
