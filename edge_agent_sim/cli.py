"""`edge-agent simulate`: serve simulated devices until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import errno
import importlib
import ipaddress
import itertools
import json
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from agent.devices.kind import DeviceKind
from agent.kinds import KINDS
from edge_agent_sim.fleet import SimFleet


def add_simulate_parser(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(handler=cmd_simulate)
    parser.add_argument("--kind", choices=simulated(KINDS), default="xmrig")
    parser.add_argument("--count", type=_positive, default=1, help="how many devices (1 or more)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="first port (0: free ports)")
    parser.add_argument(
        "--spread",
        metavar="NETWORK",
        help="one device per address of NETWORK (e.g. 127.5.0.0/24: all of 127/8 is loopback "
        "on Linux), each on --port or the kind's usual port, as on a farm's LAN",
    )
    parser.add_argument(
        "--option",
        "-o",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="simulator model option, e.g. -o token=SECRET -o restricted=true (JSON values)",
    )


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: at least one device")
    return value


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


def simulated(kinds: Mapping[str, DeviceKind]) -> list[str]:
    return [name for name, kind in kinds.items() if kind.simulator]


def simulator(kind: DeviceKind) -> ModuleType:
    """The kind's simulator module, named by the kind (the product never imports it)."""
    if kind.simulator is None:
        raise ValueError(f"{kind.name} has no simulator")
    return importlib.import_module(kind.simulator)


async def start_kind(
    kind: DeviceKind, count: int, host: str, port: int, **options: Any
) -> SimFleet:
    fleet: SimFleet = await simulator(kind).start_fleet(count, host, port, **options)
    return fleet


def cmd_simulate(args: argparse.Namespace) -> int:
    options = parse_options(args.option)

    places = _places(args)

    async def serve() -> None:
        fleets: list[SimFleet] = []
        try:
            for host, port, count in places:
                fleets.append(await start_kind(KINDS[args.kind], count, host, port, **options))
            for device in (d for fleet in fleets for d in fleet.devices):
                print(f"{args.kind} listening on {device.host}:{device.port}", flush=True)
            await asyncio.Event().wait()
        except (TypeError, ValueError) as exc:  # a model option of the wrong name or value
            known = ", ".join(option_names(args.kind))
            raise SystemExit(
                f"simulate --kind {args.kind}: bad option ({exc}); options: {known}"
            ) from None
        finally:
            for fleet in fleets:
                await fleet.close()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        raise SystemExit(f"simulate: {_socket_problem(args, exc)}") from None
    except (TypeError, ValueError) as exc:  # a model option of the wrong name or value
        known = ", ".join(option_names(args.kind))
        raise SystemExit(
            f"simulate --kind {args.kind}: bad option ({exc}); options: {known}"
        ) from None
    return 0


def _places(args: argparse.Namespace) -> list[tuple[str, int, int]]:
    """(host, first port, count) for each start_fleet call."""
    if not args.spread:
        return [(args.host, args.port, args.count)]
    try:
        network = ipaddress.ip_network(args.spread, strict=False)
    except ValueError:
        raise SystemExit(f"simulate: --spread {args.spread!r} is not a network") from None
    hosts = list(itertools.islice(network.hosts(), args.count))
    if len(hosts) < args.count:
        raise SystemExit(f"simulate: {args.spread} has room for {len(hosts)} devices only")
    port = args.port or _spread_port(args.kind)
    return [(str(host), port, 1) for host in hosts]


def _spread_port(name: str) -> int:
    """Where `--spread` puts each device: the kind's usual port, else its simulator's choice."""
    kind = KINDS[name]
    port = kind.usual_port or getattr(simulator(kind), "SPREAD_PORT", None)
    if port is None:
        raise SystemExit(
            f"simulate --kind {name} --spread: the kind has no usual port; give --port"
        )
    return int(port)


def _socket_problem(args: argparse.Namespace, exc: OSError) -> str:
    host = args.spread or args.host
    port = args.port or (_spread_port(args.kind) if args.spread else 0)
    if exc.errno == errno.EADDRINUSE:
        last = port if args.count == 1 or args.spread else port + args.count - 1
        ports = f"port {port}" if last == port else f"a port of {port}-{last}"
        return (
            f"{ports} on {host} is already in use; pick another --port, or --port 0 for free ports"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{host} is not an address of this host"
    return f"cannot listen on {host}:{port or 'free ports'}: {exc.strerror or exc}"


def option_names(kind: str) -> list[str]:
    """The model's fields: what `-o KEY=VALUE` can set."""
    module = simulator(KINDS[kind])
    models = [
        v for k, v in vars(module).items() if k.endswith("Model") and dataclasses.is_dataclass(v)
    ]
    return sorted(f.name for m in models for f in dataclasses.fields(m) if f.init)
