"""The agent end to end with a simulated pool: real Mosquitto, real HTTP, real MQTT messages."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from edge_agent_sim.fleet import LoopThread, SimDevice
from edge_agent_sim.pool import PoolModel, start_fleet
from tests.harness import AgentThread, Message, Mosquitto, Probe, make_settings

KEY = "K3Y-MQTT-SECRET"


@pytest.fixture
def pool(sim_loop: LoopThread) -> Iterator[SimDevice]:
    fleet = sim_loop.run(start_fleet(1, api_key=KEY))
    yield fleet.devices[0]
    sim_loop.run(fleet.close())


def pool_device(sim: SimDevice, **extra: Any) -> dict[str, Any]:
    return {
        "id": "pool1",
        "kind": "pool",
        "url": sim.url,
        "api_key": KEY,
        "poll_interval": "30s",  # the test drives polls through {device}/get
        "timeout": "2s",
        **extra,
    }


def start(broker: Mosquitto, probe: Probe, device: dict[str, Any]) -> AgentThread:
    runner = AgentThread(make_settings(broker.url, [device]))
    s = runner.agent.settings
    probe.subscribe(f"{s.mqtt.base_topic}/#", f"{s.homeassistant.discovery_prefix}/#")
    probe.wait_for(f"{s.mqtt.base_topic}/bridge/test/state", lambda m: m.text == "online")
    return runner


@pytest.fixture
def agent(broker: Mosquitto, probe: Probe, pool: SimDevice) -> Iterator[AgentThread]:
    runner = start(broker, probe, pool_device(pool))
    yield runner
    runner.stop()


def base(agent: AgentThread) -> str:
    return agent.agent.settings.mqtt.base_topic


def prefix(agent: AgentThread) -> str:
    return agent.agent.settings.homeassistant.discovery_prefix


def poll_now(probe: Probe, agent: AgentThread, predicate: Any) -> Message:
    """Ask for a poll and wait for the state it publishes to satisfy `predicate`."""
    mark = probe.mark()
    probe.publish(f"{base(agent)}/pool1/get", "")
    return probe.wait_for(f"{base(agent)}/pool1", lambda m: predicate(m.json()), since=mark)


def model(sim: SimDevice) -> PoolModel:
    found: PoolModel = sim.model
    return found


def test_state_and_discovery_for_pool_and_user(agent: AgentThread, probe: Probe) -> None:
    state = probe.wait_for(f"{base(agent)}/pool1").json()
    assert state["pool"]["hashrate_hs"] == 20_513_370_000_000.0
    assert state["user"]["workers"]["rig1"]["alive"] is True
    hashrate = probe.wait_for(f"{prefix(agent)}/sensor/pool1/pool_hashrate/config").json()
    assert hashrate["unit_of_measurement"] == "GH/s"
    assert "1e-09" in hashrate["value_template"]
    alive = probe.wait_for(f"{prefix(agent)}/binary_sensor/pool1/worker_rig2_alive/config")
    assert alive.json()["device_class"] == "running"
    status = probe.wait_for(f"{prefix(agent)}/sensor/pool1/latest_block_status/config").json()
    assert status["options"][0] == "processing"
    probe.wait_for(f"{prefix(agent)}/sensor/pool1/balance_nmc/config")
    probe.wait_for(f"{base(agent)}/bridge/test/info")
    assert all(KEY not in m.payload.decode(errors="replace") for m in probe.messages)


def test_blocks_found_and_confirmed_are_events(
    agent: AgentThread, probe: Probe, pool: SimDevice, sim_loop: LoopThread
) -> None:
    probe.wait_for(f"{base(agent)}/pool1")
    mark = probe.mark()
    block = sim_loop.call(lambda: model(pool).find_block("BTC"))
    poll_now(probe, agent, lambda s: s["latest_block"]["id"] == block["id"])
    found = probe.wait_for(f"{base(agent)}/pool1/event", since=mark).json()
    assert found["event"] == "block_found" and found["block"]["id"] == block["id"]
    sim_loop.call(lambda: model(pool).advance_blocks(confirmations=60))
    poll_now(probe, agent, lambda s: s["latest_block"]["status"] == "unconfirmed")
    sim_loop.call(lambda: model(pool).advance_blocks(confirmations=100))
    confirmed = poll_now(probe, agent, lambda s: s["latest_block"]["status"] == "confirmed")
    assert confirmed.json()["latest_block"]["confirmations_left"] == 0
    # events follow the state they belong to
    probe.wait_for(
        f"{base(agent)}/pool1/event",
        lambda m: m.json()["block"]["id"] == block["id"] and m.json().get("to") == "confirmed",
    )
    moves = [
        (e["from"], e["to"])
        for e in (m.json() for m in probe.all(f"{base(agent)}/pool1/event", since=mark))
        if e["event"] == "block_status" and e["block"]["id"] == block["id"]
    ]
    assert moves == [("processing", "unconfirmed"), ("unconfirmed", "confirmed")]


def test_workers_coming_and_going_change_discovery(
    agent: AgentThread, probe: Probe, pool: SimDevice, sim_loop: LoopThread
) -> None:
    rig1 = f"{prefix(agent)}/binary_sensor/pool1/worker_rig1_alive/config"
    probe.wait_for(rig1)
    mark = probe.mark()
    sim_loop.call(lambda: model(pool).add_worker("rig3", 800.0))
    poll_now(probe, agent, lambda s: "rig3" in s["user"]["workers"])
    added = probe.wait_for(
        f"{prefix(agent)}/sensor/pool1/worker_rig3_hashrate/config", since=mark
    ).json()
    assert added["unit_of_measurement"] == "MH/s"
    sim_loop.call(lambda: model(pool).remove_worker("rig1"))
    poll_now(probe, agent, lambda s: "rig1" not in s["user"]["workers"])
    cleared = probe.wait_for(rig1, lambda m: m.payload == b"", since=mark)
    assert cleared.retain


def test_a_wrong_key_takes_the_device_offline_without_leaking(
    broker: Mosquitto, probe: Probe, pool: SimDevice
) -> None:
    # The refused poll must land after the agent's MQTT session is up: a retained publish
    # racing the connect can be lost (reported to the lead: agent/runtime/mqtt.py).
    model(pool).latency = 0.5
    runner = start(broker, probe, pool_device(pool, api_key="WRONG-MQTT-SECRET", offline_after=1))
    try:
        b = base(runner)
        assert probe.wait_for(f"{b}/pool1/availability").text == "offline"
        info = probe.wait_for(f"{b}/bridge/test/info").json()
        assert "WRONG-MQTT-SECRET" not in json.dumps(info)
        assert len(model(pool).requests) == 1  # the refused key cost one request
    finally:
        runner.stop()
    assert all(b"WRONG-MQTT-SECRET" not in m.payload for m in probe.messages)
