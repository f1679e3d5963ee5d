"""Clears what an earlier run published for devices that are no longer in the config.

A device removed while the agent runs (SIGHUP) is forgotten by the announcer directly. One
removed while the agent was stopped left retained discovery and state at the broker; the only
record of it is our previous retained `bridge/info`. On the first connect we read that back,
and for every device it lists that the config no longer has, we collect the retained
discovery configs under `{prefix}/+/{device}/+/config` and clear them, with its state and
availability.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from agent.catalog.topics import DiscoveryTopics, Topics
from agent.logs import get_logger
from agent.runtime.announcer import CLEAR_STATE_AFTER_S
from agent.runtime.mqtt import Inbound, MqttLink

log = get_logger("sweeper")


class StaleDeviceSweeper:
    def __init__(
        self,
        link: MqttLink,
        topics: Topics,
        discovery_prefix: str,
        current_ids: Callable[[], set[str]],
    ) -> None:
        self.link = link
        self.topics = topics
        self.discovery = DiscoveryTopics(discovery_prefix)
        self.current_ids = current_ids
        self.info_read = False
        self.sweeping: set[str] = set()

    def start(self) -> None:
        self.link.subscribe(self.topics.bridge_info)

    def handle(self, message: Inbound) -> bool:
        """True when the message was for the sweeper."""
        if message.topic == self.topics.bridge_info:
            if not self.info_read:
                self.info_read = True
                self._sweep(_device_ids(message.payload) - self.current_ids())
            return True
        node = self.discovery.parse_config(message.topic)
        if node is not None and node in self.sweeping:
            if message.payload:
                self.link.clear_retained(message.topic)
            return True
        return False

    def finish(self) -> None:
        """Stop listening: the retained configs arrived right after subscribing."""
        self.link.unsubscribe(self.topics.bridge_info)
        for device in self.sweeping:
            self.link.unsubscribe(self.discovery.device_configs(device))
        self.sweeping.clear()

    def _sweep(self, removed: set[str]) -> None:
        removed.discard("")
        if not removed:
            return
        log.info("clearing devices removed from the config", devices=sorted(removed))
        for device in removed:
            self.sweeping.add(device)
            self.link.subscribe(self.discovery.device_configs(device))
        # After the configs (cleared as they arrive), so that no entity gets an empty state.
        asyncio.get_running_loop().call_later(CLEAR_STATE_AFTER_S, self._clear_states, removed)

    def _clear_states(self, removed: set[str]) -> None:
        for device in removed - self.current_ids():
            self.link.clear_retained(self.topics.state(device))
            self.link.clear_retained(self.topics.availability(device))


def _device_ids(payload: bytes) -> set[str]:
    try:
        info: Any = json.loads(payload)
    except ValueError:
        return set()
    devices = info.get("devices") if isinstance(info, dict) else None
    if not isinstance(devices, list):
        return set()
    return {d["id"] for d in devices if isinstance(d, dict) and isinstance(d.get("id"), str)}
