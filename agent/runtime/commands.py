"""The command service: parse → resolve → validate → execute → exactly one result.

MQTT (agent.runtime.inbound), the CLI (agent.runtime.oneshot, the Whatsminer subcommands) and
site power control all go through `CommandService`, with the security gate
(agent.runtime.gate) inside the pipeline. Every command gets exactly one result: success, a
validation error (nothing was sent), a device error, a timeout, or "not allowed".
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.catalog.model import Catalog
from agent.catalog.topics import Topics
from agent.catalog.validate import (
    MAX_PAYLOAD_BYTES,
    CommandRequest,
    decode_payload,
    parse_command_payload,
    parse_set_payload,
)
from agent.config.base import DeviceConfig
from agent.errors import AgentError, UnknownCommandError
from agent.logs import get_logger
from agent.runtime.gate import Admitted, AuditSink, CommandGate, Origin, command_result
from agent.runtime.mqtt import Inbound

if TYPE_CHECKING:
    from agent.runtime.publisher import Publisher
    from agent.runtime.worker import DeviceWorker

log = get_logger("commands")
Execute = Callable[[str, dict[str, Any]], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class CommandCall:
    """One command on its way through the service."""

    device: DeviceConfig
    catalog: Catalog
    origin: Origin
    parse: Callable[[], CommandRequest]
    execute: Execute
    name: str | None = None  # known before parsing (from the topic or the CLI)
    transaction: Any = None  # known before parsing: a payload that fails still answers with it


class CommandService:
    def __init__(self, audit: AuditSink | None = None) -> None:
        self.gate = CommandGate(audit)

    async def run(self, call: CommandCall) -> dict[str, Any]:
        """The whole way; always returns a result, never raises an AgentError."""
        started = time.monotonic()
        request = CommandRequest(call.name, {}, call.transaction)
        try:
            request = call.parse()
        except AgentError as exc:
            result = command_result(request, started, ok=False, error=exc.as_dict())
            self.gate.refused_parse(call.device.id, request, call.origin, result)
            return result
        try:
            admitted = self.gate.admit(call.device, call.catalog, request, call.origin)
        except AgentError as exc:
            return command_result(request, started, ok=False, error=exc.as_dict())
        try:
            data = await call.execute(admitted.spec.name, admitted.params)
            result = command_result(request, started, ok=True, data=data)
        except AgentError as exc:
            result = command_result(request, started, ok=False, error=exc.as_dict())
        except Exception as exc:  # the agent must answer even when a driver misbehaves
            log.exception("command crashed", device=call.device.id, command=request.name)
            error = {"code": "internal", "message": f"internal error: {type(exc).__name__}"}
            result = command_result(request, started, ok=False, error=error)
        self.gate.record(admitted, result)
        return result

    def admit(
        self, device: DeviceConfig, catalog: Catalog, request: CommandRequest, origin: Origin
    ) -> Admitted:
        """The first half, for a flow that runs elsewhere (a long CLI upload); finish it
        with `outcome`."""
        return self.gate.admit(device, catalog, request, origin)

    def outcome(
        self, admitted: Admitted, *, data: Any = None, error: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return self.gate.outcome(admitted, data=data, error=error)


class WorkerCommands:
    """Commands for the agent's own devices: from MQTT or from site power control, run by the
    device's worker, answered on `{base}/{device}/result`."""

    def __init__(
        self,
        service: CommandService,
        publisher: Publisher,
        topics: Topics,
        command_timeout: Callable[[], float],
    ) -> None:
        self.service = service
        self.publisher = publisher
        self.topics = topics
        self.command_timeout = command_timeout  # read each time: a reload may change it

    async def from_mqtt(
        self, worker: DeviceWorker, message: Inbound, topic_command: str | None
    ) -> None:
        catalog = worker.kind.catalog
        call = CommandCall(
            worker.config,
            catalog,
            Origin("mqtt", message.topic, message.response_topic, message.user_properties),
            lambda: parse_mqtt_command(catalog, message.payload, topic_command),
            lambda name, params: self._execute(worker, name, params),
            name=topic_command,
            transaction=payload_transaction(message.payload) if topic_command is None else None,
        )
        result = await self.service.run(call)
        self.publisher.reply(self.topics.result(worker.id), result, message)

    async def execute_internal(
        self, worker: DeviceWorker, command: str, params: dict[str, Any], *, transaction: str
    ) -> dict[str, Any]:
        """A command the agent itself sends (site power control): the same gate, the same
        execution, the same audit and the same result topic as a command from MQTT."""
        call = CommandCall(
            worker.config,
            worker.kind.catalog,
            Origin("power"),
            lambda: CommandRequest(command, params, transaction),
            lambda name, clean: self._execute(worker, name, clean),
        )
        result = await self.service.run(call)
        self.publisher.reply(self.topics.result(worker.id), result, None)
        return result

    async def _execute(self, worker: DeviceWorker, name: str, params: dict[str, Any]) -> Any:
        data = await worker.execute(name, params, self.command_timeout())
        worker.poll_soon()  # show the command's effect without waiting a whole interval
        return data


def parse_mqtt_command(
    catalog: Catalog, payload: bytes, topic_command: str | None
) -> CommandRequest:
    """`{device}/set` (JSON naming the command) or `{device}/set/{command}`."""
    if topic_command is None:
        return parse_set_payload(payload)
    spec = catalog.command(topic_command)
    if spec is None:
        decode_payload(payload)  # report an unreadable payload before an unknown name
        raise UnknownCommandError(f"unknown command {topic_command!r} for {catalog.title}")
    return parse_command_payload(spec, payload)


def payload_transaction(payload: bytes) -> Any:
    """The transaction a JSON payload names, read leniently before the strict parse."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        return None
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return body.get("transaction") if isinstance(body, dict) else None
