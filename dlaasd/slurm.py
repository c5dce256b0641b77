"""Slurm, through its commands: the batch script of a run, sbatch, squeue, scancel.

One Slurm job per run, named `dlaas-<run id>` so a restarted dlaasd finds it with
squeue. Its batch script runs the node program (`python -m dlaasd.node`) on every node
with srun, one learner per node, then stores the run's outputs once from the first node.
Writing the script is pure (tested without Slurm); the commands block, so the executor
runs them in threads.
"""

from __future__ import annotations

import math
import shlex
import subprocess
from dataclasses import dataclass

from .codes import Code

JOB_PREFIX = "dlaas-"

# Slurm's states of a job that has ended (squeue's %T)
ENDED = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "TIMEOUT",
        "REVOKED",
        "SPECIAL_EXIT",
    }
)
WAITING = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"})

# How Slurm's own failures end a run: error code and a sentence (the job id goes first)
FAILURES = {
    "TIMEOUT": (Code.TIMED_OUT, "Slurm ended it at its time limit"),
    "DEADLINE": (Code.TIMED_OUT, "Slurm ended it at its deadline"),
    "OUT_OF_MEMORY": (
        Code.OUT_OF_MEMORY,
        "Slurm killed it for using more memory than it asked for",
    ),
    "NODE_FAIL": (Code.CLUSTER_ENDED_JOB, "a node it ran on failed; submit it again"),
    "BOOT_FAIL": (Code.CLUSTER_ENDED_JOB, "a node it was given failed to boot; submit it again"),
    "PREEMPTED": (Code.CLUSTER_ENDED_JOB, "Slurm preempted it for another job; submit it again"),
    "CANCELLED": (
        Code.CLUSTER_ENDED_JOB,
        "it was cancelled in Slurm (scancel, or an administrator)",
    ),
    "REVOKED": (Code.CLUSTER_ENDED_JOB, "Slurm revoked it (a federated sibling ran it)"),
}


@dataclass(frozen=True)
class SlurmJob:
    """A job as squeue shows it."""

    job_id: str
    name: str
    state: str  # PENDING, RUNNING, COMPLETED, TIMEOUT, ...
    reason: str  # why it waits: Resources, Priority, QOSMaxGRESPerUser, ... or None
    nodes: str
    comment: str = ""  # which dlaasd submitted it (its state folder)

    @property
    def run_id(self) -> str:
        return self.name.removeprefix(JOB_PREFIX)

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    @property
    def waiting(self) -> bool:
        return self.state in WAITING


class SlurmError(Exception):
    """A Slurm command failed; the message is its own, with the command."""


@dataclass
class Request:
    """What one run asks Slurm for."""

    run_id: str
    learners: int
    gpus: int  # per learner (node)
    cpus: float
    memory: int  # bytes, per learner
    time_limit: float | None  # seconds; None: the partition's default
    job_file: str  # the node job (JSON) the node program reads
    output: str  # Slurm's own output of the batch script
    python: str  # the interpreter with dlaasd on the nodes
    comment: str = ""  # Slurm's comment of the job: which dlaasd submitted it


@dataclass
class Site:
    """What the site's configuration adds to every job."""

    partition: str = ""
    account: str = ""
    qos: str = ""
    options: tuple[str, ...] = ()


def time_minutes(seconds: float) -> int:
    """Slurm's --time counts whole minutes: round up, at least one."""
    return max(1, math.ceil(seconds / 60))


