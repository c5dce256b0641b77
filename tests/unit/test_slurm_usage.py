"""What the Slurm executor tells usage accounting about a learner, without Slurm."""

from __future__ import annotations

from pathlib import Path

from dlaasd import config, measure
from dlaasd.executors.slurm import SlurmExecutor


def test_a_slurm_learners_usage_is_not_known_and_its_gpu_figures_still_count(
    tmp_path: Path,
) -> None:
    cfg = config.load(overrides={"state_dir": str(tmp_path)}, env={})
    usage = SlurmExecutor(cfg, "test").usage("17/1/training-abc")
    assert usage == {}  # the learner's cgroup is on its node: nothing read here
    # the sampler merges it with the GPUs' utilisation as any executor's reading
    figures = measure.merge({"cpu_ns": 5}, usage, 40.0)
    assert figures == {"cpu_ns": 5, "gpu_util_sum": 40.0, "gpu_samples": 1}
