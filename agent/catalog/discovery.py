"""Catalog entities → Home Assistant MQTT discovery payloads (design §3).

One config topic per entity, `{prefix}/{platform}/{device}/{key}/config`, all reading the
device's one JSON state topic through value templates.

Every key used here is one that Home Assistant 2024.1's MQTT schemas accept, or a top-level key
that 2024.1 drops silently and newer releases use (`default_entity_id`). The device block stays
within 2024.1's device schema: the serial, which only later releases take there
(`serial_number`), is a diagnostic sensor instead.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent import __version__
from agent.catalog.model import Catalog, EntityDescription
from agent.catalog.topics import DiscoveryTopics, Topics

ORIGIN = {
    "name": "edge-agent",
    "sw_version": __version__,
    "support_url": "https://github.com/edge-agent/edge-agent",
}


@dataclass(frozen=True, slots=True)
class DiscoveryContext:
    prefix: str
    base: str
    agent_id: str

    @property
    def topics(self) -> Topics:
        return Topics(self.base, self.agent_id)

    @property
    def bridge_state(self) -> str:
        return self.topics.bridge_state

    @property
    def bridge_identifier(self) -> str:
        return f"edgeagent_bridge_{self.agent_id}"


def topic(ctx: DiscoveryContext, platform: str, node: str, key: str) -> str:
    return DiscoveryTopics(ctx.prefix).config(platform, node, key)


def value_template(entity: EntityDescription) -> str | None:
    if entity.value is None:
        return None
    ref = _ref(entity.value)
    if entity.platform in ("binary_sensor", "switch"):
        return f"{{{{ 'ON' if {ref} else 'OFF' }}}}"
    if entity.scale is not None:
        precision = 3 if entity.precision is None else entity.precision
        scaled = f"({ref} * {entity.scale!r}) | round({precision})"
        return f"{{{{ {scaled} if {ref} is number else none }}}}"
    return f"{{{{ {ref} }}}}"


def device_block(
    ctx: DiscoveryContext,
    catalog: Catalog,
    device_id: str,
    name: str,
    state: Mapping[str, Any] | None,
    url: str | None,
) -> dict[str, Any]:
    block: dict[str, Any] = {
        "identifiers": [f"edgeagent_{device_id}"],
        "name": name,
        "manufacturer": catalog.manufacturer,
        "model": catalog.default_model,
        "via_device": ctx.bridge_identifier,
    }
    paths = catalog.device_info
    for key in ("model", "sw_version", "hw_version"):
        found = lookup(state, getattr(paths, key))
        if found not in (None, ""):
            block[key] = str(found)
    if url:
        block["configuration_url"] = url
    return block


def device_info_entities(catalog: Catalog) -> list[EntityDescription]:
    """Device facts that Home Assistant 2024.1's device block has no key for, as sensors."""
    path = catalog.device_info.serial_number
    if path is None:
        return []
    return [
        EntityDescription(
            "serial_number",
            "sensor",
            "Serial number",
            value=path,
            entity_category="diagnostic",
            icon="mdi:barcode",
        )
    ]


def entity_payload(
    ctx: DiscoveryContext,
    catalog: Catalog,
    device_id: str,
    entity: EntityDescription,
    device: Mapping[str, Any],
) -> dict[str, Any]:
    topics = ctx.topics
    state_topic = topics.state(device_id)
    payload: dict[str, Any] = {
        "name": entity.name,
        "unique_id": f"edgeagent_{device_id}_{entity.key}",
        "default_entity_id": f"{entity.platform}.{device_id}_{entity.key}".replace("-", "_"),
        "device": dict(device),
        "origin": ORIGIN,
        "availability": [
            {"topic": ctx.bridge_state},
            {"topic": topics.availability(device_id)},
        ],
        "availability_mode": "all",
    }
    if entity.platform != "button":
        payload["state_topic"] = state_topic
    template = value_template(entity)
    if template and entity.platform != "button":
        payload["value_template"] = template
    _add_optional(payload, entity)
    if entity.attributes:
        payload["json_attributes_topic"] = state_topic
        payload["json_attributes_template"] = (
            "{{ {'items': " + _ref(entity.attributes) + "} | tojson }}"
        )
    if entity.command:
        _add_command(payload, ctx, catalog, device_id, entity)
    payload.update(entity.extra)
    return payload


def _add_optional(payload: dict[str, Any], entity: EntityDescription) -> None:
    optional = {
        "unit_of_measurement": entity.unit,
        "device_class": entity.device_class,
        "state_class": entity.state_class,
        "entity_category": entity.entity_category,
        "icon": entity.icon,
        "suggested_display_precision": entity.precision,
    }
    payload.update({k: v for k, v in optional.items() if v is not None})
    if not entity.enabled_by_default:
        payload["enabled_by_default"] = False


def _add_command(
    payload: dict[str, Any],
    ctx: DiscoveryContext,
    catalog: Catalog,
    device_id: str,
    entity: EntityDescription,
) -> None:
    assert entity.command is not None
    payload["command_topic"] = ctx.topics.set(device_id, entity.command)
    spec = catalog.command(entity.command)
    param = spec.param(spec.plain) if spec and spec.plain else None
    if entity.platform == "button":
        payload["payload_press"] = entity.payload_press or "PRESS"
    elif entity.platform == "number":
        payload["min"] = _first(entity.minimum, param.minimum if param else None, 0)
        payload["max"] = _first(entity.maximum, param.maximum if param else None, 100)
        payload["step"] = _first(entity.step, 1 if param and param.type == "int" else None, 1)
        payload["mode"] = entity.mode or "box"
    elif entity.platform == "select":
        options = entity.options or (param.choices if param else None) or ()
        payload["options"] = list(options)


def _first(*values: Any) -> Any:
    return next(v for v in values if v is not None)


def _ref(path: str) -> str:
    return "value_json" + "".join(
        f"[{p}]" if p.isdigit() else f"[{json.dumps(p)}]" for p in path.split(".")
    )


def lookup(state: Mapping[str, Any] | None, path: str | None) -> Any:
    if not state or not path:
        return None
    value: Any = state
    for part in path.split("."):
        if isinstance(value, Mapping):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value
