"""`edge-agent simulate`: serve simulated devices until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
from typing import Any

from agent.simulate.fleet import SimFleet

SIMULATED_KINDS = ("xmrig", "whatsminer", "srs", "pool")


def add_simulate_parser(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(handler=cmd_simulate)
    parser.add_argument("--kind", choices=SIMULATED_KINDS, default="xmrig")
    parser.add_argument("--count", type=int, default=1, help="how many devices")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="first port (0: free ports)")
    parser.add_argument(
        "--option",
        "-o",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="simulator model option, e.g. -o token=SECRET -o restricted=true (JSON values)",
    )


def parse_options(pairs: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--option {pair!r}: expected KEY=VALUE")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


async def start_kind(kind: str, count: int, host: str, port: int, **options: Any) -> SimFleet:
    module = importlib.import_module(f"agent.devices.{kind}.simulator")
    fleet: SimFleet = await module.start_fleet(count, host, port, **options)
    return fleet


def cmd_simulate(args: argparse.Namespace) -> int:
    options = parse_options(args.option)

    async def serve() -> None:
        fleet = await start_kind(args.kind, args.count, args.host, args.port, **options)
        for device in fleet.devices:
            print(f"{args.kind} listening on {device.host}:{device.port}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await fleet.close()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    return 0
