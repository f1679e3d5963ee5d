"""A real Node-RED 4 running the shipped flows (examples/node-red/) against the agent.

One Node-RED for the module, installed by `.ci/install-nodered` into a cache folder outside the
checkout, started on a free loopback port with a throwaway user dir; the three flow files are
loaded unchanged through its admin API (POST /flows) and pointed at the test broker and base
topic through Node-RED's environment, as a user would. The agent polls simulated devices of
every kind (ids as in `edge-agent demo`, which the controls flow's buttons address) with site
power control on two Whatsminers.
"""

from __future__ import annotations

import html
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from edge_agent_sim.fleet import LoopThread, SimFleet
from edge_agent_sim.pool import start_fleet as start_pools
from edge_agent_sim.srs import start_fleet as start_srs
from edge_agent_sim.whatsminer import start_fleet as start_whatsminers
from edge_agent_sim.xmrig import start_fleet as start_xmrig
from tests.harness import (
    REPO,
    AgentThread,
    Message,
    Mosquitto,
    Probe,
    free_port,
    make_settings,
    wait_until,
)

FLOWS = REPO / "examples" / "node-red"
FLOW_FILES = ("fleet-overview.json", "controls.json", "solar-following.json")
POOL_KEY = "K3Y-NODERED-SECRET"
MEMBERS = ("whatsminer-2", "whatsminer-3")
SOLAR = {  # the solar flow's settings, as a user sets them in Node-RED's environment
    "EDGE_AGENT_PV_TOPIC": "site/pv/power_w",
    "EDGE_AGENT_SOLAR_FLOOR_W": "2000",
    "EDGE_AGENT_SOLAR_CEILING_W": "5000",
    "EDGE_AGENT_SOLAR_RESERVE_W": "200",
    "EDGE_AGENT_SOLAR_STEP_W": "50",
    "EDGE_AGENT_SOLAR_STALE_S": "3",
}
COMMAND_TIMEOUT_S = 3
SETTINGS_JS = """module.exports = {
  uiHost: "127.0.0.1",
  flowFile: "flows.json",
  credentialSecret: false,
  logging: { console: { level: "info", metrics: false, audit: false } },
  editorTheme: { tours: false, projects: { enabled: false } },
  diagnostics: { enabled: false },
  telemetry: { enabled: false, updateNotification: false },
  externalModules: { autoInstall: false, palette: { allowInstall: false } },
};
"""


def nodered_dir() -> Path:
    """Where `.ci/install-nodered` puts Node-RED (the same rule as the script)."""
    configured = os.environ.get("EDGE_AGENT_NODERED_DIR")
    if configured:
        return Path(configured)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "edge-agent" / "node-red-4"


def installed_nodered() -> Path:
    """Node-RED's red.js as `.ci/install-nodered` left it; the test fails when it has not run."""
    red = nodered_dir() / "node_modules" / "node-red" / "red.js"
    if not red.is_file() or not (nodered_dir() / ".installed").is_file():
        pytest.fail(f"Node-RED 4 is not installed in {nodered_dir()}: run .ci/install-nodered")
    return red


def shipped_flows() -> list[dict[str, Any]]:
    """The three files as one deployment; the broker node they share is deployed once."""
    nodes: dict[str, dict[str, Any]] = {}
    for name in FLOW_FILES:
        for node in json.loads((FLOWS / name).read_text()):
            assert nodes.get(node["id"], node) == node, f"{name}: {node['id']} differs"
            nodes[node["id"]] = node
    return list(nodes.values())


