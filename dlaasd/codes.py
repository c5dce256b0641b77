"""Run statuses and error codes: FfDL's names, which users and scripts depend on."""

from __future__ import annotations

QUEUED = "QUEUED"
DOWNLOADING = "DOWNLOADING"
PROCESSING = "PROCESSING"
STORING = "STORING"
COMPLETED = "COMPLETED"
FAILED = "FAILED"
HALTED = "HALTED"

STATUSES = (QUEUED, DOWNLOADING, PROCESSING, STORING, COMPLETED, FAILED, HALTED)
FINAL = frozenset({COMPLETED, FAILED, HALTED})
# Runs in these phases hold their GPUs, CPUs and memory.
HOLDING_RESOURCES = frozenset({DOWNLOADING, PROCESSING})
ACTIVE = frozenset({DOWNLOADING, PROCESSING, STORING})

ERROR_CODES = {
    "C101": "bad manifest",
    "C102": "bad model archive",
    "C103": "bad credentials for the object store",
    "C104": "impossible resource request",
    "C201": "the training command exited non-zero",
    "C202": "killed for using more memory than the manifest allows",
    "C203": "timed out",
    "S101": "the container could not start",
    "S103": "the framework image is not available",
    "S105": "the cluster ended the job (a node failed, preemption, an administrator)",
    "S302": "training data download failed",
    "S303": "results upload failed",
    "S304": "no space left on the state folder's disk",
}


class RunError(Exception):
    """A failure with an FfDL error code and a sentence that says what to do."""

    def __init__(self, code: str, message: str):
        assert code in ERROR_CODES, code
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")
