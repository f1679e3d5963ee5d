"""Hashrate hijack: sensitive writes are refused unless the device allows them, every write
(done or refused) leaves one audit line, and a refusal names the config line that allows it.

Two of each miner on the session broker: a `locked` one that allows nothing, an `open` one
that lists the sensitive commands. The agent publishes its audit trail (agent.audit_topic).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.devices import KINDS
from edge_agent_sim.fleet import LoopThread, SimFleet
from edge_agent_sim.whatsminer import SimClock, WhatsminerModel
from edge_agent_sim.whatsminer import start_fleet as start_whatsminers
from edge_agent_sim.xmrig import XmrigModel
from edge_agent_sim.xmrig import start_fleet as start_rigs
from tests.harness import REPO, AgentThread, Mosquitto, Probe, make_settings

PASSWORD = "s3cr3t_1"
POOL_PASSWORD = "poolpass9"
EVIL_POOL = "stratum+tcp://evil.example:3333"
WALLET = "4AttackerWalletAttackerWallet"
WM_SENSITIVE = [
    "update_pools",
    "enable_web_pools",
    "factory_reset",
    "update_pwd",
    "net_config",
    "set_hostname",
    "load_log",
    "update_firmware",
    "download_logs",
]

# Every command of every kind, with its class (the closing list is this table).
CLASSES = {
    "whatsminer": {
        "update_pools": "sensitive",
        "restart_btminer": "routine",
        "power_off": "routine",
        "power_on": "routine",
        "set_led": "routine",
        "set_low_power": "routine",
        "set_normal_power": "routine",
        "set_high_power": "routine",
        "update_firmware": "sensitive",
        "reboot": "disruptive",
        "factory_reset": "sensitive",
        "update_pwd": "sensitive",
        "net_config": "sensitive",
        "download_logs": "sensitive",
        "set_target_freq": "routine",
        "enable_btminer_fast_boot": "routine",
        "disable_btminer_fast_boot": "routine",
        "enable_web_pools": "sensitive",
        "disable_web_pools": "routine",
        "set_hostname": "sensitive",
        "set_zone": "routine",
        "load_log": "sensitive",
        "set_power_pct": "routine",
        "set_power_pct_v2": "routine",
        "pre_power_on": "routine",
        "set_temp_offset": "routine",
        "adjust_power_limit": "routine",
        "adjust_upfreq_speed": "routine",
        "set_poweroff_cool": "routine",
        "set_fan_zero_speed": "routine",
        "mining": "routine",
        "power_mode": "routine",
        "power_limit": "routine",
        "power_percent": "routine",
    },
    "xmrig": {
        "pause": "routine",
        "resume": "routine",
        "mining": "routine",
        "stop": "disruptive",
        "start": "routine",
        "config_get": "routine",
        "config_set": "sensitive",
        "config_patch": "routine unless the patch touches a sensitive field",
    },
    "srs": {"kick_client": "routine", "reload": "routine"},
    "pool": {},
}


def test_every_command_of_every_kind_has_its_class() -> None:
    found = {}
    for kind, entry in KINDS.items():
        found[kind] = {
            c.name: (
                "routine unless the patch touches a sensitive field"
                if c.sensitive_when is not None
                else c.security
            )
            for c in entry.catalog.commands
        }
    assert found == CLASSES


@dataclass
class Rig:
    """The test's view: the agent, a probe on everything, and the simulated devices."""

    agent: AgentThread
    probe: Probe
    base: str
    loop: LoopThread
    whatsminers: SimFleet
    rigs: SimFleet

    def wm(self, device: str) -> WhatsminerModel:
        model: WhatsminerModel = self.whatsminers.devices[_WM.index(device)].model
        return model

    def xmrig(self, device: str) -> XmrigModel:
        model: XmrigModel = self.rigs.devices[_XM.index(device)].model
        return model

    def on_sim(self, action: Callable[[], Any]) -> Any:
        return self.loop.call(action)

    def command(
        self, device: str, command: str, body: dict[str, Any], **publish: Any
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The command's result and its audit line."""
        mark = self.probe.mark()
        transaction = f"t-{self.probe.mark()}"
        payload = json.dumps({"command": command, **body, "transaction": transaction})
        self.probe.publish(f"{self.base}/{device}/set", payload, **publish)
        result = self.probe.wait_for(
            f"{self.base}/{device}/result",
            lambda m: m.json()["transaction"] == transaction,
            since=mark,
        ).json()
        audit = self.probe.wait_for(
            f"{self.base}/bridge/test/audit",
            lambda m: m.json()["transaction"] == transaction,
            since=mark,
        )
        assert audit.retain is False
        return result, audit.json()


_WM = ("wm-locked", "wm-open")
_XM = ("rig-locked", "rig-open")


def _device_configs(whatsminers: SimFleet, rigs: SimFleet) -> list[dict[str, Any]]:
    configs: list[dict[str, Any]] = []
    for name, sim in zip(_WM, whatsminers.devices, strict=True):
        configs.append(
            {
                "id": name,
                "kind": "whatsminer",
                "host": sim.host,
                "port": sim.port,
                "password": PASSWORD,
                "poll_interval": "30s",
                "allow_commands": WM_SENSITIVE if name == "wm-open" else [],
            }
        )
    for name, sim in zip(_XM, rigs.devices, strict=True):
        configs.append(
            {
                "id": name,
                "kind": "xmrig",
                "url": sim.url,
                "token": sim.model.token,
                "poll_interval": "30s",
                "allow_commands": ["config_set", "config_patch"] if name == "rig-open" else [],
            }
        )
    return configs


@pytest.fixture(scope="module")
def fleets(sim_loop: LoopThread) -> Iterator[tuple[SimFleet, SimFleet]]:
    whatsminers = sim_loop.run(start_whatsminers(2, password=PASSWORD, clock=SimClock(0)))
    rigs = sim_loop.run(start_rigs(2))
    yield whatsminers, rigs
    sim_loop.run(whatsminers.close())
    sim_loop.run(rigs.close())


@pytest.fixture(scope="module")
def rig(
    broker: Mosquitto, sim_loop: LoopThread, fleets: tuple[SimFleet, SimFleet]
) -> Iterator[Rig]:
    whatsminers, rigs = fleets
    settings = make_settings(
        broker.url, _device_configs(whatsminers, rigs), agent={"audit_topic": True}
    )
    base = settings.mqtt.base_topic
    probe = Probe(broker.port)
    probe.subscribe(f"{base}/#")
    runner = AgentThread(settings)
    probe.wait_for(f"{base}/bridge/test/state", lambda m: m.text == "online")
    yield Rig(runner, probe, base, sim_loop, whatsminers, rigs)
    runner.stop()
    probe.close()


POOLS = {"pool1": EVIL_POOL, "worker1": WALLET, "passwd1": POOL_PASSWORD}
XMRIG_POOLS = [{"url": EVIL_POOL, "user": WALLET, "pass": POOL_PASSWORD}]

# (device kind, command, body, what the refusal says, the sim's view that must not change)
SENSITIVE = [
    ("whatsminer", "update_pools", POOLS, "hashrate", lambda m: m.pools),
    ("whatsminer", "enable_web_pools", {}, "web page", lambda m: dict(m.settings)),
    ("whatsminer", "update_pwd", {"new": "n3w_pw_9"}, "credentials", lambda m: m.password),
    ("whatsminer", "net_config", {"mode": "static", "ip": "10.9.9.9"}, "network", None),
    ("whatsminer", "set_hostname", {"hostname": "stolen"}, "network", lambda m: m.hostname),
    ("whatsminer", "load_log", {"ip": "10.6.6.6", "port": 514, "proto": "udp"}, "logs", None),
    ("whatsminer", "factory_reset", {}, "password", lambda m: m.password),
    ("xmrig", "config_set", {"config": {"pools": XMRIG_POOLS}}, "pools", None),
    ("xmrig", "config_patch", {"patch": {"pools": XMRIG_POOLS}}, "touches pools", None),
    ("xmrig", "config_patch", {"patch": {"donate-level": 50}}, "touches donate-level", None),
    ("xmrig", "config_patch", {"patch": {"http": {"access-token": "x1"}}}, "http", None),
    ("xmrig", "config_patch", {"patch": {"cuda": {"loader": "/tmp/x.so"}}}, "cuda.loader", None),
    ("xmrig", "config_patch", {"patch": {"log-file": "/tmp/leak"}}, "touches log-file", None),
]


def _case_id(case: tuple[Any, ...]) -> str:
    body = case[2]
    inner = body.get("patch") or body.get("config") or {}
    return f"{case[1]}-{'-'.join(inner)}" if inner else case[1]


def _writes(rig: Rig, kind: str, device: str) -> Any:
    if kind == "whatsminer":
        return rig.on_sim(lambda: len(rig.wm(device).writes))
    return rig.on_sim(lambda: len(rig.xmrig(device).writes))


@pytest.mark.parametrize(
    ("kind", "command", "body", "why", "view"), SENSITIVE, ids=[_case_id(c) for c in SENSITIVE]
)
def test_sensitive_writes_are_refused_by_default_and_name_the_config_line(
    rig: Rig,
    kind: str,
    command: str,
    body: dict[str, Any],
    why: str,
    view: Callable[[Any], Any] | None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    device = "wm-locked" if kind == "whatsminer" else "rig-locked"
    writes = _writes(rig, kind, device)
    before = rig.on_sim(lambda: view(rig.wm(device))) if view else None
    result, audit = rig.command(device, command, body)

    assert (result["ok"], result["error"]["code"]) == (False, "not_allowed")
    message = result["error"]["message"]
    assert f"{command} is sensitive" in message and why in message
    assert f'set allow_commands = ["{command}"] in its [[devices]] entry' in message
    assert f"device {device!r}" in message
    assert result["error"]["detail"] == {
        "security": "sensitive",
        "allow": f'allow_commands = ["{command}"]',
    }
    assert _writes(rig, kind, device) == writes  # nothing reached the device
    if view:
        assert rig.on_sim(lambda: view(rig.wm(device))) == before

    assert audit["device"] == device and audit["command"] == command
    assert (audit["class"], audit["ok"], audit["error"]["code"]) == (
        "sensitive",
        False,
        "not_allowed",
    )
    assert audit["origin"] == {"via": "mqtt", "topic": f"{rig.base}/{device}/set"}
    logged = [json_line for json_line in _log_lines(capsys) if "audit" in json_line]
    assert len(logged) == 1 and device in logged[0] and "not_allowed" in logged[0]
    for secret in (POOL_PASSWORD, "n3w_pw_9", "x1"):
        assert secret not in json.dumps(audit) and secret not in logged[0]


def _log_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    """The audit lines logged meanwhile (stdout or stderr: the CLI tests may have configured
    logging to stderr in this process)."""
    captured = capsys.readouterr()
    lines = (captured.out + captured.err).splitlines()
    return [line for line in lines if "component=audit" in line or '"component": "audit"' in line]


def test_pools_change_where_the_device_allows_it(
    rig: Rig, capsys: pytest.CaptureFixture[str]
) -> None:
    result, audit = rig.command("wm-open", "update_pools", POOLS)
    assert result["ok"] is True, result
    pools = rig.on_sim(lambda: rig.wm("wm-open").pools)
    assert pools[0]["url"] == EVIL_POOL and pools[0]["user"] == WALLET
    assert (audit["class"], audit["ok"]) == ("sensitive", True)
    assert audit["params"]["passwd1"] == "***" and audit["params"]["worker1"] == WALLET
    assert POOL_PASSWORD not in json.dumps(audit)
    assert POOL_PASSWORD not in "".join(capsys.readouterr())

    web, _ = rig.command("wm-open", "enable_web_pools", {})
    assert web["ok"] is True and rig.on_sim(lambda: rig.wm("wm-open").settings["web_pools"])


@pytest.mark.parametrize(
    ("command", "body"),
    [
        ("config_set", "config"),
        ("config_patch", "patch"),
    ],
)
def test_xmrig_pools_and_wallet_change_where_the_rig_allows_it(
    rig: Rig, command: str, body: str
) -> None:
    current = rig.on_sim(lambda: json.loads(json.dumps(rig.xmrig("rig-open").config)))
    wallet = f"{WALLET}-{command}"
    pools = [{"url": EVIL_POOL, "user": wallet, "pass": POOL_PASSWORD}]
    value = {**current, "pools": pools} if command == "config_set" else {"pools": pools}
    result, audit = rig.command("rig-open", command, {body: value})
    assert result["ok"] is True, result
    config = rig.on_sim(lambda: rig.xmrig("rig-open").config)
    assert config["pools"][0]["user"] == wallet
    assert (audit["class"], audit["ok"]) == ("sensitive", True)
    assert audit["params"][body]["pools"][0]["pass"] == "***"
    assert audit["params"][body]["pools"][0]["user"] == wallet
    if command == "config_set":
        assert audit["params"][body]["http"]["access-token"] == "***"


def test_a_routine_patch_needs_no_allow(rig: Rig) -> None:
    patch = {"print-time": 17, "cpu": {"priority": 2}, "cuda": {"enabled": False}}
    result, audit = rig.command("rig-locked", "config_patch", {"patch": patch})
    assert result["ok"] is True, result
    config = rig.on_sim(lambda: rig.xmrig("rig-locked").config)
    assert config["print-time"] == 17 and config["cpu"]["priority"] == 2
    assert (audit["class"], audit["ok"]) == ("routine", True)
    # a patch that is not an object is refused before anything is classified or sent
    bad, audit = rig.command("rig-locked", "config_patch", {"patch": ["pools"]})
    assert bad["error"]["code"] == "validation" and audit["error"]["code"] == "validation"


def test_the_audit_names_the_mqtt5_origin(rig: Rig) -> None:
    reply = f"{rig.base}/replies/ops"  # under the probe's base/# subscription
    mark = rig.probe.mark()
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.ResponseTopic = reply
    props.CorrelationData = b"c-1"
    props.UserProperty = [("operator", "alice"), ("ticket", "OPS-7")]
    topic = f"{rig.base}/wm-locked/set/set_led"
    rig.probe.client.publish(topic, "red", qos=1, properties=props).wait_for_publish(10)
    audit = rig.probe.wait_for(
        f"{rig.base}/bridge/test/audit", lambda m: m.json()["command"] == "set_led", since=mark
    ).json()
    assert audit["origin"] == {
        "via": "mqtt",
        "topic": f"{rig.base}/wm-locked/set/set_led",
        "response_topic": reply,
        "user_properties": [["operator", "alice"], ["ticket", "OPS-7"]],
    }
    assert (audit["command"], audit["class"], audit["ok"]) == ("set_led", "routine", True)
    assert audit["params"]["color"] == "red"
    assert rig.probe.wait_for(reply, since=mark).json()["ok"] is True


def test_power_control_writes_are_audited_with_their_origin(rig: Rig) -> None:
    agent = rig.agent.agent
    worker = agent.workers["wm-locked"]
    mark = rig.probe.mark()
    result = rig.agent.run(
        agent.router.execute_internal(
            worker, "set_power_pct", {"percent": 80}, transaction="power-test"
        )
    )
    assert result["ok"] is True, result
    audit = rig.probe.wait_for(
        f"{rig.base}/bridge/test/audit",
        lambda m: m.json()["transaction"] == "power-test",
        since=mark,
    ).json()
    assert audit["origin"] == {"via": "power"}
    assert (audit["command"], audit["transaction"], audit["class"]) == (
        "set_power_pct",
        "power-test",
        "routine",
    )
    # power control passes the same gate: a gated command is refused to it too
    refused = rig.agent.run(
        agent.router.execute_internal(worker, "update_pools", POOLS, transaction="power-evil")
    )
    assert refused["error"]["code"] == "not_allowed"
    audit = rig.probe.wait_for(
        f"{rig.base}/bridge/test/audit", lambda m: m.json()["transaction"] == "power-evil"
    ).json()
    assert (audit["origin"], audit["class"], audit["ok"]) == ({"via": "power"}, "sensitive", False)


def test_unknown_commands_and_bad_payloads_are_audited_too(rig: Rig) -> None:
    mark = rig.probe.mark()
    rig.probe.publish(f"{rig.base}/rig-locked/set", '{"command": "steal", "wallet": "x"}')
    audit = rig.probe.wait_for(
        f"{rig.base}/bridge/test/audit", lambda m: m.json()["command"] == "steal", since=mark
    ).json()
    assert (audit["command"], audit["class"]) == ("steal", None)
    assert audit["error"]["code"] == "unknown_command"
    assert audit["params"] == {"wallet": "***"}  # unknown command: every value is masked


# --- the CLI: the same gate, audit lines on stderr -----------------------------------------


def _cli_config(tmp_path: Path, rig: Rig) -> Path:
    sim = rig.rigs.devices[0]
    wm = rig.whatsminers.devices[0]
    path = tmp_path / "config.toml"
    path.write_text(
        '[agent]\nid = "cli"\nlog_format = "json"\n'
        '[[devices]]\nid = "rig1"\nkind = "xmrig"\n'
        f'url = "{sim.url}"\ntoken = "{sim.model.token}"\n'
        '[[devices]]\nid = "wm1"\nkind = "whatsminer"\n'
        f'host = "{wm.host}"\nport = {wm.port}\npassword = "{PASSWORD}"\n'
    )
    path.chmod(0o600)
    return path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _audit_lines(stderr: str) -> list[dict[str, Any]]:
    found = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("event") == "audit":
                found.append(entry)
    return found


def test_cli_send_refuses_a_wallet_patch_and_audits_it(tmp_path: Path, rig: Rig) -> None:
    config = _cli_config(tmp_path, rig)
    writes = _writes(rig, "xmrig", "rig-locked")
    patch = json.dumps({"pools": [{"user": WALLET}]})
    # --direct: the CLI's own path to the rig (plain `send` goes through the running agent,
    # which audits it with its MQTT origin).
    done = _run("send", "--direct", "-c", str(config), "rig1", "config_patch", f"patch={patch}")
    assert done.returncode == 1
    result = json.loads(done.stdout)  # stdout holds the result only: logs go to stderr
    assert result["error"]["code"] == "not_allowed"
    assert 'set allow_commands = ["config_patch"]' in result["error"]["message"]
    assert "touches pools" in result["error"]["message"]
    assert _writes(rig, "xmrig", "rig-locked") == writes
    (audit,) = _audit_lines(done.stderr)
    assert (audit["device"], audit["origin"], audit["class"]) == (
        "rig1",
        {"via": "cli"},
        "sensitive",
    )


def test_cli_firmware_upload_is_refused_and_audited(tmp_path: Path, rig: Rig) -> None:
    config = _cli_config(tmp_path, rig)
    firmware = tmp_path / "fw.bin"
    firmware.write_bytes(b"\0" * 64)
    done = _run("whatsminer", "upgrade", "-c", str(config), "wm1", str(firmware))
    assert done.returncode != 0
    assert "update_firmware is sensitive" in done.stderr
    assert 'set allow_commands = ["update_firmware"]' in done.stderr
    (audit,) = _audit_lines(done.stderr)
    assert (audit["command"], audit["origin"], audit["ok"]) == (
        "update_firmware",
        {"via": "cli"},
        False,
    )
    assert rig.on_sim(lambda: rig.wm("wm-locked").firmware_uploads) == []
