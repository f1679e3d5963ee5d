"""`edge-agent` command line (design §7)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import importlib.util
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from agent import __version__, logs
from agent.config.settings import DEFAULT_PATH, ConfigError, LoadedConfig, load_config
from agent.devices.kind import CliContext
from agent.kinds import KINDS

EXIT_CONFIG = 78  # EX_CONFIG: systemd's RestartPreventExitStatus keeps it from looping
EXIT_USAGE = 2
# The simulators live beside the product, in edge_agent_sim, and need the `sim` extra (aiohttp).
# Named, never imported here, so that the service runs without them.
SIM_MODULES = ("edge_agent_sim", "aiohttp")
SIM_COMMANDS = {
    "simulate": (
        "edge_agent_sim.cli",
        "add_simulate_parser",
        "serve simulated devices on loopback",
    ),
    "demo": (
        "edge_agent_sim.demo",
        "add_demo_parser",
        "simulated fleet + agent + broker if none is running",
    ),
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"config error: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `edge-agent status --json | head`: the reader left
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - stays open until exit
        return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-agent", description=__doc__)
    parser.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    sub = parser.add_subparsers(metavar="COMMAND")

    def command(name: str, handler: Any, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        return p

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        default = os.environ.get("EDGE_AGENT_CONFIG", str(DEFAULT_PATH))
        p.add_argument("-c", "--config", type=Path, default=Path(default), help="config file")
        return p

    from agent.tools.scan_cli import add_scan_parser
    from agent.tools.status import add_status_parser

    with_config(command("run", cmd_run, "run the service (foreground)"))
    with_config(command("check-config", cmd_check_config, "validate the config and exit"))
    poll = with_config(command("poll", cmd_poll, "poll one device once and print its state"))
    poll.add_argument("device")
    poll.add_argument("--json", action="store_true", help="print the normalised state as JSON")
    poll.add_argument("--raw", action="store_true", help="JSON with the raw device replies too")
    send = with_config(
        command("send", cmd_send, "send one command to a device, through the running agent")
    )
    send.add_argument("device")
    send.add_argument("command_name", metavar="COMMAND")
    send.add_argument("params", nargs="*", help="KEY=VALUE pairs, a JSON object, or one value")
    send.add_argument(
        "--direct",
        action="store_true",
        help="talk to the device itself, without the agent (a Whatsminer write then spends "
        "one of the host's 32 tokens)",
    )
    status = with_config(command("status", None, "the running agent's fleet, over MQTT"))
    add_status_parser(status)
    with_config(command("discovery", cmd_discovery, "print the Home Assistant discovery payloads"))

    _add_sim_command(sub, "simulate")
    add_scan_parser(command("scan", None, "find devices on the addresses you name"))
    _add_sim_command(sub, "demo")
    context = CliContext(load=load, log_to_stderr=log_to_stderr)
    for kind in KINDS.values():
        if kind.commands is not None:
            kind.commands(sub, context)
    return parser


def sim_installed() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in SIM_MODULES)


def _add_sim_command(sub: Any, name: str) -> None:
    module, add_parser, help_text = SIM_COMMANDS[name]
    if sim_installed():
        parser = sub.add_parser(name, help=help_text, description=help_text)
        getattr(importlib.import_module(module), add_parser)(parser)
        return
    # Without the simulators, any arguments (even --help) lead to the one message that helps.
    parser = sub.add_parser(name, help=help_text, prefix_chars="\0", add_help=False)
    parser.add_argument("ignored", nargs="*")
    parser.set_defaults(handler=lambda _args: _sim_missing(name))


def _sim_missing(name: str) -> int:
    print(
        f"edge-agent {name}: the simulators are not installed: pip install 'edge-agent[sim]'",
        file=sys.stderr,
    )
    return EXIT_USAGE


def load(args: argparse.Namespace) -> LoadedConfig:
    return load_config(args.config, kinds=KINDS)


def cmd_check_config(args: argparse.Namespace) -> int:
    loaded = load(args)
    for warning in loaded.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for line in loaded.summary_lines(str(args.config)):
        print(line)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    loaded = load(args)
    logs.configure(loaded.settings.agent.log_level, loaded.settings.agent.log_format)
    log = logs.get_logger("main")
    for warning in loaded.warnings:
        log.warning("config", warning=warning)
    asyncio.run(run_agent(loaded))
    return 0


async def run_agent(loaded: LoadedConfig) -> None:
    from agent.runtime.collector import HeapSettler
    from agent.runtime.service import AgentService

    agent = AgentService(loaded, settler=HeapSettler())
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, agent.request_stop)
    loop.add_signal_handler(signal.SIGINT, agent.request_stop)
    loop.add_signal_handler(signal.SIGHUP, lambda: agent.spawn(_reload(agent)))
    await agent.run()


async def _reload(agent: Any) -> None:
    with contextlib.suppress(ConfigError):  # already logged; the running config stays
        await agent.reload()


def log_to_stderr(loaded: LoadedConfig) -> None:
    """What a driver logs (and the audit line of a command) goes to stderr, so that stdout
    stays the one JSON document; the config's secrets are masked there."""
    logs.configure(loaded.settings.agent.log_level, loaded.settings.agent.log_format)
    logs.register_secrets(loaded.settings.secret_values())


def cmd_poll(args: argparse.Namespace) -> int:
    from agent.runtime.oneshot import find_device, poll_once
    from agent.tools.status import device_row, rows_table

    loaded = load(args)
    log_to_stderr(loaded)
    result = asyncio.run(poll_once(loaded.settings, args.device))
    if args.raw:
        print(json.dumps({"state": result.state, "raw": result.raw}, indent=2, default=str))
    elif args.json:
        print(json.dumps(result.state, indent=2, default=str))
    else:
        device = find_device(loaded.settings, args.device)
        now = time.time()
        summary = {"id": device.id, "kind": device.kind, "status": "online", "last_success": now}
        print(rows_table([device_row(summary, result.state, now)]))
    return 0


def cmd_send(args: argparse.Namespace) -> int:
    from agent.runtime.oneshot import send_once, send_through_agent

    loaded = load(args)
    if args.direct:
        log_to_stderr(loaded)
        result = asyncio.run(
            send_once(loaded.settings, args.device, args.command_name, args.params)
        )
    else:
        logs.configure("warning", "console")
        result = send_through_agent(loaded.settings, args.device, args.command_name, args.params)
    print(json.dumps(result, indent=2, default=str))
    return 0 if result["ok"] else 1


def cmd_discovery(args: argparse.Namespace) -> int:
    from agent.runtime.oneshot import discovery_payloads

    loaded = load(args)
    for topic, payload in discovery_payloads(loaded.settings):
        print(topic)
        print(json.dumps(payload, indent=2))
    return 0
