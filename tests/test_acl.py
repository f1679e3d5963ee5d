"""Least privilege on the broker: the shipped examples/mosquitto ACL and listener snippet on a
real Mosquitto, with TLS and passwords, are enough for the agent and for Home Assistant, give
a dashboard no way to cause a write, and a publish the ACL denies costs the agent one log line.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent_sim.fleet import LoopThread, SimFleet
from tests.harness import (
    REPO,
    AgentThread,
    Mosquitto,
    Probe,
    free_port,
    make_settings,
    port_open,
    wait_until,
)
from tests.test_mqtt_tls_auth import certs

__all__ = ["certs"]  # the fixture, shared with the TLS tests

EXAMPLES = REPO / "examples" / "mosquitto"
BASE, AGENT_ID, PREFIX = "edge-agent", "edge-01", "homeassistant"  # the names the ACL is for
BRIDGE = f"{BASE}/bridge/{AGENT_ID}"
USERS = {
    "edge-agent": "agent-pw-1",
    "homeassistant": "ha-pw-22",
    "dashboard": "dash-pw-333",
    "operator": "op-pw-4444",
}


class AclMosquitto(Mosquitto):
    """Mosquitto from the shipped snippet: its TLS listener for the agent, plus a plain
    listener under the same passwords and ACL for the test's clients."""

    def __init__(self, workdir: Path, certs: Path, acl: str) -> None:
        super().__init__(workdir)
        self.certs = certs
        self.acl = acl
        self.plain_port = free_port()
        self.log = workdir / "mosquitto-acl.log"

    def start(self) -> None:
        passwords = self.workdir / "passwd"
        tool = shutil.which("mosquitto_passwd") or "mosquitto_passwd"
        for index, (user, password) in enumerate(USERS.items()):
            create = ["-c"] if index == 0 else []
            subprocess.run(
                [tool, "-b", *create, str(passwords), user, password],
                check=True,
                capture_output=True,
            )
        (self.workdir / "edge-agent.acl").write_text(self.acl)
        snippet = (EXAMPLES / "edge-agent.conf").read_text()
        snippet = snippet.replace("/etc/mosquitto/passwd", str(passwords))
        snippet = snippet.replace(
            "/etc/mosquitto/edge-agent.acl", str(self.workdir / "edge-agent.acl")
        )
        snippet = snippet.replace("/etc/mosquitto/certs", str(self.certs))
        snippet = snippet.replace("listener 8883", f"listener {self.port} 127.0.0.1")
        conf = self.workdir / "acl.conf"
        conf.write_text(
            # As root, mosquitto would drop to its own user, which cannot read pytest's files.
            f"{'user root' if os.geteuid() == 0 else ''}\npersistence false\n"
            f"log_dest file {self.log}\nlog_type all\n"
            f"{snippet}\nlistener {self.plain_port} 127.0.0.1\n"
        )
        self.process = subprocess.Popen(
            [self.binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_until(lambda: port_open(self.port) and port_open(self.plain_port), 10, "mosquitto")

    def denied(self) -> list[str]:
        return [line for line in self.log.read_text().splitlines() if "Denied" in line]


class UserProbe(Probe):
    """A probe that logs in as one of the ACL's users, and keeps each PUBACK's reason code."""

    user: str = ""

    def __post_init__(self) -> None:
        self._cond = threading.Condition()
        self.acks: dict[int, ReasonCode] = {}
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=self.protocol)
        self.client.username_pw_set(self.user, USERS[self.user])
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        connected = threading.Event()
        self.client.on_connect = lambda *a: connected.set()
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        assert connected.wait(10), f"{self.user} could not connect"

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        self.acks[mid] = reason

    def send(self, topic: str, payload: str, **props: Any) -> ReasonCode:
        """Publish at QoS 1 and return the broker's PUBACK reason code."""
        properties = None
        if props:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            for name, value in props.items():
                setattr(properties, name, value)
        info = self.client.publish(topic, payload, qos=1, properties=properties)
        info.wait_for_publish(10)
        return wait_until(lambda: self.acks.get(info.mid), 10, "PUBACK")


def user_probe(port: int, user: str) -> UserProbe:
    probe = UserProbe.__new__(UserProbe)
    probe.port, probe.protocol, probe.messages, probe.user = port, mqtt.MQTTv5, [], user
    probe.__post_init__()
    return probe


def shipped_acl() -> str:
    return (EXAMPLES / "acl").read_text()


def acl_settings(broker: AclMosquitto, certs: Path, fleet: SimFleet, **mqtt_extra: Any) -> Any:
    sim = fleet.devices[0]
    return make_settings(
        f"mqtts://127.0.0.1:{broker.port}",
        [
            {
                "id": "rig1",
                "kind": "xmrig",
                "url": sim.url,
                "token": sim.model.token,
                "poll_interval": "1s",
                "nominal_w": 150,
                "allow_commands": ["stop"],
            }
        ],
        agent={"id": AGENT_ID, "audit_topic": True},
        mqtt={
            "base_topic": BASE,
            "ca_file": str(certs / "ca.pem"),
            "username": "edge-agent",
            "password": USERS["edge-agent"],
            **mqtt_extra,
        },
        homeassistant={"discovery_prefix": PREFIX, "status_topic": f"{PREFIX}/status"},
        power={"enabled": True, "members": ["rig1"]},
    )


@dataclass
class Site:
    broker: AclMosquitto
    agent: AgentThread
    ha: UserProbe
    dashboard: UserProbe
    operator: UserProbe
    fleet: SimFleet
    sim_loop: LoopThread

    def paused(self) -> bool:
        return bool(self.sim_loop.call(lambda: self.fleet.devices[0].model.paused))


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory, certs: Path, sim_loop: LoopThread
) -> Iterator[Site]:
    from edge_agent_sim.xmrig import start_fleet

    fleet = sim_loop.run(start_fleet(1))
    broker = AclMosquitto(tmp_path_factory.mktemp("acl"), certs, shipped_acl())
    broker.start()
    ha = user_probe(broker.plain_port, "homeassistant")
    ha.subscribe(f"{BASE}/#", f"{PREFIX}/#")
    dashboard = user_probe(broker.plain_port, "dashboard")
    dashboard.subscribe(f"{BASE}/#")
    operator = user_probe(broker.plain_port, "operator")
    operator.subscribe(f"{BRIDGE}/response/+")
    agent = AgentThread(acl_settings(broker, certs, fleet))
    try:
        yield Site(broker, agent, ha, dashboard, operator, fleet, sim_loop)
    finally:
        agent.stop()
        for probe in (ha, dashboard, operator):
            probe.close()
        broker.stop()
        sim_loop.run(fleet.close())


