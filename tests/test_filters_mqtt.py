"""Publish filters end to end: real Mosquitto, the XMRig simulator, the agent's own workers.

Where the device is throttled and debounced for an hour (`HELD`), anything the filter held
would not arrive within a test's wait: what does arrive was not delayed. The deadband and
max_interval tests run on the kind's defaults alone (`DEFAULTS`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from edge_agent_sim.fleet import LoopThread, SimFleet
from tests.harness import AgentThread, Mosquitto, Probe, make_settings, wait_until

HELD = {"debounce": "1h", "throttle": "1h", "filtered_attributes": ["cpu", "user_agent"]}
DEFAULTS: dict[str, Any] = {"max_interval": "10m"}


class Clock:
    """Stands in for the filter's monotonic clock, so max_interval needs no waiting."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=[HELD])
def publish(request: pytest.FixtureRequest) -> dict[str, Any]:
    table: dict[str, Any] = request.param
    return table


@pytest.fixture
def agent(
    broker: Mosquitto, xmrig_fleet: SimFleet, publish: dict[str, Any]
) -> Iterator[AgentThread]:
    device = xmrig_fleet.devices[0]
    rig = {
        "id": "rig1",
        "kind": "xmrig",
        "url": device.url,
        "token": device.model.token,
        "poll_interval": "0.2s",
        "timeout": "2s",
        "publish_raw": True,
        "publish": publish,
    }
    runner = AgentThread(make_settings(broker.url, [rig]))
    yield runner
    runner.stop()


@pytest.fixture
def watch(agent: AgentThread, probe: Probe) -> Probe:
    probe.subscribe(f"{base(agent)}/#")
    probe.wait_for(f"{base(agent)}/bridge/test/state", lambda m: m.text == "online")
    probe.wait_for(f"{base(agent)}/rig1")  # the first state
    return probe


def base(agent: AgentThread) -> str:
    return agent.agent.settings.mqtt.base_topic


def polls(agent: AgentThread) -> int:
    count: int = agent.call(lambda: agent.agent.workers["rig1"].stats.ok)
    return count


def states_after(watch: Probe, agent: AgentThread, mark: int) -> list[dict[str, Any]]:
    return [m.json() for m in watch.all(f"{base(agent)}/rig1", since=mark)]


def ten_polls_then_states(agent: AgentThread, watch: Probe) -> list[dict[str, Any]]:
    mark, start = watch.mark(), polls(agent)
    wait_until(lambda: polls(agent) >= start + 10, what="ten more polls")
    # The agent publishes in order: its answer to a request comes after the polls' states.
    watch.publish(f"{base(agent)}/bridge/test/request/health", "{}")
    watch.wait_for(f"{base(agent)}/bridge/test/response/health", since=mark)
    return states_after(watch, agent, mark)


@pytest.mark.parametrize("publish", [DEFAULTS], indirect=True)
def test_jitter_inside_the_deadbands_is_not_published(agent: AgentThread, watch: Probe) -> None:
    # A hash rate wobbling by ±3% (two polls at most 6% apart; deadband 10%), uptime and
    # shares ticking (quiet).
    assert ten_polls_then_states(agent, watch) == []


@pytest.mark.parametrize("publish", [{"deadband": {"hashrate_hs.10s": 0}}], indirect=True)
def test_without_the_hashrate_deadband_the_same_jitter_publishes(
    agent: AgentThread, watch: Probe
) -> None:
    assert len(ten_polls_then_states(agent, watch)) >= 5


def test_filtered_attributes_leave_the_state_but_not_the_raw_topic(
    agent: AgentThread, watch: Probe
) -> None:
    state = watch.wait_for(f"{base(agent)}/rig1").json()
    assert "cpu" not in state and "user_agent" not in state
    assert state["hashrate_hs"]["10s"] > 0
    raw = watch.wait_for(f"{base(agent)}/rig1/raw/#").json()
    assert "cpu" in raw and "ua" in raw


def test_mining_off_by_a_command_appears_at_once(agent: AgentThread, watch: Probe) -> None:
    mark = watch.mark()
    watch.publish(f"{base(agent)}/rig1/set/mining", "OFF")
    assert watch.wait_for(f"{base(agent)}/rig1/result", since=mark).json()["ok"] is True
    paused = watch.wait_for(f"{base(agent)}/rig1", lambda m: m.json()["paused"], since=mark)
    assert paused.json()["mining"] is False
    mark = watch.mark()
    watch.publish(f"{base(agent)}/rig1/set/mining", "ON")
    watch.wait_for(f"{base(agent)}/rig1", lambda m: m.json()["mining"], since=mark)


def test_a_get_publishes_at_once(agent: AgentThread, watch: Probe) -> None:
    mark = watch.mark()
    watch.publish(f"{base(agent)}/rig1/get", "")
    watch.wait_for(f"{base(agent)}/rig1", since=mark)


def test_going_offline_is_published_at_once(
    agent: AgentThread, watch: Probe, xmrig_fleet: SimFleet, sim_loop: LoopThread
) -> None:
    model = xmrig_fleet.devices[0].model
    mark = watch.mark()
    sim_loop.call(lambda: setattr(model, "fault", "error500"))
    try:
        watch.wait_for(
            f"{base(agent)}/rig1/availability", lambda m: m.text == "offline", since=mark
        )
    finally:
        sim_loop.call(lambda: setattr(model, "fault", None))
    watch.wait_for(f"{base(agent)}/rig1/availability", lambda m: m.text == "online", since=mark)


@pytest.mark.parametrize("publish", [DEFAULTS], indirect=True)
def test_max_interval_republishes_an_unchanged_state(agent: AgentThread, watch: Probe) -> None:
    worker = agent.agent.workers["rig1"]
    clock = agent.call(lambda: Clock(worker.publish_filter.clock()))
    agent.call(lambda: setattr(worker.publish_filter, "clock", clock))
    mark = watch.mark()
    agent.call(lambda: setattr(clock, "now", clock.now + 599))
    start = polls(agent)
    wait_until(lambda: polls(agent) >= start + 3, what="three more polls")
    assert states_after(watch, agent, mark) == []
    agent.call(lambda: setattr(clock, "now", clock.now + 1))
    watch.wait_for(f"{base(agent)}/rig1", since=mark)
