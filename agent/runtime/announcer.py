"""Home Assistant discovery for the fleet: announce, re-announce, and clean up.

Keeps, per device, which config topics it has published, so entities that vanish (a worker
leaves the pool, a backend is disabled) and devices removed from the config are cleared with
an empty retained payload instead of lingering in Home Assistant.

Configs are not built when a device becomes due but queued, and built on the event loop while
the MQTT link has room: at start 2,500 first polls would otherwise put ~88,000 configs (tens of
MB) on the loop and in the link at once, and the polls would miss their cycles behind them.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
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
    """What was published for one device, compactly: its entities as (platform, key) pairs in
    a tuple shared by every device of the same shape; the topics are rebuilt to clear them."""

    entities: tuple[tuple[str, str], ...]
    signature: tuple[Any, ...]


@dataclass(slots=True)
class _Due:
    config: DeviceConfig
    catalog: Catalog
    state: Mapping[str, Any] | None
    signature: tuple[Any, ...]


# Discovery is paced behind polling: a device's configs are built only while fewer retained
# publishes than this wait at the MQTT link, so what discovery holds in memory is bounded by
# this window, not by the fleet, and a start's burst never starves the polls.
LOW_WATER = 400
RETRY_S = 0.01  # how soon a full link is looked at again
TURN_BUDGET_S = 0.004  # building configs this long at most before polls get the loop back
MAX_SHAPES = 10_000  # distinct entity sets kept for sharing; beyond, sharing starts over


class Announcer:
    def __init__(
        self,
        ctx: DiscoveryContext,
        publish: Callable[[str, bytes], None],
        clear: Callable[[str], None],
        *,
        enabled: bool,
        backlog: Callable[[], int | None] = lambda: 0,
    ) -> None:
        """`backlog`: retained publishes the link has yet to see acknowledged, None while it is
        offline (configs handed over then would not reach the broker)."""
        self.ctx = ctx
        self._publish = publish
        self._clear = clear
        self.enabled = enabled
        self._backlog = backlog
        self._announced: dict[str, Announcement] = {}
        self._due: dict[str, _Due] = {}  # insertion order: first due, first built
        self._shapes: dict[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]] = {}
        self._step_handle: asyncio.Handle | None = None

    @property
    def pending(self) -> int:
        """Devices whose discovery is due but not yet handed to the link."""
        return len(self._due)

    def announce_device(
        self,
        config: DeviceConfig,
        catalog: Catalog,
        state: Mapping[str, Any] | None,
    ) -> None:
        """Queue the device's discovery if what it depends on changed; the latest state wins,
        so a device due twice before its turn is built once."""
        if not self.enabled:
            return
        device_id = config.id
        # Called after every poll: decide from a few cheap lookups whether anything changed
        # before building any payload.
        signature = _signature(config, catalog, state)
        previous = self._announced.get(device_id)
        if previous and previous.signature == signature:
            self._due.pop(device_id, None)  # changed and back before its turn: nothing to send
            return
        self._due[device_id] = _Due(config, catalog, state, signature)
        self._schedule(0.0)

    def _schedule(self, delay: float) -> None:
        if self._step_handle is None and self._due:
            loop = asyncio.get_running_loop()
            self._step_handle = loop.call_later(delay, self._step)

    def _step(self) -> None:
        """Devices' configs for at most TURN_BUDGET_S per turn of the event loop, so polls'
        I/O runs in between; one device per turn would leave a busy loop idle-paced."""
        self._step_handle = None
        deadline = time.monotonic() + TURN_BUDGET_S
        while self._due:
            backlog = self._backlog()
            if backlog is None:
                return  # offline: the reconnect's reset() queues everything again
            if backlog >= LOW_WATER:
                self._schedule(RETRY_S)
                return
            device_id = next(iter(self._due))
            self._send(device_id, self._due.pop(device_id))
            if time.monotonic() >= deadline:
                break
        self._schedule(0.0)

    def _send(self, device_id: str, due: _Due) -> None:
        config, catalog, state = due.config, due.catalog, due.state
        entities = announced_entities(catalog, state, config.allow_commands)
        url = getattr(config, "url", None)
        device = device_block(
            self.ctx, catalog, device_id, config.display_name, state, str(url) if url else None
        )
        shape = self._shape(entities)
        self._clear_stale(device_id, shape)
        for entity in entities:
            payload = entity_payload(self.ctx, catalog, device_id, entity, device)
            self._publish(topic(self.ctx, entity.platform, device_id, entity.key), _encode(payload))
        self._announced[device_id] = Announcement(shape, due.signature)

    def _shape(self, entities: Iterable[EntityDescription]) -> tuple[tuple[str, str], ...]:
        shape = tuple(dict.fromkeys((e.platform, e.key) for e in entities))
        if len(self._shapes) >= MAX_SHAPES:
            self._shapes.clear()
        return self._shapes.setdefault(shape, shape)

    def _clear_stale(self, node: str, shape: tuple[tuple[str, str], ...]) -> None:
        previous = self._announced.get(node)
        if previous is None or previous.entities is shape:
            return
        for platform, key in set(previous.entities) - set(shape):
            self._clear(topic(self.ctx, platform, node, key))

    def forget_device(self, device_id: str) -> None:
        """Clear every config topic this agent published for the device."""
        self._due.pop(device_id, None)
        announced = self._announced.pop(device_id, None)
        for platform, key in announced.entities if announced else ():
            self._clear(topic(self.ctx, platform, device_id, key))

    def announce_bridge(self, entities: Iterable[EntityDescription]) -> None:
        """The bridge's own entities, at once: a few dozen, not worth a turn in the queue."""
        if not self.enabled:
            return
        node = f"bridge_{self.ctx.agent_id}"
        device = bridge_device(self.ctx)
        entities = list(entities)
        shape = self._shape(entities)
        self._clear_stale(node, shape)
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
            self._publish(topic(self.ctx, entity.platform, node, entity.key), _encode(config))
        self._announced[node] = Announcement(shape, ())

    def reset(self) -> None:
        """Forget signatures so that the next announce sends everything (HA restarted, or a
        reconnect); what is still queued stays queued and is sent once."""
        self._announced = {
            k: Announcement(v.entities, ("stale",)) for k, v in self._announced.items()
        }
        self._schedule(0.0)


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
