"""The agent end to end with Whatsminers: real Mosquitto, simulated miners on real sockets.

One agent serves six simulated miners for the whole module, each with a role:
`wm1` (allow-list for the disruptive commands), `wm2` (no allow-list), `burst` (untouched until
the 200-command burst, so its token count is the burst's own), `flaky` (short timeouts, for
faults), `quirky` (reads everything, status included, on every poll and publishes raw replies,
for the firmware quirks) and `spent` (for token exhaustion, which backs its client off for a
minute).
The miners share one frozen simulated clock: tests advance it when a command needs time to show
its effect. The last tests run the CLI (`whatsminer upgrade|logs`, `send`, `poll`) in
subprocesses against a miner of their own.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.devices.whatsminer.catalog import CATALOG
from agent.devices.whatsminer.client import WhatsminerClient
from agent.devices.whatsminer.driver import normalise_board
from edge_agent_sim.fleet import LoopThread, SimFleet
from edge_agent_sim.whatsminer import (
    DEFAULT_PASSWORD,
    FAST_EXPONENT,
    JOIN_VARIANTS,
    NORMAL_EXPONENT,
    QUIRKS,
    REBOOT_S,
    Ramp,
    SimClock,
    WhatsminerModel,
    start_fleet,
)
from tests.harness import (
    REPO,
    AgentThread,
    Message,
    Mosquitto,
    Probe,
    make_settings,
    running_agent,
    wait_until,
)

PASSWORD = "s3cr3t_1"  # the simulated miners' admin password
OTHER_PASSWORD = "0ther_pw"
NEW_PASSWORD = "n3w_pw_9"
ERRORS = {"329": "2022-01-17 11:28:11", "2010": "2022-01-18 09:00:00"}
MANY_ERRORS = {
    "329": "2022-01-17 11:28:11",
    "2010": "2022-01-18 09:00:00",
    "110": "2022-01-19 10:00:00",
    "531": "2022-01-20 12:00:00",
}
DISRUPTIVE = ["reboot", "factory_reset", "update_pwd", "net_config", "set_hostname", "load_log"]
FILE_FLOWS = ["update_firmware", "download_logs"]
# Sensitive, yet cased with the plain writes below, on wm1 that allows them (test_security
# shows them refused without the allow).
POOL_WRITES = ["update_pools", "enable_web_pools"]
ROLES = ("wm1", "wm2", "burst", "flaky", "quirky", "spent")
TIMEOUT_S = 0.5  # flaky's per-request timeout
READS = {
    "summary",
    "pools",
    "edevs",
    "status",
    "get_psu",
    "get_error_code",
    "get_version",
    "devdetails",
    "get_miner_info",
}


def device_configs(fleet: SimFleet) -> list[dict[str, Any]]:
    port = {role: fleet.devices[i].port for i, role in enumerate(ROLES)}

    def miner(role: str, **extra: Any) -> dict[str, Any]:
        return {
            "id": role,
            "kind": "whatsminer",
            "host": "127.0.0.1",
            "port": port[role],
            "password": PASSWORD,
            "poll_interval": "60s",
            "timeout": "2s",
            **extra,
        }

    return [
        miner(
            "wm1",
            name="Miner one",
            poll_interval="0.2s",
            allow_commands=DISRUPTIVE + FILE_FLOWS + POOL_WRITES,
        ),
        miner("wm2", poll_interval="0.5s"),
        miner("burst"),
        miner("flaky", poll_interval="0.1s", timeout=f"{TIMEOUT_S}s", offline_after=2),
        miner("quirky", publish_raw=True, detail_interval=0, slow_interval=0, status_interval=0),
        miner("spent"),
    ]


# --- the simulated miners ---------------------------------------------------------------------


@dataclass
class Sims:
    loop: LoopThread
    fleet: SimFleet
    clock: SimClock

    def model(self, role: str) -> WhatsminerModel:
        model: WhatsminerModel = self.fleet.devices[ROLES.index(role)].model
        return model

    def do(self, role: str, action: Callable[[WhatsminerModel], Any]) -> Any:
        model = self.model(role)
        return self.loop.call(lambda: action(model))

    def advance(self, seconds: float) -> None:
        self.loop.call(lambda: self.clock.advance(seconds))

    def writes(self, role: str) -> int:
        return int(self.do(role, lambda m: len(m.writes)))


def reset(model: WhatsminerModel) -> None:
    """Back to a healthy, fully powered miner in normal mode (counters for one test zeroed)."""
    t = model.now()
    model.fault = None
    model.quirks = set()
    model.join_limit, model.join_excess, model.led_fields = "two", "answer_first", "integer"
    model.unsupported = set()
    model.write_api = True
    model.cooling = "air"
    if model.password != PASSWORD:
        model.password = PASSWORD
        model._set_key()
    model.mining = True
    model.preheat_started = None
    model.power_mode = "normal"
    model.power_limit_w = 0.0
    model.target_freq_percent = 0
    model.target_fraction = 1.0
    model.exponent = NORMAL_EXPONENT
    model.ramp = Ramp(1.0, 1.0, t, t)
    model.restart_until = model.reboot_until = t - 1
    model.led = "auto"
    model.hostname = f"WhatsMiner{model.index}"
    model.network = {"proto": "dhcp", "ip": f"10.0.0.{model.index}"}
    model.pools = [{"url": "stratum+tcp://btc.ss.poolin.com:443", "user": f"sim.{model.index}"}]
    model.settings.clear()
    model.btminer_restarts = model.reboots = 0


@pytest.fixture(scope="module")
def sims(sim_loop: LoopThread) -> Iterator[Sims]:
    clock = SimClock(time_scale=0)
    fleet = sim_loop.run(
        start_fleet(len(ROLES), password=PASSWORD, clock=clock, error_codes=dict(ERRORS))
    )
    sims = Sims(sim_loop, fleet, clock)
    sims.do("quirky", lambda m: setattr(m, "error_codes", dict(MANY_ERRORS)))
    yield sims
    sim_loop.run(fleet.close())


@pytest.fixture
def sim(sims: Sims) -> Sims:
    for role in ROLES:
        sims.do(role, reset)
    return sims


# --- the shared agent and its MQTT view -------------------------------------------------------


class Mqtt:
    """The probe, bound to the shared agent's topics."""

    def __init__(self, probe: Probe, agent: AgentThread) -> None:
        self.probe = probe
        self.agent = agent
        settings = agent.agent.settings
        self.base = settings.mqtt.base_topic
        self.prefix = settings.homeassistant.discovery_prefix
        # Commands go out at once instead of waiting for the broker's delayed ACK (Nagle).
        probe.client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        probe.subscribe(f"{self.base}/#", f"{self.prefix}/#")
        probe.wait_for(f"{self.base}/bridge/test/state", lambda m: m.text == "online")

    def topic(self, device: str, suffix: str = "") -> str:
        return f"{self.base}/{device}{suffix}"

    def config_topic(self, platform: str, key: str, device: str = "wm1") -> str:
        return f"{self.prefix}/{platform}/{device}/{key}/config"

    def command(self, device: str, suffix: str, payload: bytes | str) -> dict[str, Any]:
        """Publish on `{device}/set{suffix}` and return the one result it produced."""
        mark = self.probe.mark()
        self.probe.publish(self.topic(device, f"/set{suffix}"), payload)
        result: dict[str, Any] = self.probe.wait_for(
            self.topic(device, "/result"), since=mark
        ).json()
        return result

    def state(
        self, device: str, predicate: Callable[[dict[str, Any]], Any], since: int
    ) -> dict[str, Any]:
        found: dict[str, Any] = self.probe.wait_for(
            self.topic(device), lambda m: bool(m.payload) and bool(predicate(m.json())), since=since
        ).json()
        return found

    def current_state(self, device: str) -> dict[str, Any]:
        """The device's state after a poll that started now.

        State is published only when it changes, so an idle miner's state may be older than
        the command it shows: poll on request, and read the last state published before the
        response (the agent's messages arrive in the order it sent them).
        """
        mark = self.probe.mark()
        assert self.request("poll", {"device": device})["data"] == {device: "ok"}
        seen = self.probe.all("#")
        end = next(i for i in range(mark, len(seen)) if seen[i].topic.endswith("/response/poll"))
        latest = next(
            m for m in reversed(seen[:end]) if m.topic == self.topic(device) and m.payload
        )
        found: dict[str, Any] = latest.json()
        return found

    def request(self, action: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        mark = self.probe.mark()
        self.probe.publish(f"{self.base}/bridge/test/request/{action}", json.dumps(body or {}))
        response: dict[str, Any] = self.probe.wait_for(
            f"{self.base}/bridge/test/response/{action}", since=mark
        ).json()
        return response

    def from_agent(self, since: int = 0) -> list[Message]:
        """Everything the agent published (what tests publish goes to `…/set…` and requests)."""
        return [
            m
            for m in self.probe.all("#", since=since)
            if "/set" not in m.topic and "/request/" not in m.topic
        ]

    def latest_config(self, platform: str, key: str, device: str = "wm1") -> dict[str, Any]:
        topic = self.config_topic(platform, key, device)
        self.probe.wait_for(topic)
        found: dict[str, Any] = self.probe.all(topic)[-1].json()
        return found


@pytest.fixture(scope="module")
def agent(broker: Mosquitto, sims: Sims) -> Iterator[AgentThread]:
    runner = AgentThread(make_settings(broker.url, device_configs(sims.fleet)))
    yield runner
    runner.stop()


@pytest.fixture(scope="module")
def shared(broker: Mosquitto, agent: AgentThread) -> Iterator[Mqtt]:
    probe = Probe(broker.port)
    yield Mqtt(probe, agent)
    probe.close()


@pytest.fixture
def mqtt(shared: Mqtt, sim: Sims) -> Mqtt:
    return shared


def failed_polls(agent: AgentThread, device: str) -> int:
    return int(agent.call(lambda: agent.agent.workers[device].stats.failed))


# --- every write command, from both topic forms -----------------------------------------------

State = Callable[[dict[str, Any], WhatsminerModel], Any]


@dataclass(frozen=True)
class Case:
    command: str
    payload: str  # what `set/{command}` carries: a plain value, or a JSON object of params
    effect: Callable[[WhatsminerModel], Any]  # the miner changed as the command says
    state: State | None = None  # …and the agent's next state shows it
    setup: tuple[tuple[str, str], ...] = ()
    data: Any = "ok"
    advance: float = 0.0  # simulated seconds for the change to land before `state` is read
    name: str | None = None

    @property
    def id(self) -> str:
        return self.name or self.command

    def params(self) -> dict[str, Any]:
        """The payload as the params of a `{device}/set` JSON body, typed as JSON would be."""
        if self.payload.startswith("{"):
            params: dict[str, Any] = json.loads(self.payload)
            return params
        spec = CATALOG.command(self.command)
        assert spec is not None
        if spec.plain is None:
            return {}
        value: Any = self.payload
        if re.fullmatch(r"-?\d+", value):
            value = int(value)
        elif value in ("ON", "OFF"):
            value = value == "ON"
        return {spec.plain: value}


def near(value: Any, expected: float, tolerance: float = 0.08) -> bool:
    return isinstance(value, int | float) and abs(value - expected) <= tolerance * expected


POOLS = (
    '{"pool1":"stratum+tcp://a.example:3333","worker1":"acct.w1","passwd1":"poolpass9",'
    '"pool2":"stratum+tcp://b.example:25","worker2":"acct.w2"}'
)

CASES = [
    Case(
        "update_pools",
        POOLS,
        lambda m: (
            [p["url"] for p in m.pools]
            == ["stratum+tcp://a.example:3333", "stratum+tcp://b.example:25"]
        ),
        lambda s, m: (
            s["pool"]
            == {
                "url": "stratum+tcp://a.example:3333",
                "user": "acct.w1",
                "status": "Alive",
            }
            and [p["user"] for p in s["pools"]] == ["acct.w1", "acct.w2"]
        ),
    ),
    Case(
        "restart_btminer",
        "PRESS",
        lambda m: m.btminer_restarts == 1,
        lambda s, m: s["mining"] is True and s["hashrate_hs"]["1m"] == 0,
    ),
    Case(
        "power_off",
        "",
        lambda m: not m.mining,
        lambda s, m: s["mining"] is False and s["power_w"] < 50,
    ),
    Case(
        "power_on",
        "",
        lambda m: m.mining,
        lambda s, m: s["mining"] is True,
        setup=(("power_off", ""),),
    ),
    Case("set_led", "green", lambda m: m.led == "green", lambda s, m: s["led"] == "green"),
    Case(
        "set_led",
        '{"color":"red","period":2000,"duration":100,"start":50}',
        lambda m: m.led == "red",
        lambda s, m: s["led"] == "red",
        name="set_led-flashing",
    ),
    Case(
        "set_led",
        "auto",
        lambda m: m.led == "auto",
        lambda s, m: s["led"] == "auto",
        setup=(("set_led", "green"),),
        name="set_led-auto",
    ),
    Case(
        "set_low_power",
        "",
        lambda m: m.power_mode == "low",
        lambda s, m: s["power_mode"] == "low" and near(s["power_w"], 0.8 * m.rated_w),
        advance=300,
    ),
    Case(
        "set_normal_power",
        "",
        lambda m: m.power_mode == "normal",
        lambda s, m: s["power_mode"] == "normal",
        setup=(("set_low_power", ""),),
    ),
    Case(
        "set_high_power",
        "",
        lambda m: m.power_mode == "high",
        lambda s, m: s["power_mode"] == "high" and near(s["power_w"], 1.15 * m.rated_w),
        advance=300,
    ),
    Case(
        "set_target_freq",
        "-20",
        lambda m: m.target_freq_percent == -20,
        lambda s, m: s["settings"]["target_freq_percent"] == -20 and s["hash_percent"] == 80,
    ),
    Case(
        "enable_btminer_fast_boot",
        "",
        lambda m: m.settings["fast_boot"] == "enable",
        lambda s, m: s["fast_boot"] is True,
    ),
    Case(
        "disable_btminer_fast_boot",
        "",
        lambda m: m.settings["fast_boot"] == "disable",
        lambda s, m: s["fast_boot"] is False,
        setup=(("enable_btminer_fast_boot", ""),),
    ),
    Case("enable_web_pools", "", lambda m: m.settings["web_pools"] is True),
    Case("disable_web_pools", "", lambda m: m.settings["web_pools"] is False),
    Case(
        "set_zone",
        '{"timezone":"CST-8","zonename":"Asia/Shanghai"}',
        lambda m: m.settings["zone"] == ("CST-8", "Asia/Shanghai"),
    ),
    Case(
        "set_power_pct",
        "70",
        lambda m: m.exponent == FAST_EXPONENT and near(m.target_fraction, 0.70),
        lambda s, m: (
            s["settings"]["power_percent"] == 70
            and s["settings"]["power_percent_ramp"] == "fast"
            and near(s["power_w"], 0.70 * m.rated_w)
        ),
        advance=2,
    ),
    Case(
        "set_power_pct_v2",
        "60",
        lambda m: m.exponent == NORMAL_EXPONENT and near(m.target_fraction, 0.60),
        lambda s, m: (
            s["settings"]["power_percent"] == 60
            and s["settings"]["power_percent_ramp"] == "normal"
            and near(s["power_w"], 0.60 * m.rated_w)
        ),
        advance=300,
    ),
    Case(
        "pre_power_on",
        "",
        lambda m: m.preheat_started is not None,
        setup=(("power_off", ""),),
        data={"complete": False, "msg": "wait for adjust temp"},
    ),
    Case(
        "set_temp_offset",
        "-5",
        lambda m: m.settings["temp_offset"] == -5,
        lambda s, m: s["settings"]["temp_offset_c"] == -5,
    ),
    Case(
        "adjust_power_limit",
        "3000",
        lambda m: m.power_limit_w == 3000,
        lambda s, m: s["power_limit_w"] == 3000 and near(s["power_w"], 3000, 0.02),
        advance=300,
    ),
    Case(
        "adjust_upfreq_speed",
        "5",
        lambda m: m.settings["upfreq_speed"] == 5,
        lambda s, m: s["settings"]["upfreq_speed"] == 5,
    ),
    Case("set_poweroff_cool", "ON", lambda m: m.settings["poweroff_cool"] is True),
    Case("set_fan_zero_speed", "ON", lambda m: m.settings["fan_zero_speed"] is True),
    Case(
        "set_fan_zero_speed",
        "OFF",
        lambda m: m.settings["fan_zero_speed"] is False,
        name="set_fan_zero_speed-off",
    ),
    Case(
        "mining",
        "OFF",
        lambda m: not m.mining,
        lambda s, m: s["mining"] is False and s["power_w"] < 50,
    ),
    Case(
        "mining",
        "ON",
        lambda m: m.mining,
        lambda s, m: s["mining"] is True,
        setup=(("mining", "OFF"),),
        name="mining-on",
    ),
    Case(
        "power_mode",
        "low",
        lambda m: m.power_mode == "low",
        lambda s, m: s["power_mode"] == "low",
    ),
    Case(
        "power_limit",
        "2900",
        lambda m: m.power_limit_w == 2900,
        lambda s, m: s["power_limit_w"] == 2900,
    ),
    Case(
        "power_percent",
        "55",
        lambda m: m.exponent == NORMAL_EXPONENT and near(m.target_fraction, 0.55),
        lambda s, m: s["settings"]["power_percent"] == 55 and near(s["power_w"], 0.55 * m.rated_w),
        advance=300,
    ),
]
WIRE = {  # the friendly controls and the API writes they become
    "mining": {"ON": "power_on", "OFF": "power_off"},
    "power_mode": {"low": "set_low_power"},
    "power_limit": "adjust_power_limit",
    "power_percent": "set_power_pct_v2",
}


def test_every_command_that_needs_no_allow_list_has_a_case() -> None:
    plain = {c.name for c in CATALOG.commands if not c.gated}
    assert {case.command for case in CASES} == plain | set(POOL_WRITES)
    gated = {c.name for c in CATALOG.commands if c.gated}
    assert set(DISRUPTIVE) | set(FILE_FLOWS) | set(POOL_WRITES) == gated


def wire_command(case: Case) -> str:
    wire = WIRE.get(case.command, case.command)
    return wire[case.payload] if isinstance(wire, dict) else wire


@pytest.mark.parametrize("form", ["topic", "set"])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_write_command_reaches_the_miner(mqtt: Mqtt, sim: Sims, case: Case, form: str) -> None:
    for command, payload in case.setup:
        assert mqtt.command("wm1", f"/{command}", payload)["ok"] is True
    writes = sim.writes("wm1")
    if form == "topic":
        result = mqtt.command("wm1", f"/{case.command}", case.payload)
        transaction = None
    else:
        transaction = f"t-{case.id}"
        body = {"command": case.command, **case.params(), "transaction": transaction}
        result = mqtt.command("wm1", "", json.dumps(body))
    assert result["ok"] is True, result
    assert (result["command"], result["transaction"]) == (case.command, transaction)
    assert result["data"] == case.data and result["error"] is None
    assert "poolpass9" not in json.dumps(result)
    last = sim.do("wm1", lambda m: (len(m.writes), m.writes[-1].command, m.writes[-1].code))
    assert last == (writes + 1, wire_command(case), 131)
    assert sim.do("wm1", case.effect), f"{case.id}: the miner did not change"
    shows = case.state
    if shows is not None:
        sim.advance(case.advance)
        state = mqtt.current_state("wm1")
        assert shows(state, sim.model("wm1")), f"{case.id}: the state does not show it"


# --- the allow-list ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Disruptive:
    command: str
    payload: str
    effect: Callable[[WhatsminerModel], Any]
    reboots: bool = False


DISRUPTIVE_CASES = [
    Disruptive("reboot", "PRESS", lambda m: m.reboots == 1, reboots=True),
    Disruptive(
        "factory_reset",
        "",
        lambda m: not m.write_api and m.pools == [] and m.password == DEFAULT_PASSWORD,
        reboots=True,
    ),
    Disruptive(
        "net_config",
        '{"mode":"static","ip":"10.1.2.3","mask":"255.255.255.0","gate":"10.1.2.1",'
        '"dns":"1.1.1.1 8.8.8.8","host":"rig-9"}',
        lambda m: m.network["ip"] == "10.1.2.3" and m.hostname == "rig-9",
        reboots=True,
    ),
    Disruptive("set_hostname", "rig-7", lambda m: m.hostname == "rig-7"),
    Disruptive(
        "load_log",
        '{"ip":"10.0.0.5","port":514,"proto":"udp"}',
        lambda m: m.settings.get("log_server") == ("10.0.0.5", 514, "udp"),
    ),
]


@pytest.mark.parametrize("case", DISRUPTIVE_CASES, ids=[c.command for c in DISRUPTIVE_CASES])
def test_disruptive_command_needs_the_allow_list_and_writes_go_on_after_it(
    mqtt: Mqtt, sim: Sims, case: Disruptive
) -> None:
    untouched = sim.do("wm2", lambda m: (len(m.writes), m.tokens_issued, m.reboots))
    refused = mqtt.command("wm2", f"/{case.command}", case.payload)
    assert refused["ok"] is False
    assert refused["error"]["code"] == "not_allowed"
    assert "allow_commands" in refused["error"]["message"]
    assert sim.do("wm2", lambda m: (len(m.writes), m.tokens_issued, m.reboots)) == untouched
    assert not sim.do("wm2", case.effect)

    accepted = mqtt.command("wm1", f"/{case.command}", case.payload)
    assert (accepted["ok"], accepted["data"]) == (True, "ok"), accepted
    assert sim.do("wm1", case.effect)
    if case.reboots:
        assert sim.do("wm1", lambda m: m.tokens == {})  # a reboot forgets every token
        sim.advance(REBOOT_S)
    if case.command == "factory_reset":
        off = mqtt.command("wm1", "/set_led", "red")
        assert off["error"]["device_code"] == 45
        assert "write API not enabled on the miner" in off["error"]["message"]

        def operator_turns_the_api_on_again(model: WhatsminerModel) -> None:
            model.write_api = True
            model.password = PASSWORD
            model._set_key()

        sim.do("wm1", operator_turns_the_api_on_again)
    tokens = sim.do("wm1", lambda m: m.tokens_issued)
    assert mqtt.command("wm1", "/set_led", "red")["ok"] is True
    assert sim.do("wm1", lambda m: m.led) == "red"
    fetched = sim.do("wm1", lambda m: m.tokens_issued) - tokens
    assert fetched == (1 if case.reboots else 0)  # re-fetched only when the miner forgot it


def test_reboot_button_only_where_reboot_is_allowed(mqtt: Mqtt, sim: Sims) -> None:
    allowed = mqtt.latest_config("button", "reboot", "wm1")
    assert allowed["command_topic"] == mqtt.topic("wm1", "/set/reboot")
    # wm2 does not allow reboot: no button that could only ever answer "not allowed" ...
    mqtt.latest_config("button", "restart_btminer", "wm2")  # its discovery is out
    assert mqtt.probe.all(mqtt.config_topic("button", "reboot", "wm2")) == []
    # ... and a press sent anyway is still refused
    mark = mqtt.probe.mark()
    mqtt.probe.publish(mqtt.topic("wm2", "/set/reboot"), "PRESS")
    result = mqtt.probe.wait_for(mqtt.topic("wm2", "/result"), since=mark).json()
    assert (result["command"], result["error"]["code"]) == ("reboot", "not_allowed")
    assert sim.do("wm2", lambda m: m.reboots) == 0


def test_password_change_rekeys_and_writes_keep_working(mqtt: Mqtt, sim: Sims) -> None:
    start = mqtt.probe.mark()
    assert mqtt.command("wm2", "/update_pwd", NEW_PASSWORD)["error"]["code"] == "not_allowed"
    assert sim.do("wm2", lambda m: m.password) == PASSWORD

    bad = mqtt.command("wm1", "/update_pwd", "bad-pw!x")
    assert bad["error"]["code"] == "validation"
    assert "the value given" in bad["error"]["message"]
    assert "bad-pw!x" not in json.dumps(bad)

    changed = mqtt.command("wm1", "/update_pwd", NEW_PASSWORD)
    assert (changed["ok"], changed["data"]) == (True, "ok"), changed
    tokens, password = sim.do("wm1", lambda m: (m.tokens_issued, m.password))
    assert password == NEW_PASSWORD
    for command, payload in (("set_led", "green"), ("power_percent", "90"), ("mining", "ON")):
        assert mqtt.command("wm1", f"/{command}", payload)["ok"] is True
    assert sim.do("wm1", lambda m: m.led) == "green"
    assert sim.do("wm1", lambda m: m.tokens_issued) == tokens + 1  # signed with the new key

    wrong_old = mqtt.command("wm1", "/update_pwd", json.dumps({"new": "x1", "old": "nope_1"}))
    assert wrong_old["error"]["device_code"] == 132
    assert sim.do("wm1", lambda m: m.password) == NEW_PASSWORD

    back = {"command": "update_pwd", "new": PASSWORD, "transaction": "pw-back"}
    restored = mqtt.command("wm1", "", json.dumps(back))
    assert (restored["ok"], restored["transaction"]) == (True, "pw-back")
    assert sim.do("wm1", lambda m: m.password) == PASSWORD
    assert mqtt.command("wm1", "/set_led", "auto")["ok"] is True
    assert sim.do("wm1", lambda m: m.led) == "auto"
    published = b"\n".join(m.payload for m in mqtt.from_agent(start))
    for secret in (PASSWORD, NEW_PASSWORD, "nope_1"):
        assert secret.encode() not in published


@pytest.mark.parametrize("command", FILE_FLOWS)
@pytest.mark.parametrize("form", ["topic", "set"])
def test_file_flows_are_cli_only_even_when_allowed(
    mqtt: Mqtt, sim: Sims, tmp_path: Path, command: str, form: str
) -> None:
    params = {"path": str(tmp_path / "file.bin")}
    (tmp_path / "file.bin").write_bytes(b"firmware")
    writes = sim.writes("wm1")
    if form == "topic":
        result = mqtt.command("wm1", f"/{command}", json.dumps(params))
    else:
        result = mqtt.command("wm1", "", json.dumps({"command": command, **params}))
    assert (result["command"], result["ok"]) == (command, False)
    assert result["error"]["code"] == "not_allowed"
    assert "only from the CLI" in result["error"]["message"]
    flows = sim.do("wm1", lambda m: (len(m.writes), m.firmware_uploads, m.log_downloads))
    assert flows == (writes, [], 0)


# --- parameter ranges -------------------------------------------------------------------------

RANGES = [  # (command, payload, accepted): the doc's inclusive ends, and just outside them
    ("set_target_freq", "-100", True),
    ("set_target_freq", "100", True),
    ("set_target_freq", "-101", False),
    ("set_target_freq", "101", False),
    ("set_power_pct", "0", True),
    ("set_power_pct", "100", True),
    ("set_power_pct", "-1", False),
    ("set_power_pct", "101", False),
    ("set_power_pct_v2", "0", True),
    ("set_power_pct_v2", "100", True),
    ("set_power_pct_v2", "-1", False),
    ("set_power_pct_v2", "101", False),
    ("power_percent", "0", True),
    ("power_percent", "100", True),
    ("power_percent", "-1", False),
    ("power_percent", "101", False),
    ("power_percent", "99.5", False),
    ("set_temp_offset", "-30", True),
    ("set_temp_offset", "0", True),
    ("set_temp_offset", "-31", False),
    ("set_temp_offset", "1", False),
    ("adjust_power_limit", "0", True),
    ("adjust_power_limit", "99999", True),
    ("adjust_power_limit", "-1", False),
    ("adjust_power_limit", "100000", False),
    ("power_limit", "0", True),
    ("power_limit", "99999", True),
    ("power_limit", "-1", False),
    ("power_limit", "100000", False),
    ("adjust_upfreq_speed", "0", True),
    ("adjust_upfreq_speed", "9", True),
    ("adjust_upfreq_speed", "-1", False),
    ("adjust_upfreq_speed", "10", False),
    ("set_poweroff_cool", "0", True),
    ("set_poweroff_cool", "1", True),
    ("set_poweroff_cool", "2", False),
    ("set_fan_zero_speed", "-1", False),
    ("set_led", '{"color":"red","period":60000,"duration":0,"start":60000}', True),
    ("set_led", '{"color":"green","period":0,"duration":0,"start":0}', True),
    ("set_led", '{"color":"red","period":60001}', False),
    ("set_led", '{"color":"red","start":-1}', False),
    ("set_led", "blue", False),
    ("load_log", '{"ip":"10.0.0.5","port":1,"proto":"tcp"}', True),
    ("load_log", '{"ip":"10.0.0.5","port":65535,"proto":"udp"}', True),
    ("load_log", '{"ip":"10.0.0.5","port":0,"proto":"udp"}', False),
    ("load_log", '{"ip":"10.0.0.5","port":65536,"proto":"udp"}', False),
    ("power_mode", "turbo", False),
    ("set_hostname", "bad host", False),
    ("update_pools", '{"worker1":"w"}', False),
]


def range_id(command: str, payload: str, accepted: bool) -> str:
    if payload.startswith("{"):
        payload = ",".join(f"{k}={v}" for k, v in json.loads(payload).items() if k != "ip")
    return f"{command}-{payload}-{'in' if accepted else 'out'}"


@pytest.mark.parametrize(
    ("command", "payload", "accepted"), RANGES, ids=[range_id(*case) for case in RANGES]
)
def test_parameter_ranges_are_checked_before_sending(
    mqtt: Mqtt, sim: Sims, command: str, payload: str, accepted: bool
) -> None:
    sim.do("wm1", lambda m: setattr(m, "cooling", "water"))  # water-cooled: may overclock
    before = sim.do("wm1", lambda m: (len(m.writes), m.tokens_issued))
    result = mqtt.command("wm1", f"/{command}", payload)
    writes, tokens = sim.do("wm1", lambda m: (len(m.writes), m.tokens_issued))
    if accepted:
        assert result["ok"] is True, result
        assert (writes, sim.do("wm1", lambda m: m.writes[-1].code)) == (before[0] + 1, 131)
    else:
        assert result["ok"] is False
        assert result["error"]["code"] == "validation"
        assert command in result["error"]["message"]
        assert (writes, tokens) == before  # nothing sent, no token fetched for it


# --- the miner's own refusals -----------------------------------------------------------------


def test_write_api_disabled_on_the_miner_is_said_plainly(mqtt: Mqtt, sim: Sims) -> None:
    sim.do("wm2", lambda m: setattr(m, "write_api", False))
    refused_before = sim.do("wm2", lambda m: m.errors_sent[45])
    result = mqtt.command("wm2", "/mining", "OFF")
    assert (result["ok"], result["error"]["code"]) == (False, "device_error")
    assert result["error"]["device_code"] == 45
    assert "write API not enabled on the miner" in result["error"]["message"]
    assert sim.do("wm2", lambda m: (m.errors_sent[45], m.mining)) == (refused_before + 1, True)


def test_wrong_admin_password_is_an_auth_result_and_never_published(
    mqtt: Mqtt, sim: Sims, agent: AgentThread
) -> None:
    assert mqtt.command("wm2", "/set_led", "green")["ok"] is True  # holds a token now

    def password_changed_elsewhere(model: WhatsminerModel) -> None:
        model.password = OTHER_PASSWORD
        model._set_key()

    sim.do("wm2", password_changed_elsewhere)
    client = agent.agent.workers["wm2"].driver.client  # type: ignore[attr-defined]
    try:
        tokens = sim.do("wm2", lambda m: m.tokens_issued)
        result = mqtt.command("wm2", "/set_led", "red")
        assert (result["ok"], result["error"]["code"]) == (False, "auth")
        assert result["error"]["device_code"] == 135
        assert "wrong admin password" in result["error"]["message"]
        assert sim.do("wm2", lambda m: (m.led, m.tokens_issued)) == ("green", tokens + 1)
        again = mqtt.command("wm2", "", json.dumps({"command": "set_led", "color": "red"}))
        assert again["error"]["code"] == "auth"
        assert "not retried" in again["error"]["message"]
        # Each try would cost one of the host's 32 tokens: the refusal pauses new fetches.
        assert sim.do("wm2", lambda m: m.tokens_issued) == tokens + 1
        published = b"\n".join(m.topic.encode() + b" " + m.payload for m in mqtt.from_agent())
        assert b"wrong admin password" in published
        for secret in (PASSWORD, OTHER_PASSWORD):
            assert secret.encode() not in published
    finally:  # later tests use wm2: lift the pause this test caused
        agent.call(lambda: setattr(client, "_auth_refused_until", float("-inf")))


def test_unknown_to_this_firmware_and_refused_writes_carry_the_device_code(
    mqtt: Mqtt, sim: Sims
) -> None:
    sim.do("wm2", lambda m: setattr(m, "unsupported", {"set_zone"}))
    zone = mqtt.command("wm2", "/set_zone", '{"timezone":"CST-8","zonename":"Asia/Shanghai"}')
    assert zone["error"]["device_code"] == 14
    assert "the miner rejected the command or its data" in zone["error"]["message"]
    overclock = mqtt.command("wm2", "/set_target_freq", "10")  # fan-cooled: only underclocking
    assert (overclock["error"]["code"], overclock["error"]["device_code"]) == ("device_error", 132)
    assert "fan-cooled miners only support underclocking" in overclock["error"]["message"]
    assert sim.do("wm2", lambda m: m.target_freq_percent) == 0


def test_token_the_miner_forgot_is_fetched_again_once(mqtt: Mqtt, sim: Sims) -> None:
    assert mqtt.command("wm2", "/set_led", "green")["ok"] is True
    before = sim.do("wm2", lambda m: (m.tokens_issued, m.errors_sent[135]))
    sim.do("wm2", lambda m: m.tokens.clear())
    assert mqtt.command("wm2", "/set_led", "red")["ok"] is True
    after = sim.do("wm2", lambda m: (m.tokens_issued, m.errors_sent[135], m.led))
    assert after == (before[0] + 1, before[1] + 1, "red")


def test_no_tokens_left_is_one_clear_result_and_no_retry_storm(mqtt: Mqtt, sim: Sims) -> None:
    port = sim.fleet.devices[ROLES.index("spent")].port

    async def another_tool_takes_every_token() -> None:
        other = WhatsminerClient("127.0.0.1", port, read_timeout=2)
        for _ in range(32):
            await other.get_token()

    sim.loop.run(another_tool_takes_every_token())
    first = mqtt.command("spent", "/set_led", "red")
    assert (first["error"]["code"], first["error"]["device_code"]) == ("device_error", 136)
    assert "no write tokens left for this host" in first["error"]["message"]
    second = mqtt.command("spent", "/power_percent", "80")
    assert second["error"]["device_code"] == 136
    assert sim.do("spent", lambda m: (m.errors_sent[136], len(m.writes))) == (1, 0)


def test_a_burst_of_200_commands_uses_one_token(mqtt: Mqtt, sim: Sims) -> None:
    assert sim.do("burst", lambda m: (m.tokens_issued, len(m.writes))) == (0, 0)
    mark = mqtt.probe.mark()
    for index in range(200):
        command, payload = (
            ("set_led", ("auto", "red", "green")[index % 3]),
            ("set_power_pct", str(50 + index % 50)),
            ("power_percent", str(40 + index % 60)),
            ("set_temp_offset", str(-(index % 31))),
            ("disable_web_pools", ""),
        )[index % 5]
        spec = CATALOG.command(command)
        assert spec is not None
        body: dict[str, Any] = {"transaction": index}
        if spec.plain:
            body[spec.plain] = payload
        if index % 2:
            mqtt.probe.publish(mqtt.topic("burst", f"/set/{command}"), json.dumps(body))
        else:
            mqtt.probe.publish(
                mqtt.topic("burst", "/set"), json.dumps({"command": command, **body})
            )
    results = {}
    for index in range(200):
        message = mqtt.probe.wait_for(
            mqtt.topic("burst", "/result"),
            lambda m, i=index: m.json()["transaction"] == i,
            since=mark,
            timeout=30,
        )
        results[index] = message.json()
    assert all(r["ok"] for r in results.values()), [r for r in results.values() if not r["ok"]]
    tokens, writes, refused = sim.do(
        "burst", lambda m: (m.tokens_issued, [w.code for w in m.writes], dict(m.errors_sent))
    )
    assert tokens == 1  # README: "a burst of 200 commands used 1 token"
    assert writes == [131] * 200
    assert refused.get(136, 0) == 0 and refused.get(135, 0) == 0
    assert len(mqtt.probe.all(mqtt.topic("burst", "/result"), since=mark)) == 200


# --- state and Home Assistant -----------------------------------------------------------------

STATIC = {(e.platform, e.key) for e in CATALOG.entities}


def template_value(template: str, state: dict[str, Any]) -> Any:
    """What Home Assistant renders from one of the catalog's value templates (no Jinja here)."""
    path = re.search(r"value_json((?:\[[^\]]+\])+)", template)
    assert path, template
    value: Any = state
    for part in re.findall(r"\[([^\]]+)\]", path.group(1)):
        value = value[int(part)] if part.isdigit() else value[json.loads(part)]
    if template.startswith("{{ 'ON' if"):
        return "ON" if value else "OFF"
    scaled = re.search(r"\* ([-+.e0-9]+)\) \| round\((\d+)\)", template)
    if scaled:
        return round(value * float(scaled.group(1)), int(scaled.group(2)))
    return value


def at_baseline(state: dict[str, Any]) -> bool:
    """Mining at full power in normal mode, as `reset` leaves a miner (board outlet at 70 °C)."""
    return (
        state["mining"] is True
        and state["power_mode"] == "normal"
        and state["temperature_c"] == 70.0
        and state["hashrate_hs"]["1m"] > 0
    )


def test_state_carries_the_miner_in_documented_units(mqtt: Mqtt, sim: Sims) -> None:
    assert mqtt.command("wm1", "/set_led", "auto")["ok"] is True  # and re-reads the slow data
    state = mqtt.current_state("wm1")
    assert at_baseline(state)
    model = sim.model("wm1")
    hashrate = sim.loop.call(lambda: model.hashrate_hs(model.now()))
    assert state["hashrate_hs"]["1m"] == pytest.approx(hashrate, rel=1e-6)  # H/s, not MH/s
    assert 50e12 < state["hashrate_hs"]["1m"] < 200e12
    assert set(state["hashrate_hs"]) == {"5s", "1m", "5m", "15m", "avg"}
    assert state["power_w"] == pytest.approx(model.rated_w, rel=0.01)
    assert state["efficiency_j_th"] == pytest.approx(model.efficiency, rel=0.01)
    assert state["temperature_c"] == 70.0 and state["env_temperature_c"] == 25.0
    assert state["chip_temperature_c"] == {"min": 66.0, "max": 87.0, "avg": 79.0}
    assert state["fans_rpm"] == {"in": 5900, "out": 5800}  # outlet, inlet as the doc labels them
    assert [b["slot"] for b in state["boards"]] == [0, 1, 2]
    assert [b["temperature_c"] for b in state["boards"]] == [70.0, 71.0, 72.0]
    assert all(b["model"] == "M30S+VE40" for b in state["boards"])
    assert sum(b["hashrate_hs"]["avg"] for b in state["boards"]) == pytest.approx(
        hashrate, rel=0.01
    )
    assert state["pool"] == {
        "url": "stratum+tcp://btc.ss.poolin.com:443",
        "user": "sim.0",
        "status": "Alive",
    }
    assert state["error_codes"] == ERRORS and state["error_count"] == 2
    assert state["errors"] == [f"{code} since {when}" for code, when in ERRORS.items()]
    assert state["psu"]["input_voltage_v"] == 224.0  # read every detail_interval (60 s)
    assert (state["psu"]["readings_plausible"], state["psu"]["warnings"]) == (True, [])
    assert state["api_join_limit"] == 2  # the doc's two joins
    assert 30.0 <= state["psu"]["temperature_c"] <= 40.0
    assert (state["model"], state["firmware"], state["platform"], state["api_version"]) == (
        "M30S+VE40",
        "20230125.13.Rel",
        "H6OS",
        "2.0.5",
    )
    assert (state["serial"], state["led"], state["network"]["hostname"]) == (
        "SIM00000000",
        "auto",
        "WhatsMiner0",
    )
    message = mqtt.probe.all(mqtt.topic("wm1"))[-1]
    assert message.retain is True
    info = mqtt.probe.all(f"{mqtt.base}/bridge/test/info")[-1].json()
    assert {d["id"]: d["kind"] for d in info["devices"]} == dict.fromkeys(ROLES, "whatsminer")


def test_discovery_announces_sensors_boards_and_controls(mqtt: Mqtt, sim: Sims) -> None:
    # A poll announces its entities before the poll request is answered: configs are current.
    state = mqtt.current_state("wm1")
    assert at_baseline(state)
    boards = {
        ("sensor", f"board{n}_{what}") for n in range(3) for what in ("hashrate", "temperature")
    }
    configs = {(p, k): mqtt.latest_config(p, k) for p, k in STATIC | boards}
    for (platform, key), config in configs.items():
        assert config["unique_id"] == f"edgeagent_wm1_{key}"
        assert config["availability_mode"] == "all"
        assert config["device"]["via_device"] == "edgeagent_bridge_test"
        if platform != "button":
            assert config["state_topic"] == mqtt.topic("wm1")
    device = configs[("sensor", "power")]["device"]
    assert device == {
        "identifiers": ["edgeagent_wm1"],
        "name": "Miner one",
        "manufacturer": "MicroBT",
        "model": "M30S+VE40",
        "via_device": "edgeagent_bridge_test",
        "sw_version": "20230125.13.Rel",
        "hw_version": "H6OS",
    }  # no serial_number: Home Assistant 2024.1 refuses the key; the serial is a sensor
    serial = mqtt.probe.wait_for(mqtt.config_topic("sensor", "serial_number")).json()
    assert serial["value_template"] == '{{ value_json["serial"] }}'

    def sensor(key: str) -> dict[str, Any]:
        return configs[("sensor", key)]

    def shown(key: str, platform: str = "sensor") -> Any:
        return template_value(configs[(platform, key)]["value_template"], state)

    for window in ("1m", "5s", "15m", "avg"):
        assert sensor(f"hashrate_{window}")["unit_of_measurement"] == "TH/s"
        assert sensor(f"hashrate_{window}")["state_class"] == "measurement"
        assert shown(f"hashrate_{window}") == round(state["hashrate_hs"][window] * 1e-12, 2)
    assert 50 < shown("hashrate_1m") < 200
    assert (sensor("power")["unit_of_measurement"], sensor("power")["device_class"]) == (
        "W",
        "power",
    )
    assert shown("power") == state["power_w"] and shown("power") > 3000
    assert sensor("efficiency")["unit_of_measurement"] == "J/TH"
    assert shown("efficiency") == pytest.approx(shown("power") / shown("hashrate_1m"), rel=0.02)
    for key in ("temperature", "env_temperature", "chip_temperature_max", "psu_temperature"):
        assert sensor(key)["device_class"] == "temperature"
        assert sensor(key)["unit_of_measurement"] == "°C"
    assert sensor("chip_temperature_max")["entity_category"] == "diagnostic"
    assert (shown("temperature"), shown("chip_temperature_max")) == (70.0, 87.0)
    assert (sensor("fan_in")["unit_of_measurement"], shown("fan_in"), shown("fan_out")) == (
        "rpm",
        5900,
        5800,
    )
    assert (sensor("fan_in")["name"], sensor("fan_out")["name"]) == (
        "Fan speed in (air outlet)",
        "Fan speed out (air inlet)",
    )
    assert shown("pool") == "stratum+tcp://btc.ss.poolin.com:443"
    assert shown("pool_status") == "Alive"
    errors = sensor("errors")
    assert shown("errors") == 2
    assert errors["json_attributes_topic"] == mqtt.topic("wm1")
    assert 'value_json["error_codes"]' in errors["json_attributes_template"]
    for n in range(3):
        board = sensor(f"board{n}_hashrate")
        assert (board["entity_category"], board["unit_of_measurement"]) == ("diagnostic", "TH/s")
        assert 20 < shown(f"board{n}_hashrate") < 70
        assert sensor(f"board{n}_temperature")["device_class"] == "temperature"
        assert shown(f"board{n}_temperature") == 70.0 + n

    mining = configs[("switch", "mining")]
    assert mining["command_topic"] == mqtt.topic("wm1", "/set/mining")
    assert shown("mining", "switch") == "ON"
    selects = {k: configs[("select", k)] for k in ("power_mode", "led")}
    assert selects["power_mode"]["options"] == ["low", "normal", "high"]
    assert selects["power_mode"]["command_topic"] == mqtt.topic("wm1", "/set/power_mode")
    assert shown("power_mode", "select") == "normal"
    assert selects["led"]["options"] == ["auto", "red", "green"]
    assert selects["led"]["command_topic"] == mqtt.topic("wm1", "/set/set_led")
    numbers = {
        "power_limit": ("power_limit", 0, 99999, "W"),
        "power_percent": ("power_percent", 0, 100, "%"),
        "target_freq": ("set_target_freq", -100, 100, "%"),
        "temp_offset": ("set_temp_offset", -30, 0, "°C"),
    }
    for key, (command, low, high, unit) in numbers.items():
        number = configs[("number", key)]
        assert (number["min"], number["max"], number["step"]) == (low, high, 1), key
        assert number["unit_of_measurement"] == unit
        assert number["command_topic"] == mqtt.topic("wm1", f"/set/{command}")
    for key in ("restart_btminer", "reboot"):
        button = configs[("button", key)]
        assert button["command_topic"] == mqtt.topic("wm1", f"/set/{key}")
        assert button["payload_press"] == "PRESS" and "state_topic" not in button


def test_boards_without_slot_or_asc_get_distinct_entities() -> None:
    boards = [normalise_board({"Temperature": 70 + n}, {}) for n in range(3)]
    keys = [e.key for e in CATALOG.entities_for({"boards": boards}) if e.key.startswith("board")]
    assert keys == [f"board{n}_{what}" for n in range(3) for what in ("hashrate", "temperature")]


def test_controls_take_what_home_assistant_sends(mqtt: Mqtt, sim: Sims) -> None:
    sends: list[tuple[tuple[str, str], str, Callable[[WhatsminerModel], Any]]] = [
        (("switch", "mining"), "OFF", lambda m: not m.mining),
        (("switch", "mining"), "ON", lambda m: m.mining),
        (("select", "power_mode"), "low", lambda m: m.power_mode == "low"),
        (("select", "led"), "red", lambda m: m.led == "red"),
        (("number", "power_limit"), "3100.0", lambda m: m.power_limit_w == 3100),
        (("number", "power_percent"), "80.0", lambda m: near(m.target_fraction, 0.8)),
        (("number", "target_freq"), "-10.0", lambda m: m.target_freq_percent == -10),
        (("number", "temp_offset"), "-3.0", lambda m: m.settings["temp_offset"] == -3),
        (("button", "restart_btminer"), "PRESS", lambda m: m.btminer_restarts >= 1),
    ]
    for (platform, key), payload, effect in sends:
        topic = mqtt.latest_config(platform, key)["command_topic"]
        mark = mqtt.probe.mark()
        mqtt.probe.publish(topic, payload)
        result = mqtt.probe.wait_for(mqtt.topic("wm1", "/result"), since=mark).json()
        assert result["ok"] is True, (key, result)
        assert sim.do("wm1", effect), key


# --- a miner that misbehaves ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "code", "reason"),
    [
        ("garbage", "protocol", "not valid JSON"),
        ("close", "protocol", "closed the connection without answering"),
        ("hang", "timeout", f"did not answer within {TIMEOUT_S:g}s"),
        ("stall", "timeout", f"then nothing for {TIMEOUT_S:g}s without closing"),
    ],
)
def test_misbehaving_miner_goes_offline_and_comes_back(
    mqtt: Mqtt, sim: Sims, agent: AgentThread, fault: str, code: str, reason: str
) -> None:
    availability = mqtt.topic("flaky", "/availability")
    mqtt.probe.wait_for(availability)
    assert mqtt.probe.all(availability)[-1].text == "online"
    mark = mqtt.probe.mark()
    sim.do("flaky", lambda m: setattr(m, "fault", fault))
    mqtt.probe.wait_for(availability, lambda m: m.text == "offline", since=mark)
    listed = {d["id"]: d for d in mqtt.request("devices")["data"]}
    assert listed["flaky"]["status"] == "offline"
    assert reason in listed["flaky"]["last_error"]
    assert listed["wm1"]["status"] == "online"
    refused = mqtt.command("flaky", "/mining", "OFF")  # one result, whatever the miner does
    assert (refused["ok"], refused["error"]["code"]) == (False, code), refused
    polled = agent.call(lambda: agent.agent.workers["wm1"].stats.ok)
    # The other miners are still polled (a steady state is not republished: publish filters).
    wait_until(lambda: agent.call(lambda: agent.agent.workers["wm1"].stats.ok) > polled)

    back = mqtt.probe.mark()
    sim.do("flaky", lambda m: setattr(m, "fault", None))
    mqtt.probe.wait_for(availability, lambda m: m.text == "online", since=back)
    assert mqtt.current_state("flaky")["hashrate_hs"]["1m"] > 0
    assert sim.do("flaky", lambda m: m.mining)  # the refused switch-off never reached it
    bridge = mqtt.probe.all(f"{mqtt.base}/bridge/test/state", since=mark)
    assert all(m.text == "online" for m in bridge)
    assert agent.future.done() is False
    health = mqtt.request("health")["data"]
    assert health["mqtt_connected"] is True and health["devices_offline"] == 0


