"""Inbound MQTT: decide what a message is and hand it to the one that handles it.

Device commands go to the command service, polls on demand to the device's worker, bridge
requests to their handler table, site power topics to the power controller, the Home
Assistant birth message to the agent's re-announce.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from agent.catalog.topics import Topics
from agent.catalog.validate import CommandRequest, decode_payload
from agent.errors import AgentError
from agent.logs import get_logger
from agent.runtime.bridge import BridgeRequests
from agent.runtime.commands import WorkerCommands, payload_transaction
from agent.runtime.gate import command_result
from agent.runtime.mqtt import Inbound

if TYPE_CHECKING:
    from agent.power.controller import PowerController
    from agent.runtime.publisher import Publisher
    from agent.runtime.worker import DeviceWorker

log = get_logger("commands")
Spawn = Callable[[Any], "asyncio.Task[Any]"]


class InboundDispatcher:
    def __init__(
        self,
        topics: Topics,
        *,
        ha_status_topic: Callable[[], str],
        claimed: Callable[[Inbound], bool],
        workers: Mapping[str, DeviceWorker],
        commands: WorkerCommands,
        requests: BridgeRequests,
        publisher: Publisher,
        spawn: Spawn,
        ha_online: Callable[[], None],
        unsubscribe: Callable[[str], None],
    ) -> None:
        self.topics = topics
        self.ha_status_topic = ha_status_topic
        self.claimed = claimed  # the stale-device sweeper's messages
        self.workers = workers
        self.commands = commands
        self.requests = requests
        self.publisher = publisher
        self.spawn = spawn
        self.ha_online = ha_online
        self.unsubscribe = unsubscribe
        self.power: PowerController | None = None  # set when site power control starts

    def dispatch(self, message: Inbound) -> None:
        """On the event loop: decide what a message is and start handling it."""
        if self.claimed(message):
            return
        if message.topic == self.ha_status_topic():
            self._ha_status(message.payload)
            return
        parts = self.topics.parse(message.topic)
        if parts is None:
            return
        if parts[0] == "bridge":
            self._bridge(parts, message)
            return
        worker = self.workers.get(parts[0])
        if worker is None:
            return  # another agent's device on the shared broker
        if parts[1:] == ("get",):
            worker.poll_soon()
        elif parts[1:2] == ("set",) and len(parts) <= 3:
            command = parts[2] if len(parts) == 3 else None
            self.spawn(self.commands.from_mqtt(worker, message, command))

    def _bridge(self, parts: tuple[str, ...], message: Inbound) -> None:
        if len(parts) < 3 or parts[1] != self.topics.agent_id:
            return
        if parts[2] == "request" and len(parts) == 4:
            self.spawn(self.requests.answer(parts[3], message))
        elif parts[2] == "power" and self.power is not None:
            self._power(parts[3:], message)

    def _power(self, rest: tuple[str, ...], message: Inbound) -> None:
        assert self.power is not None
        if not rest:  # our own retained state, read back once after a restart
            self.power.restore(message.payload)
            self.unsubscribe(self.topics.power)
        elif rest[0] == "set" and len(rest) <= 2:
            self.spawn(self.power_request(rest[1] if len(rest) == 2 else None, message))

    async def power_request(self, sub: str | None, message: Inbound) -> None:
        assert self.power is not None
        started = time.monotonic()
        name = f"power/{sub}" if sub else "power"
        request = CommandRequest(name, {}, payload_transaction(message.payload))
        try:
            decode_payload(message.payload)
            data = self.power.set_request(sub, message.payload)
            result = command_result(request, started, ok=True, data=data)
        except (AgentError, UnicodeDecodeError) as exc:
            error = (
                exc.as_dict()
                if isinstance(exc, AgentError)
                else {"code": "validation", "message": "payload is not UTF-8 text"}
            )
            result = command_result(request, started, ok=False, error=error)
        log.info("power request", ok=result["ok"], error=result["error"], data=result["data"])
        self.publisher.reply(self.topics.power_result, result, message)

    def _ha_status(self, payload: bytes) -> None:
        if payload.strip().lower() == b"online":
            log.info("home assistant came online: announcing again")
            self.ha_online()
