"""dlaasd.outcome.decide: every way a training ends, made status, code and sentence."""

from __future__ import annotations

from dlaasd.executors import Exit
from dlaasd.outcome import Ended, decide, first_failure
from dlaasd.records import Outcome

GiB = 1024**3


def ended(*exits: tuple[int, Exit], **kw) -> Ended:
    return Ended(exits=list(exits), **{"learners": 1, "timeout": 0, "memory": GiB, **kw})


OK = Exit(0)


def test_all_learners_exiting_0_completes_with_their_code():
    assert decide(ended((1, OK), (2, OK), learners=2)) == Outcome(
        "COMPLETED", "training completed", None, 0
    )


def test_no_exit_at_all_completes_with_an_unknown_code():
    assert decide(ended()) == Outcome("COMPLETED", "training completed", None, -1)


def test_a_halt_wins_and_says_its_reason_with_the_failing_code():
    out = decide(ended((1, Exit(143)), halt_reason="halted by ann", timed_out=True))
    assert out == Outcome("HALTED", "halted by ann", None, 143)


def test_a_halt_without_a_reason_says_it_was_asked_for():
    assert decide(ended((1, OK), halt_reason="")).message == "halted on request"


def test_a_learner_never_started_is_a_failure_whatever_its_code():
    out = decide(ended((1, OK), (2, Exit(0, started=False)), learners=2, timed_out=True))
    assert (out.status, out.error_code, out.exit_code) == ("FAILED", "S101", None)
    assert "learner 2 was created but never started" in out.message


def test_the_daemons_deadline_is_a_timeout_with_the_manifests_figure():
    out = decide(ended((1, Exit(137)), timeout=90, timed_out=True))
    assert (out.status, out.error_code, out.exit_code) == ("FAILED", "C203", 137)
    assert out.message.startswith("timed out after 1m30s (the manifest's timeout)")


def test_an_executor_ending_it_at_its_time_limit_is_a_timeout_too():
    out = decide(ended((1, Exit(0, timed_out=True)), timeout=3600))
    assert (out.error_code, out.exit_code) == ("C203", 0)
    assert "timed out after 1h00m" in out.message


def test_a_lost_place_fails_a_failing_training_with_what_happened():
    out = decide(ended((1, Exit(137)), lost="the Docker Engine stopped while the training ran"))
    assert out == Outcome(
        "FAILED",
        "the Docker Engine stopped while the training ran (exit 137); its log and what it "
        "wrote are kept; submit it again",
        "S102",
        137,
    )


def test_a_lost_place_does_not_fail_a_training_that_completed():
    assert decide(ended((1, OK), lost="the Docker Engine stopped")).status == "COMPLETED"


def test_a_learner_lost_by_its_executor_says_why():
    out = decide(ended((1, Exit(-1, lost="node2 failed"))))
    assert out.error_code == "S102" and out.message.startswith("node2 failed (exit -1)")


def test_the_engines_oom_kill_is_c202_with_the_limit():
    out = decide(ended((1, Exit(137, oom_killed=True)), memory=512 * 1024**2))
    assert (out.status, out.error_code, out.exit_code) == ("FAILED", "C202", 137)
    assert "more than its 512.0MiB of memory" in out.message


def test_the_shells_oom_mark_is_c202_too():
    assert decide(ended((1, Exit(137)), oom_marked=True)).error_code == "C202"


def test_a_failing_command_says_its_code_and_last_line():
    out = decide(ended((1, Exit(3, error="engine words")), last_line="ValueError: bad"))
    assert out == Outcome(
        "FAILED", "the training command exited with code 3: ValueError: bad", "C201", 3
    )


def test_without_a_log_line_the_executors_words_serve():
    out = decide(ended((1, Exit(3, error="exec format error"))))
    assert out.message == "the training command exited with code 3: exec format error"


def test_with_nothing_to_quote_the_code_alone():
    assert decide(ended((1, Exit(3)))).message == "the training command exited with code 3"


def test_the_first_failure_is_the_cause_and_names_its_learner():
    exits = [(1, OK), (3, Exit(2)), (2, Exit(143))]
    assert first_failure(exits) == 3
    out = decide(ended(*exits, learners=3, last_line="boom"))
    assert out.message == "learner 3: the training command exited with code 2: boom"
    assert out.exit_code == 2


def test_a_full_disk_is_named_as_the_likely_cause():
    out = decide(ended((1, Exit(1)), last_line="OSError", disk_full="no space left on X"))
    assert out == Outcome(
        "FAILED",
        "the training command exited with code 1: OSError; no space left on X",
        "S304",
        1,
    )


def test_a_full_disk_does_not_fail_a_training_that_completed():
    assert decide(ended((1, OK), disk_full="no space left")).status == "COMPLETED"


def test_first_failure_is_none_when_all_exited_0():
    assert first_failure([(1, OK), (2, OK)]) is None


def test_a_learner_failing_around_the_training_keeps_its_executors_code_and_sentence():
    node = Exit(-1, error="downloading the training data on this node failed", error_code="S302")
    out = decide(ended((1, Exit(143)), (2, node), learners=2, timed_out=True))
    assert out == Outcome("FAILED", node.error, "S302", -1)
    assert decide(ended((1, node), halt_reason="")).status == "HALTED"  # a halt still wins
