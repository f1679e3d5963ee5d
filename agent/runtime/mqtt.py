"""The agent's one MQTT session (paho-mqtt 2.x), and what it guarantees across outages.

- Retained topics (availability, bridge, power) are kept as the latest payload per topic. They
  reach paho through a pump that keeps at most RETAINED_WINDOW of them unacknowledged; the rest
  wait as "dirty" topics, where a newer payload replaces an older one. So a burst (a reconnect's
  state topics) is never dropped and never piles up in memory, a slow broker sees each topic's
  latest value once, and on every (re)connect the whole set is sent again, so a broker that lost
  its retained store ends with every topic current. Device states and discovery configs go the
  same way but are not kept (`keep=False`): their owners publish them again after every connect.
- Everything else (results, events, responses) goes straight to paho's queue, bounded by
  `mqtt.max_queued`.
- Subscriptions are remembered and made again on every connect.
- Broker trouble is logged as structured events that say why: `mqtt connection refused`
  (cause `credentials`, `tls` or `broker`), `mqtt broker unreachable` (with the reason and when
  the next attempt is), `mqtt disconnected`. A publish or subscription the broker's ACL denies
  (an MQTT 5 reason code) is logged once per topic, never retried in a loop. paho's own log
  lines never reach the journal raw: its warnings and errors become `mqtt client` events.
Callbacks run on paho's network thread; `on_message` must hand work off, never block.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.config.settings import MqttSection
from agent.logs import get_logger

log = get_logger("mqtt")
RETAINED_WINDOW = 200  # retained publishes awaiting their PUBACK at once
# paho's QoS 1 window: room for the whole retained window plus results, so nothing waits in
# paho's own queue (each PUBACK rescans that queue).
INFLIGHT = RETAINED_WINDOW + 100
MAX_DENIED_TOPICS = 1000  # topics remembered as denied (each logged once); the rest are counted
# paho logs this on every failed reconnect cycle; our own events already say why, and when next.
_PAHO_NOISE = ("Client is not connected",)
# CONNACK reason codes that mean "your credentials": 3.1.1 return codes 4 and 5, MQTT 5 0x86,
# 0x87 and 0x8C (bad authentication method).
_CREDENTIAL_CODES = frozenset({4, 5, 0x86, 0x87, 0x8C})


class _PahoEvents(logging.Handler):
    """paho's stdlib log → structured events: warnings and errors only, minus known noise."""

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if not text.startswith(_PAHO_NOISE):
            log.warning("mqtt client", detail=text, paho_level=record.levelname.lower())


_paho_log = logging.getLogger("agent.mqtt.paho")
_paho_log.setLevel(logging.WARNING)  # paho's debug lines are not even formatted
_paho_log.propagate = False  # never Python's last-resort handler, which prints raw lines
_paho_log.addHandler(_PahoEvents())


