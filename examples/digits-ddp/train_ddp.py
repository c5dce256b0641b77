"""The digits MLP trained by several learners with DistributedDataParallel (dlaasd example).

Each learner is one process of the group; dlaasd gives them the torchrun variables
(MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK). The gloo backend runs on CPU. Each rank
trains on its own shard of every batch; DDP averages the gradients, so all ranks hold
the same model. Rank 0 writes $RESULT_DIR/model.pt, $RESULT_DIR/metrics.json and the
FfDL emetrics in $LOG_DIR/evaluation-metrics.txt.

Reads $DATA_DIR/digits.csv.gz (a header line, then 64 pixel values 0..16 and the label).
Options: --epochs N, --lr X, --hidden N, --batch-size N (per learner), --seed N.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

TEST_FRACTION = 0.2


def setup() -> tuple[int, int]:
    """Join the group: (rank, world size). One learner alone is a group of one."""
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29500")
    world = int(os.environ.setdefault("WORLD_SIZE", os.environ.get("NUM_LEARNERS", "1")))
    rank = int(os.environ.setdefault("RANK", str(int(os.environ.get("LEARNER_ID", "1")) - 1)))
    try:  # learners sharing one host's loopback (a test cluster) talk over it
        if ipaddress.ip_address(os.environ["MASTER_ADDR"]).is_loopback:
            os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    except ValueError:
        pass  # a host name: gloo finds the interface by it
    dist.init_process_group("gloo", rank=rank, world_size=world)
    return rank, world


def load(path: Path, seed: int):
    table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float32, ndmin=2)
    x, y = table[:, :64] / 16.0, table[:, 64].astype(np.int64)
    rng = np.random.default_rng(seed)  # the same split on every rank
    test = rng.permutation(len(y))[: round(len(y) * TEST_FRACTION)]
    is_test = np.zeros(len(y), dtype=bool)
    is_test[test] = True
    t = torch.from_numpy
    return t(x[~is_test]), t(y[~is_test]), t(x[is_test]), t(y[is_test])


def emetric(epoch: int, values: dict[str, float]) -> None:
    log_dir = Path(os.environ.get("LOG_DIR", "."))
    now = datetime.now(UTC)
    line = {
        "meta": {
            "time": int(now.timestamp() * 1000),
            "training_id": os.environ.get("TRAINING_ID", ""),
        },
        "grouplabel": "test",
        "etimes": {"iteration": {"type": "INT", "value": epoch}},
        "values": {k: {"type": "FLOAT", "value": v} for k, v in values.items()},
    }
    with open(log_dir / "evaluation-metrics.txt", "a") as f:
        f.write(json.dumps(line) + "\n")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.003)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    started = time.monotonic()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    rank, world = setup()
    print(f"rank {rank} of {world}: torch {torch.__version__}, gloo on CPU", flush=True)
    data = Path(os.environ.get("DATA_DIR", "data")) / "digits.csv.gz"
    x_train, y_train, x_test, y_test = load(data, args.seed)
    torch.manual_seed(args.seed)  # the same initial weights on every rank
    model = DistributedDataParallel(
        nn.Sequential(
            nn.Linear(64, args.hidden),
            nn.ReLU(),
            nn.Linear(args.hidden, args.hidden),
            nn.ReLU(),
            nn.Linear(args.hidden, 10),
        )
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    shuffle = torch.Generator().manual_seed(args.seed)
    step = args.batch_size * world
    accuracy = float("nan")
    for epoch in range(1, args.epochs + 1):
        model.train()
        order = torch.randperm(len(y_train), generator=shuffle)  # the same on every rank
        usable = len(order) - len(order) % step  # every rank takes as many steps
        for start in range(0, usable, step):
            batch = order[start : start + step][rank::world]  # this rank's shard
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x_train[batch]), y_train[batch]).backward()
            optimizer.step()  # gradients were averaged over the ranks in backward()
        model.eval()
        with torch.no_grad():
            logits = model(x_test)
            loss = nn.functional.cross_entropy(logits, y_test).item()
            accuracy = (logits.argmax(dim=1) == y_test).float().mean().item()
        if rank == 0:
            print(
                f"epoch {epoch:3d}/{args.epochs}  test loss {loss:.4f}  accuracy {accuracy:.4f}",
                flush=True,
            )
            emetric(epoch, {"loss": loss, "accuracy": accuracy})
    if rank == 0:
        out = Path(os.environ.get("RESULT_DIR", "results"))
        out.mkdir(parents=True, exist_ok=True)
        torch.save(model.module.state_dict(), out / "model.pt")
        metrics = {
            "accuracy": accuracy,
            "epochs": args.epochs,
            "learners": world,
            "seconds": round(time.monotonic() - started, 2),
        }
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        print(f"test accuracy: {accuracy:.4f} over {world} learners", flush=True)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
