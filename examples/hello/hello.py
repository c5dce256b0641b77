"""dlaasd's smallest example: show the run's environment, write one result file."""

import os
import platform
import socket
import sys
import time
from pathlib import Path

VARIABLES = (
    "TRAINING_ID",
    "JOB_STATE_DIR",
    "MODEL_DIR",
    "DATA_DIR",
    "RESULT_DIR",
    "CHECKPOINT_DIR",
    "LOG_DIR",
    "GPU_COUNT",
    "CUDA_VISIBLE_DEVICES",
    "LEARNER_ID",
    "NUM_LEARNERS",
    "HOME",
)


def main() -> int:
    lines = [
        f"hello from dlaasd, python {platform.python_version()} on {socket.gethostname()}",
        f"uid {os.getuid()}, gid {os.getgid()}, working directory {os.getcwd()}",
    ]
    lines += [f"{name}={os.environ.get(name, '<unset>')}" for name in VARIABLES]
    for line in lines:
        print(line)

    result_dir = os.environ.get("RESULT_DIR")
    if not result_dir:
        print("RESULT_DIR is not set: nothing written", file=sys.stderr)
        return 1
    out = Path(result_dir) / "hello.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out.write_text("\n".join(lines) + f"\nfinished {stamp}\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
