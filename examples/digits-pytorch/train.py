"""Train a small PyTorch MLP on the 8x8 handwritten digits (dlaasd example).

Reads   $DATA_DIR/digits.csv.gz   (a header line, then 64 pixel values 0..16 and the label)
Writes  $RESULT_DIR/model.pt      (torch.save of the model's state_dict)
        $RESULT_DIR/metrics.json  ({"accuracy": ..., "epochs": ..., ...})
        $LOG_DIR/evaluation-metrics.txt  (FfDL emetrics, one JSON line per epoch)

Options: --epochs N, --lr X, --hidden N, --batch-size N, --seed N; each may also come from
the environment (EPOCHS, LR, HIDDEN, BATCH_SIZE, SEED), or from config.json beside this file
(keys epochs, lr, hidden, ...: what a dlaasd experiment gives each trial). Flags win, then
the environment, then config.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

# Before torch initialises CUDA: cuBLAS needs this to be deterministic.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import torch  # noqa: E402
from torch import nn  # noqa: E402

HERE = Path(__file__).resolve().parent
CONFIG = json.loads((HERE / "config.json").read_text()) if (HERE / "config.json").exists() else {}
DATA_FILE = "digits.csv.gz"
TEST_FRACTION = 0.2


def env_default(name: str, kind: type, default):
    value = os.environ.get(name, "").strip() or str(CONFIG.get(name.lower(), "")).strip()
    if not value:
        return default
    try:
        return kind(value)
    except ValueError:
        sys.exit(f"train.py: environment variable {name}={value!r} is not a valid {kind.__name__}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=env_default("EPOCHS", int, 20))
    p.add_argument("--lr", type=float, default=env_default("LR", float, 0.003))
    p.add_argument("--hidden", type=int, default=env_default("HIDDEN", int, 128))
    p.add_argument("--batch-size", type=int, default=env_default("BATCH_SIZE", int, 32))
    p.add_argument("--seed", type=int, default=env_default("SEED", int, 0))
    args = p.parse_args(argv)
    for name in ("epochs", "hidden", "batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be 1 or more")
    if not args.lr > 0:
        p.error("--lr must be more than 0")
    return args


def cpu_threads() -> int:
    """How many CPUs this container may use: OMP_NUM_THREADS, else the cgroup CPU quota
    (docker --cpus), else the CPUs it may be scheduled on."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    available = len(os.sched_getaffinity(0))
    quota = None
    try:  # cgroup v2
        limit, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if limit != "max":
            quota = int(limit) / int(period)
    except (OSError, ValueError):
        try:  # cgroup v1
            limit = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
            period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
            if limit > 0:
                quota = limit / period
        except (OSError, ValueError):
            pass
    if quota is not None:
        available = min(available, max(1, math.ceil(quota)))
    return max(1, available)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds CUDA
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False


