"""The CLI's MQTT session with a running agent: bridge requests, device commands, retained state.

It is the agent's own MqttLink (same TLS, auth and protocol settings) without a Last Will.
Requests carry a transaction id and, on MQTT 5, a response topic of this session with
correlation data; an answer is matched on either, so a 3.1.1 broker works too.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.catalog.topics import Topics
from agent.config.settings import Settings
from agent.runtime.mqtt import Inbound, MqttLink


class BridgeError(Exception):
    """The broker or the agent cannot be reached: the message says which and what to do."""


class BridgeClient:
    def __init__(self, settings: Settings, *, timeout: float = 5.0) -> None:
        self.settings = settings
        self.topics = Topics(settings.mqtt.base_topic, settings.agent.id)
        self.timeout = timeout
        self.session = uuid.uuid4().hex[:12]
        self.reply_topic = self.topics.cli_reply(self.session)
        self._cond = threading.Condition()
        self._latest: dict[str, bytes] = {}  # retained topics: the newest payload
        self._replies: list[Inbound] = []  # on answer topics, while a call waits
        self._answer_topics: set[str] = {self.reply_topic}
        self._barriers: set[str] = set()
        self.link = MqttLink(
            settings.mqtt,
            client_id=f"edge-agent-cli-{self.session}",
            will_topic=self.reply_topic,
            on_message=self._on_message,
            on_connected=lambda: None,
        )
        self.link.client.will_clear()  # a CLI that goes away must not mark the agent offline
        self.link.client.disable_logger()  # paho's reconnect chatter is not for a CLI's stderr

    # session ------------------------------------------------------------------------

    def connect(self) -> None:
        self.link.subscribe(self.reply_topic)
        self.link.start()
        if not self.link.connected.wait(self.timeout):
            self.link.stop({})
            mqtt_url = self.settings.mqtt.url
            raise BridgeError(
                f"cannot reach the MQTT broker {mqtt_url} within {self.timeout:g}s "
                "(check mqtt.url and credentials in the config)"
            )
        self.sync()

    def close(self) -> None:
        self.link.stop({})

    def __enter__(self) -> BridgeClient:
        self.connect()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def watch(self, *topics: str) -> None:
        """Subscribe and wait until the broker has delivered their retained messages."""
        self.link.subscribe(*topics)
        self.sync()

    def sync(self) -> None:
        """A message to ourselves: once it is back, everything the broker queued for this
        session before it (retained messages of earlier subscriptions) has arrived."""
        marker = uuid.uuid4().hex
        with self._cond:
            self._barriers.add(marker)
        self.link.publish(self.reply_topic, json.dumps({"sync": marker}))
        if not self._wait(lambda: marker not in self._barriers, self.timeout):
            raise BridgeError(f"the broker {self.settings.mqtt.url} stopped answering")

    def latest(self, topic: str) -> bytes | None:
        with self._cond:
            return self._latest.get(topic)

    def latest_json(self, topic: str) -> Any:
        payload = self.latest(topic)
        if not payload:
            return None
        try:
            return json.loads(payload)
        except ValueError:
            return None

    # requests -----------------------------------------------------------------------

    def agent_online(self) -> bool:
        self.watch(self.topics.bridge_state)
        return self.latest(self.topics.bridge_state) == b"online"

    def request(self, action: str, body: dict[str, Any] | None = None) -> Any:
        """One bridge request; its `data`, or BridgeError with the agent's error."""
        response = self.call(
            self.topics.request(action), body or {}, self.topics.response(action), self.timeout
        )
        if response.get("status") != "ok":
            raise BridgeError(f"the agent refused {action}: {response.get('error')}")
        return response.get("data")

    def command(self, device: str, command: str, params: dict[str, Any], timeout: float) -> Any:
        """A device command through the agent: its one result."""
        body = {"command": command, **params}
        return self.call(self.topics.set(device), body, self.topics.result(device), timeout)

    def call(self, topic: str, body: dict[str, Any], answer_topic: str, timeout: float) -> Any:
        transaction = f"cli-{self.session}-{uuid.uuid4().hex[:8]}"
        correlation = transaction.encode()
        with self._cond:
            self._answer_topics.add(answer_topic)
        self.watch(answer_topic)
        self._publish_request(topic, {**body, "transaction": transaction}, correlation)

        def answered() -> Inbound | None:
            for reply in self._replies:
                if reply.correlation_data == correlation or _transaction(reply) == transaction:
                    return reply
            return None

        try:
            if not self._wait(lambda: answered() is not None, timeout):
                raise BridgeError(
                    f"no answer from agent {self.settings.agent.id!r} within {timeout:g}s on "
                    f"{answer_topic}; is it running with this device? (edge-agent status)"
                )
            reply = answered()
        finally:
            with self._cond:
                self._replies.clear()  # a long --watch keeps nothing it no longer waits for
        assert reply is not None
        return json.loads(reply.payload)

    def _publish_request(self, topic: str, body: dict[str, Any], correlation: bytes) -> None:
        properties = None
        if self.link.v5:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.ResponseTopic = self.reply_topic
            properties.CorrelationData = correlation
        info = self.link.client.publish(topic, json.dumps(body), qos=1, properties=properties)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise BridgeError(f"could not publish to {topic}: {mqtt.error_string(info.rc)}")

    # inbound ------------------------------------------------------------------------

    def _on_message(self, message: Inbound) -> None:
        with self._cond:
            if message.topic == self.reply_topic and message.correlation_data is None:
                self._barriers.discard(_sync_marker(message.payload))
            elif message.topic in self._answer_topics:
                self._replies.append(message)
            else:
                self._latest[message.topic] = message.payload
            self._cond.notify_all()

    def _wait(self, condition: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not condition():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True


def _transaction(message: Inbound) -> Any:
    try:
        body = json.loads(message.payload)
    except ValueError:
        return None
    return body.get("transaction") if isinstance(body, dict) else None


def _sync_marker(payload: bytes) -> str | None:
    try:
        body = json.loads(payload)
    except ValueError:
        return None
    return body.get("sync") if isinstance(body, dict) else None
