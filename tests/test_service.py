"""The agent as a service: `edge-agent run` in a subprocess, signals, sd_notify, broker loss."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_agent_sim.fleet import SimFleet
from tests.harness import (
    REPO,
    AgentThread,
    Mosquitto,
    Probe,
    env_without_notify,
    make_settings,
    wait_until,
)


def write_config(path: Path, broker: Mosquitto, base: str, devices: list[dict[str, Any]]) -> Path:
    lines = [
        "[agent]",
        'id = "svc"',
        "jitter = 0.0",
        "[mqtt]",
        f'url = "{broker.url}"',
        f'base_topic = "{base}"',
        "[homeassistant]",
        f'discovery_prefix = "{base}-ha"',
        f'status_topic = "{base}-ha/status"',
    ]
    for device in devices:
        lines.append("[[devices]]")
        lines.extend(f"{k} = {json.dumps(v)}" for k, v in device.items())
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


def rig(fleet: SimFleet, index: int) -> dict[str, Any]:
    device = fleet.devices[index]
    return {
        "id": f"svc-rig{index + 1}",
        "kind": "xmrig",
        "url": device.url,
        "token": device.model.token,
        "poll_interval": "1s",
    }


class Service:
    def __init__(self, config: Path, env: dict[str, str] | None = None) -> None:
        self.log = (config.parent / "agent.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "-c", str(config)],
            cwd=REPO,
            env=env or env_without_notify(),
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    def wait(self, timeout: float = 20) -> int:
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.log.close()


@pytest.fixture
def service_setup(
    tmp_path: Path, broker: Mosquitto, xmrig_fleet: SimFleet, probe: Probe
) -> Iterator[tuple[Path, str, Probe]]:
    base = f"svc-{tmp_path.name[-12:]}".replace("_", "-")
    config = write_config(tmp_path / "config.toml", broker, base, [rig(xmrig_fleet, 0)])
    probe.subscribe(f"{base}/#", f"{base}-ha/#")
    yield config, base, probe


def test_sigterm_publishes_offline_and_exits_zero(
    service_setup: tuple[Path, str, Probe],
) -> None:
    config, base, probe = service_setup
    service = Service(config)
    try:
        probe.wait_for(f"{base}/svc-rig1/availability", lambda m: m.text == "online")
        probe.wait_for(f"{base}/bridge/svc/state", lambda m: m.text == "online")
        mark = probe.mark()
        service.signal(signal.SIGTERM)
        assert service.wait() == 0
        probe.wait_for(f"{base}/bridge/svc/state", lambda m: m.text == "offline", since=mark)
        probe.wait_for(f"{base}/svc-rig1/availability", lambda m: m.text == "offline", since=mark)
    finally:
        service.kill()


def test_sighup_adds_and_removes_devices_without_reconnecting(
    service_setup: tuple[Path, str, Probe], broker: Mosquitto, xmrig_fleet: SimFleet
) -> None:
    config, base, probe = service_setup
    service = Service(config)
    try:
        probe.wait_for(f"{base}/svc-rig1/availability", lambda m: m.text == "online")
        probe.wait_for(f"{base}-ha/sensor/svc-rig1/hashrate_10s/config")
        mark = probe.mark()
        write_config(config, broker, base, [rig(xmrig_fleet, 1)])
        service.signal(signal.SIGHUP)
        probe.wait_for(f"{base}/svc-rig2/availability", lambda m: m.text == "online", since=mark)
        probe.wait_for(
            f"{base}-ha/sensor/svc-rig1/hashrate_10s/config", lambda m: m.payload == b"", since=mark
        )
        probe.wait_for(f"{base}/svc-rig1", lambda m: m.payload == b"", since=mark)
        mark = probe.mark()
        probe.publish(f"{base}/bridge/svc/request/health", "{}")
        health = probe.wait_for(f"{base}/bridge/svc/response/health", since=mark).json()
        assert health["data"]["mqtt_connects"] == 1  # the session survived the reload
        assert health["data"]["devices"] == 1
    finally:
        service.signal(signal.SIGTERM)
        service.wait()
        service.kill()


def test_sighup_with_a_broken_config_keeps_running(
    service_setup: tuple[Path, str, Probe],
) -> None:
    config, base, probe = service_setup
    service = Service(config)
    try:
        probe.wait_for(f"{base}/svc-rig1/availability", lambda m: m.text == "online")
        good = config.read_text()
        config.write_text(good + "\n[bogus]\nx = 1\n")
        service.signal(signal.SIGHUP)
        log_path = config.parent / "agent.log"
        wait_until(lambda: b"reload refused" in log_path.read_bytes(), 10, "reload refusal")
        mark = probe.mark()
        probe.publish(f"{base}/bridge/svc/request/health", "{}")
        assert (
            probe.wait_for(f"{base}/bridge/svc/response/health", since=mark).json()["data"][
                "devices"
            ]
            == 1
        )
    finally:
        service.signal(signal.SIGTERM)
        assert service.wait() == 0
        service.kill()


def test_invalid_config_refuses_to_start_with_every_problem(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[mqtt]\nurl = "http://nope"\n[[devices]]\nid = "Bad Id"\nkind = "xmrig"\n')
    done = subprocess.run(
        [sys.executable, "-m", "agent", "run", "-c", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 78
    assert "mqtt.url" in done.stderr
    assert "devices[0] (Bad Id).id" in done.stderr
    assert "devices[0] (Bad Id).url" in done.stderr


def test_sd_notify_ready_and_watchdog(
    service_setup: tuple[Path, str, Probe], tmp_path: Path
) -> None:
    config, _, _ = service_setup
    address = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(address)
    listener.settimeout(15)
    env = env_without_notify()
    env.update(NOTIFY_SOCKET=address, WATCHDOG_USEC="400000")
    service = Service(config, env)
    try:
        messages: list[str] = []
        while not any("WATCHDOG=1" in m for m in messages):
            messages.append(listener.recv(4096).decode())
        assert any("READY=1" in m for m in messages)
        service.signal(signal.SIGTERM)
        while not any("STOPPING=1" in m for m in messages):
            messages.append(listener.recv(4096).decode())
        assert service.wait() == 0
    finally:
        listener.close()
        service.kill()


def test_broker_restart_resumes_state_without_duplicate_subscriptions(
    own_broker: Mosquitto, xmrig_fleet: SimFleet
) -> None:
    settings = make_settings(
        own_broker.url,
        [{**rig(xmrig_fleet, 0), "id": "rig1"}],
        mqtt={"reconnect_min": 1, "reconnect_max": 2},
    )
    base = settings.mqtt.base_topic
    runner = AgentThread(settings)
    probe = Probe(own_broker.port)
    try:
        probe.subscribe(f"{base}/#")
        probe.wait_for(f"{base}/rig1")
        own_broker.stop()
        probe.close()
        polls = runner.agent.workers["rig1"].stats.ok
        wait_until(lambda: runner.agent.workers["rig1"].stats.ok > polls + 1, 10, "polling on")
        own_broker.start()
        probe = Probe(own_broker.port)
        probe.subscribe(f"{base}/#")
        # The restarted broker kept nothing: everything seen now was published again.
        probe.wait_for(f"{base}/bridge/test/state", lambda m: m.text == "online")
        probe.wait_for(f"{base}/rig1/availability", lambda m: m.text == "online")
        probe.wait_for(f"{base}/rig1")
        mark = probe.mark()
        probe.publish(f"{base}/rig1/set/pause", "")
        probe.wait_for(f"{base}/rig1/result", since=mark)
        probe.publish(f"{base}/bridge/test/request/health", "{}")
        probe.wait_for(f"{base}/bridge/test/response/health", since=mark)
        results = probe.all(f"{base}/rig1/result", since=mark)
        assert len(results) == 1  # one subscription, one result
        assert runner.agent.link.connects == 2
    finally:
        probe.close()
        runner.stop()


def test_state_is_not_queued_while_the_broker_is_away(
    own_broker: Mosquitto, xmrig_fleet: SimFleet
) -> None:
    settings = make_settings(own_broker.url, [{**rig(xmrig_fleet, 0), "id": "rig1"}])
    base = settings.mqtt.base_topic
    runner = AgentThread(settings)
    try:
        wait_until(lambda: runner.agent.workers["rig1"].stats.ok >= 1, 10, "first poll")
        # The start's discovery burst acknowledged first: what is in flight then is not a queue.
        wait_until(lambda: not runner.agent.link.client._out_messages, 10, "publishes acked")
        own_broker.stop()
        polls = runner.agent.workers["rig1"].stats.ok
        wait_until(lambda: runner.agent.workers["rig1"].stats.ok >= polls + 5, 15, "5 polls")
        # Nothing grows with the outage: the filter's last published state is all there is,
        # and the link keeps no copy of its payload (it is encoded again at the reconnect).
        assert len(runner.agent.link.client._out_messages) < 10
        assert runner.agent.workers["rig1"].publish_filter.published is not None
        assert f"{base}/rig1" not in runner.agent.link._retained
    finally:
        runner.stop()


def test_a_restarted_broker_gets_the_last_published_state_though_the_filter_holds_newer(
    own_broker: Mosquitto, xmrig_fleet: SimFleet
) -> None:
    held = {"debounce": "1h", "throttle": "1h"}  # after the first state, nothing goes out
    rig1 = {**rig(xmrig_fleet, 0), "id": "rig1", "poll_interval": "0.2s", "publish": held}
    settings = make_settings(own_broker.url, [rig1], mqtt={"reconnect_min": 1, "reconnect_max": 2})
    base = settings.mqtt.base_topic
    runner = AgentThread(settings)
    probe = Probe(own_broker.port)
    try:
        probe.subscribe(f"{base}/#")
        first = probe.wait_for(f"{base}/rig1").json()
        own_broker.stop()  # no persistence: the retained state goes with it
        probe.close()
        worker = runner.agent.workers["rig1"]
        polls = worker.stats.ok
        wait_until(lambda: worker.stats.ok > polls + 2, 10, "polls held by the filter")
        own_broker.start()
        probe = Probe(own_broker.port)
        probe.subscribe(f"{base}/rig1")
        assert probe.wait_for(f"{base}/rig1").json() == first
    finally:
        probe.close()
        runner.stop()


def test_restart_clears_discovery_of_devices_removed_while_stopped(
    broker: Mosquitto, xmrig_fleet: SimFleet, probe: Probe
) -> None:
    both = [{**rig(xmrig_fleet, 0), "id": "keep"}, {**rig(xmrig_fleet, 1), "id": "gone"}]
    settings = make_settings(broker.url, both)
    base, prefix = settings.mqtt.base_topic, settings.homeassistant.discovery_prefix
    probe.subscribe(f"{base}/#", f"{prefix}/#")
    runner = AgentThread(settings)
    probe.wait_for(f"{prefix}/sensor/gone/hashrate_10s/config", lambda m: bool(m.payload))
    probe.wait_for(f"{base}/gone", lambda m: bool(m.payload))
    runner.stop()
    mark = probe.mark()
    runner = AgentThread(settings.model_copy(update={"devices": settings.devices[:1]}))
    try:
        probe.wait_for(
            f"{prefix}/sensor/gone/hashrate_10s/config", lambda m: m.payload == b"", since=mark
        )
        probe.wait_for(
            f"{prefix}/switch/gone/mining/config", lambda m: m.payload == b"", since=mark
        )
        probe.wait_for(f"{base}/gone", lambda m: m.payload == b"", since=mark)
        cleared = {
            m.topic for m in probe.all(f"{prefix}/+/keep/+/config", since=mark) if m.payload == b""
        }
        assert cleared == set()  # the device still configured keeps its entities
    finally:
        runner.stop()


def test_the_settled_fleet_is_frozen_once_and_again_after_a_reload(
    service_setup: tuple[Path, str, Probe], broker: Mosquitto, xmrig_fleet: SimFleet
) -> None:
    """The running agent hides its settled heap from the collector (agent.runtime.collector):
    one poll interval after the first polls, and again after a reload replaced the workers."""
    config, base, probe = service_setup
    config.write_text(
        config.read_text().replace("jitter = 0.0", 'jitter = 0.0\nlog_level = "debug"')
    )
    log_path = config.parent / "agent.log"

    def settled() -> int:
        return log_path.read_bytes().count(b'"heap settled"')

    service = Service(config)
    try:
        probe.wait_for(f"{base}/svc-rig1/availability", lambda m: m.text == "online")
        wait_until(lambda: settled() == 1, 15, "the first freeze")
        line = next(x for x in log_path.read_bytes().splitlines() if b'"heap settled"' in x)
        assert json.loads(line)["frozen_objects"] > 10_000  # the imports, config and workers
        write_config(config, broker, base, [rig(xmrig_fleet, 1)])
        config.write_text(
            config.read_text().replace("jitter = 0.0", 'jitter = 0.0\nlog_level = "debug"')
        )
        service.signal(signal.SIGHUP)
        wait_until(lambda: b"config reloaded" in log_path.read_bytes(), 10, "the reload")
        wait_until(lambda: settled() == 2, 15, "the freeze after the reload")
    finally:
        service.signal(signal.SIGTERM)
        assert service.wait() == 0
        service.kill()


def test_a_failing_bridge_request_is_answered_with_an_error_and_the_agent_goes_on(
    broker: Mosquitto, xmrig_fleet: SimFleet, probe: Probe
) -> None:
    settings = make_settings(broker.url, [{**rig(xmrig_fleet, 0), "id": "rig1"}])
    base = settings.mqtt.base_topic
    probe.subscribe(f"{base}/#")
    runner = AgentThread(settings)
    try:

        def broken() -> dict[str, Any]:
            raise RuntimeError("a bug in the handler")

        runner.agent.health = broken  # type: ignore[method-assign]
        probe.wait_for(f"{base}/rig1/availability", lambda m: m.text == "online")
        mark = probe.mark()
        probe.publish(f"{base}/bridge/test/request/health", '{"transaction": "t1"}')
        answer = probe.wait_for(f"{base}/bridge/test/response/health", since=mark).json()
        assert answer == {
            "status": "error",
            "data": None,
            "error": "internal error: RuntimeError",
            "transaction": "t1",
        }
        mark = probe.mark()
        probe.publish(f"{base}/bridge/test/request/devices", "{}")
        devices = probe.wait_for(f"{base}/bridge/test/response/devices", since=mark).json()
        assert devices["status"] == "ok"
    finally:
        runner.stop()