def load_digits(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with gzip.open(path, "rt") as f:
            first = f.readline()
    except FileNotFoundError:
        data_dir = os.environ.get("DATA_DIR", "<unset>")
        sys.exit(
            f"train.py: training data not found: {path} (DATA_DIR={data_dir}).\n"
            f"Upload {DATA_FILE} to the manifest's training_data bucket, e.g.\n"
            "  dlaasctl data upload digits-data examples/digits-pytorch/data"
        )
    except OSError as exc:  # unreadable, or not gzip
        sys.exit(f"train.py: cannot read the training data {path}: {exc}")
    skip = 0 if first[:1].isdigit() else 1  # a header line, or data from the start
    table = np.loadtxt(path, delimiter=",", skiprows=skip, dtype=np.float32, ndmin=2)
    if table.shape[1] != 65 or len(table) < 10:
        sys.exit(
            f"train.py: {path}: expected rows of 64 pixels and a label, found {table.shape[0]} "
            f"rows of {table.shape[1]} columns"
        )
    pixels = table[:, :64] / 16.0  # pixel values are 0..16
    labels = table[:, 64].astype(np.int64)
    return pixels, labels


def split(x: np.ndarray, y: np.ndarray, seed: int):
    """A seeded, stratified train/test split."""
    rng = np.random.default_rng(seed)
    test = []
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        test.extend(members[: round(len(members) * TEST_FRACTION)])
    is_test = np.zeros(len(y), dtype=bool)
    is_test[test] = True
    return x[~is_test], y[~is_test], x[is_test], y[is_test]


class EMetrics:
    """FfDL evaluation metrics: one JSON object per line in $LOG_DIR/evaluation-metrics.txt."""

    def __init__(self) -> None:
        log_dir = os.environ.get("LOG_DIR")
        self.file = None
        if log_dir:
            Path(log_dir).mkdir(parents=True, exist_ok=True)
            self.file = open(Path(log_dir) / "evaluation-metrics.txt", "a")  # noqa: SIM115
        self.training_id = os.environ.get("TRAINING_ID", "")

    def record(self, group: str, iteration: int, values: dict[str, float]) -> None:
        if self.file is None:
            return
        now = datetime.now(UTC)
        stamp = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        line = {
            "meta": {
                "time": int(now.timestamp() * 1000),
                "training_id": self.training_id,
                "subid": "",
            },
            "grouplabel": group,
            "etimes": {
                "iteration": {"type": "INT", "value": iteration},
                "time_stamp": {"type": "STRING", "value": stamp},
            },
            "values": {k: {"type": "FLOAT", "value": float(v)} for k, v in values.items()},
        }
        self.file.write(json.dumps(line) + "\n")
        self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    model.eval()
    with torch.no_grad():
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y).item()
        accuracy = (logits.argmax(dim=1) == y).float().mean().item()
    return loss, accuracy


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    seed_everything(args.seed)
    threads = cpu_threads()
    torch.set_num_threads(threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        where = f"GPU {torch.cuda.get_device_name(0)}"
    else:
        where = f"CPU, {threads} thread{'s' if threads != 1 else ''}"
    print(f"torch {torch.__version__} on {where}", flush=True)

    data_dir = Path(os.environ.get("DATA_DIR") or HERE / "data")
    x, y = load_digits(data_dir / DATA_FILE)
    x_train, y_train, x_test, y_test = split(x, y, args.seed)
    print(
        f"data: {len(y)} digits from {data_dir / DATA_FILE}; "
        f"{len(y_train)} to train, {len(y_test)} to test",
        flush=True,
    )
    x_train, y_train = torch.from_numpy(x_train).to(device), torch.from_numpy(y_train).to(device)
    x_test, y_test = torch.from_numpy(x_test).to(device), torch.from_numpy(y_test).to(device)

    model = nn.Sequential(
        nn.Linear(64, args.hidden),
        nn.ReLU(),
        nn.Linear(args.hidden, args.hidden),
        nn.ReLU(),
        nn.Linear(args.hidden, 10),
    ).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    shuffle = torch.Generator().manual_seed(args.seed)
    print(
        f"model: MLP 64-{args.hidden}-{args.hidden}-10; {args.epochs} epochs, "
        f"lr {args.lr}, batch size {args.batch_size}, seed {args.seed}",
        flush=True,
    )

    emetrics = EMetrics()
    test_loss = accuracy = float("nan")
    try:
        for epoch in range(1, args.epochs + 1):
            model.train()
            order = torch.randperm(len(y_train), generator=shuffle).to(device)
            total = 0.0
            for start in range(0, len(order), args.batch_size):
                batch = order[start : start + args.batch_size]
                optimizer.zero_grad()
                loss = nn.functional.cross_entropy(model(x_train[batch]), y_train[batch])
                loss.backward()
                optimizer.step()
                total += loss.item() * len(batch)
            train_loss = total / len(order)
            test_loss, accuracy = evaluate(model, x_test, y_test)
            print(
                f"epoch {epoch:3d}/{args.epochs}  loss {train_loss:.4f}  "
                f"test loss {test_loss:.4f}  test accuracy {accuracy:.4f}",
                flush=True,
            )
            emetrics.record("test", epoch, {"loss": test_loss, "accuracy": accuracy})
    finally:
        emetrics.close()

    print(f"test accuracy: {accuracy:.4f} ({len(y_test)} digits)", flush=True)
    result_dir = Path(os.environ.get("RESULT_DIR") or HERE / "results")
    result_dir.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, result_dir / "model.pt")
    metrics = {
        "accuracy": accuracy,
        "epochs": args.epochs,
        "test_loss": test_loss,
        "hidden": args.hidden,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "device": device.type,
        "seconds": round(time.monotonic() - started, 2),
    }
    (result_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"saved {result_dir / 'model.pt'} and {result_dir / 'metrics.json'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