def test_the_agent_works_fully_under_the_shipped_acl(site: Site) -> None:
    ha = site.ha
    ha.wait_for(f"{BRIDGE}/state", lambda m: m.text == "online")
    assert ha.wait_for(f"{BASE}/rig1").json()["hashrate_hs"]["10s"] > 0
    ha.wait_for(f"{BASE}/rig1/availability", lambda m: m.text == "online")
    ha.wait_for(f"{PREFIX}/sensor/rig1/+/config")
    ha.wait_for(f"{PREFIX}/+/bridge_{AGENT_ID}/+/config")

    # Home Assistant's birth message makes the agent announce again
    mark = ha.mark()
    assert ha.send(f"{PREFIX}/status", "online").value == 0
    ha.wait_for(f"{PREFIX}/sensor/rig1/+/config", since=mark)

    # a command from Home Assistant reaches the rig, its result and audit line come back
    mark = ha.mark()
    assert ha.send(f"{BASE}/rig1/set/pause", "").value < 0x80
    assert ha.wait_for(f"{BASE}/rig1/result", since=mark).json()["ok"] is True
    assert site.paused()
    audit = site.dashboard.wait_for(f"{BRIDGE}/audit", lambda m: m.json()["command"] == "pause")
    assert audit.json()["origin"]["topic"] == f"{BASE}/rig1/set/pause"
    assert ha.send(f"{BASE}/rig1/set/resume", "").value < 0x80
    ha.wait_for(f"{BASE}/rig1/result", lambda m: m.json()["command"] == "resume", since=mark)

    # site power control takes its target from Home Assistant (the rig's full power: the
    # controller has nothing to write, so no power-N command races the tests below)
    mark = ha.mark()
    assert ha.send(f"{BRIDGE}/power/set/target", "150").value < 0x80
    assert ha.wait_for(f"{BRIDGE}/power/result", since=mark).json()["ok"] is True
    ha.wait_for(f"{BRIDGE}/power", lambda m: m.json().get("target_w") == 150, since=mark)
    mark = ha.mark()
    assert ha.send(f"{BRIDGE}/power/set/target", "null").value < 0x80
    assert ha.wait_for(f"{BRIDGE}/power/result", since=mark).json()["ok"] is True

    # an operator's bridge request is answered
    assert site.operator.send(f"{BRIDGE}/request/health", "{}").value < 0x80
    health = site.operator.wait_for(f"{BRIDGE}/response/health").json()
    assert health["status"] == "ok" and health["data"]["mqtt_connected"] is True
    # Home Assistant's connection sees the response too, maybe later: the next test's mark
    # must come after it
    site.ha.wait_for(f"{BRIDGE}/response/health")

    # and nothing the agent did needed a topic the ACL refuses
    link = site.agent.agent.link
    assert link.denied == 0 and link.connects == 1
    assert not [line for line in site.broker.denied() if "edge-agent" in line.lower()]


