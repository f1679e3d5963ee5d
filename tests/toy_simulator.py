"""The simulator of tests/test_architecture.py's throwaway kind: a dimmer that speaks one JSON
object per line over TCP (`{"get": "status"}` → its level and draw; `{"set": N}` → level N).

Like every simulator it knows the wire protocol only, not the driver.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from edge_agent_sim.fleet import SimDevice, SimFleet


@dataclass
class DimmerModel:
    level: int = 40
    watts_per_level: float = 2.5


async def start_fleet(
    count: int, host: str = "127.0.0.1", port: int = 0, **options: Any
) -> SimFleet:
    devices: list[SimDevice] = []
    servers: list[asyncio.Server] = []
    for index in range(count):
        model = DimmerModel(**options)
        server = await asyncio.start_server(_serve(model), host, port + index if port else 0)
        servers.append(server)
        devices.append(SimDevice(host=host, port=server.sockets[0].getsockname()[1], model=model))

    async def close() -> None:
        for server in servers:
            server.close()
            await server.wait_closed()

    return SimFleet(kind="dimmer", devices=devices, closers=[close])


def _serve(model: DimmerModel) -> Any:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async for line in reader:
            request = json.loads(line)
            if "set" in request:
                model.level = int(request["set"])
                reply: dict[str, Any] = {"ok": True}
            else:
                reply = {"level": model.level, "watts": model.level * model.watts_per_level}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        writer.close()

    return handle


def demo_config(device: SimDevice, index: int) -> dict[str, Any]:
    return {"id": f"dimmer-{index + 1}", "kind": "dimmer", "host": device.host, "port": device.port}
