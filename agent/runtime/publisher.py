"""The one way out to MQTT: workers and the agent hand values here; this module chooses the
topic, encodes, de-duplicates and says what is retained.

`publish_state` is the single place that decides whether a device's new state goes out: it
applies the device's publish filter (agent.catalog.filters) and re-checks what the filter holds.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agent.catalog.filters import Decision, encode
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
        self._rechecks: dict[str, asyncio.TimerHandle] = {}  # device → its held state's due

    # what workers hand over ------------------------------------------------------------

    def publish_state(
        self, device: DeviceWorker, state: dict[str, Any], *, force: bool = False
    ) -> None:
        """A poll's state: discovery follows it (dynamic entities, device info); the device's
        publish filter (deadbands, debounce, throttle, max interval) says what goes out and
        when. `force`: a command's follow-up poll, published at once."""
        self.announcer.announce_device(device.config, device.kind.catalog, state)
        self._apply(device, device.publish_filter.offer(state, force=force))

    def announce(self, device: DeviceWorker) -> None:
        """Discovery for a device with no new state (its first poll failed): its entities
        exist, unavailable, until it answers."""
        self.announcer.announce_device(device.config, device.kind.catalog, device.state)

    def republish_state(self, device: DeviceWorker) -> None:
        """The last state again, changed or not (Home Assistant restarted)."""
        if device.state is not None:
            retained = device.publish_filter.retained_state(device.state)
            self._send_state(device, encode(retained))

    def resend_published(self, device: DeviceWorker) -> None:
        """After a (re)connect: the state last sent, again. The link does not keep the states'
        payloads (~3 KB a device, for the whole run): the filter keeps what it sent anyway, so
        that is encoded again."""
        published = device.publish_filter.published
        if published is not None:
            self._send_state(device, encode(published))

    def forget(self, device_id: str) -> None:
        """A device removed or restarted with a new config: nothing held for it goes out."""
        self._cancel_recheck(device_id)

    def _apply(self, device: DeviceWorker, decision: Decision) -> None:
        for payload in decision.payloads:
            self._send_state(device, payload)
        self._cancel_recheck(device.id)
        if decision.recheck_at is not None:
            # recheck_at is on the filter's clock, which is the only one it answers to
            delay = max(0.0, decision.recheck_at - device.publish_filter.clock())
            loop = asyncio.get_running_loop()
            self._rechecks[device.id] = loop.call_later(delay, self._due, device)

    def _send_state(self, device: DeviceWorker, payload: bytes) -> None:
        # not kept by the link: resend_published sends it again after every connect
        self.link.publish_retained(self.topics.state(device.id), payload, keep=False)

    def _cancel_recheck(self, device_id: str) -> None:
        timer = self._rechecks.pop(device_id, None)
        if timer is not None:
            timer.cancel()

    def _due(self, device: DeviceWorker) -> None:
        """A held state's debounce or throttle ran out."""
        self._rechecks.pop(device.id, None)
        self._apply(device, device.publish_filter.due())

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
