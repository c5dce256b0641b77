"""dlaasd.scheduler: FIFO placement and impossible requests (pure functions)."""

from __future__ import annotations

import pytest

from dlaasd.gpus import matches_type
from dlaasd.scheduler import (
    Fairness,
    FreeGpu,
    Limits,
    Placement,
    Request,
    impossible,
    place,
    plan,
    plan_lines,
)

GiB = 1024**3
V100 = "Tesla V100-SXM2-16GB"
H100 = "NVIDIA H100 80GB HBM3"


def gpus(n: int, name: str = V100) -> list[FreeGpu]:
    return [FreeGpu(f"GPU-{i:04d}", name) for i in range(n)]


def gpu_run(run_id: str, n: int = 1, cpus: float = 1, memory: int = GiB, gpu_type: str = ""):
    return Request(run_id, n, cpus, memory, gpu_type)


def cpu_run(run_id: str, cpus: float = 1, memory: int = GiB):
    return Request(run_id, 0, cpus, memory)


def started(placements: list[Placement]) -> list[str]:
    return [p.run_id for p in placements]


# --- place ----------------------------------------------------------------------------


def test_nothing_queued_places_nothing():
    assert place([], gpus(2), 8, 8 * GiB) == []


def test_one_gpu_run_gets_one_gpu():
    assert place([gpu_run("a")], gpus(2), 8, 8 * GiB) == [Placement("a", ("GPU-0000",))]


def test_three_one_gpu_runs_on_two_gpus_place_two_in_submit_order():
    ps = place([gpu_run("a"), gpu_run("b"), gpu_run("c")], gpus(2), 8, 8 * GiB)
    assert ps == [Placement("a", ("GPU-0000",)), Placement("b", ("GPU-0001",))]


def test_gpus_are_assigned_lowest_uuid_first_when_given_in_order():
    ps = place([gpu_run("a", 2), gpu_run("b")], gpus(4), 8, 8 * GiB)
    assert ps == [Placement("a", ("GPU-0000", "GPU-0001")), Placement("b", ("GPU-0002",))]


def test_gpus_are_assigned_in_inventory_order():
    # the daemon lists GPUs in NVML index order: GPU 0 first, whatever the UUIDs
    free = [FreeGpu("GPU-c", V100), FreeGpu("GPU-a", V100), FreeGpu("GPU-b", V100)]
    ps = place([gpu_run("x", 2)], free, 8, 8 * GiB)
    assert ps == [Placement("x", ("GPU-c", "GPU-a"))]


def test_a_later_gpu_run_never_overtakes_a_waiting_earlier_one():
    # "a" needs 2 GPUs, only 1 is free; "b" needs 1 and would fit, but must wait.
    assert place([gpu_run("a", 2), gpu_run("b", 1)], gpus(1), 8, 8 * GiB) == []


def test_a_later_gpu_run_does_not_overtake_a_run_waiting_for_host_resources():
    ps = place([gpu_run("a", 1, cpus=16), gpu_run("b", 1, cpus=1)], gpus(2), 8, 8 * GiB)
    assert ps == []


def test_a_gpu_run_waiting_for_a_gpu_type_blocks_later_gpu_runs():
    q = [gpu_run("a", 1, gpu_type="nvidia-H100"), gpu_run("b", 1)]
    decided = plan(q, gpus(2, V100), 8, 8 * GiB)
    assert decided.placements == []
    # two GPUs are free, but not of the type asked for: the reason says which type
    assert decided.reasons == {
        "a": "Resources: 1 GPU(s) of type 'nvidia-H100' asked for, 0 free",
        "b": "Priority: behind a",
    }


def test_cpu_runs_do_not_wait_behind_gpu_runs_waiting_for_gpus():
    q = [gpu_run("a", 2), cpu_run("b"), gpu_run("c", 1), cpu_run("d")]
    assert started(place(q, gpus(1), 8, 8 * GiB)) == ["b", "d"]


def test_cpu_runs_wait_behind_a_gpu_run_whose_gpus_are_free_but_lacks_cpus():
    q = [gpu_run("a", 1, cpus=8), cpu_run("b", cpus=1)]
    assert place(q, gpus(1), 4, 8 * GiB) == []