@pytest.mark.parametrize("variant", sorted(JOIN_VARIANTS))
def test_a_new_miner_publishes_its_full_state_at_its_first_poll(
    broker: Mosquitto, sim_loop: LoopThread, variant: str
) -> None:
    """Whatever the firmware joins, the doc's two included: the first state is complete and
    no poll fails (the poll interval is longer than the test, so it is the first poll's)."""
    fleet = sim_loop.run(start_fleet(1, password=PASSWORD, **JOIN_VARIANTS[variant]))
    device = {
        "id": "fresh",
        "kind": "whatsminer",
        "host": "127.0.0.1",
        "port": fleet.devices[0].port,
        "password": PASSWORD,
        "poll_interval": "10m",
    }
    probe = Probe(broker.port)
    try:
        settings = make_settings(broker.url, [device])
        base = settings.mqtt.base_topic
        probe.subscribe(f"{base}/#")
        with running_agent(settings) as runner:
            state = probe.wait_for(f"{base}/fresh", lambda m: bool(m.payload)).json()
            assert probe.all(f"{base}/fresh/availability")[-1].text == "online"
            assert failed_polls(runner, "fresh") == 0
        assert len(probe.all(f"{base}/fresh")) == 1
    finally:
        probe.close()
        sim_loop.run(fleet.close())
    assert [b["slot"] for b in state["boards"]] == [0, 1, 2]
    assert state["pools"] and state["pool"]["status"] == "Alive"
    assert state["power_w"] > 1000 and state["psu"]["readings_plausible"] is True
    assert state["model"] == "M30S+VE40" and state["mining"] is True
    assert state["api_join_limit"] == {"any": 3, "none": 1, "none_answering_first": 1}.get(
        variant, 2
    )


