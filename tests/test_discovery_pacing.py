"""Discovery paced behind polling, over a real broker: a fleet's configs each reach the broker
once, never more than a window of them wait at the MQTT link, a device due again before its
turn is built once with its latest state, and a reconnect or a Home Assistant restart sends
every config again."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from agent.catalog.discovery import DiscoveryContext, topic
from agent.config.base import DeviceConfig
from agent.kinds import KINDS
from agent.runtime.announcer import LOW_WATER, Announcer, announced_entities
from agent.runtime.mqtt import MqttLink
from edge_agent_sim.fleet import LoopThread, SimFleet
from tests.harness import AgentThread, Mosquitto, Probe, make_settings, wait_until

FLEET = 300
CATALOG = KINDS["xmrig"].catalog


def fake_rigs(count: int) -> list[dict[str, Any]]:
    """Configs only: nothing polls them, the test hands the announcer their states."""
    return [
        {"id": f"rig{i}", "kind": "xmrig", "url": f"http://127.0.0.1:9/{i}", "token": "t"}
        for i in range(count)
    ]


def rig_state(version: str) -> dict[str, Any]:
    return {"version": version, "miner_id": "m", "cpu": {"brand": "Ryzen"}}


class PacedLink:
    """A real MqttLink and Announcer on an event loop of their own, recording the link's
    retained backlog after every config handed over."""

    def __init__(self, broker: Mosquitto) -> None:
        self.settings = make_settings(broker.url, fake_rigs(FLEET))
        self.prefix = self.settings.homeassistant.discovery_prefix
        base = self.settings.mqtt.base_topic
        self.ctx = DiscoveryContext(self.prefix, base, "test")
        self.loop = LoopThread("pacing")
        self.link = MqttLink(
            self.settings.mqtt,
            client_id=f"pacing-{base}",
            will_topic=f"{base}/bridge/test/state",
            on_message=lambda message: None,
            on_connected=lambda: None,
        )
        self.announcer = Announcer(
            self.ctx, self._publish, self.link.clear_retained, enabled=True,
            backlog=self.link.retained_backlog,
        )  # fmt: skip
        self.peak_backlog = 0
        self.link.start()
        wait_until(self.link.connected.is_set, 10, "link connected")

    def _publish(self, config_topic: str, payload: bytes) -> None:
        self.link.publish_retained(config_topic, payload, keep=False)
        self.peak_backlog = max(self.peak_backlog, self.link.retained_backlog() or 0)

    def announce(self, config: DeviceConfig, state: dict[str, Any]) -> None:
        self.loop.call(lambda: self.announcer.announce_device(config, CATALOG, state))

    def expected(self, config: DeviceConfig, state: dict[str, Any]) -> set[str]:
        entities = announced_entities(CATALOG, state, config.allow_commands)
        return {topic(self.ctx, e.platform, config.id, e.key) for e in entities}

    def close(self) -> None:
        self.link.stop({})
        self.loop.stop()


@pytest.fixture
def paced(broker: Mosquitto) -> Iterator[PacedLink]:
    link = PacedLink(broker)
    yield link
    link.close()


def configs_seen(probe: Probe, prefix: str) -> Counter[str]:
    return Counter(m.topic for m in probe.all(f"{prefix}/#") if m.payload)


def test_a_fleet_is_announced_once_each_with_a_bounded_backlog(
    paced: PacedLink, probe: Probe
) -> None:
    probe.subscribe(f"{paced.prefix}/#")
    devices = list(paced.settings.devices)
    expected: set[str] = set()
    for device in devices:
        expected |= paced.expected(device, rig_state("6.21.0"))
    per_device = len(paced.expected(devices[0], rig_state("6.21.0")))
    assert per_device * FLEET == len(expected) > 4 * LOW_WATER  # far more than the window

    def announce_all() -> None:
        for device in devices:
            paced.announcer.announce_device(device, CATALOG, rig_state("6.21.0"))
        # due again before its turn: built once, with this state
        paced.announcer.announce_device(devices[-1], CATALOG, rig_state("6.22.0"))

    paced.loop.call(announce_all)
    wait_until(lambda: len(configs_seen(probe, paced.prefix)) == len(expected), 30, "all")
    wait_until(lambda: paced.link.retained_backlog() == 0, 10, "link drained")
    seen = configs_seen(probe, paced.prefix)
    assert set(seen) == expected
    assert set(seen.values()) == {1}  # none lost, none sent twice
    assert paced.peak_backlog <= LOW_WATER + per_device
    last = [m.json() for m in probe.all(f"{paced.prefix}/+/{devices[-1].id}/+/config")]
    assert {c["device"]["sw_version"] for c in last} == {"6.22.0"}
    assert paced.announcer.pending == 0


def test_unchanged_state_sends_nothing_and_a_reset_sends_everything_again(
    paced: PacedLink, probe: Probe
) -> None:
    probe.subscribe(f"{paced.prefix}/#")
    device = paced.settings.devices[0]
    expected = paced.expected(device, rig_state("6.21.0"))
    paced.announce(device, rig_state("6.21.0"))
    wait_until(lambda: set(configs_seen(probe, paced.prefix)) == expected, 10, "announced")
    mark = probe.mark()
    paced.announce(device, rig_state("6.21.0"))
    paced.loop.call(paced.announcer.reset)  # Home Assistant restarted
    paced.announce(device, rig_state("6.21.0"))
    wait_until(lambda: len(probe.all(f"{paced.prefix}/#", since=mark)) >= len(expected), 10)
    wait_until(lambda: paced.link.retained_backlog() == 0, 10, "link drained")
    again = Counter(m.topic for m in probe.all(f"{paced.prefix}/#", since=mark))
    assert again == dict.fromkeys(expected, 1)


def test_a_broker_that_lost_its_retained_store_gets_every_config_again(
    own_broker: Mosquitto, xmrig_fleet: SimFleet
) -> None:
    devices = [
        {"id": f"rig{i + 1}", "kind": "xmrig", "url": d.url, "token": d.model.token}
        for i, d in enumerate(xmrig_fleet.devices)
    ]
    settings = make_settings(own_broker.url, devices)
    prefix = settings.homeassistant.discovery_prefix
    runner = AgentThread(settings)
    try:
        agent = runner.agent
        wait_until(lambda: all(w.stats.ok for w in agent.workers.values()), 15, "first polls")
        wait_until(lambda: agent.announcer.pending == 0, 15, "announced")
        own_broker.stop()  # no persistence: the retained store goes with it
        wait_until(lambda: not agent.link.connected.is_set(), 10, "link down")
        own_broker.start()
        wait_until(lambda: agent.link.connected.is_set(), 15, "link back")
        wait_until(lambda: agent.announcer.pending == 0, 15, "announced again")
        wait_until(lambda: agent.link.retained_backlog() == 0, 15, "link drained")
        expected = {
            topic(agent.ctx, e.platform, w.id, e.key)
            for w in agent.workers.values()
            for e in announced_entities(w.kind.catalog, w.state, w.config.allow_commands)
        }
        probe = Probe(own_broker.port)
        try:
            probe.subscribe(f"{prefix}/#")  # what the restarted broker retains
            wait_until(lambda: expected <= set(configs_seen(probe, prefix)), 10, "retained")
            bridge = [m for m in probe.all(f"{prefix}/+/bridge_test/+/config") if m.payload]
            assert bridge and all(json.loads(m.payload)["unique_id"] for m in bridge)
        finally:
            probe.close()
    finally:
        runner.stop()
