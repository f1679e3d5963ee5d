"""Home Assistant discovery for the fleet: announce, re-announce, and clean up.

Keeps, per device, which config topics it has published, so entities that vanish (a worker
leaves the pool, a backend is disabled) and devices removed from the config are cleared with
an empty retained payload instead of lingering in Home Assistant.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from agent.catalog.discovery import (
    ORIGIN,
    DiscoveryContext,
    device_block,
    device_info_entities,
    entity_payload,
    lookup,
    topic,
)
from agent.catalog.model import Catalog, EntityDescription
from agent.config.base import DeviceConfig
from agent.logs import get_logger
from agent.runtime.bridge import BRIDGE_CATALOG, bridge_device

log = get_logger("discovery")
# A removed device's state and availability topics are cleared this long after its discovery
# configs: an empty state reaching an entity Home Assistant has not dropped yet is a template
# error in its log.
CLEAR_STATE_AFTER_S = 3.0


@dataclass(frozen=True, slots=True)
class Announcement:
    topics: frozenset[str]
    signature: tuple[Any, ...]


class Announcer:
    def __init__(
        self,
        ctx: DiscoveryContext,
        publish: Callable[[str, bytes], None],
        clear: Callable[[str], None],
        *,
        enabled: bool,
    ) -> None:
        self.ctx = ctx
        self._publish = publish
        self._clear = clear
        self.enabled = enabled
        self._announced: dict[str, Announcement] = {}

    def announce_device(
        self,
        config: DeviceConfig,
        catalog: Catalog,
        state: Mapping[str, Any] | None,
    ) -> int:
        """Publish what changed for one device; returns how many config topics were sent."""
        if not self.enabled:
            return 0
        device_id = config.id
        # Called after every poll: decide from a few cheap lookups whether anything changed
        # before building any payload.
        signature = _signature(config, catalog, state)
        previous = self._announced.get(device_id)
        if previous and previous.signature == signature:
            return 0
        entities = announced_entities(catalog, state, config.allow_commands)
        url = getattr(config, "url", None)
        device = device_block(
            self.ctx, catalog, device_id, config.display_name, state, str(url) if url else None
        )
        payloads = self._payloads(catalog, device_id, entities, device)
        for stale in (previous.topics if previous else frozenset()) - payloads.keys():
            self._clear(stale)
        for config_topic, payload in payloads.items():
            self._publish(config_topic, payload)
        self._announced[device_id] = Announcement(frozenset(payloads), signature)
        return len(payloads)

    def _payloads(
        self,
        catalog: Catalog,
        device_id: str,
        entities: Iterable[EntityDescription],
        device: Mapping[str, Any],
    ) -> dict[str, bytes]:
        return {
            topic(self.ctx, e.platform, device_id, e.key): _encode(
                entity_payload(self.ctx, catalog, device_id, e, device)
            )
            for e in entities
        }

    def forget_device(self, device_id: str) -> None:
        """Clear every config topic this agent published for the device."""
        announced = self._announced.pop(device_id, None)
        for config_topic in announced.topics if announced else ():
            self._clear(config_topic)

    def announce_bridge(self, entities: Iterable[EntityDescription]) -> None:
        if not self.enabled:
            return
        node = f"bridge_{self.ctx.agent_id}"
        device = bridge_device(self.ctx)
        payloads: dict[str, bytes] = {}
        for entity in entities:
            config = entity_payload(self.ctx, BRIDGE_CATALOG, node, entity, device)
            config["unique_id"] = f"edgeagent_bridge_{self.ctx.agent_id}_{entity.key}"
            # The id Home Assistant 2024.1 derives (device name + entity name), so that a
            # dashboard written once works with every release.
            config["default_entity_id"] = (
                f"{entity.platform}.{_slug(str(device['name']))}_{_slug(entity.name or '')}"
            )
            config["availability"] = [{"topic": self.ctx.bridge_state}]
            config.pop("availability_mode", None)
            payloads[topic(self.ctx, entity.platform, node, entity.key)] = _encode(config)
        previous = self._announced.get(node)
        for stale in (previous.topics if previous else frozenset()) - payloads.keys():
            self._clear(stale)
        for config_topic, payload in payloads.items():
            self._publish(config_topic, payload)
        self._announced[node] = Announcement(frozenset(payloads), ())

    def reset(self) -> None:
        """Forget signatures so that the next announce sends everything (HA restarted)."""
        self._announced = {
            k: Announcement(v.topics, ("stale",)) for k, v in self._announced.items()
        }


def _signature(
    config: DeviceConfig, catalog: Catalog, state: Mapping[str, Any] | None
) -> tuple[Any, ...]:
    """What the discovery payloads depend on: the config, device info and dynamic entities."""
    paths = catalog.device_info
    info = tuple(
        lookup(state, path)
        for path in (paths.model, paths.sw_version, paths.hw_version, paths.serial_number)
    )
    dynamic: tuple[str, ...] = ()
    if catalog.dynamic_entities is not None and state:
        dynamic = tuple(e.key for e in catalog.dynamic_entities(state))
    return (id(config), info, dynamic)


def announced_entities(
    catalog: Catalog, state: Mapping[str, Any] | None, allowed: Collection[str]
) -> list[EntityDescription]:
    """A control for a gated (disruptive or sensitive) command appears only where that command
    is allowed: a reboot button that can only ever answer "not allowed" is worse than none."""
    found = []
    for entity in [*catalog.entities_for(state), *device_info_entities(catalog)]:
        spec = catalog.command(entity.command) if entity.command else None
        if spec is not None and spec.gated and spec.name not in allowed:
            continue
        found.append(entity)
    return found


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


__all__ = ["ORIGIN", "Announcer"]
