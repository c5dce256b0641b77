"""How a training ended, made a run's outcome: status, error code and the sentence users
read. Pure: the train phase gathers the facts (exits, the failing learner's log line and
OOM mark, the disk), `decide` only reads them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .codes import COMPLETED, FAILED, HALTED, Code
from .executors import Exit
from .records import Outcome
from .units import format_duration, format_size


@dataclass(frozen=True)
class Ended:
    """How a run's learners ended, and what the decision needs to know besides."""

    exits: Sequence[tuple[int, Exit]]  # (learner, exit), in the order they ended
    learners: int  # the manifest's
    timeout: float  # the manifest's, in seconds (0: none)
    memory: int  # the manifest's limit per learner, in bytes
    halt_reason: str | None = None  # set when a halt ended it ("" for no reason given)
    timed_out: bool = False  # the daemon stopped it at the manifest's timeout
    lost: str = ""  # the place it ran went away meanwhile: what happened, in a sentence
    oom_marked: bool = False  # the failing learner's shell saw the kernel's OOM killer
    last_line: str = ""  # the failing learner's last log line (usually the error)
    disk_full: str = ""  # the state folder's disk is full: the sentence that says so


def first_failure(exits: Sequence[tuple[int, Exit]]) -> int | None:
    """The learner whose non-zero exit came first: the cause of the run's failure."""
    return next((learner for learner, e in exits if e.code != 0), None)


def decide(ended: Ended) -> Outcome:
    exits = dict(ended.exits)
    cause = first_failure(ended.exits)
    failed = exits[cause] if cause is not None else None
    code = failed.code if failed else next((e.code for _, e in ended.exits), -1)
    if ended.halt_reason is not None:
        return Outcome(HALTED, ended.halt_reason or "halted on request", exit_code=code)
    coded = next((e for _, e in ended.exits if e.error_code), None)
    if coded:  # it failed around the training, and the executor knows why
        return Outcome(FAILED, coded.error, coded.error_code, coded.code)
    unstarted = [learner for learner, e in ended.exits if not e.started]
    if unstarted:  # its exit code 0 means nothing: it never ran (not a success)
        return Outcome(
            FAILED,
            f"the container of learner {unstarted[0]} was created but never started; "
            "nothing was trained: submit the run again",
            Code.CONTAINER_NOT_STARTED,
        )
    if ended.timed_out or any(e.timed_out for _, e in ended.exits):
        return Outcome(
            FAILED,
            f"timed out after {format_duration(ended.timeout)} (the "
            "manifest's timeout); raise it or make the training shorter",
            Code.TIMED_OUT,
            code,
        )
    if failed is None or cause is None:
        return Outcome(COMPLETED, "training completed", exit_code=code)
    lost = ended.lost or failed.lost
    if lost:
        return Outcome(
            FAILED,
            f"{lost} (exit {code}); its log and what it wrote are kept; submit it again",
            Code.PLACE_LOST,
            code,
        )
    if failed.oom_killed or ended.oom_marked:
        return Outcome(
            FAILED,
            f"killed for using more than its {format_size(ended.memory)} "
            "of memory; ask for more with `memory` in the manifest",
            Code.OUT_OF_MEMORY,
            code,
        )
    last = ended.last_line or failed.error
    who = f"learner {cause}: " if ended.learners > 1 else ""
    message = f"{who}the training command exited with code {code}" + (f": {last}" if last else "")
    if ended.disk_full:  # likely why it failed
        return Outcome(FAILED, f"{message}; {ended.disk_full}", Code.DISK_FULL, code)
    return Outcome(FAILED, message, Code.TRAINING_FAILED, code)
