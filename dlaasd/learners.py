"""A run's learners as containers: their specs built from the manifest, and the shell
that runs the training command in each. The one place for the container's environment
and isolation, whichever executor runs it (a cluster's node-side program too).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from .config import Containers
from .executors import LearnerSpec, Mount
from .manifest import Manifest
from .runfolder import IN_CONTAINER, OOM_MARK, RunFolder

# The optional helpers (dlaas_emetrics) a training may import, in the run's own folder
HELPERS = Path(__file__).parent / "helpers"
HELPERS_IN_CONTAINER = f"{IN_CONTAINER['JOB_STATE_DIR']}/.dlaas"

# The command runs under `sh -c` in MODEL_DIR; its output goes to the training log. On
# halt, tini sends SIGTERM to the whole group; the traps keep the shells alive until the
# training has handled it (a shell that died first would end the container at once).
# Docker's OOMKilled is not set by every engine (Debian's 20.10 on cgroup v1 leaves it
# false), so once the command ends the shell also notes the cgroup's OOM kills, if any.
SCRIPT_HEAD = """exec >>"$LOG_DIR/training-log.txt" 2>&1
trap "exit 143" TERM
(trap "exit 143" TERM
"""
# the OOM killer's count in the container's cgroup (v2, else v1), read with the shell's
# own `read`: no sed and head to start after every training, on the way to the next
SCRIPT_TAIL = f"""
)
rc=$?
n=0
for f in /sys/fs/cgroup/memory.events /sys/fs/cgroup/memory/memory.oom_control; do
  [ -r "$f" ] || continue
  while read -r k v; do [ "$k" = oom_kill ] && n=$v && break 2; done <"$f"
done
[ "${{n:-0}}" -gt 0 ] && echo "$n" >"$LOG_DIR/{OOM_MARK}"
exit $rc
"""


# learner 1's port for the torchrun rendezvous where the learners have a network of their own
MASTER_PORT = 29500


def torchrun_env(learner: int, learners: int, master: str, port: int) -> dict[str, str]:
    """The torchrun convention, one process per learner: beside LEARNER_ID and
    NUM_LEARNERS, for learners > 1."""
    if learners <= 1:
        return {}
    return {
        "MASTER_ADDR": master,
        "MASTER_PORT": str(port),
        "WORLD_SIZE": str(learners),
        "RANK": str(learner - 1),
        "NODE_RANK": str(learner - 1),
    }


def entrypoint(command: str) -> list[str]:
    """The container's entrypoint for a training command."""
    return ["/bin/sh", "-c", SCRIPT_HEAD + command + SCRIPT_TAIL]


def specs(
    run_id: str,
    m: Manifest,
    image: str,
    folder: RunFolder,
    user: tuple[int, int],
    gpus: list[str],
    containers: Containers,
    data: Path | None = None,
) -> list[LearnerSpec]:
    """The learners of a run whose folder is `folder` (on the host that runs them).
    `gpus`: the UUIDs given to the run, m.gpus per learner in turn. `data`: the folder
    mounted as DATA_DIR (a mount_volume), else the run's own data folder. Makes each
    learner's log folder, owned by `user` when dlaasd runs as root."""
    uid, gid = user
    simulated = any(g.startswith("GPU-simulated") for g in gpus)
    mounts = (
        Mount(str(folder.job), IN_CONTAINER["JOB_STATE_DIR"], False),
        Mount(str(data or folder.data), IN_CONTAINER["DATA_DIR"], True),
    )
    out = []
    for learner in range(1, m.learners + 1):
        mine = gpus[(learner - 1) * m.gpus : learner * m.gpus]
        logs = folder.learner_logs(learner)
        logs.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            os.chown(logs, uid, gid)
        env = {
            # numerical libraries start a thread per host core unless told the quota
            "OMP_NUM_THREADS": str(max(1, math.ceil(m.cpus))),
            **m.env,
            **IN_CONTAINER,
            "LOG_DIR": f"{IN_CONTAINER['JOB_STATE_DIR']}/{logs.relative_to(folder.job)}",
            "TRAINING_ID": run_id,
            "GPU_COUNT": str(m.gpus),
            # learner 1 by its container's name, on the run's own network (the local
            # executor); a cluster's node program gives its node's address instead
            **torchrun_env(learner, m.learners, f"dlaas-{run_id}", MASTER_PORT),
            "LEARNER_ID": str(learner),
            "NUM_LEARNERS": str(m.learners),
            "CUDA_VISIBLE_DEVICES": ",".join(mine),
            "HOME": "/tmp",
            # the optional helpers (dlaas_emetrics), ahead of the manifest's own path
            "PYTHONPATH": ":".join(p for p in (HELPERS_IN_CONTAINER, m.env.get("PYTHONPATH")) if p),
        }
        out.append(
            LearnerSpec(
                run_id=run_id,
                learner=learner,
                learners=m.learners,
                image=image,
                command=m.framework.command,
                env=env,
                user=f"{uid}:{gid}",
                cpus=m.cpus,
                memory=m.memory,
                mounts=mounts,
                gpus=() if simulated else tuple(mine),
                gpu_type=m.gpu_type,
                network=m.network,
                timeout=float(m.timeout or 0),
                pids_limit=containers.pids_limit,
                cap_add=tuple(containers.cap_add),
            )
        )
    return out