@pytest.mark.parametrize(
    "topic",
    [
        f"{BASE}/rig1/set/stop",
        f"{BASE}/rig1/set/pause",
        f"{BASE}/rig1/set",
        f"{BASE}/rig1/get",
        f"{BRIDGE}/power/set/target",
        f"{BRIDGE}/request/reload",
        f"{PREFIX}/status",
    ],
)
def test_the_read_only_dashboard_cannot_cause_a_write(site: Site, topic: str) -> None:
    site.ha.wait_for(f"{BASE}/rig1/availability", lambda m: m.text == "online")
    mark = site.ha.mark()
    payload = '{"command": "pause"}' if topic.endswith("/set") else "0"
    reason = site.dashboard.send(topic, payload)
    assert (reason.value, str(reason)) == (0x87, "Not authorized")
    # Home Assistant's next command is the barrier: had the dashboard's gone through, its
    # result (or a reload's response, or a new target) would be there before this one's.
    assert site.ha.send(f"{BASE}/rig1/set/resume", "").value < 0x80
    site.ha.wait_for(f"{BASE}/rig1/result", lambda m: m.json()["command"] == "resume", since=mark)
    results = [m.json() for m in site.ha.all(f"{BASE}/rig1/result", since=mark)]
    ours = [r["command"] for r in results if not str(r["transaction"]).startswith("power-")]
    assert ours == ["resume"]
    assert site.ha.all(f"{BRIDGE}/response/+", since=mark) == []
    assert site.ha.all(f"{BRIDGE}/power/result", since=mark) == []
    assert not site.paused()


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_a_publish_the_acl_denies_is_logged_once_and_the_agent_keeps_working(
    tmp_path: Path,
    certs: Path,
    sim_loop: LoopThread,
    xmrig_fleet: SimFleet,
    protocol: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The operator turned audit_topic on but the broker's ACL was not given the audit topic.
    acl = shipped_acl().replace(
        "user edge-agent\n", f"user edge-agent\ntopic deny {BRIDGE}/audit\n", 1
    )
    broker = AclMosquitto(tmp_path, certs, acl)
    broker.start()
    ha = user_probe(broker.plain_port, "homeassistant")
    ha.subscribe(f"{BASE}/#")
    agent = AgentThread(acl_settings(broker, certs, xmrig_fleet, protocol=protocol))
    try:
        ha.wait_for(f"{BASE}/rig1/availability", lambda m: m.text == "online")
        for index in range(6):
            mark = ha.mark()
            command = ("pause", "resume")[index % 2]
            assert ha.send(f"{BASE}/rig1/set/{command}", "").value < 0x80
            assert ha.wait_for(f"{BASE}/rig1/result", since=mark).json()["ok"] is True
        wait_until(lambda: len(broker.denied()) >= 6, 10, "the broker to deny 6 audit lines")
        link = agent.agent.link
        if protocol == "5":  # PUBACK 0x87 for each; logged the first time only
            wait_until(lambda: link.denied >= 6, 10, "6 denials")
        output = "".join(capsys.readouterr())
        logged = [line for line in output.splitlines() if "mqtt publish denied" in line]
        if protocol == "5":
            assert len(logged) == 1, logged
            assert f"{BRIDGE}/audit" in logged[0] and "Not authorized" in logged[0]
            assert re.search(r"reason_code=135|\"reason_code\": 135", logged[0])
        else:  # MQTT 3.1.1 has no reason code: the broker's silence is all there is
            assert logged == [] and link.denied == 0
        assert link.connects == 1 and link.connected.is_set()  # no reconnect loop
        assert agent.agent.health()["mqtt_denied"] == link.denied
        assert ha.wait_for(f"{BASE}/rig1").json()["hashrate_hs"]["10s"] > 0  # still polling
        assert ha.all(f"{BRIDGE}/audit") == []
    finally:
        agent.stop()
        ha.close()
        broker.stop()
