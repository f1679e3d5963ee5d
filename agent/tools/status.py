"""`edge-agent status`: the running agent's fleet, read over MQTT, as a table or JSON.

Exit codes, for monitoring: 0 the agent is up and every device online, 1 degraded (a device
offline, or the agent lost its broker), 2 unreachable (no broker, or the agent is not running).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping
from typing import Any

from agent import logs
from agent.config.settings import load_config
from agent.kinds import KINDS
from agent.tools import table
from agent.tools.bridge import BridgeClient, BridgeError

EXIT_OK, EXIT_DEGRADED, EXIT_UNREACHABLE = 0, 1, 2
HASHRATE_WINDOWS = ("1m", "10s", "5s", "5m", "15m", "avg")
HEADERS = ("DEVICE", "KIND", "STATUS", "LAST POLL", "HASHRATE", "POWER", "J/TH", "TEMP")


def add_status_parser(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(handler=cmd_status)
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument(
        "--watch",
        nargs="?",
        type=float,
        const=2.0,
        metavar="SECONDS",
        help="refresh every SECONDS (2) until interrupted",
    )
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for answers")


def cmd_status(args: argparse.Namespace) -> int:
    settings = load_config(args.config, kinds=KINDS).settings
    logs.configure("warning", "console")
    client = BridgeClient(settings, timeout=args.timeout)
    try:
        client.connect()
    except BridgeError as exc:
        return _unreachable(args, settings.agent.id, str(exc))
    try:
        while True:
            code = _show(client, args)
            if args.watch is None:
                return code
            time.sleep(args.watch)  # the refresh period the user asked for
    except KeyboardInterrupt:
        return 130
    finally:
        client.close()


def _show(client: BridgeClient, args: argparse.Namespace) -> int:
    try:
        report = collect(client)
    except BridgeError as exc:
        return _unreachable(args, client.settings.agent.id, str(exc))
    if args.json:
        print(json.dumps(report, indent=None if args.watch else 2), flush=True)
    else:
        if args.watch is not None and sys.stdout.isatty():
            sys.stdout.write("\x1b[H\x1b[2J")  # clear the screen between refreshes
        print(render(report), flush=True)
    return EXIT_OK if report["agent"]["status"] == "ok" else EXIT_DEGRADED


def _unreachable(args: argparse.Namespace, agent_id: str, problem: str) -> int:
    if args.json:
        print(json.dumps({"agent": {"id": agent_id, "status": "unreachable", "error": problem}}))
    print(f"status: {problem}", file=sys.stderr, flush=True)
    return EXIT_UNREACHABLE


def collect(client: BridgeClient) -> dict[str, Any]:
    """The whole picture: the agent's health, the site power and one row per device."""
    topics = client.topics
    if not client.agent_online():
        state = client.latest(topics.bridge_state)
        seen = (
            f"its bridge state is {state.decode(errors='replace')!r}"
            if state
            else "it never announced itself"
        )
        raise BridgeError(
            f"agent {client.settings.agent.id!r} is not running: {seen} on "
            f"{topics.bridge_state} (start it: edge-agent run, or systemctl start edge-agent)"
        )
    health = client.request("health")
    devices = client.request("devices")
    client.watch(topics.power, *(topics.state(d["id"]) for d in devices))
    now = time.time()
    rows = [device_row(d, client.latest_json(topics.state(d["id"])), now) for d in devices]
    return {
        "agent": {"id": client.settings.agent.id, **health},
        "power": power_summary(client.latest_json(topics.power)),
        "devices": rows,
    }


def device_row(
    summary: Mapping[str, Any], state: Mapping[str, Any] | None, now: float
) -> dict[str, Any]:
    last = summary.get("last_success")
    return {
        "id": summary.get("id"),
        "kind": summary.get("kind"),
        "status": summary.get("status"),
        "last_poll_age_s": round(now - last, 1) if isinstance(last, int | float) else None,
        "last_error": summary.get("last_error"),
        **measures(state or {}),
    }


def measures(state: Mapping[str, Any]) -> dict[str, Any]:
    """The few numbers a farm watches, from any kind's normalised state (design §4 units)."""
    rates = state.get("hashrate_hs")
    if not isinstance(rates, Mapping):
        pool = state.get("pool")
        rates = {"1m": pool.get("hashrate_hs")} if isinstance(pool, Mapping) else {}
    hashrate = next((rates[w] for w in HASHRATE_WINDOWS if _number(rates.get(w))), None)
    power = state.get("power_w") if _number(state.get("power_w")) else None
    efficiency = state.get("efficiency_j_th") if _number(state.get("efficiency_j_th")) else None
    if efficiency is None and power is not None and hashrate and hashrate >= 1e12:
        efficiency = power / (hashrate / 1e12)
    temperature = state.get("temperature_c") if _number(state.get("temperature_c")) else None
    return {
        "hashrate_hs": hashrate,
        "power_w": power,
        "efficiency_j_th": round(efficiency, 2) if efficiency is not None else None,
        "temperature_c": temperature,
    }


def power_summary(power: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not isinstance(power, Mapping):
        return None
    keys = ("enabled", "target_w", "measured_w", "ramp", "settled")
    return {k: power.get(k) for k in keys}


def render(report: Mapping[str, Any]) -> str:
    agent = report["agent"]
    head = (
        f"agent {agent['id']}: {agent['status']}, {agent.get('devices_online', 0)}/"
        f"{agent.get('devices', 0)} devices online, up {agent.get('uptime_s', 0)}s"
    )
    if not agent.get("mqtt_connected", True):
        head += " (the agent has lost its broker)"
    lines = [head, _power_line(report.get("power")), ""]
    lines.append(rows_table(report["devices"]))
    return "\n".join(lines)


def rows_table(rows: list[dict[str, Any]]) -> str:
    return table.render(HEADERS, [_cells(row) for row in rows])


def _power_line(power: Mapping[str, Any] | None) -> str:
    if power is None:
        return "site power: control off"
    target = power.get("target_w")
    target_text = table.watts(target) if target is not None else "none (full power)"
    state = "on" if power.get("enabled") else "paused"
    measured = table.watts(power.get("measured_w")) or "-"
    return (
        f"site power: target {target_text}, measured {measured}, control {state}, "
        f"ramp {power.get('ramp') or '-'}"
    )


def _cells(row: Mapping[str, Any]) -> tuple[Any, ...]:
    return (
        row["id"],
        row["kind"],
        row["status"],
        table.age(row["last_poll_age_s"]),
        table.hashrate(row["hashrate_hs"]),
        table.watts(row["power_w"]),
        table.joules_per_th(row["efficiency_j_th"]),
        table.celsius(row["temperature_c"]),
    )


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
