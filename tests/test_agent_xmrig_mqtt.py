"""The agent end to end with XMRig: real Mosquitto, real HTTP simulator, real MQTT messages."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from edge_agent_sim.fleet import LoopThread, SimFleet
from tests.harness import AgentThread, Mosquitto, Probe, make_settings, wait_until


def xmrig_device(fleet: SimFleet, index: int, **extra: Any) -> dict[str, Any]:
    device = fleet.devices[index]
    return {
        "id": f"rig{index + 1}",
        "kind": "xmrig",
        "url": device.url,
        "token": device.model.token,
        "poll_interval": "1s",
        "timeout": "2s",
        **extra,
    }


@pytest.fixture
def agent(broker: Mosquitto, xmrig_fleet: SimFleet) -> Iterator[AgentThread]:
    settings = make_settings(
        broker.url,
        [xmrig_device(xmrig_fleet, 0, allow_commands=["stop"]), xmrig_device(xmrig_fleet, 1)],
    )
    runner = AgentThread(settings)
    yield runner
    runner.stop()


@pytest.fixture
def watch(agent: AgentThread, probe: Probe) -> Probe:
    s = agent.agent.settings
    probe.subscribe(f"{s.mqtt.base_topic}/#", f"{s.homeassistant.discovery_prefix}/#")
    # The agent publishes `online` after subscribing: seeing it means commands will be heard.
    probe.wait_for(f"{s.mqtt.base_topic}/bridge/test/state", lambda m: m.text == "online")
    return probe


def base(agent: AgentThread) -> str:
    return agent.agent.settings.mqtt.base_topic


def command(watch: Probe, agent: AgentThread, topic: str, payload: bytes | str) -> dict[str, Any]:
    """Publish a command and return the one result it produced."""
    device = topic.split("/")[0]
    mark = watch.mark()
    watch.publish(f"{base(agent)}/{topic}", payload)
    result: dict[str, Any] = watch.wait_for(f"{base(agent)}/{device}/result", since=mark).json()
    return result


def test_state_availability_and_bridge_are_published(agent: AgentThread, watch: Probe) -> None:
    b = base(agent)
    assert watch.wait_for(f"{b}/bridge/test/state").text == "online"
    assert watch.wait_for(f"{b}/rig1/availability").text == "online"
    state = watch.wait_for(f"{b}/rig1").json()
    assert state["hashrate_hs"]["10s"] > 0
    assert state["worker_id"] == "sim0"
    assert state["mining"] is True
    assert state["backends"]["cuda"]["gpus"][0]["temperature_c"] == 69
    info = watch.wait_for(f"{b}/bridge/test/info").json()
    assert {d["id"] for d in info["devices"]} == {"rig1", "rig2"}
    assert "SECRET" not in json.dumps(info)


def test_discovery_payloads_follow_home_assistant_conventions(
    agent: AgentThread, watch: Probe
) -> None:
    prefix = agent.agent.settings.homeassistant.discovery_prefix
    message = watch.wait_for(f"{prefix}/sensor/rig1/hashrate_10s/config")
    payload = message.json()
    assert message.retain
    assert payload["unique_id"] == "edgeagent_rig1_hashrate_10s"
    assert payload["state_topic"] == f"{base(agent)}/rig1"
    assert payload["unit_of_measurement"] == "H/s"
    assert payload["state_class"] == "measurement"
    assert payload["availability_mode"] == "all"
    assert [a["topic"] for a in payload["availability"]] == [
        f"{base(agent)}/bridge/test/state",
        f"{base(agent)}/rig1/availability",
    ]
    assert payload["device"]["via_device"] == "edgeagent_bridge_test"
    assert payload["origin"]["name"] == "edge-agent"
    switch = watch.wait_for(f"{prefix}/switch/rig1/mining/config").json()
    assert switch["command_topic"] == f"{base(agent)}/rig1/set/mining"
    gpu = watch.wait_for(f"{prefix}/sensor/rig1/cuda_gpu0_temperature/config").json()
    assert gpu["device_class"] == "temperature"
    assert gpu["entity_category"] == "diagnostic"
    bridge = watch.wait_for(f"{prefix}/binary_sensor/bridge_test/connection/config").json()
    assert bridge["device"]["identifiers"] == ["edgeagent_bridge_test"]


def test_pause_resume_and_mining_switch_drive_the_miner(
    agent: AgentThread, watch: Probe, xmrig_fleet: SimFleet, sim_loop: LoopThread
) -> None:
    model = xmrig_fleet.devices[0].model
    watch.wait_for(f"{base(agent)}/rig1/availability")
    result = command(watch, agent, "rig1/set", json.dumps({"command": "pause", "transaction": 7}))
    assert result["ok"] is True and result["transaction"] == 7 and result["command"] == "pause"
    assert sim_loop.call(lambda: model.paused) is True
    mark = watch.mark()
    assert command(watch, agent, "rig1/set/mining", "ON")["ok"] is True
    assert sim_loop.call(lambda: model.paused) is False
    state = watch.wait_for(f"{base(agent)}/rig1", lambda m: m.json()["mining"], since=mark)
    assert state.json()["paused"] is False
    assert command(watch, agent, "rig1/set/mining", "OFF")["ok"] is True
    assert sim_loop.call(lambda: model.paused) is True
    assert command(watch, agent, "rig1/set/resume", "")["ok"] is True
    assert sim_loop.call(lambda: model.paused) is False


def test_start_reports_method_not_found(agent: AgentThread, watch: Probe) -> None:
    result = command(watch, agent, "rig1/set/start", "")
    assert result["ok"] is False
    assert result["error"]["code"] == "unsupported"
    assert result["error"]["device_code"] == -32601


def test_stop_needs_the_allow_list(
    agent: AgentThread, watch: Probe, xmrig_fleet: SimFleet, sim_loop: LoopThread
) -> None:
    refused = command(watch, agent, "rig2/set/stop", "")
    assert refused["error"]["code"] == "not_allowed"
    assert sim_loop.call(lambda: xmrig_fleet.devices[1].model.stopped) is False
    allowed = command(watch, agent, "rig1/set/stop", "")
    assert allowed["ok"] is True
    assert sim_loop.call(lambda: xmrig_fleet.devices[0].model.stopped) is True


def test_config_commands_mask_the_token_and_patch_merges(
    agent: AgentThread, watch: Probe, xmrig_fleet: SimFleet, sim_loop: LoopThread
) -> None:
    got = command(watch, agent, "rig1/set/config_get", "")
    assert got["ok"] and got["data"]["http"]["access-token"] == "***"
    assert "SECRET" not in json.dumps(got)
    patched = command(
        watch, agent, "rig1/set/config_patch", json.dumps({"patch": {"print-time": 30}})
    )
    assert patched["ok"], patched
    config = sim_loop.call(lambda: xmrig_fleet.devices[0].model.config)
    assert config["print-time"] == 30
    assert config["http"]["access-token"] == "SECRET"  # merged into the real config, not the mask
    writes = sim_loop.call(lambda: len(xmrig_fleet.devices[0].model.writes))
    rejected = command(
        watch, agent, "rig1/set", json.dumps({"command": "config_patch", "patch": {"pools": 5}})
    )
    assert rejected["ok"] is False and rejected["error"]["code"] == "not_allowed"
    assert sim_loop.call(lambda: len(xmrig_fleet.devices[0].model.writes)) == writes


@pytest.mark.parametrize(
    ("topic", "payload", "code"),
    [
        ("rig1/set", b"{not json", "validation"),
        ("rig1/set", b"[1, 2]", "validation"),
        ("rig1/set", b'{"command": 5}', "validation"),
        ("rig1/set", b'{"command": "explode"}', "unknown_command"),
        ("rig1/set/explode", b"1", "unknown_command"),
        ("rig1/set/mining", b"maybe", "validation"),
        ("rig1/set/mining", b'{"state": [1]}', "validation"),
        ("rig1/set", b'{"command": "pause", "force": true}', "validation"),
        ("rig1/set/config_patch", b'{"patch": "x"}', "validation"),
        ("rig1/set/mining", b"\xff\xfe\x00", "validation"),
        ("rig1/set", b"x" * (1024 * 1024), "validation"),
        ("rig1/set/config_set", b'{"config": {"pools": []}}', "not_allowed"),
    ],
)
def test_bad_payloads_get_one_error_result_and_the_agent_keeps_going(
    agent: AgentThread, watch: Probe, topic: str, payload: bytes, code: str
) -> None:
    result = command(watch, agent, topic, payload)
    assert result["ok"] is False
    assert result["error"]["code"] == code
    assert result["error"]["message"]
    assert command(watch, agent, "rig1/set/pause", "")["ok"] is True  # still serving


def test_mqtt5_response_topic_gets_the_result_with_correlation(
    agent: AgentThread, watch: Probe
) -> None:
    mark = watch.mark()
    watch.publish(
        f"{base(agent)}/rig1/set/pause",
        "",
        response_topic=f"{base(agent)}/reply/me",
        correlation=b"abc-1",
    )
    reply = watch.wait_for(f"{base(agent)}/reply/me", since=mark)
    assert reply.correlation == b"abc-1"
    assert reply.json()["ok"] is True


def test_get_polls_now(agent: AgentThread, watch: Probe) -> None:
    b = base(agent)
    watch.wait_for(f"{b}/rig1")
    before = agent.call(lambda: agent.agent.workers["rig1"].stats.ok)
    watch.publish(f"{b}/rig1/get", "")
    agent_worker = agent.agent.workers["rig1"]
    from tests.harness import wait_until

    wait_until(lambda: agent.call(lambda: agent_worker.stats.ok) > before, 5, "a poll")


def test_bridge_requests_answer_with_transaction(agent: AgentThread, watch: Probe) -> None:
    b = base(agent)
    for action in ("devices", "health", "poll"):
        mark = watch.mark()
        watch.publish(f"{b}/bridge/test/request/{action}", json.dumps({"transaction": action}))
        response = watch.wait_for(f"{b}/bridge/test/response/{action}", since=mark).json()
        assert response["status"] == "ok", response
        assert response["transaction"] == action
    mark = watch.mark()
    watch.publish(f"{b}/bridge/test/request/dance", "{}")
    bad = watch.wait_for(f"{b}/bridge/test/response/dance", since=mark).json()
    assert bad["status"] == "error" and "unknown request" in bad["error"]
    mark = watch.mark()
    watch.publish(f"{b}/bridge/test/request/poll", '{"device": "nope"}')
    assert watch.wait_for(f"{b}/bridge/test/response/poll", since=mark).json()["status"] == "error"


def test_home_assistant_birth_reannounces_discovery_and_state(
    agent: AgentThread, watch: Probe
) -> None:
    settings = agent.agent.settings
    prefix = settings.homeassistant.discovery_prefix
    watch.wait_for(f"{base(agent)}/rig1")
    mark = watch.mark()
    watch.publish(settings.homeassistant.status_topic, "online")
    watch.wait_for(f"{prefix}/sensor/rig1/hashrate_10s/config", since=mark)
    watch.wait_for(f"{base(agent)}/rig1", since=mark)


def test_device_outage_marks_offline_then_online(
    agent: AgentThread, watch: Probe, xmrig_fleet: SimFleet, sim_loop: LoopThread
) -> None:
    b = base(agent)
    model = xmrig_fleet.devices[1].model
    watch.wait_for(f"{b}/rig2/availability", lambda m: m.text == "online")
    mark = watch.mark()
    sim_loop.call(lambda: setattr(model, "fault", "error500"))
    watch.wait_for(f"{b}/rig2/availability", lambda m: m.text == "offline", since=mark)
    assert agent.agent.workers["rig1"].available is True  # the other miner is untouched
    mark = watch.mark()
    sim_loop.call(lambda: setattr(model, "fault", None))
    watch.wait_for(f"{b}/rig2/availability", lambda m: m.text == "online", since=mark)


def test_hung_device_does_not_delay_the_other(
    agent: AgentThread, watch: Probe, xmrig_fleet: SimFleet, sim_loop: LoopThread
) -> None:
    b = base(agent)
    watch.wait_for(f"{b}/rig1/availability")
    sim_loop.call(lambda: setattr(xmrig_fleet.devices[1].model, "fault", "hang"))
    result = command(watch, agent, "rig1/set/pause", "")
    assert result["ok"] is True
    hung = command(watch, agent, "rig2/set/pause", "")
    assert hung["ok"] is False and hung["error"]["code"] == "timeout"
    polled = agent.call(lambda: agent.agent.workers["rig1"].stats.ok)
    # rig1 keeps being polled (its steady state is not republished: publish filters) ...
    wait_until(lambda: agent.call(lambda: agent.agent.workers["rig1"].stats.ok) > polled + 1)
    mark = watch.mark()
    watch.publish(f"{b}/rig1/get", "")
    watch.wait_for(f"{b}/rig1", since=mark)  # ... and published
