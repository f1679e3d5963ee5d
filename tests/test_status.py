"""`edge-agent status` and `send` through the running agent, via the real entry point, on the
test broker: the CLI reads the same config file as the agent and talks to it over MQTT only."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.config.settings import load_config
from edge_agent_sim.fleet import LoopThread, SimFleet
from edge_agent_sim.whatsminer import start_fleet as start_whatsminers
from edge_agent_sim.xmrig import start_fleet as start_xmrigs
from tests.harness import REPO, AgentThread, Mosquitto, Probe, free_port
from tests.test_cli_and_docs import run_cli

HEADERS = ["DEVICE", "KIND", "STATUS", "LAST", "POLL", "HASHRATE", "POWER", "J/TH", "TEMP"]


@dataclass
class Farm:
    config: Path
    base: str
    miners: SimFleet
    rigs: SimFleet
    sim_loop: LoopThread
    probe: Probe

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, "-c", str(self.config))


def write_config(
    path: Path,
    broker_url: str,
    miners: SimFleet,
    rigs: SimFleet,
    protocol: str = "5",
    extra: str = "",
) -> tuple[Path, str]:
    unique = uuid.uuid4().hex[:8]
    base = f"ea-{unique}"
    lines = [
        f'[agent]\nid = "st-{unique}"\njitter = 0\noffline_after = 1\n',
        f'[mqtt]\nurl = "{broker_url}"\nbase_topic = "{base}"\nprotocol = "{protocol}"\n',
        f'[homeassistant]\ndiscovery_prefix = "ha-{unique}"\nstatus_topic = "ha-{unique}/s"\n',
    ]
    for n, miner in enumerate(miners.devices, 1):
        lines.append(
            f'[[devices]]\nid = "wm{n}"\nkind = "whatsminer"\nhost = "{miner.host}"\n'
            f'port = {miner.port}\npassword = "admin"\n'
        )
    rig = rigs.devices[0]
    lines.append(
        f'[[devices]]\nid = "rig1"\nkind = "xmrig"\nurl = "{rig.url}"\n'
        f'token = "{rig.model.token}"\n'
    )
    path.write_text("\n".join(lines) + extra)
    path.chmod(0o600)
    return path, base


@pytest.fixture
def fleets(sim_loop: LoopThread) -> Iterator[tuple[SimFleet, SimFleet]]:
    miners = sim_loop.run(start_whatsminers(2))
    rigs = sim_loop.run(start_xmrigs(1))
    yield miners, rigs
    sim_loop.run(miners.close())
    sim_loop.run(rigs.close())


def start_farm(
    tmp_path: Path,
    broker: Mosquitto,
    fleets: tuple[SimFleet, SimFleet],
    sim_loop: LoopThread,
    protocol: str = "5",
    extra: str = "",
) -> tuple[Farm, AgentThread]:
    miners, rigs = fleets
    config, base = write_config(tmp_path / "farm.toml", broker.url, miners, rigs, protocol, extra)
    probe = Probe(broker.port)
    probe.subscribe(f"{base}/#")
    runner = AgentThread(load_config(config).settings, config)
    for device in ("wm1", "wm2", "rig1"):
        probe.wait_for(f"{base}/{device}/availability", lambda m: m.text == "online", timeout=30)
    return Farm(config, base, miners, rigs, sim_loop, probe), runner


@pytest.fixture
def farm(
    tmp_path: Path, broker: Mosquitto, fleets: tuple[SimFleet, SimFleet], sim_loop: LoopThread
) -> Iterator[Farm]:
    farm, runner = start_farm(tmp_path, broker, fleets, sim_loop)
    yield farm
    runner.stop()
    farm.probe.close()


def test_status_shows_the_fleet_in_human_units(farm: Farm) -> None:
    done = farm.cli("status")
    assert done.returncode == 0, done.stderr
    head, power, _blank, header, _rule, *rows = done.stdout.splitlines()
    assert "ok, 3/3 devices online" in head
    assert power == "site power: control off"
    assert header.split() == HEADERS
    by_id = {row.split()[0]: row for row in rows}
    assert set(by_id) == {"wm1", "wm2", "rig1"}
    for miner in ("wm1", "wm2"):
        assert "online" in by_id[miner]
        assert " TH/s" in by_id[miner] and " W " in by_id[miner]
        assert " J/TH" in by_id[miner] and " °C" in by_id[miner]
    assert " kH/s" in by_id["rig1"]
    assert "admin" not in done.stdout + done.stderr


def test_status_json_for_scripts(farm: Farm) -> None:
    done = farm.cli("status", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["agent"]["status"] == "ok" and report["agent"]["devices_online"] == 3
    rows = {row["id"]: row for row in report["devices"]}
    assert rows["wm1"]["hashrate_hs"] > 1e13  # H/s: the raw unit, for scripts
    assert rows["wm1"]["power_w"] > 0 and rows["wm1"]["efficiency_j_th"] > 0
    assert rows["wm1"]["temperature_c"] > 0
    assert rows["wm1"]["last_poll_age_s"] >= 0
    assert report["power"] is None


def test_status_watch_refreshes(farm: Farm) -> None:
    watch = subprocess.Popen(
        [sys.executable, "-m", "agent", "status", "--watch", "0.2", "-c", str(farm.config)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert watch.stdout is not None
        headers = 0
        for line in watch.stdout:
            headers += line.startswith("DEVICE ")
            if headers == 3:
                break
        assert headers == 3
    finally:
        watch.terminate()
        watch.wait(10)


def test_status_exits_1_when_a_device_is_offline(farm: Farm) -> None:
    farm.sim_loop.run(farm.rigs.close())  # the rig's port now refuses connections
    farm.probe.wait_for(f"{farm.base}/rig1/availability", lambda m: m.text == "offline", timeout=40)
    done = farm.cli("status", "--json")
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["agent"]["status"] == "degraded"
    rig = next(row for row in report["devices"] if row["id"] == "rig1")
    assert rig["status"] == "offline" and rig["last_error"]


def test_status_exits_2_when_the_agent_or_broker_is_unreachable(
    tmp_path: Path, broker: Mosquitto, fleets: tuple[SimFleet, SimFleet]
) -> None:
    config, _base = write_config(tmp_path / "c.toml", broker.url, *fleets)
    done = run_cli("status", "--timeout", "3", "-c", str(config))
    assert done.returncode == 2
    assert "is not running: it never announced itself" in done.stderr
    as_json = run_cli("status", "--json", "--timeout", "3", "-c", str(config))
    assert as_json.returncode == 2
    assert json.loads(as_json.stdout)["agent"]["status"] == "unreachable"
    nobody = f"mqtt://127.0.0.1:{free_port()}"
    config, _base = write_config(tmp_path / "d.toml", nobody, *fleets)
    done = run_cli("status", "--timeout", "1", "-c", str(config))
    assert done.returncode == 2
    assert f"cannot reach the MQTT broker {nobody} within 1s" in done.stderr


def test_send_goes_through_the_agent_with_one_token(farm: Farm) -> None:
    miner = farm.miners.devices[0].model
    mark = farm.probe.mark()
    first = farm.cli("send", "wm1", "power_percent", "80")
    assert first.returncode == 0, first.stdout + first.stderr
    result = json.loads(first.stdout)
    assert result["ok"] is True and result["transaction"].startswith("cli-")
    # the agent answered on the device's result topic: the CLI did not talk to the miner
    published = farm.probe.wait_for(f"{farm.base}/wm1/result", since=mark)
    assert published.json()["transaction"] == result["transaction"]
    second = farm.cli("send", "wm1", "power_percent", "70")
    assert second.returncode == 0, second.stdout
    assert farm.sim_loop.call(lambda: miner.tokens_issued) == 1  # the agent's, reused
    direct = farm.cli("send", "wm1", "power_percent", "90", "--direct")
    assert direct.returncode == 0, direct.stdout
    assert farm.sim_loop.call(lambda: miner.tokens_issued) == 2  # --direct took its own


def test_send_reports_refusals_and_a_missing_agent(
    farm: Farm, tmp_path: Path, broker: Mosquitto, fleets: tuple[SimFleet, SimFleet]
) -> None:
    refused = farm.cli("send", "wm1", "reboot")
    assert refused.returncode == 1
    assert json.loads(refused.stdout)["error"]["code"] == "not_allowed"
    invalid = farm.cli("send", "wm1", "power_percent", "900")
    assert json.loads(invalid.stdout)["error"]["code"] == "validation"
    unknown = farm.cli("send", "wm1", "warp_speed")
    error = json.loads(unknown.stdout)["error"]
    assert error["code"] == "unknown_command" and "power_percent" in error["message"]
    alone, _base = write_config(tmp_path / "alone.toml", broker.url, *fleets)
    missing = run_cli("send", "wm1", "power_percent", "80", "-c", str(alone))
    assert missing.returncode == 1
    error = json.loads(missing.stdout)["error"]
    assert error["code"] == "unreachable" and "--direct" in error["message"]


def test_status_and_send_work_over_mqtt_3_1_1(
    tmp_path: Path, broker: Mosquitto, fleets: tuple[SimFleet, SimFleet], sim_loop: LoopThread
) -> None:
    """No response topic on 3.1.1: answers are matched by their transaction."""
    farm, runner = start_farm(tmp_path, broker, fleets, sim_loop, protocol="3.1.1")
    try:
        done = farm.cli("status", "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["agent"]["devices_online"] == 3
        sent = farm.cli("send", "rig1", "mining", "OFF")
        assert json.loads(sent.stdout)["ok"] is True, sent.stdout
        assert farm.sim_loop.call(lambda: farm.rigs.devices[0].model.paused) is True
    finally:
        runner.stop()
        farm.probe.close()


def test_status_shows_the_site_power_target(
    tmp_path: Path, broker: Mosquitto, fleets: tuple[SimFleet, SimFleet], sim_loop: LoopThread
) -> None:
    power = '\n[power]\nenabled = true\nmembers = ["wm1", "wm2"]\nhold = 1\n'
    farm, runner = start_farm(tmp_path, broker, fleets, sim_loop, extra=power)
    try:
        agent_id = load_config(farm.config).settings.agent.id
        site = f"{farm.base}/bridge/{agent_id}/power"
        farm.probe.publish(f"{site}/set", "5000")
        farm.probe.wait_for(site, lambda m: m.json().get("target_w") == 5000, timeout=30)
        done = farm.cli("status")
        assert done.returncode == 0, done.stderr
        assert "site power: target 5000 W, measured " in done.stdout.splitlines()[1]
        report = json.loads(farm.cli("status", "--json").stdout)
        assert report["power"]["target_w"] == 5000 and report["power"]["enabled"] is True
    finally:
        runner.stop()
        farm.probe.close()
