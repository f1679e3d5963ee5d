"""What the bench sees on MQTT: every message the agent publishes (counted by kind of topic and
stamped on arrival), bridge requests, and device commands with their results."""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

INBOUND_SUFFIXES = ("/get", "/set")  # what the bench itself sends to the agent


def _no_delay(client: Any, userdata: Any, sock: Any) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@dataclass(slots=True)
class Seen:
    t: float
    category: str
    size: int  # topic + payload bytes
    device: str | None


@dataclass
class Command:
    transaction: str
    device: str
    kind: str
    command: str
    sim_key: str
    sent: float
    result_at: float | None = None
    ok: bool | None = None
    error: Any = None
    first_for_device: bool = False
    write_at: float | None = None
    agent_ms: float | None = None  # the result's own duration_ms: from dispatch to result


@dataclass
class Observer:
    """One MQTT 5 client subscribed to `{base}/#` and `{prefix}/#`."""

    port: int
    base: str
    prefix: str
    agent_id: str
    seen: list[Seen] = field(default_factory=list)
    first_state: dict[str, float] = field(default_factory=dict)
    last_state: dict[str, bytes] = field(default_factory=dict)
    discovery_first: dict[str, float] = field(default_factory=dict)
    bridge_online: float | None = None

    def __post_init__(self) -> None:
        self._lock = threading.Condition()
        self._responses: dict[str, tuple[float, dict[str, Any]]] = {}
        self._commands: dict[str, Command] = {}
        self._ids = itertools.count(1)
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.max_inflight_messages_set(0)
        # The measuring client must not add Nagle delays of its own: its PUBACKs for the
        # agent's messages would otherwise hold back the commands it sends.
        self.client.on_socket_open = _no_delay
        self.client.on_message = self._on_message
        connected = threading.Event()
        self.client.on_connect = lambda *a: connected.set()
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        if not connected.wait(10):
            raise RuntimeError("the bench's MQTT client could not connect")
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.subscribe([(f"{self.base}/#", 1), (f"{self.prefix}/#", 1)])
        if not subscribed.wait(10):
            raise RuntimeError("subscription not acknowledged")

    # -------------------------------------------------------------- inbound

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        now = time.monotonic()
        topic = message.topic
        payload = message.payload
        category, device = self._classify(topic)
        if category == "inbound":
            return
        with self._lock:
            self.seen.append(Seen(now, category, len(topic) + len(payload), device))
            if category == "state" and device is not None:
                self.first_state.setdefault(device, now)
                self.last_state[device] = payload
            elif category == "discovery" and payload:
                self.discovery_first.setdefault(topic, now)
            elif category == "bridge" and topic.endswith("/state") and payload == b"online":
                self.bridge_online = self.bridge_online or now
            elif category == "response":
                self._response(now, payload)
            elif category == "result":
                self._result(now, payload)
            self._lock.notify_all()

    def _classify(self, topic: str) -> tuple[str, str | None]:
        if topic.startswith(self.prefix + "/"):
            parts = topic.split("/")
            return ("discovery", parts[2] if len(parts) > 2 else None)
        parts = topic[len(self.base) + 1 :].split("/")
        if parts[0] == "bridge":
            if len(parts) > 3 and parts[2] == "request":
                return ("inbound", None)
            return ("response" if len(parts) > 3 and parts[2] == "response" else "bridge", None)
        device = parts[0]
        if len(parts) == 1:
            return ("state", device)
        if parts[1] in ("set", "get"):
            return ("inbound", device)
        if parts[1] in ("availability", "result"):
            return (parts[1], device)
        return ("other", device)

    def _response(self, now: float, payload: bytes) -> None:
        try:
            body = json.loads(payload)
        except ValueError:
            return
        transaction = body.get("transaction")
        if isinstance(transaction, str):
            self._responses[transaction] = (now, body)

    def _result(self, now: float, payload: bytes) -> None:
        try:
            body = json.loads(payload)
        except ValueError:
            return
        command = self._commands.get(str(body.get("transaction")))
        if command is not None and command.result_at is None:
            command.result_at = now
            command.ok = bool(body.get("ok"))
            command.error = body.get("error")
            command.agent_ms = body.get("duration_ms")

    # -------------------------------------------------------------- outbound

    def request(self, action: str, timeout: float = 30) -> tuple[float, dict[str, Any]]:
        """A bridge request; (seconds until the response, its data)."""
        transaction = f"bench-{next(self._ids)}"
        topic = f"{self.base}/bridge/{self.agent_id}/request/{action}"
        sent = time.monotonic()
        self.client.publish(topic, json.dumps({"transaction": transaction}), qos=1)
        deadline = sent + timeout
        with self._lock:
            while transaction not in self._responses:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no response to {action} within {timeout:g}s")
                self._lock.wait(remaining)
            at, body = self._responses.pop(transaction)
        if body.get("status") != "ok":
            raise RuntimeError(f"{action} failed: {body.get('error')}")
        return at - sent, body["data"]

    def send_command(
        self, device: str, kind: str, sim_key: str, command: str, params: dict[str, Any]
    ) -> Command:
        transaction = f"cmd-{next(self._ids)}"
        body = {"command": command, **params, "transaction": transaction}
        entry = Command(transaction, device, kind, command, sim_key, time.monotonic())
        with self._lock:
            self._commands[transaction] = entry
        entry.sent = time.monotonic()
        self.client.publish(f"{self.base}/{device}/set", json.dumps(body), qos=1)
        return entry

    def wait_results(self, commands: list[Command], timeout: float) -> int:
        """Wait until every command has its result; returns how many are still missing."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                missing = sum(1 for c in commands if c.result_at is None)
                remaining = deadline - time.monotonic()
                if missing == 0 or remaining <= 0:
                    return missing
                self._lock.wait(remaining)

    # -------------------------------------------------------------- reading

    def last_new_discovery(self) -> float:
        """When the latest discovery topic not seen before arrived (0.0: none yet)."""
        with self._lock:
            return max(self.discovery_first.values(), default=0.0)

    def mark(self) -> int:
        with self._lock:
            return len(self.seen)

    def between(self, start: int, end: int) -> list[Seen]:
        with self._lock:
            return self.seen[start:end]

    def counts(self, start: int, end: int) -> tuple[Counter[str], Counter[str]]:
        messages: Counter[str] = Counter()
        size: Counter[str] = Counter()
        for seen in self.between(start, end):
            messages[seen.category] += 1
            size[seen.category] += seen.size
        return messages, size

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
