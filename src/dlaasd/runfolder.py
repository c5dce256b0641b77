"""The layout of one run's folder on disk, and how it appears inside the container.

<state>/runs/<run-id>/
    manifest.yml        as submitted
    model.zip           as submitted (what `download --definition` returns)
    job/                mounted at /job (JOB_STATE_DIR)
        model-code/     MODEL_DIR, the unpacked code, the working directory
        data/           DATA_DIR, read-only: hard links into the data cache
        results/        RESULT_DIR, uploaded after the run
        checkpoints/    CHECKPOINT_DIR, uploaded after the run
        logs/           LOG_DIR: training-log.txt, evaluation-metrics.txt
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

JOB = "/job"
IN_CONTAINER = {
    "JOB_STATE_DIR": JOB,
    "MODEL_DIR": f"{JOB}/model-code",
    "DATA_DIR": f"{JOB}/data",
    "RESULT_DIR": f"{JOB}/results",
    "CHECKPOINT_DIR": f"{JOB}/checkpoints",
    "LOG_DIR": f"{JOB}/logs",
}
LOG_NAME = "training-log.txt"


@dataclass(frozen=True)
class RunFolder:
    root: Path

    @classmethod
    def of(cls, state_dir: Path, run_id: str) -> RunFolder:
        return cls(state_dir / "runs" / run_id)

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.yml"

    @property
    def model_zip(self) -> Path:
        return self.root / "model.zip"

    @property
    def job(self) -> Path:
        return self.root / "job"

    @property
    def model_code(self) -> Path:
        return self.job / "model-code"

    @property
    def data(self) -> Path:
        return self.job / "data"

    @property
    def results(self) -> Path:
        return self.job / "results"

    @property
    def checkpoints(self) -> Path:
        return self.job / "checkpoints"

    @property
    def logs(self) -> Path:
        return self.job / "logs"

    @property
    def log_file(self) -> Path:
        return self.logs / LOG_NAME

    def learner_logs(self, learner: int) -> Path:
        return self.logs if learner == 1 else self.logs / f"learner-{learner}"

    def prepare(self) -> None:
        for d in (self.model_code, self.data, self.results, self.checkpoints, self.logs):
            d.mkdir(parents=True, exist_ok=True)

    def give_to(self, uid: int, gid: int) -> None:
        """Hand the writable folders to the container's user (when dlaasd runs as root)."""
        os.chown(self.job, uid, gid)
        for top in (self.model_code, self.results, self.checkpoints, self.logs):
            for dirpath, dirnames, filenames in os.walk(top):
                os.chown(dirpath, uid, gid)
                for name in dirnames + filenames:
                    os.lchown(os.path.join(dirpath, name), uid, gid)

    def outputs(self, run_id: str) -> list[tuple[Path, str]]:
        """(file, object key) of everything a run produced: results and logs side by side
        under <run-id>/, checkpoints under <run-id>/checkpoints/."""
        pairs = []
        for folder, prefix in (
            (self.results, ""),
            (self.logs, ""),
            (self.checkpoints, "checkpoints/"),
        ):
            for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()):
                pairs.append((path, f"{run_id}/{prefix}{path.relative_to(folder).as_posix()}"))
        return pairs

    def tidy(self, keep_results: bool) -> None:
        """After a run's outputs are stored: remove what can be had again (the data, the
        unpacked code, the helpers) and, unless kept, the uploaded results and checkpoints.
        The log stays for `dlaasctl logs`; the submitted zip and manifest stay too."""
        leftovers = [self.data, self.model_code, self.job / ".dlaas"]
        if not keep_results:
            leftovers += [self.results, self.checkpoints]
        for folder in leftovers:
            shutil.rmtree(folder, ignore_errors=True)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
