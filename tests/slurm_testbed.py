"""A real two-node Slurm cluster on this machine, for the Slurm executor's tests.

munged, slurmctld and two slurmd (node1, node2: 2 CPUs, 8000 MB and two fake GPUs each,
through gres.conf) run from a folder of their own, on free ports, without systemd: the
recipe of ../shared/testbeds/slurm.md. The Epilog removes the containers a job left
(a container is not in the job's process tree, so Slurm alone would not stop it).
scripts/install-slurm installs the packages; nothing here is simulated but the GPUs.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

from dlaasd.minio_server import free_port
from dlaasd.node import LABEL_SLURM_JOB  # the label the node program sets
from tests.harness import stop_in_reverse

NODES = ("node1", "node2")
GPUS_PER_NODE = 2

EPILOG = f"""#!/bin/sh
# Remove the containers this job left behind (docker runs them outside its processes).
ids=$(docker ps -aq --filter "label={LABEL_SLURM_JOB}=$SLURM_CLUSTER_NAME/$SLURM_JOB_ID")
[ -z "$ids" ] || docker rm -f $ids >/dev/null 2>&1
exit 0
"""


def sbin(name: str) -> str:
    """A Slurm or munge program (the daemons live in /usr/sbin, off a user's PATH)."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if not found:
        raise RuntimeError(f"{name} is not installed: run scripts/install-slurm")
    return found


class SlurmCluster:
    def __init__(self, root: Path):
        self.root = root
        # a cluster name of its own: job ids restart at 1 in every test cluster, and the
        # Epilog must only ever remove this cluster's containers
        self.name = "t" + secrets.token_hex(4)
        self.host = socket.gethostname().split(".")[0]
        self.procs: list[subprocess.Popen] = []
        self.munge_socket = root / "munge" / "munge.socket.2"

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        """What a client (sbatch, squeue, dlaasd) needs to reach this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def start(self, timeout: float = 60) -> SlurmCluster:
        try:
            self._start_munge(timeout)
            self._write_config()
            self._spawn("slurmctld", [sbin("slurmctld"), "-D", "-i"])
            for node in NODES:
                self._spawn(f"slurmd-{node}", [sbin("slurmd"), "-D", "-N", node])
            self._wait_idle(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_munge(self, timeout: float) -> None:
        d = self.root / "munge"
        d.mkdir(mode=0o700)
        key = d / "munge.key"
        subprocess.run([sbin("mungekey"), "--create", f"--keyfile={key}"], check=True)
        self._spawn(
            "munged",
            [
                sbin("munged"),
                "-F",
                "--force",  # root, and a key folder under /tmp: fine for a test
                f"--key-file={key}",
                f"--socket={self.munge_socket}",
                f"--pid-file={d / 'munged.pid'}",
                f"--log-file={d / 'munged.log'}",
                f"--seed-file={d / 'munged.seed'}",
            ],
        )
        self._until(timeout, "munged to answer", self._munge_ok)

    def _munge_ok(self) -> bool:
        if not self.munge_socket.exists():
            return False
        token = subprocess.run(
            [shutil.which("munge") or "munge", "-n", "-S", str(self.munge_socket)],
            capture_output=True,
        )
        check = subprocess.run(
            [shutil.which("unmunge") or "unmunge", "-S", str(self.munge_socket)],
            input=token.stdout,
            capture_output=True,
        )
        return check.returncode == 0

    def _write_config(self) -> None:
        r = self.root
        dev = r / "dev"
        dev.mkdir()
        gres = []
        for n, node in enumerate(NODES):
            first = n * GPUS_PER_NODE
            for i in range(first, first + GPUS_PER_NODE):
                os.mknod(dev / f"nvidia{i}", 0o666 | 0o020000, os.makedev(195, i))
            files = f"{dev}/nvidia[{first}-{first + GPUS_PER_NODE - 1}]"
            gres.append(f"NodeName={node} Name=gpu File={files}")
        (r / "gres.conf").write_text("\n".join(gres) + "\n")
        epilog = r / "epilog.sh"
        epilog.write_text(EPILOG)
        epilog.chmod(0o755)
        (r / "state").mkdir()
        (r / "spool").mkdir()
        lines = [
            f"ClusterName={self.name}",
            f"SlurmctldHost={self.host}",
            "SlurmUser=root",
            "SlurmdUser=root",
            f"SlurmctldPort={free_port()}",
            f"SlurmdPort={free_port()}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket}",
            f"StateSaveLocation={r / 'state'}",
            f"SlurmdSpoolDir={r / 'spool'}/%n",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}",
            f"SlurmdPidFile={r / 'slurmd-%n.pid'}",
            f"SlurmctldLogFile={r / 'slurmctld.log'}",
            f"SlurmdLogFile={r / 'slurmd-%n.log'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/filetxt",
            f"JobCompLoc={r / 'jobcomp.txt'}",
            "MpiDefault=none",
            "ReturnToService=2",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "DefMemPerCPU=1000",
            "GresTypes=gpu",
            "KillWait=5",
            f"Epilog={epilog}",
            "SchedulerParameters=batch_sched_delay=0",
        ]
        for node in NODES:
            lines.append(
                f"NodeName={node} NodeHostname={self.host} NodeAddr=127.0.0.1 "
                f"Port={free_port()} CPUs=2 RealMemory=8000 Gres=gpu:{GPUS_PER_NODE}"
            )
        lines.append("PartitionName=debug Default=YES Nodes=ALL MaxTime=INFINITE State=UP")
        self.conf.write_text("\n".join(lines) + "\n")

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.root / f"{name}.out", "ab")  # noqa: SIM115
        proc = subprocess.Popen(argv, env=self.env, stdout=log, stderr=log, cwd=self.root)
        proc.args = name  # for messages
        self.procs.append(proc)

    def _wait_idle(self, timeout: float) -> None:
        def idle() -> bool:
            out = self.cli("sinfo", "-h", "-t", "idle", "-o", "%D", check=False)
            return out.strip() == str(len(NODES))

        self._until(timeout, "both nodes to be idle", idle)

    def _until(self, timeout: float, what: str, ready) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"{proc.args} exited ({proc.returncode}):\n{self.logs()}")
            if ready():
                return
            time.sleep(0.1)
        raise RuntimeError(f"Slurm test cluster: waited {timeout}s for {what}:\n{self.logs()}")

    def cli(self, *argv: str, check: bool = True) -> str:
        """Run a Slurm client (squeue, sbatch, ...) against this cluster; its stdout."""
        r = subprocess.run([sbin(argv[0]), *argv[1:]], env=self.env, capture_output=True, text=True)
        if check and r.returncode:
            raise RuntimeError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr}")
        return r.stdout

    def logs(self, n: int = 15) -> str:
        out = []
        for path in sorted(self.root.glob("*.log")) + sorted(self.root.glob("*.out")):
            lines = path.read_text(errors="replace").splitlines()[-n:]
            out.append(f"--- {path.name}\n" + "\n".join(lines))
        return "\n".join(out)

    def stop(self) -> None:
        """Stop by pid: the slurmd, then slurmctld, then munged (started in that order)."""
        stop_in_reverse(self.procs)
        self.procs.clear()
        with contextlib.suppress(OSError):
            shutil.rmtree(self.root)