def test_cpu_runs_wait_behind_a_gpu_run_whose_gpus_are_free_but_lacks_memory():
    q = [gpu_run("a", 1, memory=16 * GiB), cpu_run("b", memory=GiB)]
    assert place(q, gpus(1), 8, 8 * GiB) == []


def test_cpu_runs_are_fifo_among_themselves():
    q = [cpu_run("a", cpus=6), cpu_run("b", cpus=4), cpu_run("c", cpus=1)]
    # "b" does not fit after "a"; "c" would, but may not overtake "b".
    assert started(place(q, [], 8, 8 * GiB)) == ["a"]


def test_cpu_and_memory_are_accounted_across_runs():
    q = [cpu_run("a", cpus=2, memory=3 * GiB), cpu_run("b", cpus=2, memory=3 * GiB)]
    assert started(place(q, [], 4, 6 * GiB)) == ["a", "b"]
    assert started(place(q, [], 3.9, 6 * GiB)) == ["a"]
    assert started(place(q, [], 4, 6 * GiB - 1)) == ["a"]


def test_gpu_runs_use_up_cpu_and_memory_too():
    q = [gpu_run("a", 1, cpus=3, memory=3 * GiB), cpu_run("b", cpus=2, memory=GiB)]
    assert started(place(q, gpus(1), 4, 8 * GiB)) == ["a"]
    assert started(place(q, gpus(1), 5, 8 * GiB)) == ["a", "b"]


def test_fractional_cpus_add_up_exactly():
    q = [cpu_run(str(i), cpus=0.1, memory=1) for i in range(10)]
    assert len(place(q, [], 1.0, 10)) == 10


def test_exact_fit():
    assert started(place([gpu_run("a", 2, cpus=8, memory=8 * GiB)], gpus(2), 8, 8 * GiB)) == ["a"]


def test_no_gpus_at_all_still_runs_cpu_runs():
    assert started(place([gpu_run("a"), cpu_run("b")], [], 8, 8 * GiB)) == ["b"]


def test_gpus_are_not_handed_out_twice():
    ps = place([gpu_run("a", 1), gpu_run("b", 1), gpu_run("c", 1)], gpus(3), 8, 8 * GiB)
    handed = [u for p in ps for u in p.gpus]
    assert len(handed) == len(set(handed)) == 3


def test_cpu_runs_get_no_gpus():
    assert place([cpu_run("a")], gpus(2), 8, 8 * GiB) == [Placement("a", ())]


def test_gpu_type_picks_matching_gpus_only():
    free = [FreeGpu("GPU-0", H100), FreeGpu("GPU-1", V100), FreeGpu("GPU-2", V100)]
    ps = place([gpu_run("a", 2, gpu_type="nvidia-TeslaV100")], free, 8, 8 * GiB)
    assert ps == [Placement("a", ("GPU-1", "GPU-2"))]


def test_gpu_type_run_then_untyped_run_takes_what_is_left():
    free = [FreeGpu("GPU-0", V100), FreeGpu("GPU-1", H100)]
    q = [gpu_run("a", 1, gpu_type="nvidia-H100"), gpu_run("b", 1)]
    assert place(q, free, 8, 8 * GiB) == [
        Placement("a", ("GPU-1",)),
        Placement("b", ("GPU-0",)),
    ]


# --- gpu_type ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "gpu_name, gpu_type, expected",
    [
        (V100, "nvidia-TeslaV100", True),
        (V100, "TeslaV100", True),
        (V100, "nvidia-tesla-v100", True),
        (V100, "V100", True),
        (V100, "", True),
        (H100, "nvidia-H100", True),
        (H100, "NVIDIA-H100", True),
        (H100, "H100", True),
        ("Tesla K80", "nvidia-TeslaK80", True),
        ("Tesla P100-PCIE-16GB", "nvidia-TeslaP100", True),
        (V100, "nvidia-H100", False),
        (H100, "nvidia-TeslaV100", False),
        ("Tesla K80", "nvidia-TeslaP100", False),
        ("Simulated GPU", "nvidia-TeslaV100", False),
    ],
)
def test_matches_type(gpu_name, gpu_type, expected):
    assert matches_type(gpu_name, gpu_type) is expected


