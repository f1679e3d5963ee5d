"""Broker trouble in the journal: structured events that say why, never paho's raw lines.

The agent runs as `edge-agent run` in a subprocess with JSON logs, as systemd runs it, and
every line it writes to stderr must be one JSON event.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.harness import REPO, env_without_notify, free_port
from tests.test_mqtt_tls_auth import PASSWORD, USER, SecureMosquitto, certs, untrusted_ca

__all__ = ["certs"]  # the fixture, shared with the TLS tests


class AgentProcess:
    """`edge-agent run` with its stderr read line by line, each line parsed as JSON."""

    def __init__(self, config: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "-c", str(config)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env_without_notify(),
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.put(line.rstrip("\n"))

    def events(self, name: str, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        """Wait until `count` events called `name` have been logged; return them."""
        found = [e for e in map(_json, self.seen) if e.get("event") == name]
        deadline = time.monotonic() + timeout
        while len(found) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{len(found)} of {count} {name!r} in {self.seen[-10:]}")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            self.seen.append(line)
            event = _json(line)
            if event.get("event") == name:
                found.append(event)
        return found

    def stop(self) -> list[str]:
        self.process.terminate()
        self.process.wait(20)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return self.seen


def _json(line: str) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def write_config(tmp_path: Path, mqtt: dict[str, Any]) -> Path:
    lines = ['[agent]\nid = "events"\nlog_format = "json"\n', "[mqtt]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in mqtt.items()]
    path = tmp_path / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


def assert_only_json(lines: list[str]) -> None:
    raw = [line for line in lines if line and not _json(line)]
    assert raw == [], f"lines that are not structured events: {raw[:5]}"
    assert not any("Client is not connected" in line for line in lines)


def test_an_unreachable_broker_is_logged_with_the_reason_and_the_next_retry(
    tmp_path: Path,
) -> None:
    port = free_port()  # nothing listens there
    config = write_config(
        tmp_path, {"url": f"mqtt://127.0.0.1:{port}", "reconnect_min": 1, "reconnect_max": 2}
    )
    agent = AgentProcess(config)
    try:
        first, second, third = agent.events("mqtt broker unreachable", 3)
    finally:
        lines = agent.stop()
    assert first["cause"] == "unreachable"
    assert first["reason"] == "connection refused: nothing listens on that port"
    assert first["broker"] == f"127.0.0.1:{port}"
    assert [e["attempt"] for e in (first, second, third)] == [1, 2, 3]
    assert [e["retry_in_s"] for e in (first, second, third)] == [1, 2, 2]  # doubled, capped
    logged_at = datetime.fromisoformat(first["timestamp"].replace("Z", "+00:00"))
    retry_at = datetime.fromisoformat(first["next_retry"])
    assert 0 <= (retry_at - logged_at).total_seconds() <= 2
    assert_only_json(lines)


def refusals(
    tmp_path: Path, certs: Path, mqtt: dict[str, Any], count: int
) -> tuple[list[dict[str, Any]], list[str]]:
    """`count` `mqtt connection refused` events from an agent facing the TLS+password broker,
    and every line it logged."""
    broker = SecureMosquitto(tmp_path, certs)
    broker.start()
    try:
        settings = {"url": f"mqtts://127.0.0.1:{broker.port}", "username": USER, **mqtt}
        agent = AgentProcess(write_config(tmp_path, settings))
        try:
            events = agent.events("mqtt connection refused", count)
        finally:
            lines = agent.stop()
    finally:
        broker.stop()
    return events, lines


def test_bad_credentials_are_logged_as_refused_with_their_cause(
    tmp_path: Path, certs: Path
) -> None:
    wrong = {
        "ca_file": str(certs / "ca.pem"),
        "password": "not-the-password",
        "reconnect_min": 1,
        "reconnect_max": 1,
    }
    (first, _), lines = refusals(tmp_path, certs, wrong, 2)
    assert first["cause"] == "credentials"
    assert first["reason"] in ("Bad user name or password", "Not authorized")
    assert first["retry_in_s"] == 1 and first["next_retry"]
    assert "not-the-password" not in "\n".join(lines)
    assert_only_json(lines)


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_an_untrusted_broker_certificate_is_logged_as_a_tls_refusal(
    tmp_path: Path, certs: Path, protocol: str
) -> None:
    other = untrusted_ca(tmp_path)
    untrusting = {"ca_file": str(other / "ca.pem"), "password": PASSWORD, "protocol": protocol}
    (refused,), lines = refusals(tmp_path, certs, untrusting, 1)
    assert refused["cause"] == "tls"
    assert refused["reason"].startswith("the broker's certificate is not trusted")
    assert refused["retry_in_s"] == 1
    assert_only_json(lines)
