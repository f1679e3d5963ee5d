"""Simulated miners in a process of their own, so that their CPU is never counted as the agent's.

`python -m bench.simproc whatsminer --first 0 --count 1000` serves Whatsminers, each on its own
loopback address at port 4028 (127.1.0.1, 127.1.0.2, …: all of 127/8 is loopback on Linux, and
pyasic only ever talks to port 4028); `xmrig` serves XMRig miners on free ports of 127.0.0.1.
Every miner has its own secret, as on a real farm.

The process prints one JSON line describing its devices, then answers line commands on stdin
with one JSON line each (EOF ends it):
  writes  the writes the miners received, stamped with time.monotonic() on arrival — Linux's
          CLOCK_MONOTONIC is one clock for every process on the host
  stats   requests and connections served so far
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import sys
from typing import Any

from agent.tools.open_files import raise_open_file_limit
from edge_agent_sim.whatsminer import SimClock, WhatsminerModel
from edge_agent_sim.xmrig import XmrigModel
from edge_agent_sim.xmrig import start_fleet as start_xmrig_fleet

FIRST_WHATSMINER = ipaddress.IPv4Address("127.1.0.1")
WHATSMINER_PORT = 4028


def whatsminer_host(index: int) -> str:
    return str(FIRST_WHATSMINER + index)


def whatsminer_password(index: int) -> str:
    return f"pw{index:05d}"  # the firmware takes at most 8 characters


def xmrig_token(index: int) -> str:
    return f"xmrig-token-{index:05d}"


class WhatsminerFleet:
    def __init__(self, first: int, count: int) -> None:
        self.first = first
        self.count = count
        self.models: dict[str, WhatsminerModel] = {}
        self.servers: list[asyncio.Server] = []

    async def start(self) -> list[dict[str, Any]]:
        clock = SimClock()
        devices = []
        for index in range(self.first, self.first + self.count):
            host = whatsminer_host(index)
            model = WhatsminerModel(index=index, clock=clock, password=whatsminer_password(index))
            server = await asyncio.start_server(
                model.serve, host, WHATSMINER_PORT, reuse_address=True, backlog=256
            )
            self.servers.append(server)
            self.models[host] = model
            devices.append(
                {
                    "index": index,
                    "key": host,
                    "host": host,
                    "port": WHATSMINER_PORT,
                    "password": model.password,
                }
            )
        return devices

    def writes(self) -> list[dict[str, Any]]:
        return [
            {"device": host, "command": w.command, "at": w.at, "code": w.code}
            for host, model in self.models.items()
            for w in model.writes
        ]

    def stats(self) -> dict[str, int]:
        return {
            "requests": sum(m.requests for m in self.models.values()),
            "connections": sum(m.connections for m in self.models.values()),
            "tokens_issued": sum(m.tokens_issued for m in self.models.values()),
        }


class XmrigFleet:
    def __init__(self, first: int, count: int) -> None:
        self.first = first
        self.count = count
        self.models: dict[str, XmrigModel] = {}

    async def start(self) -> list[dict[str, Any]]:
        fleet = await start_xmrig_fleet(self.count, "127.0.0.1", 0)
        devices = []
        for offset, device in enumerate(fleet.devices):
            index = self.first + offset
            model: XmrigModel = device.model
            model.token = xmrig_token(index)
            key = f"{device.host}:{device.port}"
            self.models[key] = model
            devices.append({"index": index, "key": key, "url": device.url, "token": model.token})
        return devices

    def writes(self) -> list[dict[str, Any]]:
        return [
            {"device": key, "command": method, "at": at, "code": 200}
            for key, model in self.models.items()
            for method, at in model.writes
        ]

    def stats(self) -> dict[str, int]:
        served = sum(len(m.requests) for m in self.models.values())
        return {"requests": served, "connections": served, "tokens_issued": 0}


async def serve(kind: str, first: int, count: int) -> None:
    raise_open_file_limit()
    fleet = WhatsminerFleet(first, count) if kind == "whatsminer" else XmrigFleet(first, count)
    devices = await fleet.start()
    _reply({"ready": True, "kind": kind, "devices": devices})
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        command = line.decode().strip()
        if command == "writes":
            _reply({"writes": fleet.writes()})
        elif command == "stats":
            _reply(fleet.stats())
        else:
            _reply({"error": f"unknown command {command!r}"})


def _reply(body: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(body, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("whatsminer", "xmrig"))
    parser.add_argument("--first", type=int, default=0, help="index of the first miner")
    parser.add_argument("--count", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.kind, args.first, args.count))


if __name__ == "__main__":
    main()