@pytest.mark.parametrize(
    "gpu_name, gpu_type",
    [("NVIDIA A100-SXM4-40GB", "nvidia-A10"), ("Tesla P40", "nvidia-TeslaP4")],
)
def test_matches_type_is_not_a_prefix_of_another_model(gpu_name, gpu_type):
    assert not matches_type(gpu_name, gpu_type)


# --- impossible -------------------------------------------------------------------------


def test_possible_request_has_no_reasons():
    assert impossible(gpu_run("a", 2, cpus=4, memory=4 * GiB), 8, 8 * GiB, [V100, V100]) == []
    assert impossible(cpu_run("b", cpus=8, memory=8 * GiB), 8, 8 * GiB, []) == []


def test_too_many_gpus():
    ((field, reason),) = impossible(gpu_run("a", 3), 8, 8 * GiB, [V100, V100])
    assert field == "gpus"
    assert reason == "3 GPU(s) asked for; this machine has 2"


def test_gpus_on_a_machine_without_any():
    ((field, reason),) = impossible(gpu_run("a", 1), 8, 8 * GiB, [])
    assert field == "gpus" and "has 0" in reason


def test_too_many_gpus_of_a_type_names_what_the_machine_has():
    ((field, reason),) = impossible(
        gpu_run("a", 1, gpu_type="nvidia-TeslaV100"), 8, 8 * GiB, [H100, H100]
    )
    assert field == "gpus"
    assert "of type 'nvidia-TeslaV100'" in reason
    assert "has 0 (NVIDIA H100 80GB HBM3)" in reason


def test_too_many_cpus():
    ((field, reason),) = impossible(cpu_run("a", cpus=16), 8, 8 * GiB, [])
    assert field == "cpus"
    assert reason == "16 CPUs asked for; dlaasd may use 8"


def test_too_much_memory():
    ((field, reason),) = impossible(cpu_run("a", memory=16 * GiB), 8, 8 * GiB, [])
    assert field == "memory"
    assert reason == "16.0GiB asked for; dlaasd may use 8.0GiB"


def test_every_reason_at_once_in_field_order():
    reasons = impossible(gpu_run("a", 4, cpus=32, memory=64 * GiB), 8, 8 * GiB, [V100])
    assert [f for f, _ in reasons] == ["gpus", "cpus", "memory"]


# --- fair share: priorities, per-user limits, aging -------------------------------------


def test_without_fair_share_settings_the_order_is_submit_order():
    queued = [gpu_run("a"), gpu_run("b"), cpu_run("c")]
    assert plan(queued, gpus(1), 8, 8 * GiB).placements == place(queued, gpus(1), 8, 8 * GiB)
    assert started(place(queued, gpus(1), 8, 8 * GiB)) == ["a", "c"]


def test_a_higher_priority_run_submitted_last_starts_first():
    queued = [gpu_run("a"), gpu_run("b"), Request("c", 1, 1, GiB, priority=5)]
    p = plan(queued, gpus(1), 8, 8 * GiB)
    assert started(p.placements) == ["c"]
    assert p.reasons["a"].startswith("Resources") and p.reasons["b"] == "Priority: behind a"


def test_a_user_at_their_limit_waits_without_blocking_others():
    queued = [
        Request("alice-3", 1, 1, GiB, owner="alice"),
        Request("bob-1", 1, 1, GiB, owner="bob"),
    ]
    fairness = Fairness(limits={"alice": Limits(max_gpus=2)}, held={"alice": (2, 2)})
    p = plan(queued, gpus(2), 8, 8 * GiB, fairness)
    assert started(p.placements) == ["bob-1"]
    assert p.reasons["alice-3"].startswith("user limit: alice holds 2 of 2 GPUs")


def test_runs_running_at_once_count_the_runs_placed_in_the_same_pass():
    queued = [Request(f"a{i}", 0, 1, GiB, owner="alice") for i in range(3)]
    fairness = Fairness(limits={"alice": Limits(max_running=2)})
    p = plan(queued, gpus(0), 8, 8 * GiB, fairness)
    assert started(p.placements) == ["a0", "a1"]
    assert "2 of 2 runs running" in p.reasons["a2"]