@pytest.mark.parametrize("quirk", [*sorted(QUIRKS), "all"])
def test_firmware_quirk_is_read_through_the_agent(
    mqtt: Mqtt, sim: Sims, agent: AgentThread, quirk: str
) -> None:
    quirks = set(QUIRKS) if quirk == "all" else {quirk}
    failed = failed_polls(agent, "quirky")

    def arm(model: WhatsminerModel) -> int:
        model.quirks = set(quirks)
        model.tokens.clear()  # the next write fetches a token from the quirky firmware
        return model.tokens_issued

    tokens = sim.do("quirky", arm)
    mark = mqtt.probe.mark()
    assert mqtt.command("quirky", "/set_led", "green")["ok"] is True
    assert sim.do("quirky", lambda m: (m.tokens_issued, m.led)) == (tokens + 1, "green")
    assert mqtt.request("poll", {"device": "quirky"})["data"] == {"quirky": "ok"}
    seen = mqtt.probe.all("#", since=mark)
    end = next(i for i, m in enumerate(seen) if m.topic.endswith("/response/poll"))
    raw_prefix = mqtt.topic("quirky", "/raw/")
    raw = [
        (m.topic.removeprefix(raw_prefix), m) for m in seen[:end] if m.topic.startswith(raw_prefix)
    ]
    start = max(i for i, (endpoint, _) in enumerate(raw) if endpoint == "summary")
    last_poll = dict(raw[start:])  # the requested poll: every read answered and was read
    assert set(last_poll) == READS
    codes = last_poll["get_error_code"].json()
    if "truncate" in quirks:  # what a cut-off reply still holds: the complete items
        assert codes and list(codes.items()) == list(MANY_ERRORS.items())[: len(codes)]
    else:
        assert codes == MANY_ERRORS
    assert last_poll["status"].json()["btmineroff"] == "false"
    assert float(last_poll["get_psu"].json()["temp0"]) == 40.0
    states = [m.json() for m in seen[:end] if m.topic == mqtt.topic("quirky") and m.payload]
    state = states[-1]
    assert state["mining"] is True and state["firmware"] == "20230125.13.Rel"
    assert state["error_codes"] == codes and state["psu"]["temperature_c"] == 40.0
    assert state["hashrate_hs"]["1m"] > 0 and state["led"] == "green"
    assert failed_polls(agent, "quirky") == failed


