"""README stays generated from the catalogs; the CLI's demo, poll, send and discovery work."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import paho.mqtt.client as mqtt

from agent.catalog.docs import render
from edge_agent_sim.fleet import SimFleet
from tests.harness import REPO, Probe, free_port, port_open, wait_until


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_readme_tables_match_the_catalogs() -> None:
    readme = (REPO / "README.md").read_text()
    assert render(readme) == readme, "run: python -m agent.catalog.docs README.md"


def test_demo_starts_an_embedded_broker_and_publishes_the_fleet() -> None:
    port = free_port()
    demo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agent",
            "demo",
            "--broker",
            f"mqtt://127.0.0.1:{port}",
            "--duration",
            "20",
            "--whatsminer",
            "0",
            "--srs",
            "0",
            "--pool",
            "0",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: port_open(port), 20, "the embedded broker")
        probe = Probe(port, protocol=mqtt.MQTTv311)
        probe.subscribe("edge-agent/#")
        state = probe.wait_for("edge-agent/xmrig-1", timeout=20).json()
        assert state["hashrate_hs"]["10s"] > 0
        probe.publish("edge-agent/xmrig-1/set/mining", "OFF")
        result = probe.wait_for("edge-agent/xmrig-1/result", timeout=20).json()
        assert result["ok"] is True
        probe.close()
        assert demo.wait(30) == 0
        output = demo.stdout.read().decode() if demo.stdout else ""
        assert "embedded broker started" in output
        assert "mosquitto_sub" in output
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(10)


def write_config(tmp_path: Path, fleet: SimFleet) -> Path:
    device = fleet.devices[0]
    config = tmp_path / "config.toml"
    config.write_text(
        '[agent]\nid = "cli"\n[[devices]]\nid = "rig1"\nkind = "xmrig"\n'
        f'url = "{device.url}"\ntoken = "{device.model.token}"\n'
    )
    config.chmod(0o600)
    return config


def test_poll_prints_the_normalised_state(tmp_path: Path, xmrig_fleet: SimFleet) -> None:
    config = str(write_config(tmp_path, xmrig_fleet))
    done = run_cli("poll", "rig1", "--json", "-c", config)
    assert done.returncode == 0, done.stderr
    state = json.loads(done.stdout)
    assert state["worker_id"] == "sim0" and state["hashrate_hs"]["10s"] > 0
    shown = run_cli("poll", "rig1", "-c", config)
    assert shown.returncode == 0, shown.stderr
    header, _rule, row = shown.stdout.splitlines()
    assert header.split()[:3] == ["DEVICE", "KIND", "STATUS"]
    assert row.split()[:4] == ["rig1", "xmrig", "online", "0s"]
    assert " kH/s" in row  # human units, not 1234.5 H/s


def test_send_direct_runs_a_command_and_validates_first(
    tmp_path: Path, xmrig_fleet: SimFleet
) -> None:
    config = str(write_config(tmp_path, xmrig_fleet))
    done = run_cli("send", "rig1", "mining", "OFF", "--direct", "-c", config)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["ok"] is True
    assert xmrig_fleet.devices[0].model.paused is True
    refused = run_cli("send", "rig1", "stop", "--direct", "-c", config)
    assert refused.returncode == 1
    assert json.loads(refused.stdout)["error"]["code"] == "not_allowed"
    missing = run_cli("send", "nope", "pause", "--direct", "-c", config)
    assert missing.returncode == 78 and "no device 'nope'" in missing.stderr


def test_discovery_prints_payloads(tmp_path: Path, xmrig_fleet: SimFleet) -> None:
    done = run_cli("discovery", "-c", str(write_config(tmp_path, xmrig_fleet)))
    assert done.returncode == 0, done.stderr
    assert "homeassistant/switch/rig1/mining/config" in done.stdout
    assert "SECRET" not in done.stdout
