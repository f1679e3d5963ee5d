"""The agent's one MQTT session (paho-mqtt 2.x), and what it guarantees across outages.

- Retained topics (state, availability, bridge) are kept as the latest payload per topic and
  never queued while the broker is away: on every (re)connect the whole set is published
  again, so a broker that lost its retained store, or an outage of any length, ends with
  every topic current and nothing stale replayed.
- Everything else (results, events, responses) goes through paho's queue, bounded by
  `mqtt.max_queued`.
- Subscriptions are remembered and made again on every connect.
Callbacks run on paho's network thread; `on_message` must hand work off, never block.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.config.settings import MqttSection
from agent.logs import get_logger

log = get_logger("mqtt")


@dataclass(frozen=True, slots=True)
class Inbound:
    topic: str
    payload: bytes
    response_topic: str | None = None
    correlation_data: bytes | None = None


class MqttLink:
    def __init__(
        self,
        settings: MqttSection,
        *,
        client_id: str,
        will_topic: str,
        on_message: Callable[[Inbound], None],
        on_connected: Callable[[], None],
        on_disconnected: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.will_topic = will_topic
        self._on_message = on_message
        self._on_connected = on_connected
        self._on_disconnected = on_disconnected
        self._retained: dict[str, bytes] = {}
        self._subscriptions: set[str] = set()
        self._lock = threading.Lock()
        self.connected = threading.Event()
        self.connects = 0
        self._stopping = False
        self.client = self._make_client(client_id)

    @property
    def v5(self) -> bool:
        return self.settings.protocol == "5"

    def _make_client(self, client_id: str) -> mqtt.Client:
        protocol = mqtt.MQTTv5 if self.v5 else mqtt.MQTTv311
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=protocol,
            clean_session=None if self.v5 else True,
        )
        client.enable_logger(None)  # paho's own logging stays quiet; we log what matters
        client.will_set(self.will_topic, b"offline", qos=1, retain=True)
        client.reconnect_delay_set(
            min_delay=max(1, int(self.settings.reconnect_min)),
            max_delay=max(1, int(self.settings.reconnect_max)),
        )
        client.max_queued_messages_set(self.settings.max_queued)
        if self.settings.username:
            password = self.settings.password
            client.username_pw_set(
                self.settings.username, password.get_secret_value() if password else None
            )
        if self.settings.tls:
            self._configure_tls(client)
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_message = self._handle_message
        return client

    def _configure_tls(self, client: mqtt.Client) -> None:
        client.tls_set(
            ca_certs=self.settings.ca_file,
            certfile=self.settings.cert_file,
            keyfile=self.settings.key_file,
            cert_reqs=ssl.CERT_REQUIRED,
        )
        if self.settings.tls_insecure:
            client.tls_insecure_set(True)

    def start(self) -> None:
        log.info("mqtt connecting", broker=f"{self.settings.host}:{self.settings.port}")
        self.client.connect_async(
            self.settings.host,
            self.settings.port,
            keepalive=self.settings.keepalive,
            clean_start=True if self.v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
        )
        self.client.loop_start()

    def stop(self, final: dict[str, bytes], timeout: float = 5.0) -> None:
        """Publish `final` retained payloads (offline markers), then disconnect cleanly."""
        infos = []
        for topic, payload in final.items():
            self._retained[topic] = payload
            if self.connected.is_set():
                infos.append(self.client.publish(topic, payload, qos=1, retain=True))
        for info in infos:
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError):
                break  # the connection went away meanwhile; the Last Will covers the bridge
        self._stopping = True
        self.client.disconnect()
        self.client.loop_stop()

    def subscribe(self, *topics: str) -> None:
        with self._lock:
            new = [t for t in topics if t not in self._subscriptions]
            self._subscriptions.update(new)
        if new and self.connected.is_set():
            self.client.subscribe([(t, 1) for t in new])

    def unsubscribe(self, topic: str) -> None:
        with self._lock:
            known = topic in self._subscriptions
            self._subscriptions.discard(topic)
        if known and self.connected.is_set():
            self.client.unsubscribe(topic)

    def publish_retained(self, topic: str, payload: bytes | str) -> None:
        data = payload.encode() if isinstance(payload, str) else payload
        with self._lock:  # pairs with _handle_connect: either it sends this, or we do
            self._retained[topic] = data
            connected = self.connected.is_set()
        if connected:
            self.client.publish(topic, data, qos=1, retain=True)

    def clear_retained(self, topic: str) -> None:
        """An empty retained payload deletes the topic at the broker (HA discovery removal)."""
        with self._lock:
            self._retained.pop(topic, None)
        self.client.publish(topic, b"", qos=1, retain=True)

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        retain: bool = False,
        correlation_data: bytes | None = None,
    ) -> None:
        properties = None
        if correlation_data is not None and self.v5:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.CorrelationData = correlation_data
        info = self.client.publish(topic, payload, qos=1, retain=retain, properties=properties)
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            log.warning("mqtt queue full, message dropped", topic=topic)

    def _handle_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        if reason.is_failure:
            log.error("mqtt connection refused", reason=str(reason))
            return
        self.connects += 1
        with self._lock:
            topics = sorted(self._subscriptions)
            self.connected.set()
            retained = list(self._retained.items())
        if topics:
            client.subscribe([(t, 1) for t in topics])
        for topic, payload in retained:
            client.publish(topic, payload, qos=1, retain=True)
        log.info("mqtt connected", broker=f"{self.settings.host}:{self.settings.port}")
        self._on_connected()

    def _handle_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        was_connected = self.connected.is_set()
        self.connected.clear()
        if was_connected and not self._stopping:
            log.warning("mqtt disconnected; reconnecting", reason=str(reason))
            if self._on_disconnected is not None:
                self._on_disconnected()

    def _handle_message(
        self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage
    ) -> None:
        props = getattr(message, "properties", None)
        response_topic = getattr(props, "ResponseTopic", None) if props else None
        correlation = getattr(props, "CorrelationData", None) if props else None
        payload = bytes(message.payload)
        self._on_message(Inbound(message.topic, payload, response_topic, correlation))
