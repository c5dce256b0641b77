"""dlaasd.scheduler: FIFO placement and impossible requests (pure functions)."""

from __future__ import annotations

import pytest

from dlaasd.gpus import matches_type
from dlaasd.scheduler import FreeGpu, Placement, Request, impossible, place

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
    assert place(q, gpus(2, V100), 8, 8 * GiB) == []


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
