"""The agent's own device in Home Assistant (the bridge) and the requests it answers on
`{base}/bridge/{agent}/request/{action}` (design §2), as a table of handlers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from agent import __version__
from agent.catalog.discovery import DiscoveryContext
from agent.catalog.model import Catalog, EntityDescription
from agent.catalog.topics import Topics
from agent.catalog.validate import decode_payload
from agent.config.settings import ConfigError
from agent.errors import AgentError, ValidationError
from agent.logs import get_logger
from agent.runtime.mqtt import Inbound

if TYPE_CHECKING:
    from agent.runtime.publisher import Publisher
    from agent.runtime.worker import DeviceWorker

log = get_logger("bridge")

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


def bridge_device(ctx: DiscoveryContext) -> dict[str, Any]:
    """The bridge's device block in every one of its discovery configs."""
    return {
        "identifiers": [ctx.bridge_identifier],
        "name": f"edge-agent {ctx.agent_id}",
        "manufacturer": BRIDGE_CATALOG.manufacturer,
        "model": BRIDGE_CATALOG.default_model,
        "sw_version": __version__,
    }


def bridge_entities(topics: Topics) -> list[EntityDescription]:
    info = topics.bridge_info
    return [
        EntityDescription(
            "connection",
            "binary_sensor",
            "Connection",
            device_class="connectivity",
            entity_category="diagnostic",
            extra={
                "state_topic": topics.bridge_state,
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
            extra={"state_topic": info, "value_template": ONLINE_COUNT_TEMPLATE},
        ),
    ]


def power_entities(
    topics: Topics, members: list[str], fleet_max_w: float
) -> list[EntityDescription]:
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
                "command_topic": topics.power_setting("target"),
                "min": 0,
                "max": max(1.0, round(fleet_max_w)),
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
                "command_topic": topics.power_setting("ramp"),
                "options": ["fast", "normal"],
            },
        ),
        EntityDescription(
            "power_control",
            "switch",
            "Site power control",
            value="enabled",
            extra={**state, "command_topic": topics.power_setting("enabled")},
        ),
    ]
    for member in members:
        entities.append(
            EntityDescription(
                f"planned_{member}",
                "sensor",
                f"Planned power {member}",
                unit="W",
                device_class="power",
                state_class="measurement",
                entity_category="diagnostic",
                extra={**state, "value_template": _planned_template(member)},
            )
        )
    return entities


def _planned_template(member: str) -> str:
    return f"{{{{ value_json.members[{json.dumps(member)}].planned_w }}}}"


Handler = Callable[[dict[str, Any]], Awaitable[Any]]


class BridgeRequests:
    """`request/{action}` → one `response/{action}`; the actions are the keys of a table."""

    def __init__(
        self,
        publisher: Publisher,
        topics: Topics,
        workers: Mapping[str, DeviceWorker],
        *,
        summary: Callable[[DeviceWorker], dict[str, Any]],
        health: Callable[[], dict[str, Any]],
        reload: Callable[[], Awaitable[dict[str, Any]]],
    ) -> None:
        self.publisher = publisher
        self.topics = topics
        self.workers = workers
        self.summary = summary
        self.health = health
        self.reload = reload
        self.handlers: dict[str, Handler] = {
            "devices": self._devices,
            "health": self._health,
            "poll": self._poll,
            "reload": self._reload,
        }

    async def answer(self, action: str, message: Inbound) -> None:
        transaction = None
        try:
            body = _request_body(message.payload)
            transaction = body.get("transaction")
            handler = self.handlers.get(action)
            if handler is None:
                known = ", ".join(self.handlers)
                raise ValidationError(f"unknown request {action!r}; known: {known}")
            response = {"status": "ok", "data": await handler(body), "error": None}
        except ConfigError as exc:
            response = {"status": "error", "data": None, "error": "; ".join(exc.problems)}
        except AgentError as exc:
            response = {"status": "error", "data": None, "error": exc.message}
        except Exception as exc:  # a bug in one request must still answer the asker
            log.exception("bridge request failed", request=action[:64])
            error = f"internal error: {type(exc).__name__}"
            response = {"status": "error", "data": None, "error": error}
        response["transaction"] = transaction
        self.publisher.reply(self.topics.response(action[:64]), response, message)

    async def _devices(self, body: dict[str, Any]) -> Any:
        found = []
        for worker in self.workers.values():
            entry = self.summary(worker)
            entry.update(
                poll_interval_s=worker.config.poll_interval,
                last_success=worker.stats.last_success,
                last_error=worker.stats.last_error,
                commands=[c.name for c in worker.kind.catalog.commands if not c.cli_only],
                allow_commands=worker.config.allow_commands,
            )
            found.append(entry)
        return found

    async def _health(self, body: dict[str, Any]) -> Any:
        return self.health()

    async def _poll(self, body: dict[str, Any]) -> Any:
        wanted = body.get("device")
        if wanted is not None and wanted not in self.workers:
            raise ValidationError(f"no device {wanted!r} on this agent")
        chosen = [self.workers[wanted]] if wanted else list(self.workers.values())
        states = await asyncio.gather(*(w.poll() for w in chosen))
        return {
            w.id: ("ok" if s is not None else w.stats.last_error)
            for w, s in zip(chosen, states, strict=True)
        }

    async def _reload(self, body: dict[str, Any]) -> Any:
        return await self.reload()


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
