"""Test harness: a real Mosquitto on a free loopback port, an MQTT probe, the agent in a thread.

Waiting is always on a condition (a message arrived, a port answers), never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from agent.config.settings import Kinds, LoadedConfig, Settings, build_settings
from agent.kinds import KINDS
from agent.runtime.service import AgentService
from edge_agent_sim.fleet import LoopThread

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    """Poll a condition (for things that publish no message, like a port opening)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Mosquitto:
    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.workdir = workdir
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        conf = self.workdir / f"mosquitto-{self.port}.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "max_queued_messages 100000\nset_tcp_nodelay true\n"
        )
        log = (self.workdir / f"mosquitto-{self.port}.log").open("ab")
        self.process = subprocess.Popen(
            [self.binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT
        )
        wait_until(lambda: port_open(self.port), 10, f"mosquitto on {self.port}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"


@dataclass
class Message:
    topic: str
    payload: bytes
    retain: bool
    correlation: bytes | None = None

    def json(self) -> Any:
        return json.loads(self.payload)

    @property
    def text(self) -> str:
        return self.payload.decode()


@dataclass
class Probe:
    """An MQTT client that records every message and lets tests wait for one."""

    port: int
    protocol: int = mqtt.MQTTv5
    messages: list[Message] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._cond = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=self.protocol)
        self.client.on_message = self._on_message
        self.client.on_socket_open = _no_delay
        connected = threading.Event()
        self.client.on_connect = lambda *a: connected.set()
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        assert connected.wait(10), "probe could not connect"

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        props = getattr(msg, "properties", None)
        correlation = getattr(props, "CorrelationData", None) if props else None
        with self._cond:
            self.messages.append(Message(msg.topic, msg.payload, bool(msg.retain), correlation))
            self._cond.notify_all()

    def subscribe(self, *topics: str) -> None:
        done = threading.Event()
        self.client.on_subscribe = lambda *a: done.set()
        # retainAsPublished: a live subscriber sees whether the agent set the retain flag.
        options: Any = 1
        if self.protocol == mqtt.MQTTv5:
            options = SubscribeOptions(qos=1, retainAsPublished=True)
        self.client.subscribe([(t, options) for t in topics])
        assert done.wait(10), "subscribe not acknowledged"

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        retain: bool = False,
        response_topic: str | None = None,
        correlation: bytes | None = None,
    ) -> None:
        props = None
        if response_topic:
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = response_topic
            if correlation is not None:
                props.CorrelationData = correlation
        self.client.publish(
            topic, payload, qos=1, retain=retain, properties=props
        ).wait_for_publish(10)

    def wait_for(
        self,
        topic: str,
        predicate: Callable[[Message], bool] | None = None,
        timeout: float = 15.0,
        since: int = 0,
    ) -> Message:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for message in self.messages[since:]:
                    if mqtt.topic_matches_sub(topic, message.topic) and (
                        predicate is None or predicate(message)
                    ):
                        return message
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = sorted({m.topic for m in self.messages})[:40]
                    raise AssertionError(f"no message on {topic} within {timeout}s; saw {seen}")
                self._cond.wait(remaining)

    def mark(self) -> int:
        with self._cond:
            return len(self.messages)

    def all(self, topic: str, since: int = 0) -> list[Message]:
        with self._cond:
            return [m for m in self.messages[since:] if mqtt.topic_matches_sub(topic, m.topic)]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class AgentThread:
    """The real AgentService on its own event loop thread, as `edge-agent run` would run it."""

    def __init__(self, settings: Settings, path: Path | None = None, kinds: Kinds = KINDS) -> None:
        self.loop_thread = LoopThread("agent")
        self.agent = AgentService(LoadedConfig(settings, path, []), kinds=kinds)
        self.future = asyncio.run_coroutine_threadsafe(self.agent.run(), self.loop_thread.loop)
        assert self.agent.running.wait(10), "agent did not start"

    def call(self, fn: Callable[[], Any]) -> Any:
        return self.loop_thread.call(fn)

    def run(self, coro: Any, timeout: float = 30) -> Any:
        return self.loop_thread.run(coro, timeout)

    def stop(self) -> None:
        if not self.future.done():
            self.agent.loop.call_soon_threadsafe(self.agent.request_stop)  # type: ignore[union-attr]
            try:
                self.future.result(20)
            except TimeoutError:
                self.loop_thread.loop.call_soon_threadsafe(_dump_tasks, self.loop_thread.loop)
                time.sleep(1)
                raise
        self.loop_thread.stop()


def _dump_tasks(loop: asyncio.AbstractEventLoop) -> None:
    for task in asyncio.all_tasks(loop):
        task.print_stack(limit=8)


def make_settings(
    broker_url: str, devices: list[dict[str, Any]], kinds: Kinds = KINDS, **sections: Any
) -> Settings:
    """Settings with a base topic and discovery prefix of their own, so tests sharing the
    session broker never see each other's retained messages."""
    unique = uuid.uuid4().hex[:8]
    agent = {"id": "test", "jitter": 0.0, **sections.pop("agent", {})}
    mqtt_section = {
        "url": broker_url,
        "base_topic": f"ea-{unique}",
        "client_id": f"edge-agent-test-{unique}",
        **sections.pop("mqtt", {}),
    }
    ha = {
        "discovery_prefix": f"ha-{unique}",
        "status_topic": f"ha-{unique}/status",
        **sections.pop("homeassistant", {}),
    }
    typed = [kinds[d["kind"]].config.model_validate(d) for d in devices]
    return build_settings(
        kinds, agent=agent, mqtt=mqtt_section, homeassistant=ha, devices=typed, **sections
    )


@contextlib.contextmanager
def running_agent(settings: Settings, kinds: Kinds = KINDS) -> Iterator[AgentThread]:
    runner = AgentThread(settings, kinds=kinds)
    try:
        yield runner
    finally:
        runner.stop()


def env_without_notify() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("NOTIFY_SOCKET", None)
    env.pop("WATCHDOG_USEC", None)
    return env


def _no_delay(client: Any, userdata: Any, sock: Any) -> None:
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
