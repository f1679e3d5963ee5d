"""Inbound MQTT: device commands, polls on demand, bridge requests, Home Assistant birth.

Every command gets exactly one result on `{base}/{device}/result` (and on the MQTT 5 response
topic when the request named one): success, a validation error (nothing was sent), a device
error, a timeout, or "not allowed".
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

from agent.catalog.model import Catalog, EntityDescription
from agent.catalog.validate import (
    CommandRequest,
    decode_payload,
    parse_command_payload,
    parse_set_payload,
)
from agent.config.settings import ConfigError
from agent.errors import AgentError, UnknownCommandError, ValidationError
from agent.logs import get_logger, redact_text
from agent.runtime.energy import site_entity
from agent.runtime.gate import CommandGate, Origin, command_result
from agent.runtime.mqtt import Inbound

if TYPE_CHECKING:
    from agent.power.controller import PowerController
    from agent.runtime.agent import Agent
    from agent.runtime.worker import DeviceWorker

log = get_logger("commands")
ONLINE_COUNT_TEMPLATE = (
    "{{ value_json.devices | selectattr('status', 'eq', 'online') | list | count }}"
)

BRIDGE_CATALOG = Catalog(
    kind="bridge",
    title="edge-agent",
    manufacturer="edge-agent",
    default_model="edge-agent bridge",
    fields=(),
    entities=(),
    commands=(),
)


class CommandRouter:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.in_flight = 0
        self.power: PowerController | None = None
        self.gate = CommandGate(self._publish_audit)
        self._announced_max_w: int | None = None

    # routing ---------------------------------------------------------------------------

    def dispatch(self, message: Inbound) -> None:
        """On the event loop: decide what a message is and start handling it."""
        agent = self.agent
        if agent.sweeper.handle(message):
            return
        if message.topic == agent.settings.homeassistant.status_topic:
            self._ha_status(message.payload)
            return
        parts = agent.topics.parse(message.topic)
        if parts is None:
            return
        if parts[0] == "bridge":
            self._bridge(parts, message)
            return
        worker = agent.workers.get(parts[0])
        if worker is None:
            return  # another agent's device on the shared broker
        if parts[1:] == ("get",):
            worker.poll_soon()
        elif parts[1:2] == ("set",) and len(parts) <= 3:
            command = parts[2] if len(parts) == 3 else None
            agent.spawn(self.run_command(worker, message, command))

    def _bridge(self, parts: tuple[str, ...], message: Inbound) -> None:
        if len(parts) < 3 or parts[1] != self.agent.settings.agent.id:
            return
        if parts[2] == "request" and len(parts) == 4:
            self.agent.spawn(self.bridge_request(parts[3], message))
        elif parts[2] == "power" and self.power is not None:
            self._power(parts[3:], message)

    def _power(self, rest: tuple[str, ...], message: Inbound) -> None:
        assert self.power is not None
        if not rest:  # our own retained state, read back once after a restart
            self.power.restore(message.payload)
            self.agent.link.unsubscribe(self.agent.topics.power)
        elif rest[0] == "set" and len(rest) <= 2:
            self.agent.spawn(self.power_request(rest[1] if len(rest) == 2 else None, message))

    async def power_request(self, sub: str | None, message: Inbound) -> None:
        assert self.power is not None
        started = time.monotonic()
        request = CommandRequest(f"power/{sub}" if sub else "power", {}, _transaction(message))
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
        self._reply(self.agent.topics.power + "/result", result, message)

    def _ha_status(self, payload: bytes) -> None:
        if payload.strip().lower() != b"online":
            return
        log.info("home assistant came online: announcing again")
        agent = self.agent
        agent._reannounce()
        if agent.loop is not None:
            agent.loop.call_later(
                min(3.0, 0.5 + 0.002 * len(agent.workers)), agent.republish_states
            )

    # device commands -------------------------------------------------------------------

    async def run_command(
        self, worker: DeviceWorker, message: Inbound, topic_command: str | None
    ) -> None:
        origin = Origin("mqtt", message.topic, message.response_topic, message.user_properties)
        self.in_flight += 1
        try:
            result = await self.gate.run(
                worker.config,
                worker.kind.catalog,
                origin,
                lambda: self._parse(worker, message.payload, topic_command),
                lambda name, params: self._execute(worker, name, params),
                name=topic_command,
            )
        finally:
            self.in_flight -= 1
        self._reply(self.agent.topics.result(worker.id), result, message)

    def _parse(
        self, worker: DeviceWorker, payload: bytes, topic_command: str | None
    ) -> CommandRequest:
        catalog = worker.kind.catalog
        if topic_command is None:
            return parse_set_payload(payload)
        spec = catalog.command(topic_command)
        if spec is None:
            decode_payload(payload)  # report an unreadable payload before an unknown name
            raise UnknownCommandError(f"unknown command {topic_command!r} for {catalog.title}")
        return parse_command_payload(spec, payload)

    async def _execute(self, worker: DeviceWorker, name: str, params: dict[str, Any]) -> Any:
        data = await worker.execute(name, params, self.agent.settings.agent.command_timeout)
        worker.poll_soon()  # show the command's effect without waiting a whole interval
        return data

    async def execute_internal(
        self, worker: DeviceWorker, command: str, params: dict[str, Any], *, transaction: str
    ) -> dict[str, Any]:
        """A command the agent itself sends (site power control): the same gate, the same
        execution, the same audit and the same result topic as a command from MQTT."""
        result = await self.gate.run(
            worker.config,
            worker.kind.catalog,
            Origin("power"),
            lambda: CommandRequest(command, params, transaction),
            lambda name, clean: self._execute(worker, name, clean),
        )
        self._reply(self.agent.topics.result(worker.id), result, None)
        return result

    def _publish_audit(self, entry: dict[str, Any]) -> None:
        if self.agent.settings.agent.audit_topic:  # read each time: a reload may turn it on
            payload = redact_text(json.dumps(entry, default=str))
            self.agent.link.publish(self.agent.topics.audit, payload)

    def _reply(self, topic: str, body: dict[str, Any], message: Inbound | None) -> None:
        """Every answer: on its topic, and on the MQTT 5 response topic when one was given."""
        payload = redact_text(json.dumps(body, default=str)).encode()
        link = self.agent.link
        link.publish(topic, payload)
        if message is not None and message.response_topic:
            link.publish(message.response_topic, payload, correlation_data=message.correlation_data)

    # bridge requests -------------------------------------------------------------------

    async def bridge_request(self, action: str, message: Inbound) -> None:
        transaction = None
        try:
            body = _request_body(message.payload)
            transaction = body.get("transaction")
            handler = getattr(self, f"_request_{action}", None)
            if handler is None:
                raise ValidationError(
                    f"unknown request {action!r}; known: devices, health, poll, reload"
                )
            response = {"status": "ok", "data": await handler(body), "error": None}
        except ConfigError as exc:
            response = {"status": "error", "data": None, "error": "; ".join(exc.problems)}
        except AgentError as exc:
            response = {"status": "error", "data": None, "error": exc.message}
        response["transaction"] = transaction
        self._reply(self.agent.topics.response(action[:64]), response, message)

    async def _request_devices(self, body: dict[str, Any]) -> Any:
        found = []
        for worker in self.agent.workers.values():
            entry = self.agent.device_summary(worker)
            entry.update(
                poll_interval_s=worker.config.poll_interval,
                last_success=worker.stats.last_success,
                last_error=worker.stats.last_error,
                commands=[c.name for c in worker.kind.catalog.commands if not c.cli_only],
                allow_commands=worker.config.allow_commands,
            )
            found.append(entry)
        return found

    async def _request_health(self, body: dict[str, Any]) -> Any:
        return self.agent.health()

    async def _request_poll(self, body: dict[str, Any]) -> Any:
        wanted = body.get("device")
        workers = self.agent.workers
        if wanted is not None and wanted not in workers:
            raise ValidationError(f"no device {wanted!r} on this agent")
        chosen = [workers[wanted]] if wanted else list(workers.values())
        states = await asyncio.gather(*(w.poll() for w in chosen))
        return {
            w.id: ("ok" if s is not None else w.stats.last_error)
            for w, s in zip(chosen, states, strict=True)
        }

    async def _request_reload(self, body: dict[str, Any]) -> Any:
        return await self.agent.reload()

    # hooks for site power control and the bridge device ---------------------------------

    def bridge_entities(self) -> list[EntityDescription]:
        info = self.agent.topics.bridge_info
        return [
            EntityDescription(
                "connection",
                "binary_sensor",
                "Connection",
                device_class="connectivity",
                entity_category="diagnostic",
                extra={
                    "state_topic": self.agent.topics.bridge_state,
                    "payload_on": "online",
                    "payload_off": "offline",
                    "value_template": "{{ value }}",
                },
            ),
            EntityDescription(
                "version",
                "sensor",
                "Version",
                value="version",
                entity_category="diagnostic",
                icon="mdi:tag",
                extra={"state_topic": info},
            ),
            EntityDescription(
                "devices_online",
                "sensor",
                "Devices online",
                icon="mdi:lan-connect",
                state_class="measurement",
                extra={
                    "state_topic": info,
                    "value_template": ONLINE_COUNT_TEMPLATE,
                },
            ),
        ]

    def power_entities(self) -> list[EntityDescription]:
        if self.power is None:
            return []
        topics = self.agent.topics
        state = {"state_topic": topics.power}
        entities = [
            EntityDescription(
                "power_target",
                "number",
                "Site power target",
                value="target_w",
                unit="W",
                device_class="power",
                icon="mdi:transmission-tower",
                extra={
                    **state,
                    "command_topic": f"{topics.power_set}/target",
                    "min": 0,
                    "max": max(1.0, round(self.power.fleet_max_w())),
                    "step": 100,
                    "mode": "box",
                },
            ),
            EntityDescription(
                "site_power",
                "sensor",
                "Site power",
                value="measured_w",
                unit="W",
                device_class="power",
                state_class="measurement",
                extra=state,
            ),
            EntityDescription(
                "power_ramp",
                "select",
                "Power ramp",
                value="ramp",
                entity_category="config",
                extra={
                    **state,
                    "command_topic": f"{topics.power_set}/ramp",
                    "options": ["fast", "normal"],
                },
            ),
            EntityDescription(
                "power_control",
                "switch",
                "Site power control",
                value="enabled",
                extra={**state, "command_topic": f"{topics.power_set}/enabled"},
            ),
        ]
        for member in self.agent.settings.power.members:
            entities.append(
                EntityDescription(
                    f"planned_{member}",
                    "sensor",
                    f"Planned power {member}",
                    unit="W",
                    device_class="power",
                    state_class="measurement",
                    entity_category="diagnostic",
                    extra={
                        **state,
                        "value_template": _planned_template(member),
                    },
                )
            )
        return entities

    def announce_bridge(self) -> None:
        entities = self.bridge_entities() + self.power_entities()
        if self.power is not None:
            entities.append(site_entity(self.agent.site_energy_topic))
        self.agent.announcer.announce_bridge(entities, BRIDGE_CATALOG)

    def device_polled(self, worker: DeviceWorker) -> None:
        """Site power control reads members' states on its own tick; the site target's range
        in Home Assistant follows what it learned (before that its maximum is a placeholder)."""
        if self.power is None or worker.id not in self.agent.settings.power.members:
            return
        maximum = round(self.power.fleet_max_w())
        if maximum != self._announced_max_w:
            self._announced_max_w = maximum
            self.announce_bridge()

    def start_power(self) -> None:
        from agent.power.controller import PowerController
        from agent.runtime.power_port import AgentPowerPort

        agent = self.agent
        if agent.settings.power.enabled and self.power is None:
            port = AgentPowerPort(
                agent.workers,
                self.execute_internal,
                agent.spawn,
                lambda payload: agent.link.publish_retained(agent.topics.power, payload),
            )
            self.power = PowerController(agent.settings.power, port)
            self.agent.link.subscribe(self.agent.topics.power)
            self.power.start()

    def mqtt_lost(self) -> None:
        if self.power is not None:
            self.power.mqtt_lost()

    async def reconfigure(self) -> None:
        if self.power is not None:
            self.power.reconfigure(self.agent.settings.power)
        else:
            self.start_power()
        self.announce_bridge()

    async def close(self) -> None:
        if self.power is not None:
            await self.power.close()


def _planned_template(member: str) -> str:
    return f"{{{{ value_json.members[{json.dumps(member)}].planned_w }}}}"


def _transaction(message: Inbound) -> Any:
    try:
        body = json.loads(message.payload)
    except (ValueError, UnicodeDecodeError):
        return None
    return body.get("transaction") if isinstance(body, dict) else None


def _request_body(payload: bytes) -> dict[str, Any]:
    text = decode_payload(payload).strip()
    if not text:
        return {}
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError(f"request is not valid JSON: {exc.msg}") from None
    if not isinstance(body, dict):
        raise ValidationError("a request is a JSON object (or empty)")
    return body
