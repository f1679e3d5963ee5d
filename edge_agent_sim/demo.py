"""`edge-agent demo`: a simulated fleet, the agent, and a broker when none is running."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import socket
import sys
from typing import Any
from urllib.parse import urlsplit

from agent import logs
from agent.config.settings import LoadedConfig, Settings
from agent.devices import KINDS
from edge_agent_sim.cli import start_kind
from edge_agent_sim.fleet import SimFleet

DEFAULT_COUNTS = {"xmrig": 2, "whatsminer": 3, "srs": 1, "pool": 1}


def add_demo_parser(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(handler=cmd_demo)
    parser.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="broker URL to use")
    parser.add_argument("--agent-id", default="demo")
    parser.add_argument("--duration", type=float, default=0, help="seconds to run (0: forever)")
    for kind, count in DEFAULT_COUNTS.items():
        parser.add_argument(f"--{kind}", type=int, default=count, help=f"simulated {kind} devices")


def broker_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


async def start_embedded_broker(host: str, port: int) -> Any:
    try:
        from amqtt.broker import Broker
    except ImportError:
        raise SystemExit(
            f"no MQTT broker answers at {host}:{port} and the embedded one is not installed: "
            "pip install 'edge-agent[demo]' (or start mosquitto)"
        ) from None
    broker = Broker({"listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}}})
    await broker.start()
    return broker


def cmd_demo(args: argparse.Namespace) -> int:
    logs.configure("info", "console" if sys.stderr.isatty() else "json")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_demo(args))
    return 0


async def run_demo(args: argparse.Namespace) -> None:
    parts = urlsplit(args.broker)
    host, port = parts.hostname or "127.0.0.1", parts.port or 1883
    broker = None
    protocol = "5"
    if not broker_answers(host, port):
        broker = await start_embedded_broker(host, port)
        protocol = "3.1.1"  # the embedded broker speaks MQTT 3.1.1 only
    fleets, devices = await start_fleets(args)
    settings = Settings(
        agent={"id": args.agent_id, "log_format": "console"},
        mqtt={"url": args.broker, "protocol": protocol, "base_topic": "edge-agent"},
        devices=[KINDS[d["kind"]].config.model_validate(d) for d in devices],
    )
    print_where_to_look(settings, host, port, embedded=broker is not None)
    from agent.runtime.agent import Agent

    agent = Agent(LoadedConfig(settings, None, []))
    if args.duration:
        asyncio.get_running_loop().call_later(args.duration, agent.request_stop)
    try:
        await agent.run()
    finally:
        for fleet in fleets:
            await fleet.close()
        if broker is not None:
            await broker.shutdown()


async def start_fleets(args: argparse.Namespace) -> tuple[list[SimFleet], list[dict[str, Any]]]:
    fleets: list[SimFleet] = []
    devices: list[dict[str, Any]] = []
    for kind in DEFAULT_COUNTS:
        count = getattr(args, kind)
        if kind not in KINDS or count <= 0:
            continue
        fleet = await start_kind(kind, count, "127.0.0.1", 0)
        module = importlib.import_module(f"edge_agent_sim.{kind}")
        fleets.append(fleet)
        devices.extend(module.demo_config(d, i) for i, d in enumerate(fleet.devices))
    return fleets, devices


def print_where_to_look(settings: Settings, host: str, port: int, *, embedded: bool) -> None:
    base, agent_id = settings.mqtt.base_topic, settings.agent.id
    where = "embedded broker started" if embedded else "using the running broker"
    lines = [
        f"edge-agent demo: {len(settings.devices)} simulated devices, {where} at {host}:{port}",
        f"  state:       {base}/<device>            e.g. {base}/{settings.devices[0].id}"
        if settings.devices
        else "",
        f"  bridge:      {base}/bridge/{agent_id}/state and /info",
        f"  discovery:   {settings.homeassistant.discovery_prefix}/+/+/+/config",
        f"  commands:    mosquitto_pub -h {host} -p {port} -t {base}/xmrig-1/set/mining -m OFF",
        f"  watch it:    mosquitto_sub -h {host} -p {port} -v -t '{base}/#'",
        "  devices:     " + ", ".join(f"{d.id} ({d.kind})" for d in settings.devices),
        "Ctrl-C stops the demo.",
    ]
    print("\n".join(line for line in lines if line), flush=True)