# --- the CLI against a simulated miner --------------------------------------------------------


@pytest.fixture(scope="module")
def cli_fleet(sim_loop: LoopThread) -> Iterator[SimFleet]:
    fleet = sim_loop.run(start_fleet(1, password=PASSWORD, log_size=70_000))
    yield fleet
    sim_loop.run(fleet.close())


@pytest.fixture
def cli_miner(sim_loop: LoopThread, cli_fleet: SimFleet) -> tuple[LoopThread, WhatsminerModel, int]:
    """The CLI's miner, healthy again (an upload reboots it for a real minute)."""
    model: WhatsminerModel = cli_fleet.devices[0].model
    sim_loop.call(lambda: reset(model))
    return sim_loop, model, cli_fleet.devices[0].port


def cli_config(tmp_path: Path, port: int, allow: list[str]) -> str:
    config = tmp_path / "config.toml"
    config.write_text(
        '[agent]\nid = "cli"\n'
        '[[devices]]\nid = "wm1"\nkind = "whatsminer"\nhost = "127.0.0.1"\n'
        f'port = {port}\npassword = "{PASSWORD}"\ntimeout = "3s"\n'
        f"allow_commands = {json.dumps(allow)}\n"
    )
    config.chmod(0o600)
    return str(config)


def edge_agent(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "agent", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert PASSWORD not in done.stdout + done.stderr
    return done


def test_cli_upgrade_uploads_with_progress_and_checks_the_size(
    cli_miner: tuple[LoopThread, WhatsminerModel, int], tmp_path: Path
) -> None:
    loop, model, port = cli_miner
    config = cli_config(tmp_path, port, ["update_firmware"])
    firmware = tmp_path / "fw.bin"
    firmware.write_bytes(bytes(range(256)) * 800)  # 204,800 bytes: four 64 KiB chunks
    done = edge_agent("whatsminer", "upgrade", "-c", config, "wm1", str(firmware), "--wait", "0")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "command": "update_firmware",
        "bytes": 204_800,
        "confirmed": False,
        "firmware_before": "20230125.13.Rel",
    }
    assert "wm1: uploading" in done.stderr and "(204800 bytes)" in done.stderr
    progress = re.findall(r"upload: (\d+)% \((\d+)/204800 bytes\)", done.stderr)
    assert [int(p) for p, _ in progress] == [32, 64, 96, 100]
    assert loop.call(lambda: model.firmware_uploads) == [204_800]

    writes = loop.call(lambda: len(model.writes))
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    refused = edge_agent("whatsminer", "upgrade", "-c", config, "wm1", str(empty))
    assert refused.returncode == 1
    assert "validation" in refused.stderr and "firmware must be 1 B" in refused.stderr
    missing = edge_agent("whatsminer", "upgrade", "-c", config, "wm1", str(tmp_path / "no.bin"))
    assert missing.returncode == 1 and "cannot read firmware file" in missing.stderr
    assert loop.call(lambda: (len(model.writes), model.firmware_uploads)) == (writes, [204_800])


