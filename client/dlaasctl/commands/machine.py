"""The daemon and the machine it runs on: status, gpus, doctor."""

from __future__ import annotations

import argparse

from .. import routes
from ..console import out_json
from ..http import Client, Unreachable, start_hint
from . import Command


def gpus(c: Client, a: argparse.Namespace) -> int:
    from .. import fmt

    data = c.call(routes.GPUS)
    if a.json:
        out_json(data)
        return 0
    if not data["gpus"]:
        print("no GPUs (no NVIDIA driver found); runs with `gpus: 0` still work")
        return 0
    rows = [
        (
            g["index"],
            g["uuid"],
            g["name"],
            fmt.size(g["memory_total"]),
            g["run"] or ("busy (not dlaasd)" if g["busy"] else "free"),
        )
        for g in data["gpus"]
    ]
    print(fmt.table(["#", "UUID", "NAME", "MEMORY", "USED BY"], rows))
    return 0


def status(c: Client, a: argparse.Namespace) -> int:
    from .. import fmt

    s = c.call(routes.STATUS)
    if a.json:
        out_json(s)
        return 0
    cap = s["capacity"]
    store = s["store"]
    ok = lambda v: "ok" if v else "PROBLEM"  # noqa: E731
    print(f"dlaasd {s['version']} (pid {s['pid']}), up {int(s['uptime_seconds'])}s")
    print(f"  state:    {s['state_dir']}")
    print(f"  socket:   {s['socket']}")
    print(f"  docker:   {ok(s['docker']['ok'])}: {s['docker']['detail']}")
    print(
        f"  store:    {ok(store['ok'])}: {store['mode']} at {store['endpoint']}"
        + ("" if store["ok"] else f" ({store['detail']})")
    )
    print(f"  gpus:     {s['gpus']['count']} ({s['gpus']['source']}), {cap['gpus_used']} in use")
    print(
        f"  capacity: {cap['cpus_used']:g}/{cap['cpus']:g} CPUs, "
        f"{fmt.size(cap['memory_used'])}/{fmt.size(cap['memory'])} memory in use"
    )
    counts = ", ".join(f"{n} {k}" for k, n in sorted(s["runs"].items())) or "none"
    print(f"  runs:     {counts}")
    return 0


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def doctor(c: Client, a: argparse.Namespace) -> int:
    """What is wrong, each with its fix. The daemon checks what it depends on; this side
    checks that the daemon can be reached at all."""
    try:
        checks = c.call(routes.DOCTOR)["checks"]
    except Unreachable as exc:
        detail = str(exc).splitlines()[0]
        denied = detail.startswith("permission denied")
        checks = [
            {
                "name": "daemon",
                "status": "fail",
                "detail": detail,
                "fix": "" if denied else _lower_first(start_hint(c.socket_path)),
            }
        ]
    else:
        checks.insert(
            0,
            {"name": "daemon", "status": "ok", "detail": f"answers on {c.socket_path}", "fix": ""},
        )
    if a.json:
        out_json({"checks": checks})
    else:
        for ch in checks:
            print(f"{ch['status'].upper():<5} {ch['name']}: {ch['detail']}")
            if ch["fix"] and ch["status"] != "ok":
                print(f"      fix: {ch['fix']}")
    return 1 if any(ch["status"] == "fail" for ch in checks) else 0


COMMANDS = {
    "gpus": Command(gpus, "list the GPUs and the run using each"),
    "status": Command(status, "the daemon's health: Docker, object store, GPUs, capacity"),
    "doctor": Command(doctor, "check everything dlaasd needs; each problem with its fix"),
}
