"""The layout of one run's folder on disk, and how it appears inside the container.

<state>/runs/<run-id>/
    manifest.yml        as submitted
    model.zip           as submitted (what `download --definition` returns)
    data-tree           the name of the data cache's tree mounted as DATA_DIR, if any
    job/                mounted at /job (JOB_STATE_DIR)
        model-code/     MODEL_DIR, the unpacked code, the working directory
        data/           DATA_DIR, read-only: where the data tree is mounted (or a
                        mount_volume; an older release linked the data here)
        results/        RESULT_DIR, uploaded after the run
        checkpoints/    CHECKPOINT_DIR, uploaded after the run
        logs/           LOG_DIR: training-log.txt, evaluation-metrics.txt
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

JOB = "/job"
# written to LOG_DIR by the training's shell when the kernel's OOM killer fired in its cgroup
OOM_MARK = ".oom-kills"

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
    def data_tree(self) -> Path:
        """The record of the data tree the run mounts (outside the job: dlaasd's alone)."""
        return self.root / "data-tree"

    def record_data_tree(self, name: str) -> None:
        fd = os.open(self.data_tree, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with open(fd, "w") as f:  # dlaasd's alone, as the rest of the run's folder
            f.write(name)
            f.flush()
            os.fsync(fd)  # before the status says PROCESSING: a run never trains without it

    def data_tree_name(self) -> str | None:
        try:
            name = self.data_tree.read_text().strip()
        except FileNotFoundError:
            return None
        return name if re.fullmatch(r"[0-9a-f]{64}", name) else None

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

    def learner_log(self, learner: int) -> Path:
        return self.learner_logs(learner) / LOG_NAME

    @property
    def definition(self) -> list[Path]:
        """What was submitted, as it was: the manifest and the model archive."""
        return [p for p in (self.manifest, self.model_zip) if p.exists()]

    # The job folder belongs to the training while it runs (and as root dlaasd outlives
    # it): anything in it may be a link planted to make dlaasd read or write elsewhere.

    def open(self, path: Path, write: bool = False) -> BinaryIO:
        """Open a file under the job folder without following any link on the way:
        FileNotFoundError if one is there (or the file is not)."""
        return open_beneath(self.job, path.relative_to(self.job), write)

    def is_real_dir(self, path: Path) -> bool:
        """A folder of the job, not a link put in its place."""
        try:
            return stat.S_ISDIR(path.lstat().st_mode) and (
                path.parent == self.job or self.is_real_dir(path.parent)
            )
        except FileNotFoundError:
            return False

    def prepare(self) -> None:
        for d in (self.model_code, self.data, self.results, self.checkpoints, self.logs):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(self.job, 0o700)  # the owner's (and the containers') alone: see filemodes

    def reclaim(self) -> None:
        """Take a job folder its owner has (a run resumed in DOWNLOADING) back while dlaasd
        writes in it, and remove any link put among its folders: the code would be unpacked,
        the helpers copied and the data linked wherever one leads (give_to hands it back
        afterwards)."""
        try:
            os.chown(self.job, os.geteuid(), os.getegid(), follow_symlinks=False)
        except FileNotFoundError:
            return  # a new run: prepare() makes it
        os.chmod(self.job, 0o700, follow_symlinks=False)
        with os.scandir(self.job) as entries:
            for entry in entries:
                if entry.is_symlink():
                    os.unlink(entry.path)
        # its data too, where a link may be planted deeper: staged again (from the cache)
        shutil.rmtree(self.data, ignore_errors=True)

    def give_to(self, uid: int, gid: int) -> None:
        """Hand the writable folders to the container's user (when dlaasd runs as root).
        No link is followed: a resumed run's job folder is its owner's already, who may
        have put a link in place of a folder (os.walk would follow one at the top)."""
        os.chown(self.job, uid, gid, follow_symlinks=False)
        for top in (self.model_code, self.results, self.checkpoints, self.logs):
            for _, dirnames, filenames, fd in os.fwalk(top, follow_symlinks=False):
                os.chown(fd, uid, gid)
                for name in dirnames + filenames:
                    os.chown(name, uid, gid, dir_fd=fd, follow_symlinks=False)

    def outputs(self) -> list[tuple[Path, str]]:
        """(file, path under the run's results) of everything a run produced: results and
        logs side by side, checkpoints under checkpoints/. Regular files only: links are
        not followed (they could point anywhere on the host)."""
        pairs = []
        for folder, prefix in (
            (self.results, ""),
            (self.logs, ""),
            (self.checkpoints, "checkpoints/"),
        ):
            if not self.is_real_dir(folder):
                continue
            for dirpath, _, filenames in os.walk(folder):  # does not follow links
                for name in filenames:
                    path = Path(dirpath) / name
                    if _regular(path) and name != OOM_MARK:
                        pairs.append((path, prefix + path.relative_to(folder).as_posix()))
        return sorted(pairs, key=lambda pair: pair[1])

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


def _regular(path: Path) -> bool:
    """A regular file, not a link; False for one gone since it was listed (a training's
    temporary file, renamed meanwhile)."""
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except FileNotFoundError:
        return False


def open_beneath(root: Path, rel: Path | str, write: bool = False) -> BinaryIO:
    """Open `root`/`rel` without following any link at or below `root`: FileNotFoundError
    if one is there (or the file is not). What is read is what the descriptor holds, so a
    file swapped for a link after this open is not read. A reader never blocks on a FIFO
    put in a file's place (fstat tells what it got)."""
    parts = Path(rel).parts
    flags = os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | flags)
    try:
        for part in parts[:-1]:
            inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | flags, dir_fd=fd)
            os.close(fd)
            fd = inner
        mode = os.O_WRONLY | os.O_CREAT | os.O_TRUNC if write else os.O_RDONLY | os.O_NONBLOCK
        file_fd = os.open(parts[-1], mode | flags, 0o644, dir_fd=fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise FileNotFoundError(
                f"{Path(root, rel)} is reached through a link: not followed"
            ) from None
        raise
    finally:
        os.close(fd)
    return os.fdopen(file_fd, "wb" if write else "rb")
