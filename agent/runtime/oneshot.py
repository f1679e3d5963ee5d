"""The CLI's direct paths to a device (`poll`, `send`, `discovery`): same catalogs, no MQTT."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from agent.catalog.discovery import DiscoveryContext, entity_payload, topic
from agent.catalog.discovery import device_block as make_device_block
from agent.catalog.model import Catalog
from agent.catalog.validate import CommandRequest, parse_command_payload
from agent.config.base import DeviceConfig
from agent.config.settings import ConfigError, Settings
from agent.devices.base import PollResult
from agent.errors import AgentError, ErrorCode, UnknownCommandError
from agent.kinds import KINDS
from agent.logs import redact_text
from agent.runtime.announcer import announced_entities
from agent.runtime.commands import CommandCall, CommandService
from agent.runtime.gate import Origin


def find_device(settings: Settings, device_id: str) -> DeviceConfig:
    for device in settings.devices:
        if device.id == device_id:
            return device
    known = ", ".join(d.id for d in settings.devices) or "none"
    raise ConfigError([f"no device {device_id!r} in the config (configured: {known})"])


async def poll_once(settings: Settings, device_id: str) -> PollResult:
    device = find_device(settings, device_id)
    driver = KINDS[device.kind].driver(device)
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(2))
    try:
        return await driver.poll()
    except AgentError as exc:
        raise SystemExit(f"{device_id}: {exc.code}: {redact_text(exc.message)}") from None
    finally:
        await driver.close()


async def send_once(
    settings: Settings, device_id: str, command: str, args: list[str]
) -> dict[str, Any]:
    """`send --direct`: the device's own client, in this process."""
    device = find_device(settings, device_id)
    kind = KINDS[device.kind]

    def prepare() -> CommandRequest:
        return prepared_request(kind.catalog, command, args)

    async def execute(name: str, params: dict[str, Any]) -> Any:
        driver = kind.driver(device)
        try:
            return await driver.execute(name, params)
        finally:
            await driver.close()

    call = CommandCall(device, kind.catalog, Origin("cli"), prepare, execute, name=command)
    return await CommandService().run(call)


def send_through_agent(
    settings: Settings, device_id: str, command: str, args: list[str]
) -> dict[str, Any]:
    """`send`: the command goes to the running agent over MQTT and its one result comes back,
    so one token client serves the whole host (a Whatsminer gives 32 tokens per IP)."""
    from agent.tools.bridge import BridgeClient, BridgeError

    device = find_device(settings, device_id)
    started = time.monotonic()
    try:
        request = prepared_request(KINDS[device.kind].catalog, command, args)
    except AgentError as exc:
        return _result(command, started, None, exc.as_dict())
    wait = settings.agent.command_timeout + 5.0  # the agent answers a timeout itself first
    try:
        with BridgeClient(settings) as client:
            if not client.agent_online():
                raise BridgeError(
                    f"agent {settings.agent.id!r} is not running (bridge state not online); "
                    "start it, or send with --direct"
                )
            name = request.name or command
            result: dict[str, Any] = client.command(device.id, name, request.params, wait)
            return result
    except BridgeError as exc:
        error = {"code": ErrorCode.UNREACHABLE, "message": str(exc)}
        return _result(command, started, None, error)


def prepared_request(catalog: Catalog, command: str, args: list[str]) -> CommandRequest:
    spec = catalog.command(command)
    if spec is None:
        known = ", ".join(c.name for c in catalog.commands)
        raise UnknownCommandError(
            f"unknown command {command!r} for {catalog.title}; its commands: {known}"
        )
    return cli_request(spec.name, args, spec)


def _result(
    command: str, started: float, data: Any, error: dict[str, Any] | None
) -> dict[str, Any]:
    return {
        "command": command,
        "transaction": None,
        "ok": error is None,
        "error": error,
        "data": data,
        "duration_ms": round((time.monotonic() - started) * 1000, 1),
    }


def cli_request(command: str, args: list[str], spec: Any) -> CommandRequest:
    """`KEY=VALUE …`, one JSON object, or one plain value, as on `set/{command}`."""
    if not args:
        return CommandRequest(command, {})
    if all("=" in a for a in args) and not args[0].lstrip().startswith("{"):
        params = {}
        for arg in args:
            key, _, value = arg.partition("=")
            params[key] = _maybe_json(value)
        return CommandRequest(command, params)
    return parse_command_payload(spec, " ".join(args).encode())


def _maybe_json(text: str) -> Any:
    if text[:1] in ("{", "["):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text
    return text


def discovery_payloads(settings: Settings) -> Iterator[tuple[str, dict[str, Any]]]:
    """The static discovery payloads (entities that depend on live state appear at run time)."""
    ctx = DiscoveryContext(
        settings.homeassistant.discovery_prefix, settings.mqtt.base_topic, settings.agent.id
    )
    for device in settings.devices:
        catalog = KINDS[device.kind].catalog
        block = make_device_block(ctx, catalog, device.id, device.display_name, None, None)
        for entity in announced_entities(catalog, None, device.allow_commands):
            yield (
                topic(ctx, entity.platform, device.id, entity.key),
                entity_payload(ctx, catalog, device.id, entity, block),
            )