def test_cli_logs_download_to_a_file(
    cli_miner: tuple[LoopThread, WhatsminerModel, int], tmp_path: Path
) -> None:
    loop, model, port = cli_miner
    config = cli_config(tmp_path, port, ["download_logs"])
    output = tmp_path / "wm1.log"
    done = edge_agent("whatsminer", "logs", "-c", config, "wm1", "-o", str(output))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"path": str(output), "bytes": 70_000}
    assert output.stat().st_size == 70_000
    assert output.read_bytes().split(b"\n", 1)[0].endswith(b"sim log line")
    assert "download: 100% (70000/70000 bytes)" in done.stderr
    assert loop.call(lambda: model.log_downloads) >= 1


def test_cli_flows_are_refused_without_the_allow_list(
    cli_miner: tuple[LoopThread, WhatsminerModel, int], tmp_path: Path
) -> None:
    loop, model, port = cli_miner
    config = cli_config(tmp_path, port, [])
    firmware = tmp_path / "fw.bin"
    firmware.write_bytes(b"x" * 1000)
    connections = loop.call(lambda: model.connections)
    upgrade = edge_agent("whatsminer", "upgrade", "-c", config, "wm1", str(firmware))
    logs = edge_agent("whatsminer", "logs", "-c", config, "wm1", "-o", str(tmp_path / "l"))
    for done in (upgrade, logs):
        assert done.returncode == 1
        assert "not_allowed" in done.stderr and "allow_commands" in done.stderr
    assert not (tmp_path / "l").exists()
    assert loop.call(lambda: model.connections) == connections  # nothing was sent


