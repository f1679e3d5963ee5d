"""`edge-agent whatsminer upgrade|logs`: the binary flows, with progress and size checks.

Both are refused unless the device lists the command (`update_firmware`, `download_logs`) in
its allow_commands, exactly as `send` would refuse them. `upgrade` then waits for the miner to
come back and reports the firmware it runs; `logs` writes a private file (mode 0600) and never
replaces one unless told to.
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
from typing import Any

from agent.catalog.validate import CommandRequest
from agent.config.settings import DEFAULT_PATH
from agent.devices.kind import CliContext
from agent.devices.whatsminer.catalog import CATALOG
from agent.devices.whatsminer.config import WhatsminerConfig
from agent.devices.whatsminer.driver import WhatsminerDriver
from agent.errors import AgentError, DeviceTimeoutError
from agent.runtime.commands import CommandService
from agent.runtime.gate import Admitted, Origin
from agent.tools.progress import Progress, format_seconds

DEFAULT_WAIT_S = 600.0  # a flash and reboot takes minutes on real miners
WAIT_POLL_S = 1.0  # how often the miner is asked for its version while it restarts


def add_whatsminer_parser(sub: Any, context: CliContext) -> None:
    parser = sub.add_parser("whatsminer", help="Whatsminer firmware upgrade and log download")
    parser.set_defaults(handler=lambda _args: _usage(parser), cli_context=context)
    actions = parser.add_subparsers(metavar="ACTION")
    upgrade = _action(actions, "upgrade", cmd_upgrade, "upload a firmware file to a miner")
    upgrade.add_argument("firmware", type=Path, help="the firmware file")
    upgrade.add_argument(
        "--wait",
        type=float,
        default=DEFAULT_WAIT_S,
        metavar="SECONDS",
        help=f"how long to wait for the miner to come back ({DEFAULT_WAIT_S:g}; 0: do not wait)",
    )
    logs = _action(actions, "logs", cmd_logs, "download a miner's logs to a file")
    logs.add_argument("-o", "--output", type=Path, help="file to write (default: DEVICE-logs-…)")
    logs.add_argument("--force", action="store_true", help="replace the output file if it exists")


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
    return _run(admitted, _upgrade(driver, args.device, Path(path), args.wait))


async def _upgrade(
    driver: WhatsminerDriver, device: str, firmware: Path, wait: float
) -> dict[str, Any]:
    before = await _firmware_version(driver)
    result: dict[str, Any] = await driver.upgrade_firmware(
        firmware, Progress(sys.stderr, "upload", unit="B")
    )
    result["firmware_before"] = before
    if wait <= 0:
        return result
    print(
        f"{device}: waiting up to {format_seconds(wait)} for the miner to restart", file=sys.stderr
    )
    after, elapsed = await _back_again(driver, before, wait)
    if after is None:
        raise DeviceTimeoutError(
            f"{device} did not come back with a firmware version within {format_seconds(wait)}; "
            "it may still be flashing: check it with edge-agent poll"
        )
    print(f"{device}: back after {format_seconds(elapsed)}, firmware {after}", file=sys.stderr)
    return {**result, "firmware_after": after, "back_after_s": round(elapsed, 1)}


async def _back_again(
    driver: WhatsminerDriver, before: str | None, wait: float
) -> tuple[str | None, float]:
    """The firmware version once the miner answers again after the upload: after it went
    quiet (its reboot), or as soon as it reports a version other than `before`."""
    started = time.monotonic()
    went_away = False
    while (elapsed := time.monotonic() - started) < wait:
        try:
            version = await _firmware_version(driver, strict=True)
        except AgentError:
            went_away = True
        else:
            if went_away or (version is not None and version != before):
                return version, elapsed
        await asyncio.sleep(min(WAIT_POLL_S, max(0.0, wait - elapsed)))  # the miner's pace
    return None, time.monotonic() - started


async def _firmware_version(driver: WhatsminerDriver, *, strict: bool = False) -> str | None:
    try:
        version = (await driver.client.get_version()).get("fw_ver")
    except AgentError:
        if strict:
            raise
        return None
    return version if isinstance(version, str) else None


def cmd_logs(args: argparse.Namespace) -> int:
    output = args.output or Path(f"{args.device}-logs-{time.strftime('%Y%m%d-%H%M%S')}")
    if output.exists() and not args.force:
        raise SystemExit(f"{output} exists; pass --force to replace it, or choose another -o")
    driver, admitted = _prepare(args, "download_logs", {"path": str(output)})
    previous = os.umask(0o077)  # logs hold addresses, pools and workers: the owner's only
    try:
        path = admitted.params["path"]
        return _run(
            admitted, driver.download_logs(path, Progress(sys.stderr, "download", unit="B"))
        )
    finally:
        os.umask(previous)


_COMMANDS = CommandService()  # the CLI's audit lines go to the log only


def _prepare(
    args: argparse.Namespace, command: str, raw: dict[str, Any]
) -> tuple[WhatsminerDriver, Admitted]:
    context: CliContext = args.cli_context
    loaded = context.load(args)
    context.log_to_stderr(loaded)
    settings = loaded.settings
    device = next((d for d in settings.devices if d.id == args.device), None)
    if not isinstance(device, WhatsminerConfig):
        miners = [d.id for d in settings.devices if isinstance(d, WhatsminerConfig)]
        raise SystemExit(
            f"{args.device}: no Whatsminer with that id in {args.config} "
            f"(its Whatsminers: {', '.join(miners) or 'none'})"
        )
    try:
        admitted = _COMMANDS.admit(device, CATALOG, CommandRequest(command, raw), Origin("cli"))
    except AgentError as exc:
        raise SystemExit(f"{args.device}: {exc.code}: {exc.message}") from None
    return WhatsminerDriver(device), admitted


def _run(admitted: Admitted, flow: Coroutine[Any, Any, Any]) -> int:
    try:
        result = asyncio.run(flow)
    except AgentError as exc:
        _COMMANDS.outcome(admitted, error=exc.as_dict())
        print(f"\nfailed: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    _COMMANDS.outcome(admitted)
    print(json.dumps(result, indent=2))
    return 0