class NodeRed:
    """Node-RED in a child process; its admin API and the flows' HTTP endpoints."""

    def __init__(self, red: Path, workdir: Path, env: dict[str, str]) -> None:
        node = shutil.which("node")
        if node is None:
            pytest.fail("Node-RED needs Node.js: .ci/run installs it (apt-get install nodejs)")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (workdir / "settings.js").write_text(SETTINGS_JS)
        self.log_path = workdir / "node-red.log"
        settings = workdir / "settings.js"
        command = [node, str(red), "--userDir", str(workdir), "--settings", str(settings)]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [*command, "--port", str(self.port)],
                env={**os.environ, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_until(self._up, 60, "Node-RED's admin API")
        except AssertionError:
            self.stop()
            raise
        if self.process.poll() is not None:
            raise AssertionError(f"Node-RED exited at start:\n{self.log()}")

    def _up(self) -> bool:
        if self.process.poll() is not None:
            return True
        try:
            return requests.get(f"{self.url}/settings", timeout=2).ok
        except requests.ConnectionError:
            return False

    def deploy(self, nodes: list[dict[str, Any]]) -> None:
        reply = requests.post(
            f"{self.url}/flows",
            json=nodes,
            headers={"Node-RED-Deployment-Type": "full"},
            timeout=30,
        )
        assert reply.status_code in (200, 204), reply.text

    def inject(self, node_id: str) -> None:
        reply = requests.post(f"{self.url}/inject/{node_id}", timeout=10)
        assert reply.status_code == 200, reply.text

    def get(self, path: str) -> requests.Response:
        return requests.get(f"{self.url}{path}", timeout=10)

    def command(self, device: str, command: str, body: Any = None) -> requests.Response:
        url = f"{self.url}/edge-agent/command/{device}/{command}"
        return requests.post(url, json={} if body is None else body, timeout=30)

    def fleet(self) -> dict[str, Any]:
        reply = self.get("/edge-agent/fleet")
        assert reply.status_code == 200, reply.text
        body: dict[str, Any] = reply.json()
        return body

    def rows(self) -> dict[str, dict[str, Any]]:
        return {row["id"]: row for row in self.fleet()["devices"]}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@dataclass
class Sims:
    loop: LoopThread
    fleets: dict[str, SimFleet]  # by kind: device `<kind>-<n>` is the kind's n-th simulator

    def model(self, device: str) -> Any:
        kind, number = device.rsplit("-", 1)
        return self.fleets[kind].devices[int(number) - 1].model

    def do(self, device: str, action: Callable[[Any], Any]) -> Any:
        model = self.model(device)
        return self.loop.call(lambda: action(model))

    def whatsminer_writes(self, device: str) -> list[str]:
        return list(self.do(device, lambda m: [w.command for w in m.writes if w.code == 131]))


def device_configs(sims: Sims) -> list[dict[str, Any]]:
    """The demo's device ids, polled fast enough for a test."""
    common = {"poll_interval": "0.5s", "timeout": "2s", "offline_after": 2}
    rig = sims.fleets["xmrig"].devices[0]
    configs: list[dict[str, Any]] = [
        {"id": "xmrig-1", "kind": "xmrig", "url": rig.url, "token": rig.model.token, **common}
    ]
    for index, miner in enumerate(sims.fleets["whatsminer"].devices, 1):
        configs.append(
            {
                "id": f"whatsminer-{index}",
                "kind": "whatsminer",
                "host": miner.host,
                "port": miner.port,
                "password": miner.model.password,
                **common,
            }
        )
    srs = sims.fleets["srs"].devices[0]
    configs.append({"id": "srs-1", "kind": "srs", "url": srs.url, **common})
    pool = sims.fleets["pool"].devices[0]
    configs.append(
        {"id": "pool-1", "kind": "pool", "url": pool.url, "api_key": POOL_KEY, **common}
        | {"poll_interval": "2s"}
    )
    return configs


@pytest.fixture(scope="module")
def sims(sim_loop: LoopThread) -> Iterator[Sims]:
    fleets = {
        "xmrig": sim_loop.run(start_xmrig(1, gpu=True)),
        "whatsminer": sim_loop.run(start_whatsminers(3, time_scale=20.0)),
        "srs": sim_loop.run(start_srs(1, streams=1, players=3)),
        "pool": sim_loop.run(start_pools(1, api_key=POOL_KEY)),
    }
    yield Sims(sim_loop, fleets)
    for fleet in fleets.values():
        sim_loop.run(fleet.close())


@pytest.fixture(scope="module")
def agent(broker: Mosquitto, sims: Sims) -> Iterator[AgentThread]:
    power = {"enabled": True, "members": list(MEMBERS), "hold": 1, "min_percent": 30}
    runner = AgentThread(make_settings(broker.url, device_configs(sims), power=power))
    yield runner
    runner.stop()


@pytest.fixture(scope="module")
def nodered(
    broker: Mosquitto, agent: AgentThread, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NodeRed]:
    env = {
        "EDGE_AGENT_MQTT_HOST": "127.0.0.1",
        "EDGE_AGENT_MQTT_PORT": str(broker.port),
        "EDGE_AGENT_BASE_TOPIC": agent.agent.settings.mqtt.base_topic,
        "EDGE_AGENT_COMMAND_TIMEOUT_S": str(COMMAND_TIMEOUT_S),
        **SOLAR,
    }
    server = NodeRed(installed_nodered(), tmp_path_factory.mktemp("node-red"), env)
    try:
        deploy_and_wait(server, shipped_flows(), agent)
        yield server
    finally:
        server.stop()


def deploy_and_wait(server: NodeRed, flows: list[dict[str, Any]], agent: AgentThread) -> None:
    """Deploy, then wait until the flows read the fleet and the controls flow hears results."""
    server.deploy(flows)
    wait_until(lambda: server.get("/edge-agent/fleet").ok, 30, "the flows to start")
    wait_until(
        lambda: (
            {i for i, r in server.rows().items() if r["online"] and r["kind"]} >= set(kinds(agent))
        ),
        30,
        "the overview to list every device online",
    )
    # A command the agent refuses at once: its result coming back means results are heard.
    wait_until(
        lambda: server.command("xmrig-1", "no_such_command").status_code == 400,
        30,
        "the controls flow to match a result",
    )


def kinds(agent: AgentThread) -> dict[str, str]:
    """Each configured device's kind, by id."""
    return {d.id: d.kind for d in agent.agent.settings.devices}


@pytest.fixture
def watch(agent: AgentThread, probe: Probe) -> Probe:
    base = agent.agent.settings.mqtt.base_topic
    probe.subscribe(f"{base}/#", SOLAR["EDGE_AGENT_PV_TOPIC"])
    return probe


def base_of(agent: AgentThread) -> str:
    return agent.agent.settings.mqtt.base_topic


def latest(watch: Probe, topic: str) -> dict[str, Any]:
    """The newest message on a retained JSON topic (waiting for the first one)."""
    watch.wait_for(topic, lambda m: bool(m.payload))
    body: dict[str, Any] = json.loads(watch.all(topic)[-1].payload)
    return body


# --- fleet overview ---------------------------------------------------------------------------


def expected_figures(kind: str, state: dict[str, Any]) -> dict[str, Any]:
    """What the overview should show for a device, read from the state the agent published."""
    if kind in ("xmrig", "whatsminer"):
        window = "10s" if kind == "xmrig" else "1m"
        figures = {
            "hashrate_hs": state["hashrate_hs"][window],
            "power_w": state["power_w"],
            "temperature_c": state["temperature_c"],
            "mining": state["mining"],
            "shares_accepted": state["shares"]["accepted"],
        }
        if kind == "whatsminer":
            figures |= {
                "efficiency_j_th": state["efficiency_j_th"],
                "power_mode": state["power_mode"],
            }
        return figures
    if kind == "srs":
        server = state["server"]
        return {
            "clients": server["clients"],
            "live_streams": server["live_streams"],
            "kbps_out": server["kbps_out"],
        }
    return {"hashrate_hs": state["user"]["hashrate_hs"], "workers": state["user"]["active_workers"]}


def test_overview_shows_every_devices_key_figures_from_the_retained_state(
    nodered: NodeRed, agent: AgentThread, watch: Probe
) -> None:
    base = base_of(agent)
    configured = kinds(agent)

    def matches() -> bool:
        body = nodered.fleet()
        rows = {row["id"]: row for row in body["devices"]}
        for device, kind in configured.items():
            wanted = expected_figures(kind, latest(watch, f"{base}/{device}"))
            row = rows[device]
            shown = {key: row[key] for key in wanted}
            if shown != wanted or row["kind"] != kind or row["agent"] != "test":
                return False
        power = latest(watch, f"{base}/bridge/test/power")
        site = {key: power[key] for key in ("target_w", "measured_w", "fleet_max_w")}
        return {key: body["sites"]["test"][key] for key in site} == site

    wait_until(matches, 20, "the overview's figures to equal the agent's state")
    rows = nodered.rows()
    assert rows["xmrig-1"]["power_w"] > 0 and rows["xmrig-1"]["temperature_c"] > 0
    assert rows["whatsminer-1"]["hashrate_hs"] > 1e12  # tens of TH/s, in H/s as the state has it
    assert rows["srs-1"]["clients"] >= 3
    assert rows["srs-1"]["hashrate_hs"] is None and rows["pool-1"]["power_w"] is None
    assert {len(row) for row in rows.values()} == {len(rows["xmrig-1"])}  # one set of columns
    totals = nodered.fleet()["totals"]
    assert totals["devices"] == len(configured) and totals["online"] == len(configured)
    assert totals["power_w"] > rows["whatsminer-1"]["power_w"] + rows["whatsminer-2"]["power_w"]


def test_overview_html_table_lists_each_device_with_formatted_figures(
    nodered: NodeRed, agent: AgentThread
) -> None:
    reply = nodered.get("/edge-agent/overview")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/html")
    page = html.unescape(reply.text)
    for device in kinds(agent):
        assert f'<tr data-device="{device}">' in page
    assert "TH/s" in page and "kH/s" in page  # Whatsminers in TH/s, the CPU rig in kH/s
    assert " kW" in page and "°C" in page
    assert '<tr data-agent="test">' in page  # the site power table
    count = len(kinds(agent))
    assert f"{count} of {count} devices online" in page


def test_overview_device_endpoint_serves_the_full_state(
    nodered: NodeRed, agent: AgentThread, watch: Probe
) -> None:
    reply = nodered.get("/edge-agent/fleet/srs-1")
    assert reply.status_code == 200
    body = reply.json()
    assert body["kind"] == "srs" and body["availability"] == "online"
    listed = {c["id"] for c in body["state"]["clients"]}
    assert len(listed) >= 4  # the publisher and three players
    assert listed == {c["id"] for c in latest(watch, f"{base_of(agent)}/srs-1")["clients"]}
    missing = nodered.get("/edge-agent/fleet/no-such-device")
    assert missing.status_code == 404
    assert "no-such-device" in missing.json()["error"]


def test_overview_follows_availability(nodered: NodeRed, agent: AgentThread, sims: Sims) -> None:
    sims.do("xmrig-1", lambda m: setattr(m, "fault", "error500"))
    try:
        wait_until(lambda: nodered.rows()["xmrig-1"]["online"] is False, 20, "xmrig-1 offline")
        row = nodered.rows()["xmrig-1"]
        assert row["availability"] == "offline"
        assert nodered.fleet()["totals"]["online"] == len(kinds(agent)) - 1
    finally:
        sims.do("xmrig-1", lambda m: setattr(m, "fault", None))
    wait_until(lambda: nodered.rows()["xmrig-1"]["online"] is True, 20, "xmrig-1 back online")


# --- controls ---------------------------------------------------------------------------------


def flow_result(watch: Probe, base: str, device: str, command: str, since: int) -> dict[str, Any]:
    def ours(m: Message) -> bool:
        body = json.loads(m.payload)
        return bool(body["command"] == command and str(body["transaction"]).startswith("node-red-"))

    result: dict[str, Any] = watch.wait_for(f"{base}/{device}/result", ours, since=since).json()
    return result


def test_buttons_pause_and_resume_the_rig(
    nodered: NodeRed, agent: AgentThread, watch: Probe, sims: Sims
) -> None:
    base = base_of(agent)
    writes_before = len(sims.do("xmrig-1", lambda m: m.writes))
    mark = watch.mark()
    nodered.inject("ea_ct_pause")
    assert flow_result(watch, base, "xmrig-1", "pause", mark)["ok"] is True
    assert sims.do("xmrig-1", lambda m: m.paused) is True
    wait_until(lambda: nodered.rows()["xmrig-1"]["mining"] is False, 10, "overview: paused")
    mark = watch.mark()
    nodered.inject("ea_ct_resume")
    assert flow_result(watch, base, "xmrig-1", "resume", mark)["ok"] is True
    assert sims.do("xmrig-1", lambda m: m.paused) is False
    methods = sims.do("xmrig-1", lambda m: [w[0] for w in m.writes[writes_before:]])
    assert methods == ["pause", "resume"]


def test_buttons_switch_the_whatsminers_power_mode(
    nodered: NodeRed, agent: AgentThread, watch: Probe, sims: Sims
) -> None:
    base = base_of(agent)
    before = len(sims.whatsminer_writes("whatsminer-1"))
    for button, mode in (("ea_ct_mode_low", "low"), ("ea_ct_mode_high", "high")):
        mark = watch.mark()
        nodered.inject(button)
        assert flow_result(watch, base, "whatsminer-1", "power_mode", mark)["ok"] is True
        assert sims.do("whatsminer-1", lambda m: m.power_mode) == mode
    mark = watch.mark()
    nodered.inject("ea_ct_mode_normal")
    assert flow_result(watch, base, "whatsminer-1", "power_mode", mark)["ok"] is True
    assert sims.whatsminer_writes("whatsminer-1")[before:] == [
        "set_low_power",
        "set_high_power",
        "set_normal_power",
    ]
    wait_until(lambda: nodered.rows()["whatsminer-1"]["power_mode"] == "normal", 10, "normal")


def test_http_kicks_the_srs_client_the_overview_lists(nodered: NodeRed, sims: Sims) -> None:
    state = nodered.get("/edge-agent/fleet/srs-1").json()["state"]
    players = [c["id"] for c in state["clients"] if not c["publish"]]
    clients = state["server"]["clients"]
    reply = nodered.command("srs-1", "kick_client", {"client_id": players[0]})
    assert reply.status_code == 200, reply.text
    result = reply.json()
    assert result["ok"] is True and result["command"] == "kick_client"
    assert result["transaction"].startswith("node-red-")
    assert sims.do("srs-1", lambda m: m.kicks[-1]) == players[0]
    wait_until(lambda: nodered.rows()["srs-1"]["clients"] == clients - 1, 10, "one client less")


def test_http_answers_refusals_with_the_agents_error_and_nothing_is_written(
    nodered: NodeRed, sims: Sims
) -> None:
    before = len(sims.whatsminer_writes("whatsminer-1"))
    reply = nodered.command("whatsminer-1", "power_mode", {"mode": "turbo"})
    assert reply.status_code == 400
    assert reply.json()["error"]["code"] == "validation"
    reply = nodered.command("whatsminer-1", "reboot")  # not in allow_commands
    assert reply.status_code == 403
    assert reply.json()["error"]["code"] == "not_allowed"
    reply = nodered.command("whatsminer-1", "power_mode", ["low"])
    assert reply.status_code == 400
    assert "JSON object" in reply.json()["error"]["message"]
    assert sims.whatsminer_writes("whatsminer-1")[before:] == []


def test_http_times_out_when_no_agent_answers(nodered: NodeRed) -> None:
    reply = nodered.command("no-such-device", "pause")
    assert reply.status_code == 504
    body = reply.json()
    assert body["error"]["code"] == "no_result"
    assert f"{COMMAND_TIMEOUT_S} s" in body["error"]["message"]


# --- solar following --------------------------------------------------------------------------


class Solar:
    def __init__(self, watch: Probe, base: str) -> None:
        self.watch = watch
        self.power = f"{base}/bridge/test/power"
        self.target_topic = f"{self.power}/set"

    def publish(self, payload: str) -> int:
        mark = self.watch.mark()
        self.watch.publish(SOLAR["EDGE_AGENT_PV_TOPIC"], payload)
        return mark

    def targets(self, since: int) -> list[str]:
        return [m.text for m in self.watch.all(self.target_topic, since=since)]

    def followed(self, pv: str, target: int, timeout: float = 15) -> None:
        """PV published → the flow sets `target` → the agent steers to it."""
        mark = self.publish(pv)
        assert self.watch.wait_for(self.target_topic, None, timeout, mark).text == str(target)
        self.watch.wait_for(
            self.power, lambda m: json.loads(m.payload)["target_w"] == target, timeout, mark
        )


def test_solar_flow_moves_the_site_target_between_floor_and_ceiling(
    nodered: NodeRed, agent: AgentThread, watch: Probe, sims: Sims
) -> None:
    solar = Solar(watch, base_of(agent))
    watch.wait_for(solar.power, lambda m: (json.loads(m.payload)["fleet_max_w"] or 0) > 5000)
    writes = [len(sims.whatsminer_writes(m)) for m in MEMBERS]
    solar.followed("900", 2000)  # 900 - 200 reserve is below the 2000 W floor
    solar.followed("3700", 3500)  # PV minus the reserve
    mark = solar.publish("3720")  # 20 W more: under the 50 W step, not worth a write
    solar.followed("4200", 4000)
    assert solar.targets(mark) == ["4000"]
    solar.followed("4600.4", 4400)  # whole watts
    mark = solar.publish("lots")  # not a power: ignored
    solar.followed("12000", 5000)  # above the ceiling
    assert solar.targets(mark) == ["5000"]
    wait_until(
        lambda: any(
            len(sims.whatsminer_writes(m)) > n for m, n in zip(MEMBERS, writes, strict=True)
        ),
        10,
        "a write to the members",
    )


def test_silent_pv_sensor_drops_the_target_to_the_floor(
    nodered: NodeRed, agent: AgentThread, watch: Probe
) -> None:
    solar = Solar(watch, base_of(agent))
    solar.followed("4700", 4500)
    mark = watch.mark()
    stale_s = float(SOLAR["EDGE_AGENT_SOLAR_STALE_S"])
    assert watch.wait_for(solar.target_topic, None, stale_s + 15, mark).text == "2000"
    watch.wait_for(solar.power, lambda m: json.loads(m.payload)["target_w"] == 2000, 15, mark)


def test_the_solar_tabs_own_environment_beats_node_reds_and_reads_a_json_field(
    nodered: NodeRed, agent: AgentThread, watch: Probe
) -> None:
    """Settings a user gives the tab in its properties (Tasmota-style JSON PV readings here)."""
    flows = shipped_flows()
    tab = next(node for node in flows if node["id"] == "edge_agent_solar")
    sensor = "tele/pv-inverter/SENSOR"
    tab["env"] = [
        {"name": "EDGE_AGENT_PV_TOPIC", "value": sensor, "type": "str"},
        {"name": "EDGE_AGENT_PV_FIELD", "value": "ENERGY.Power", "type": "str"},
        {"name": "EDGE_AGENT_SOLAR_CEILING_W", "value": "4800", "type": "num"},
    ]
    solar = Solar(watch, base_of(agent))
    try:
        deploy_and_wait(nodered, flows, agent)
        mark = watch.mark()
        # Retained, so it reaches the flow whenever its subscription lands after the deploy.
        watch.publish(sensor, json.dumps({"ENERGY": {"Power": 6100, "Today": 12.5}}), retain=True)
        target = watch.wait_for(solar.target_topic, None, 15, mark)
        assert target.text == "4800"  # the tab's ceiling, not Node-RED's 5000
        watch.wait_for(solar.power, lambda m: json.loads(m.payload)["target_w"] == 4800, 15, mark)
    finally:
        watch.publish(sensor, "", retain=True)
        deploy_and_wait(nodered, shipped_flows(), agent)


def test_install_script_is_idempotent_and_names_the_folder_the_tests_use() -> None:
    """Once it has run (`.ci/run` runs it), it installs nothing and prints the same folder."""
    installed_nodered()
    done = subprocess.run(
        ["bash", str(REPO / ".ci" / "install-nodered")],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    assert Path(done.stdout.strip()) == nodered_dir()
    assert done.stderr == ""  # npm did not run
    package = nodered_dir() / "node_modules" / "node-red" / "package.json"
    assert json.loads(package.read_text())["version"].startswith("4.")


def test_node_red_logged_no_error_and_only_the_expected_warning(nodered: NodeRed) -> None:
    after_deploy = nodered.log().split("Updated flows", 1)[1]
    errors = [line for line in after_deploy.splitlines() if "[error]" in line]
    warnings = [line for line in after_deploy.splitlines() if "[warn]" in line]
    assert errors == []
    assert all("'lots' is not a power in watts" in line for line in warnings), warnings