def test_cli_send_and_poll_drive_the_miner(
    cli_miner: tuple[LoopThread, WhatsminerModel, int], tmp_path: Path
) -> None:
    loop, model, port = cli_miner
    config = cli_config(tmp_path, port, ["update_firmware"])
    led = edge_agent("send", "wm1", "set_led", "color=red", "period=2000", "--direct", "-c", config)
    assert led.returncode == 0, led.stderr
    assert json.loads(led.stdout)["ok"] is True and loop.call(lambda: model.led) == "red"
    writes = loop.call(lambda: len(model.writes))
    too_high = edge_agent("send", "wm1", "set_power_pct", "101", "--direct", "-c", config)
    assert too_high.returncode == 1
    assert json.loads(too_high.stdout)["error"]["code"] == "validation"
    reboot = edge_agent("send", "wm1", "reboot", "--direct", "-c", config)
    assert json.loads(reboot.stdout)["error"]["code"] == "not_allowed"
    assert loop.call(lambda: (len(model.writes), model.reboots)) == (writes, 0)
    firmware = tmp_path / "fw.bin"
    firmware.write_bytes(b"\x01" * 5000)
    uploads = loop.call(lambda: len(model.firmware_uploads))
    sent = edge_agent(
        "send", "wm1", "update_firmware", f"path={firmware}", "--direct", "-c", config
    )
    assert json.loads(sent.stdout)["data"]["bytes"] == 5000, sent.stdout
    assert loop.call(lambda: model.firmware_uploads[uploads:]) == [5000]

    loop.call(lambda: reset(model))
    polled = edge_agent("poll", "wm1", "--json", "-c", config)
    assert polled.returncode == 0, polled.stderr
    state = json.loads(polled.stdout)
    assert state["mining"] is True and 50e12 < state["hashrate_hs"]["1m"] < 200e12
    assert state["model"] == "M30S+VE40" and state["error_count"] == 0
