"""GPU inventory through NVML, or simulated GPUs for machines without any.

A machine without the NVIDIA driver has zero GPUs; CPU-only runs still work.
`DLAAS_SIMULATE_GPUS=N` gives N simulated GPUs, so scheduling can be tested end to end.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import asdict, dataclass, field

log = logging.getLogger(__name__)


@dataclass
class Gpu:
    index: int
    uuid: str
    name: str
    memory_total: int
    memory_used: int = 0
    # PIDs (host namespace) of the compute processes on this GPU, whoever started them
    processes: list[int] = field(default_factory=list)
    simulated: bool = False

    def to_json(self) -> dict:
        return asdict(self)


class GpuInventory:
    def __init__(self, simulate: int | None = None):
        if simulate is None and os.environ.get("DLAAS_SIMULATE_GPUS"):
            simulate = int(os.environ["DLAAS_SIMULATE_GPUS"])
        self.simulate = simulate
        self.nvml = False
        self.error = ""  # why NVML is not in use, for `status` and `doctor`
        self.driver = ""
        if simulate is None:
            self._init_nvml()

    @property
    def source(self) -> str:
        if self.simulate is not None:
            return f"simulated ({self.simulate})"
        return "nvml" if self.nvml else "none"

    def _init_nvml(self) -> None:
        try:
            import pynvml

            pynvml.nvmlInit()
            self.nvml = True
            self.driver = _text(pynvml.nvmlSystemGetDriverVersion())
        except Exception as exc:  # no driver, no library: a CPU-only machine
            self.error = f"NVML not available: {exc}"
            log.info("event=gpus_none reason=%r", self.error)

    def list(self) -> list[Gpu]:
        if self.simulate is not None:
            return [
                Gpu(i, f"GPU-simulated-{i:04d}", "Simulated GPU", 16 * 1024**3, simulated=True)
                for i in range(self.simulate)
            ]
        if not self.nvml:
            return []
        import pynvml

        gpus = []
        try:
            for i in range(pynvml.nvmlDeviceGetCount()):
                h = pynvml.nvmlDeviceGetHandleByIndex(i)
                mem = pynvml.nvmlDeviceGetMemoryInfo(h)
                procs = [p.pid for p in pynvml.nvmlDeviceGetComputeRunningProcesses(h)]
                gpus.append(
                    Gpu(
                        index=i,
                        uuid=_text(pynvml.nvmlDeviceGetUUID(h)),
                        name=_text(pynvml.nvmlDeviceGetName(h)),
                        memory_total=int(mem.total),
                        memory_used=int(mem.used),
                        processes=procs,
                    )
                )
        except pynvml.NVMLError as exc:
            log.warning("event=nvml_error error=%r", str(exc))
            self.error = f"NVML error: {exc}"
        return gpus


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def matches_type(gpu_name: str, gpu_type: str) -> bool:
    """FfDL's gpu_type ("nvidia-TeslaV100") against an NVML name ("Tesla V100-SXM2-16GB").

    Compared without case, spaces or dashes; a match may not run on into more digits of
    the same word, so "A10" does not match an A100 (but "H100" matches "H100 80GB")."""
    if not gpu_type:
        return True
    wanted = "".join(re.findall(r"[a-z0-9]+", gpu_type.lower().removeprefix("nvidia-")))
    words = re.findall(r"[a-z0-9]+", gpu_name.lower())
    joined = "".join(words)
    ends = {sum(len(w) for w in words[: i + 1]) for i in range(len(words))}
    start = joined.find(wanted)
    while start >= 0:
        end = start + len(wanted)
        if end in ends or not joined[end].isdigit():
            return True
        start = joined.find(wanted, start + 1)
    return False
