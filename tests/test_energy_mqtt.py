"""Energy counters end to end: simulated Whatsminers → the agent's state → a restart → onwards."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.runtime.energy import FILE_NAME, SITE_KEY
from edge_agent_sim.fleet import LoopThread, SimFleet
from tests.harness import AgentThread, Mosquitto, Probe, make_settings, wait_until


@pytest.fixture
def miners(sim_loop: LoopThread) -> Iterator[SimFleet]:
    from edge_agent_sim.whatsminer import start_fleet

    fleet = sim_loop.run(start_fleet(2))
    yield fleet
    sim_loop.run(fleet.close())


def settings(broker: Mosquitto, fleet: SimFleet, state_dir: Path) -> Any:
    devices = [
        {
            "id": f"wm{i}",
            "kind": "whatsminer",
            "host": d.host,
            "port": d.port,
            "password": d.model.password,
            "poll_interval": "0.2s",
        }
        for i, d in enumerate(fleet.devices)
    ]
    return make_settings(
        broker.url,
        devices,
        agent={"state_directory": str(state_dir)},
        power={"enabled": True, "members": ["wm0"]},
    )


def energy(probe: Probe, topic: str, since: int = 0) -> float:
    return probe.wait_for(
        topic, lambda m: m.json().get("energy_kwh") is not None, since=since
    ).json()["energy_kwh"]


def counted(runner: AgentThread, device: str) -> float:
    """The running sum (ahead of what is published until the next write)."""
    meter = runner.call(lambda: runner.agent.energy.meters.get(device))
    return meter.total_kwh if meter else 0.0


def test_counters_persist_across_a_restart_and_only_grow(
    broker: Mosquitto, probe: Probe, miners: SimFleet, tmp_path: Path
) -> None:
    config = settings(broker, miners, tmp_path)
    base = config.mqtt.base_topic
    probe.subscribe(f"{base}/+", f"{base}/bridge/test/energy")
    runner = AgentThread(config)
    try:
        assert energy(probe, f"{base}/wm0") == 0.0  # nothing is published ahead of the file
        # Polls at a few kW integrate to a counter that is written at the clean stop.
        wait_until(lambda: counted(runner, "wm0") > 0 and counted(runner, "wm1") > 0)
    finally:
        runner.stop()
    saved = json.loads((tmp_path / FILE_NAME).read_text())["kwh"]
    assert saved["wm0"] > 0 and saved["wm1"] > 0
    assert saved[SITE_KEY] == pytest.approx(saved["wm0"])  # wm1 is not a member
    site = probe.all(f"{base}/bridge/test/energy")[-1].json()
    assert site == {"site_kwh": round(saved[SITE_KEY], 6), "members": ["wm0"]}

    mark = probe.mark()
    runner = AgentThread(config)
    try:
        restarted = energy(probe, f"{base}/wm0", since=mark)
        assert restarted == round(saved["wm0"], 6)  # picks up where it stopped
        wait_until(lambda: counted(runner, "wm0") > saved["wm0"])
        later = [m.json()["energy_kwh"] for m in probe.all(f"{base}/wm0", since=mark)]
        assert later == sorted(later)
    finally:
        runner.stop()
    again = json.loads((tmp_path / FILE_NAME).read_text())["kwh"]
    assert again["wm0"] > saved["wm0"] and again[SITE_KEY] > saved[SITE_KEY]
