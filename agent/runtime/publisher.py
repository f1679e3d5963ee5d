"""The one way out to MQTT: workers and the agent hand values here; this module chooses the
topic, encodes, de-duplicates and says what is retained.

`publish_state` is the single place that decides whether a device's new state goes out: a
per-device publish filter (debounce, throttle, deadbands) belongs there.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agent.catalog.topics import Topics
from agent.logs import get_logger, redact_text
from agent.runtime.mqtt import Inbound, MqttLink

if TYPE_CHECKING:
    from agent.runtime.announcer import Announcer
    from agent.runtime.worker import DeviceWorker

log = get_logger("agent")


class Publisher:
    def __init__(
        self,
        link: MqttLink,
        topics: Topics,
        announcer: Announcer,
        *,
        availability_changed: Callable[[], None],
        audit_enabled: Callable[[], bool],
    ) -> None:
        self.link = link
        self.topics = topics
        self.announcer = announcer
        self.availability_changed = availability_changed
        self.audit_enabled = audit_enabled  # read each time: a reload may turn it on
        self._sent: dict[str, tuple[bytes, float]] = {}  # device → last state payload, when

    # what workers hand over ------------------------------------------------------------

    def publish_state(self, device: DeviceWorker, state: dict[str, Any]) -> None:
        """A poll's state: discovery follows it (dynamic entities, device info); the state
        itself goes out when it changed or has not been refreshed for `state_refresh`."""
        self.announcer.announce_device(device.config, device.kind.catalog, state)
        payload = encode(state)
        now = time.monotonic()
        sent = self._sent.get(device.id)
        if sent is not None and sent[0] == payload and now - sent[1] < device.state_refresh:
            return
        self._sent[device.id] = (payload, now)
        self.link.publish_retained(self.topics.state(device.id), payload)

    def republish_state(self, device: DeviceWorker) -> None:
        """The last state again, changed or not (Home Assistant restarted)."""
        if device.state is not None:
            self.link.publish_retained(self.topics.state(device.id), encode(device.state))

    def forget(self, device_id: str) -> None:
        """A device removed or restarted with a new config: its next state goes out."""
        self._sent.pop(device_id, None)

    def publish_availability(self, device: DeviceWorker, online: bool) -> None:
        self.link.publish_retained(
            self.topics.availability(device.id), b"online" if online else b"offline"
        )
        self.availability_changed()

    def publish_raw(self, device: DeviceWorker, raw: dict[str, Any]) -> None:
        for endpoint, body in raw.items():
            self.link.publish(self.topics.raw(device.id, endpoint), encode(body))

    def publish_events(self, device: DeviceWorker, events: list[dict[str, Any]]) -> None:
        for event in events:
            log.info("device event", device=device.id, detail=event)
            self.link.publish(self.topics.event(device.id), encode(event))

    def clear_device(self, device_id: str) -> None:
        for topic in (self.topics.state(device_id), self.topics.availability(device_id)):
            self.link.clear_retained(topic)

    # the bridge ------------------------------------------------------------------------

    def publish_bridge_state(self, online: bool) -> None:
        self.link.publish_retained(self.topics.bridge_state, b"online" if online else b"offline")

    def publish_info(self, info: dict[str, Any]) -> None:
        self.link.publish_retained(self.topics.bridge_info, encode(info))

    def publish_site_energy(self, site: dict[str, Any]) -> None:
        self.link.publish_retained(self.topics.energy, encode(site))

    def publish_power_state(self, payload: bytes) -> None:
        self.link.publish_retained(self.topics.power, payload)

    def publish_audit(self, entry: dict[str, Any]) -> None:
        if self.audit_enabled():
            self.link.publish(self.topics.audit, redact_text(json.dumps(entry, default=str)))

    def reply(self, topic: str, body: dict[str, Any], message: Inbound | None) -> None:
        """Every answer: on its topic, and on the MQTT 5 response topic when one was given."""
        payload = redact_text(json.dumps(body, default=str)).encode()
        self.link.publish(topic, payload)
        if message is not None and message.response_topic:
            self.link.publish(
                message.response_topic, payload, correlation_data=message.correlation_data
            )


def encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), default=str).encode()
