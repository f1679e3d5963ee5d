"""Scan benchmark: `edge-agent scan` over a /22 holding 500 simulated devices of every kind.

`python -m bench.scan` starts the simulators in a process of their own (`--serve`): devices on
random addresses of the /22 (Whatsminers on 4028, XMRig on 44444, half with a token, SRS on
1985, pools on 8080), plus silent ports (accept, never answer) that cost a timeout each; every
other address is closed. It then times the real CLI, `python -m agent scan NET --json`, and
checks that it found exactly the simulated devices.

    python -m bench.scan                       # /22, 500 devices, 20 silent ports
    python -m bench.scan --devices 200 --concurrency 64 --timeout 1
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from agent.tools.open_files import raise_open_file_limit
from edge_agent_sim.pool import start_fleet as start_pools
from edge_agent_sim.srs import start_fleet as start_srs
from edge_agent_sim.whatsminer import start_fleet as start_whatsminers
from edge_agent_sim.xmrig import start_fleet as start_xmrigs

REPO = Path(__file__).resolve().parents[1]
SHARES = (("whatsminer", 0.6, 4028), ("xmrig", 0.2, 44444), ("srs", 0.1, 1985), ("pool", 0.1, 8080))


def layout(network: str, devices: int, silent: int, seed: int) -> dict[str, list[str]]:
    hosts = [str(a) for a in ipaddress.ip_network(network).hosts()]
    chosen = random.Random(seed).sample(hosts, devices + silent)
    plan: dict[str, list[str]] = {"silent": chosen[devices:]}
    start = 0
    for index, (kind, share, _port) in enumerate(SHARES):
        count = devices - start if index == len(SHARES) - 1 else round(devices * share)
        plan[kind] = chosen[start : start + count]
        start += count
    return plan


async def _silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while await reader.read(1 << 16):
        pass
    writer.close()


async def serve(plan: dict[str, list[str]]) -> None:
    raise_open_file_limit()
    keep: list[Any] = []
    for host in plan["whatsminer"]:
        keep.append(await start_whatsminers(1, host, 4028))
    for n, host in enumerate(plan["xmrig"]):
        keep.append(await start_xmrigs(1, host, 44444, token=f"t{n}" if n % 2 else None))
    for host in plan["srs"]:
        keep.append(await start_srs(1, host, 1985))
    for host in plan["pool"]:
        keep.append(await start_pools(1, host, 8080))
    for host in plan["silent"]:
        keep.append(await asyncio.start_server(_silent, host, 4028))
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until EOF


def run(args: argparse.Namespace) -> dict[str, Any]:
    plan = layout(args.network, args.devices, args.silent, args.seed)
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.scan", "--serve", *sys.argv[1:]],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        if server.stdout.readline().strip() != "ready":
            raise SystemExit("the simulators did not start")
        command = [
            sys.executable, "-m", "agent", "scan", args.network, "--json",
            "--timeout", str(args.timeout), "--concurrency", str(args.concurrency),
        ]  # fmt: skip
        started = time.monotonic()
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
        elapsed = time.monotonic() - started
    finally:
        if server.stdin is not None:
            server.stdin.close()
        server.wait(30)
    if done.returncode != 0:
        raise SystemExit(f"scan failed: {done.stderr}")
    found = json.loads(done.stdout)
    by_kind = {kind: sorted(d["host"] for d in found if d["kind"] == kind) for kind, *_ in SHARES}
    missing = {k: len(set(plan[k]) - set(by_kind[k])) for k, *_ in SHARES}
    extra = len(found) - sum(len(plan[k]) - missing[k] for k, *_ in SHARES)
    return {
        "network": args.network,
        "addresses": ipaddress.ip_network(args.network).num_addresses - 2,
        "devices": args.devices,
        "silent_ports": args.silent,
        "timeout_s": args.timeout,
        "concurrency": args.concurrency,
        "wall_s": round(elapsed, 2),
        "found": {k: len(v) for k, v in by_kind.items()},
        "missing": missing,
        "unexpected": extra,
        "summary": done.stderr.strip().splitlines()[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", default="127.42.0.0/22")
    parser.add_argument("--devices", type=int, default=500)
    parser.add_argument("--silent", type=int, default=20, help="ports that never answer")
    parser.add_argument("--timeout", type=float, default=1.5)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(layout(args.network, args.devices, args.silent, args.seed)))
        return
    print(json.dumps(run(args), indent=2))


if __name__ == "__main__":
    main()