@dataclass(frozen=True, slots=True)
class Inbound:
    topic: str
    payload: bytes
    response_topic: str | None = None
    correlation_data: bytes | None = None
    user_properties: tuple[tuple[str, str], ...] = ()  # MQTT 5, for the audit trail


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
        # Retained topics still to send, oldest first. An OrderedDict: taking from the front
        # of a plain dict rescans the deleted slots, quadratic over an 85,000-topic burst.
        self._dirty: OrderedDict[str, bytes] = OrderedDict()
        self._pumped: set[int] = set()  # message ids of retained publishes awaiting PUBACK
        self._acked_early: set[int] = set()
        self._sending = 0
        self._subscriptions: set[str] = set()
        self._lock = threading.Lock()
        self.connected = threading.Event()
        self.connects = 0
        self.denied = 0  # publishes and subscriptions the broker refused, for health
        self._denied_topics: set[tuple[str, str]] = set()
        self._sub_mids: dict[int, list[str]] = {}
        self._retry_delay: float | None = None  # mirrors paho's reconnect backoff
        self._failures = 0
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
        client.enable_logger(_paho_log)
        client.will_set(self.will_topic, b"offline", qos=1, retain=True)
        low, high = _backoff_bounds(self.settings)
        client.reconnect_delay_set(min_delay=low, max_delay=high)
        client.max_queued_messages_set(self.settings.max_queued + RETAINED_WINDOW + INFLIGHT)
        client.max_inflight_messages_set(INFLIGHT)
        if self.settings.username:
            password = self.settings.password
            client.username_pw_set(
                self.settings.username, password.get_secret_value() if password else None
            )
        if self.settings.tls:
            self._configure_tls(client)
        client.on_connect = self._handle_connect
        client.on_connect_fail = self._handle_connect_fail
        client.on_disconnect = self._handle_disconnect
        client.on_subscribe = self._handle_subscribe
        client.on_message = self._handle_message
        client.on_publish = self._handle_publish
        client.on_socket_open = _no_delay
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
        deadline = time.monotonic() + timeout
        for info in infos:
            try:
                info.wait_for_publish(max(0.1, deadline - time.monotonic()))
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
            self._subscribe(new)

    def unsubscribe(self, topic: str) -> None:
        with self._lock:
            known = topic in self._subscriptions
            self._subscriptions.discard(topic)
        if known and self.connected.is_set():
            self.client.unsubscribe(topic)

    def publish_retained(self, topic: str, payload: bytes | str, *, keep: bool = True) -> None:
        """`keep=False` for payloads their owner publishes again after every connect
        (discovery, about 30 KB a device, and device states, about 3 KB, need not stay in
        memory)."""
        data = payload.encode() if isinstance(payload, str) else payload
        with self._lock:
            if keep:
                self._retained[topic] = data
            if self.connected.is_set():
                self._mark_dirty(topic, data)
        self._pump()

    def retained_backlog(self) -> int | None:
        """Retained publishes handed over and not yet acknowledged; None while offline, when
        what is handed over without `keep` never reaches the broker."""
        if not self.connected.is_set():
            return None
        with self._lock:
            return len(self._dirty) + len(self._pumped) + self._sending

    def clear_retained(self, topic: str) -> None:
        """An empty retained payload deletes the topic at the broker (HA discovery removal)."""
        with self._lock:
            self._retained.pop(topic, None)
            if self.connected.is_set():
                self._mark_dirty(topic, b"")
        self._pump()

    def _mark_dirty(self, topic: str, data: bytes) -> None:
        self._dirty[topic] = data
        self._dirty.move_to_end(topic)  # first dirtied, first sent

    def _pump(self) -> None:
        """Hand dirty retained topics to paho while fewer than RETAINED_WINDOW await a PUBACK.

        paho is called outside our lock: it calls back (on_publish) holding its own locks,
        and taking ours there while we held ours around paho would deadlock.
        """
        while True:
            with self._lock:
                busy = len(self._pumped) + self._sending
                if not self._dirty or busy >= RETAINED_WINDOW or not self.connected.is_set():
                    return
                topic, data = self._dirty.popitem(last=False)
                self._sending += 1
            info = self.client.publish(topic, data, qos=1, retain=True)
            with self._lock:
                self._sending -= 1
                if info.rc != mqtt.MQTT_ERR_SUCCESS:
                    if topic not in self._dirty:  # again after the next PUBACK
                        self._dirty[topic] = data
                        self._dirty.move_to_end(topic, last=False)
                    return
                if info.mid in self._acked_early:
                    self._acked_early.discard(info.mid)
                else:
                    self._pumped.add(info.mid)
                if not self._sending:
                    self._acked_early.clear()  # the rest were results' and events' PUBACKs

    def _subscribe(self, topics: list[str]) -> None:
        _, mid = self.client.subscribe([(t, 1) for t in topics])
        if mid is not None:
            self._sub_mids[mid] = topics

    def _handle_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, props: Any
    ) -> None:
        topics = self._sub_mids.pop(mid, [])
        for index, reason in enumerate(reasons):
            if isinstance(reason, ReasonCode) and reason.is_failure:
                topic = topics[index] if index < len(topics) else "?"
                self._report_denied("subscribe", topic, reason)

    def _report_denied(self, action: str, topic: str, reason: ReasonCode) -> None:
        """Once per topic: a broker that denies a topic denies it every time."""
        self.denied += 1
        key = (action, topic)
        if key in self._denied_topics:
            return
        if len(self._denied_topics) < MAX_DENIED_TOPICS:
            self._denied_topics.add(key)
        log.error(
            f"mqtt {action} denied",
            topic=topic,
            reason=str(reason),
            reason_code=reason.value,
            hint=f"the broker's ACL does not let user {self.settings.username!r} {action} "
            "there; later denials of this topic are counted, not logged",
        )

    def _handle_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any
    ) -> None:
        if isinstance(reason, ReasonCode) and reason.is_failure:
            # paho still holds the message while it calls back: its topic is there.
            message = getattr(client, "_out_messages", {}).get(mid)
            self._report_denied("publish", getattr(message, "topic", "?"), reason)
        with self._lock:
            known = mid in self._pumped
            self._pumped.discard(mid)
            if not known and self._sending:
                self._acked_early.add(mid)  # acknowledged before _pump could record it
        if known:
            self._pump()

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
            cause = "credentials" if reason.value in _CREDENTIAL_CODES else "broker"
            log.error("mqtt connection refused", cause=cause, reason=str(reason), **self._retry())
            return
        self.connects += 1
        self._retry_delay = None
        self._failures = 0
        with self._lock:
            topics = sorted(self._subscriptions)
            self.connected.set()
            self._pumped.clear()  # unacknowledged ones from the last session are sent again
            self._acked_early.clear()
            self._dirty = OrderedDict(self._retained)
        if topics:
            self._subscribe(topics)
        self._pump()
        log.info("mqtt connected", broker=f"{self.settings.host}:{self.settings.port}")
        self._on_connected()

    def _handle_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        was_connected = self.connected.is_set()
        self.connected.clear()
        if was_connected and not self._stopping:
            log.warning("mqtt disconnected", reason=str(reason), **self._retry())
            if self._on_disconnected is not None:
                self._on_disconnected()

    def _handle_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        """paho calls this inside its `except OSError`, so the exception says why."""
        cause, reason = describe_failure(sys.exc_info()[1])
        event = "mqtt connection refused" if cause == "tls" else "mqtt broker unreachable"
        self._failures += 1
        log.error(event, cause=cause, reason=reason, attempt=self._failures, **self._retry())

    def _retry(self) -> dict[str, Any]:
        """When paho tries again: its backoff starts at reconnect_min after a success and
        doubles after each failure up to reconnect_max, as reconnect_delay_set describes."""
        low, high = _backoff_bounds(self.settings)
        delay = low if self._retry_delay is None else min(self._retry_delay * 2, high)
        self._retry_delay = delay
        at = datetime.now(UTC) + timedelta(seconds=delay)
        return {
            "broker": f"{self.settings.host}:{self.settings.port}",
            "retry_in_s": delay,
            "next_retry": at.isoformat(timespec="seconds"),
        }

    def _handle_message(
        self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage
    ) -> None:
        props = getattr(message, "properties", None)
        response_topic = getattr(props, "ResponseTopic", None) if props else None
        correlation = getattr(props, "CorrelationData", None) if props else None
        user = tuple(getattr(props, "UserProperty", None) or ()) if props else ()
        payload = bytes(message.payload)
        self._on_message(Inbound(message.topic, payload, response_topic, correlation, user))


def _backoff_bounds(settings: MqttSection) -> tuple[int, int]:
    return max(1, int(settings.reconnect_min)), max(1, int(settings.reconnect_max))


def describe_failure(exc: BaseException | None) -> tuple[str, str]:
    """A failed connection attempt → (cause, reason) an operator can act on."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "tls", f"the broker's certificate is not trusted: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return "tls", f"TLS handshake failed: {exc.reason or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return "unreachable", "connection refused: nothing listens on that port"
    if isinstance(exc, socket.gaierror):
        return "unreachable", f"host name not resolved: {exc.strerror}"
    if isinstance(exc, TimeoutError):
        return "unreachable", "timed out"
    if isinstance(exc, OSError):
        return "unreachable", exc.strerror or type(exc).__name__
    return "unreachable", "connection failed"


def _no_delay(client: mqtt.Client, userdata: Any, sock: Any) -> None:
    """Without TCP_NODELAY each small publish can wait ~40 ms for the broker's delayed ACK."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
