"""`edge-agent whatsminer upgrade|logs`: the binary flows, with progress and size checks.

Both are refused unless the device lists the command (`update_firmware`, `download_logs`) in
its allow_commands, exactly as `send` would refuse them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TextIO

from agent.catalog.validate import CommandRequest
from agent.cli import load, log_to_stderr
from agent.config.settings import DEFAULT_PATH
from agent.devices.whatsminer.catalog import CATALOG
from agent.devices.whatsminer.config import WhatsminerConfig
from agent.devices.whatsminer.driver import WhatsminerDriver
from agent.errors import AgentError
from agent.runtime.gate import Admitted, CommandGate, Origin


def add_whatsminer_parser(sub: Any) -> None:
    parser = sub.add_parser("whatsminer", help="Whatsminer firmware upgrade and log download")
    parser.set_defaults(handler=lambda _args: _usage(parser))
    actions = parser.add_subparsers(metavar="ACTION")
    upgrade = _action(actions, "upgrade", cmd_upgrade, "upload a firmware file to a miner")
    upgrade.add_argument("firmware", type=Path, help="the firmware file")
    logs = _action(actions, "logs", cmd_logs, "download a miner's logs to a file")
    logs.add_argument("-o", "--output", type=Path, help="file to write (default: DEVICE-logs-…)")


def _action(
    actions: Any, name: str, handler: Callable[[argparse.Namespace], int], text: str
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = actions.add_parser(name, help=text, description=text)
    default = os.environ.get("EDGE_AGENT_CONFIG", str(DEFAULT_PATH))
    parser.add_argument("-c", "--config", type=Path, default=Path(default), help="config file")
    parser.add_argument("device", help="device id from the config")
    parser.set_defaults(handler=handler)
    return parser


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def cmd_upgrade(args: argparse.Namespace) -> int:
    driver, admitted = _prepare(args, "update_firmware", {"path": str(args.firmware)})
    size = args.firmware.stat().st_size if args.firmware.is_file() else 0
    print(f"{args.device}: uploading {args.firmware} ({size} bytes)", file=sys.stderr)
    path = admitted.params["path"]
    return _run(admitted, driver.upgrade_firmware(path, Progress(sys.stderr, "upload")))


def cmd_logs(args: argparse.Namespace) -> int:
    output = args.output or Path(f"{args.device}-logs-{time.strftime('%Y%m%d-%H%M%S')}")
    driver, admitted = _prepare(args, "download_logs", {"path": str(output)})
    path = admitted.params["path"]
    return _run(admitted, driver.download_logs(path, Progress(sys.stderr, "download")))


_GATE = CommandGate()  # the CLI's audit lines go to the log only


def _prepare(
    args: argparse.Namespace, command: str, raw: dict[str, Any]
) -> tuple[WhatsminerDriver, Admitted]:
    loaded = load(args)
    log_to_stderr(loaded)
    settings = loaded.settings
    device = next((d for d in settings.devices if d.id == args.device), None)
    if not isinstance(device, WhatsminerConfig):
        raise SystemExit(f"{args.device}: no Whatsminer with that id in {args.config}")
    try:
        admitted = _GATE.admit(device, CATALOG, CommandRequest(command, raw), Origin("cli"))
    except AgentError as exc:
        raise SystemExit(f"{args.device}: {exc.code}: {exc.message}") from None
    return WhatsminerDriver(device), admitted


def _run(admitted: Admitted, flow: Coroutine[Any, Any, Any]) -> int:
    try:
        result = asyncio.run(flow)
    except AgentError as exc:
        _GATE.outcome(admitted, error=exc.as_dict())
        print(f"\nfailed: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    _GATE.outcome(admitted)
    print(json.dumps(result, indent=2))
    return 0


class Progress:
    """A one-line progress bar on a terminal; a line per 10 % elsewhere (logs, CI)."""

    def __init__(self, stream: TextIO, label: str) -> None:
        self.stream = stream
        self.label = label
        self.tty = stream.isatty()
        self._shown = -1

    def __call__(self, done: int, total: int) -> None:
        percent = 100 if total <= 0 else done * 100 // total
        if self.tty:
            filled = percent * 30 // 100
            bar = "#" * filled + "-" * (30 - filled)
            end = "\n" if done >= total else ""
            self.stream.write(f"\r{self.label} [{bar}] {percent:3d}% {done}/{total} B{end}")
        elif percent // 10 != self._shown // 10 or done >= total:
            self.stream.write(f"{self.label}: {percent}% ({done}/{total} bytes)\n")
        self._shown = percent
        self.stream.flush()