def directives(req: Request, site: Site) -> list[str]:
    """The sbatch options of a run, in the order a reader expects them."""
    opts = [
        f"--job-name={JOB_PREFIX}{req.run_id}",
        f"--nodes={req.learners}",
        "--ntasks-per-node=1",
        f"--cpus-per-task={max(1, math.ceil(req.cpus))}",
        f"--mem={max(1, math.ceil(req.memory / 1024**2))}M",
    ]
    if req.gpus:
        opts.append(f"--gres=gpu:{req.gpus}")
    if req.time_limit:
        opts.append(f"--time={time_minutes(req.time_limit)}")
    # a run is trained once: a job Slurm would requeue (a node failed) ends instead
    opts += ["--no-requeue", f"--output={req.output}", "--open-mode=append"]
    if req.comment:
        opts.append(f"--comment={req.comment}")
    for key, value in (("partition", site.partition), ("account", site.account), ("qos", site.qos)):
        if value:
            opts.append(f"--{key}={value}")
    opts += list(site.options)
    return opts


def batch_script(req: Request, site: Site) -> str:
    """The batch script of a run: each node trains its learner, then the first stores."""
    py, job = shlex.quote(req.python), shlex.quote(req.job_file)
    lines = ["#!/bin/bash"]
    lines += [f"#SBATCH {opt}" for opt in directives(req, site)]
    lines += [
        "# A halt signals the learners (scancel --signal=TERM): this script waits for them",
        "# to stop their containers, then stores what they produced.",
        "trap '' TERM",
        'first=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        "addr=$(scontrol show node \"$first\" | sed -n 's/.*NodeAddr=\\([^ ]*\\).*/\\1/p')",
        'export DLAAS_MASTER_ADDR="${addr:-$first}"',
        f"{py} -m dlaasd.node prepare {job} || exit 0  # its reports say why",
        f"srun --ntasks-per-node=1 --kill-on-bad-exit=0 {py} -m dlaasd.node train {job}",
        f"exec {py} -m dlaasd.node store {job}",
        "",
    ]
    return "\n".join(lines)


def parse_squeue(text: str) -> list[SlurmJob]:
    """squeue -h -o '%i|%j|%T|%r|%N|%k' lines; other jobs than dlaasd's are left out."""
    jobs = []
    for line in text.splitlines():
        parts = line.strip().split("|", 5)
        if len(parts) != 6 or not parts[1].startswith(JOB_PREFIX):
            continue
        jobs.append(SlurmJob(*parts))
    return jobs


def describe_wait(job: SlurmJob) -> str:
    """Why a job waits, in a sentence (Slurm's reason, as squeue gives it)."""
    reason = job.reason if job.reason not in ("", "None", "(null)") else "its turn"
    return f"waiting in Slurm's queue (job {job.job_id}: {reason})"


# --- the commands -----------------------------------------------------------------------


def _run(argv: list[str], input: str | None = None, timeout: float = 60) -> str:
    try:
        r = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as exc:
        raise SlurmError(f"{argv[0]} is not installed on this machine ({exc})") from exc
    except subprocess.TimeoutExpired as exc:
        raise SlurmError(f"{argv[0]} did not answer in {timeout:.0f}s") from exc
    if r.returncode:
        text = (r.stderr or r.stdout).strip().replace("\n", "; ")
        raise SlurmError(f"{' '.join(argv[:2])}: {text or f'exit status {r.returncode}'}")
    return r.stdout


def submit(script: str) -> str:
    """sbatch the script (on stdin); the job id."""
    out = _run(["sbatch", "--parsable"], input=script)
    return out.strip().split(";")[0]


def jobs(user: str = "") -> list[SlurmJob]:
    """dlaasd's jobs that squeue knows, ended ones included (for MinJobAge)."""
    argv = ["squeue", "-h", "--states=all", "-o", "%i|%j|%T|%r|%N|%k"]
    if user:
        argv += ["-u", user]
    return parse_squeue(_run(argv))


def signal_job(job_id: str, signal: str = "TERM") -> None:
    """Send a signal to the job's steps: the node programs, one per learner, which stop
    their containers with the run's grace. Not --full: srun, in the batch script, would
    take a SIGTERM for "kill the step now" and SIGKILL the node programs."""
    _run(["scancel", f"--signal={signal}", job_id])


def cancel(job_id: str) -> None:
    _run(["scancel", job_id])