def test_aging_lets_a_waiting_run_overtake_newcomers_of_higher_priority():
    old = Request("old", 1, 1, GiB, priority=0, waited=50)
    new = Request("new", 1, 1, GiB, priority=5, waited=0)
    assert started(place([old, new], gpus(1), 8, 8 * GiB)) == ["new"]  # no aging
    assert started(place([old, new], gpus(1), 8, 8 * GiB, Fairness(aging=10))) == ["old"]


def test_no_stream_of_higher_priority_runs_starves_a_waiting_one():
    """One GPU; a priority-10 run arrives every 60 s and trains 60 s. With aging (1 point
    per 30 s), the priority-0 run starts within (10 + 1) x 30 s of waiting; without
    aging, never."""

    def simulate(aging: float, minutes: int = 60) -> int | None:
        queue = [Request("low", 1, 1, GiB, priority=0)]
        submitted = {"low": 0.0}
        busy_until = 0.0
        for minute in range(minutes):
            now = minute * 60.0
            submitted[f"high{minute}"] = now
            queue.append(Request(f"high{minute}", 1, 1, GiB, priority=10))
            if now >= busy_until:
                aged = [
                    Request(
                        r.run_id, 1, 1, GiB, priority=r.priority, waited=now - submitted[r.run_id]
                    )
                    for r in queue
                ]
                (chosen,) = place(aged, gpus(1), 8, 8 * GiB, Fairness(aging=aging))
                if chosen.run_id == "low":
                    return minute
                queue = [r for r in queue if r.run_id != chosen.run_id]
                busy_until = now + 60
        return None

    assert simulate(aging=0) is None
    started_at = simulate(aging=30)
    assert started_at is not None and started_at * 60 <= (10 + 1) * 30 + 60


# --- plan_lines: the queue read lazily, line by line ----------------------------------


def lines_of(queue: list[Request]) -> tuple[list[Request], list[Request]]:
    """The two lines as the database gives them: priority, then submit order."""
    ordered = sorted(queue, key=lambda r: -r.priority)
    return [r for r in ordered if r.gpus], [r for r in ordered if not r.gpus]


def test_plan_lines_places_as_plan_does():
    """Over many mixed queues, the lazy reading places the same runs on the same GPUs,
    and gives the same reason to every run it visits."""
    import random

    rng = random.Random(7)
    for _ in range(300):
        queue = [
            Request(
                f"r{i}",
                rng.choice([0, 0, 1, 2]),
                rng.choice([0.5, 1, 2, 4]),
                rng.choice([1, 2, 8]) * GiB,
                owner=rng.choice(["ann", "bob"]),
                priority=rng.choice([0, 0, 0, 5]),
                waited=1000 - i,
            )
            for i in range(rng.randint(0, 12))
        ]
        limits = {"ann": Limits(max_running=rng.choice([0, 1, 2])), "bob": Limits()}
        fair = Fairness(0, limits, {"ann": (0, rng.choice([0, 1]))})
        free = gpus(rng.randint(0, 3)), rng.choice([1.0, 2.0, 4.0]), rng.choice([2, 4, 16]) * GiB
        eager = plan(queue, *free, fair)
        lazy = plan_lines(*lines_of(queue), *free, fair)
        assert lazy.placements == eager.placements, queue
        assert lazy.reasons.items() <= eager.reasons.items()


def test_plan_lines_reads_each_line_up_to_its_first_run_that_waits():
    """10,000 GPU runs waiting for the one GPU a run holds: a decision reads one of them
    and still starts the CPU-only run behind them all."""
    read = []

    def line(requests):
        for r in requests:
            read.append(r.run_id)
            yield r

    waiting = [gpu_run(f"g{i}") for i in range(10_000)]
    decided = plan_lines(line(waiting), line([cpu_run("c")]), [], 2.0, 8 * GiB, Fairness())
    assert started(decided.placements) == ["c"]
    assert read == ["g0", "c"] and decided.reasons == {
        "g0": "Resources: 1 GPU(s) asked for, 0 free"
    }


def test_plan_lines_refuses_aging():
    with pytest.raises(ValueError, match="aging"):
        plan_lines([], [], [], 1.0, GiB, Fairness(aging=60))
