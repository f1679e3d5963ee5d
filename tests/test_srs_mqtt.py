"""The agent end to end with SRS: real Mosquitto, the SRS simulator over HTTP, real MQTT.

Most tests share one agent polling one simulated server (`srs1`, watching `live/cam` and
`live/stream0`); each starts from the same baseline: `live/stream0` published with one player.
Tests that need other settings (credentials, a config file to reload) run their own agent.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from agent.config.settings import load_config
from agent.devices.srs.config import SrsConfig
from edge_agent_sim.demo import start_fleets
from edge_agent_sim.fleet import LoopThread, SimDevice, SimFleet
from edge_agent_sim.srs import ACTIVITY_STREAMS, SrsModel, start_fleet
from tests.harness import AgentThread, Message, Mosquitto, Probe, make_settings

DEVICE = "srs1"
BASELINE = "__defaultVhost__/live/stream0"
CAM = "__defaultVhost__/live/cam"
STATIC_ENTITIES = {
    ("sensor", "cpu"),
    ("sensor", "memory"),
    ("sensor", "connections"),
    ("sensor", "streams"),
    ("sensor", "live_streams"),
    ("sensor", "clients"),
    ("sensor", "kbps_in"),
    ("sensor", "kbps_out"),
    ("sensor", "system_cpu"),
    ("sensor", "uptime"),
    ("sensor", "version"),
}
RELOAD_BUTTON = ("button", "reload")


def stream_entities(slug: str) -> set[tuple[str, str]]:
    return {
        ("binary_sensor", f"stream_{slug}_live"),
        ("sensor", f"stream_{slug}_kbps_in"),
        ("sensor", f"stream_{slug}_kbps_out"),
        ("sensor", f"stream_{slug}_clients"),
    }


def srs_device(device: SimDevice, **extra: Any) -> dict[str, Any]:
    return {
        "id": DEVICE,
        "kind": "srs",
        "name": "Studio SRS",
        "url": device.url,
        "poll_interval": "0.1s",
        "timeout": "2s",
        "offline_after": 2,
        **extra,
    }


@dataclass
class Sim:
    """The simulated server, steered on the simulator's loop."""

    loop: LoopThread
    device: SimDevice

    @property
    def model(self) -> SrsModel:
        model: SrsModel = self.device.model
        return model

    def do(self, action: Callable[[SrsModel], Any]) -> Any:
        return self.loop.call(lambda: action(self.model))


class Mqtt:
    """The probe, bound to one agent's topics."""

    def __init__(self, probe: Probe, agent: AgentThread) -> None:
        self.probe = probe
        settings = agent.agent.settings
        self.base = settings.mqtt.base_topic
        self.prefix = settings.homeassistant.discovery_prefix
        probe.subscribe(f"{self.base}/#", f"{self.prefix}/#")
        # `online` comes after the agent subscribed: from here on, commands are heard.
        probe.wait_for(f"{self.base}/bridge/test/state", lambda m: m.text == "online")

    def topic(self, suffix: str = "", device: str = DEVICE) -> str:
        return f"{self.base}/{device}{suffix}"

    def config_topic(self, platform: str, key: str, device: str = DEVICE) -> str:
        return f"{self.prefix}/{platform}/{device}/{key}/config"

    def state(
        self, predicate: Callable[[dict[str, Any]], bool], since: int = 0, device: str = DEVICE
    ) -> dict[str, Any]:
        # An empty payload clears the retained state (a device removed or restarted by a reload).
        found: dict[str, Any] = self.probe.wait_for(
            self.topic(device=device),
            lambda m: bool(m.payload) and bool(predicate(m.json())),
            since=since,
        ).json()
        return found

    def settle(self) -> int:
        """A mark past the events of the poll whose state was just seen (they follow it)."""
        self.state(lambda s: True, since=self.probe.mark())
        return self.probe.mark()

    def event(self, predicate: Callable[[dict[str, Any]], bool], since: int) -> dict[str, Any]:
        message = self.probe.wait_for(
            self.topic("/event"), lambda m: bool(predicate(m.json())), since=since
        )
        assert message.retain is False
        found: dict[str, Any] = message.json()
        return found

    def command(self, suffix: str, payload: bytes | str, device: str = DEVICE) -> dict[str, Any]:
        """Publish a command and return the result it produced."""
        mark = self.probe.mark()
        self.probe.publish(self.topic(f"/set{suffix}", device), payload)
        result: dict[str, Any] = self.probe.wait_for(
            self.topic("/result", device), since=mark
        ).json()
        return result

    def request(self, action: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        mark = self.probe.mark()
        self.probe.publish(f"{self.base}/bridge/test/request/{action}", json.dumps(body or {}))
        response: dict[str, Any] = self.probe.wait_for(
            f"{self.base}/bridge/test/response/{action}", since=mark
        ).json()
        return response

    def results_since(self, mark: int) -> list[dict[str, Any]]:
        return [m.json() for m in self.probe.all(self.topic("/result"), since=mark)]


def stream(state: dict[str, Any], key: str) -> dict[str, Any] | None:
    return next((s for s in state["streams"] if s["stream"] == key), None)


def template_value(template: str, state: dict[str, Any]) -> Any:
    """What a `value_json[...]` template reads from the state (the tests have no Jinja)."""
    path = re.search(r"value_json((?:\[[^\]]+\])+)", template)
    assert path, template
    value: Any = state
    for part in re.findall(r"\[([^\]]+)\]", path.group(1)):
        value = value[int(part)] if part.isdigit() else value[json.loads(part)]
    return value


# --- the shared agent ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def fleet(sim_loop: LoopThread) -> Iterator[SimFleet]:
    started = sim_loop.run(start_fleet(1, streams=1, players=1, kbps=2000))
    yield started
    sim_loop.run(started.close())


@pytest.fixture(scope="module")
def agent(broker: Mosquitto, fleet: SimFleet) -> Iterator[AgentThread]:
    device = srs_device(fleet.devices[0], watch_streams=["live/cam", "/live/stream0"])
    runner = AgentThread(make_settings(broker.url, [device]))
    yield runner
    runner.stop()


@pytest.fixture(scope="module")
def shared(broker: Mosquitto, agent: AgentThread) -> Iterator[Mqtt]:
    """One subscriber for the shared agent's tests: they tell their messages apart by marks."""
    probe = Probe(broker.port)
    yield Mqtt(probe, agent)
    probe.close()


def reset(model: SrsModel) -> None:
    model.fault = None
    model.reconfigure(raw_api=False, allow_reload=False)  # a stock SRS
    for client in list(model.clients.values()):
        if model.streams[client.stream].key != BASELINE:
            model.remove_client(client.id)
    baseline = model.find_stream(BASELINE)
    if baseline is None or baseline.publisher is None:
        model.start_stream(BASELINE, kbps=2000)
    if len(model.clients) < 2:
        model.add_player(BASELINE)


@pytest.fixture
def sim(sim_loop: LoopThread, fleet: SimFleet) -> Sim:
    return Sim(sim_loop, fleet.devices[0])


@pytest.fixture
def mqtt(shared: Mqtt, sim_loop: LoopThread, fleet: SimFleet) -> Mqtt:
    """The agent caught up on the baseline, whose events (if any) are already out."""
    mark = shared.probe.mark()
    sim = Sim(sim_loop, fleet.devices[0])
    sim.do(reset)
    service = sim.model.service_id

    def at_baseline(state: dict[str, Any]) -> bool:
        streams = [s["stream"] for s in state["streams"] if s["publishing"]]
        return (
            streams == [BASELINE]
            and len(state["clients"]) == 2
            and (state["server"]["service_id"] == service)
            and state["server"]["reload_allowed"] is False
        )

    shared.state(at_baseline, since=mark)
    shared.settle()
    return shared


def latest(probe: Probe, topic: str) -> Message:
    """The newest message on a topic (at least one must have come)."""
    probe.wait_for(topic)
    return probe.all(topic)[-1]


def test_state_carries_server_vhosts_streams_and_clients(mqtt: Mqtt, sim: Sim) -> None:
    message = mqtt.probe.wait_for(mqtt.topic(), since=mqtt.probe.mark())
    assert message.retain is True
    state = message.json()
    server = state["server"]
    assert server["id"] == sim.model.server_id
    assert server["service_id"] == sim.model.service_id
    assert server["pid"] == sim.model.pid
    assert server["version"] == "7.0.18"
    assert (server["streams"], server["live_streams"], server["clients"]) == (1, 1, 2)
    assert (server["kbps_in"], server["kbps_out"]) == (2000, 2000)
    assert server["connections"] == 2
    assert [v["name"] for v in state["vhosts"]] == ["__defaultVhost__"]
    baseline = stream(state, BASELINE)
    assert baseline is not None
    publisher = sim.do(lambda m: m.find_stream(BASELINE).publisher)
    assert baseline["publishing"] is True and baseline["publisher_client"] == publisher
    assert (baseline["app"], baseline["name"], baseline["clients"]) == ("live", "stream0", 2)
    assert baseline["video"]["codec"] == "H264" and baseline["audio"]["codec"] == "AAC"
    assert baseline["resolution"] == "1280x720"
    assert {c["id"] for c in state["clients"]} == set(sim.do(lambda m: list(m.clients)))
    assert {c["type"] for c in state["clients"]} == {"fmle-publish", "rtmp-play"}
    assert all(c["stream"] == BASELINE for c in state["clients"])
    assert state["watched"] == {
        "live_cam": {"stream": CAM, "live": False, "clients": 0, "kbps_in": 0, "kbps_out": 0},
        "live_stream0": {
            "stream": BASELINE,
            "live": True,
            "clients": 2,
            "kbps_in": 2000,
            "kbps_out": 2000,
        },
    }
    assert state["truncated"] == {"streams": False, "clients": False}
    assert state["errors"] == []
    info = mqtt.probe.wait_for(
        f"{mqtt.base}/bridge/test/info", lambda m: m.json()["devices"][0]["status"] == "online"
    ).json()
    assert info["devices"] == [
        {"id": DEVICE, "kind": "srs", "name": "Studio SRS", "status": "online"}
    ]


def test_discovery_announces_the_server_and_each_watched_stream(mqtt: Mqtt, sim: Sim) -> None:
    configs: dict[tuple[str, str], dict[str, Any]] = {}
    for platform, key in (
        STATIC_ENTITIES | stream_entities("live_cam") | stream_entities("live_stream0")
    ):
        message = latest(mqtt.probe, mqtt.config_topic(platform, key))
        assert message.retain is True
        configs[(platform, key)] = message.json()
    for (_, key), config in configs.items():
        assert config["unique_id"] == f"edgeagent_{DEVICE}_{key}"
        assert config["device"]["identifiers"] == [f"edgeagent_{DEVICE}"]
        assert config["device"]["via_device"] == "edgeagent_bridge_test"
        assert config["availability_mode"] == "all"
    device = configs[("sensor", "cpu")]["device"]
    assert device["name"] == "Studio SRS"
    assert device["manufacturer"] == "SRS (Simple Realtime Server)"
    assert device["sw_version"] == "7.0.18"
    assert "serial_number" not in device  # Home Assistant 2024.1 refuses it: a sensor instead
    serial = latest(mqtt.probe, mqtt.config_topic("sensor", "serial_number")).json()
    assert serial["value_template"] == '{{ value_json["server"]["id"] }}'
    assert serial["entity_category"] == "diagnostic"
    assert device["configuration_url"].rstrip("/") == sim.device.url

    def sensor(key: str) -> dict[str, Any]:
        return configs[("sensor", key)]

    assert (sensor("cpu")["unit_of_measurement"], sensor("cpu")["state_class"]) == (
        "%",
        "measurement",
    )
    assert sensor("memory")["device_class"] == "data_size"
    assert sensor("memory")["unit_of_measurement"] == "MiB"
    for key in ("kbps_in", "kbps_out", "stream_live_cam_kbps_in", "stream_live_stream0_kbps_out"):
        assert sensor(key)["unit_of_measurement"] == "kbit/s"
        assert sensor(key)["device_class"] == "data_rate"
    assert sensor("uptime")["device_class"] == "duration"
    assert sensor("uptime")["entity_category"] == "diagnostic"
    assert sensor("version")["entity_category"] == "diagnostic"
    live = configs[("binary_sensor", "stream_live_stream0_live")]
    assert (live["name"], live["device_class"]) == ("live/stream0 live", "running")
    assert live["json_attributes_topic"] == mqtt.topic()

    # Every template reads a value the published state really carries.
    state = mqtt.state(lambda s: True, since=mqtt.probe.mark())
    read = {
        key: template_value(c["value_template"], state)
        for (_, key), c in configs.items()
        if "value_template" in c
    }
    assert read["stream_live_stream0_live"] is True
    assert read["stream_live_cam_live"] is False
    assert (read["stream_live_stream0_clients"], read["stream_live_cam_clients"]) == (2, 0)
    assert read["stream_live_stream0_kbps_in"] == 2000
    assert (read["live_streams"], read["streams"], read["connections"]) == (1, 1, 2)
    assert read["version"] == "7.0.18"
    assert read["memory"] > 0 and read["cpu"] > 0


def test_streams_going_live_and_stopping_are_events(mqtt: Mqtt, sim: Sim) -> None:
    start = mark = mqtt.probe.mark()
    publisher = sim.do(lambda m: m.start_stream("live/cam", audio=False, kbps=3000))
    cam_id = sim.do(lambda m: m.find_stream("live/cam").id)
    live = mqtt.event(lambda e: e["event"] == "stream_live", mark)
    assert live == {
        "event": "stream_live",
        "stream": CAM,
        "stream_id": cam_id,
        "publisher_client": publisher,
        "video_codec": "H264",
        "audio_codec": None,
        "resolution": "1280x720",
    }
    watched = mqtt.state(lambda s: s["watched"]["live_cam"]["live"], since=mark)["watched"]
    assert watched["live_cam"] == {
        "stream": CAM,
        "live": True,
        "clients": 1,
        "kbps_in": 3000,
        "kbps_out": 0,
    }
    mark = mqtt.probe.mark()
    sim.do(lambda m: m.stop_stream("live/cam"))
    stopped = mqtt.event(lambda e: e["event"] == "stream_stopped", mark)
    assert stopped == {
        "event": "stream_stopped",
        "stream": CAM,
        "stream_id": cam_id,
        "reason": "unpublished",
    }
    state = mqtt.state(lambda s: not s["watched"]["live_cam"]["live"], since=mark)
    assert stream(state, CAM) is None  # SRS forgets a stream nobody is on
    # The watched stream's entities stay while it is off the air: only its readings change.
    assert not [m for m in mqtt.probe.all(f"{mqtt.prefix}/#", since=start) if not m.payload]
    events = [m.json()["event"] for m in mqtt.probe.all(mqtt.topic("/event"), since=start)]
    assert events == [
        "stream_live",
        "stream_stopped",
    ]


def test_a_publisher_reconnecting_between_polls_is_a_new_session(mqtt: Mqtt, sim: Sim) -> None:
    first = sim.do(lambda m: m.start_stream("live/cam"))
    mqtt.state(lambda s: s["watched"]["live_cam"]["live"], since=mqtt.probe.mark())
    mark = mqtt.settle()

    def encoder_hiccup(model: SrsModel) -> str:
        model.stop_stream("live/cam")
        return model.start_stream("live/cam")

    second = sim.do(encoder_hiccup)
    live = mqtt.event(lambda e: e["event"] == "stream_live", mark)
    assert (live["stream"], live["publisher_client"]) == (CAM, second)
    events = [m.json() for m in mqtt.probe.all(mqtt.topic("/event"), since=mark)]
    assert [(e["event"], e.get("reason")) for e in events] == [
        ("stream_stopped", "republished"),
        ("stream_live", None),
    ]
    assert events[0]["stream"] == CAM and first != second


def test_kick_client_from_plain_and_json_payloads(mqtt: Mqtt, sim: Sim) -> None:
    kicked_before = len(sim.do(lambda m: m.kicks))
    players = sim.do(lambda m: [m.add_player("live/stream0", ip=f"10.0.0.{n}") for n in (1, 2, 3)])
    mqtt.state(lambda s: len(s["clients"]) == 5, since=mqtt.probe.mark())

    plain = mqtt.command("/kick_client", players[0])
    assert plain["ok"] is True, plain
    assert (plain["command"], plain["data"]) == (
        "kick_client",
        {"client_id": players[0], "kicked": True},
    )
    as_object = mqtt.command("/kick_client", json.dumps({"client_id": players[1]}))
    assert as_object["ok"] is True, as_object
    full = mqtt.command(
        "",
        json.dumps({"command": "kick_client", "client_id": players[2], "transaction": "k-3"}),
    )
    assert full["ok"] is True and full["transaction"] == "k-3", full

    assert sim.do(lambda m: m.kicks[kicked_before:]) == players
    assert not set(players) & set(sim.do(lambda m: list(m.clients)))
    mark = mqtt.probe.mark()
    state = mqtt.state(lambda s: len(s["clients"]) == 2, since=mark)
    assert not set(players) & {c["id"] for c in state["clients"]}


def test_kicking_the_publisher_ends_the_stream(mqtt: Mqtt, sim: Sim) -> None:
    publisher = sim.do(lambda m: m.start_stream("live/cam"))
    mqtt.state(lambda s: s["watched"]["live_cam"]["live"], since=mqtt.probe.mark())
    mark = mqtt.probe.mark()
    assert mqtt.command("/kick_client", publisher)["ok"] is True
    stopped = mqtt.event(lambda e: e["event"] == "stream_stopped", mark)
    assert (stopped["stream"], stopped["reason"]) == (CAM, "unpublished")


def test_kick_of_a_client_that_just_left_is_one_device_error(mqtt: Mqtt, sim: Sim) -> None:
    player = sim.do(lambda m: m.add_player("live/stream0"))
    mqtt.state(lambda s: player in {c["id"] for c in s["clients"]}, since=mqtt.probe.mark())
    sim.do(lambda m: m.remove_client(player))  # it leaves on its own, just before the kick

    mark = mqtt.probe.mark()
    result = mqtt.command("/kick_client", json.dumps({"client_id": player, "transaction": 41}))
    assert result["ok"] is False
    assert result["transaction"] == 41
    assert result["error"]["code"] == "device_error"
    assert result["error"]["device_code"] == 2049
    assert player in result["error"]["message"]
    assert "just left" in result["error"]["message"]
    assert ("DELETE", f"/api/v1/clients/{player}") in sim.do(lambda m: list(m.requests))
    # A later command's result comes after any second answer to the first would have.
    assert mqtt.command("/reload", "")["error"]["code"] == "unsupported"
    assert [r["transaction"] for r in mqtt.results_since(mark)] == [41, None]


def reload_sent(sim: Sim) -> int:
    return sim.do(lambda m: sum(1 for _, path in m.requests if path.endswith("rpc=reload")))


def reload_button(mqtt: Mqtt, predicate: Callable[[bytes], bool], since: int) -> Message:
    return mqtt.probe.wait_for(
        mqtt.config_topic(*RELOAD_BUTTON), lambda m: predicate(m.payload), since=since
    )


def test_a_stock_srs_shows_no_reload_button_and_reload_is_refused_unsent(
    mqtt: Mqtt, sim: Sim
) -> None:
    state = mqtt.state(lambda s: True, since=mqtt.probe.mark())
    assert (state["server"]["raw_api"], state["server"]["reload_allowed"]) == (False, False)
    announced = mqtt.probe.all(mqtt.config_topic(*RELOAD_BUTTON))
    assert not announced or announced[-1].payload == b""
    assert latest(mqtt.probe, mqtt.config_topic("sensor", "cpu")).payload  # discovery is out
    sent = reload_sent(sim)
    for payload in ("PRESS", json.dumps({"transaction": "r1"})):
        refused = mqtt.command("/reload", payload)
        assert (refused["ok"], refused["command"]) == (False, "reload")
        assert refused["error"]["code"] == "unsupported"
        assert "http_api.raw_api.enabled" in refused["error"]["message"]
        assert "Nothing was sent" in refused["error"]["message"]
    assert refused["transaction"] == "r1"
    assert reload_sent(sim) == sent
    assert sim.do(lambda m: m.reloads) == 0


def test_the_reload_button_follows_the_servers_raw_api(mqtt: Mqtt, sim: Sim) -> None:
    # SRS restarted with the raw API and reloads on: the button appears.
    mark = mqtt.probe.mark()
    sim.do(lambda m: m.restart(raw_api=True, allow_reload=True, republish=True))
    button = reload_button(mqtt, bool, mark)
    assert button.retain is True
    config = button.json()
    assert config["command_topic"] == mqtt.topic("/set/reload")
    assert "state_topic" not in config
    assert config["entity_category"] == "config"
    assert config["unique_id"] == f"edgeagent_{DEVICE}_reload"
    assert mqtt.state(lambda s: s["server"]["reload_allowed"], since=mark)["server"]["raw_api"]
    before = sim.do(lambda m: m.reloads)
    pressed = mqtt.command("/reload", "PRESS")  # what the Home Assistant button sends
    assert (pressed["ok"], pressed["data"]) == (True, {"reloaded": True})
    assert sim.do(lambda m: m.reloads) == before + 1

    # An operator turns allow_reload off and reloads SRS by signal: the button goes.
    mark = mqtt.probe.mark()
    sim.do(lambda m: m.reconfigure(allow_reload=False))
    assert reload_button(mqtt, lambda payload: payload == b"", mark).retain is True
    state = mqtt.state(lambda s: s["server"]["reload_allowed"] is False, since=mark)
    assert state["server"]["raw_api"] is True
    sent = reload_sent(sim)
    refused = mqtt.command("/reload", "")
    assert refused["error"]["code"] == "unsupported"
    assert "allow_reload" in refused["error"]["message"]
    assert reload_sent(sim) == sent


def test_a_reload_answered_1061_takes_the_button_away(mqtt: Mqtt, sim: Sim) -> None:
    mark = mqtt.probe.mark()
    sim.do(lambda m: m.restart(raw_api=True, allow_reload=True, republish=True))
    reload_button(mqtt, bool, mark)
    # Switched off and pressed at once: SRS's own 1061 answers, unless the agent's periodic
    # ask came first (then it knew and sent nothing); the server's request log tells which.
    mark = mqtt.probe.mark()

    def switch_off(model: SrsModel) -> int:
        model.reconfigure(raw_api=False)
        return len(model.requests)

    seen = sim.do(switch_off)
    refused = mqtt.command("/reload", "")
    after = [path for _, path in sim.do(lambda m: m.requests[seen:])]
    sent = [path for path in after if path.endswith("rpc=reload")]
    if sent:
        assert not any(path.endswith("rpc=raw") for path in after[: after.index(sent[0])])
        assert (refused["error"]["code"], refused["error"]["device_code"]) == (
            "device_error",
            1061,
        )
        assert "raw_api.enabled" in refused["error"]["message"]
    else:
        assert any(path.endswith("rpc=raw") for path in after)
        assert refused["error"]["code"] == "unsupported"
    reload_button(mqtt, lambda payload: payload == b"", mark)
    again = mqtt.command("/reload", "")
    assert again["error"]["code"] == "unsupported"
    assert len(
        [p for _, p in sim.do(lambda m: m.requests[seen:]) if p.endswith("rpc=reload")]
    ) == len(sent)
    state = mqtt.state(lambda s: s["server"]["raw_api"] is False, since=mark)
    assert state["server"]["reload_allowed"] is False


@pytest.mark.parametrize("keep_server_id", [False, True])
def test_server_restart_is_an_event_and_shows_in_state(
    mqtt: Mqtt, sim: Sim, keep_server_id: bool
) -> None:
    old = mqtt.state(lambda s: True, since=mqtt.probe.mark())["server"]
    mark = mqtt.probe.mark()
    sim.do(lambda m: m.restart(keep_server_id=keep_server_id, republish=True))
    model = sim.model
    restarted = mqtt.event(lambda e: e["event"] == "server_restarted", mark)
    assert restarted == {
        "event": "server_restarted",
        "server_id": model.server_id,
        "service_id": model.service_id,
        "pid": model.pid,
        "previous": {
            "server_id": old["id"],
            "service_id": old["service_id"],
            "pid": old["pid"],
        },
    }
    assert (restarted["server_id"] == old["id"]) is keep_server_id
    # The old process's publishing session ended with it; the republished one is new.
    stopped = mqtt.event(lambda e: e["event"] == "stream_stopped", mark)
    assert (stopped["stream"], stopped["reason"]) == (BASELINE, "server_restarted")
    assert mqtt.event(lambda e: e["event"] == "stream_live", mark)["stream"] == BASELINE
    state = mqtt.state(lambda s: s["server"]["service_id"] == model.service_id, since=mark)
    assert state["server"]["id"] == model.server_id
    assert state["server"]["pid"] == model.pid
    assert state["server"]["restarts"] == old["restarts"] + 1
    assert state["server"]["uptime_s"] < 5
    # A new server id is a new serial: the device is announced again.
    config = mqtt.probe.wait_for(
        mqtt.config_topic("sensor", "serial_number"), since=0 if keep_server_id else mark
    )
    assert config.retain is True


@pytest.mark.parametrize("fault", ["malformed", "truncated"])
def test_bad_json_from_the_server_fails_polls_and_the_agent_recovers(
    mqtt: Mqtt, sim: Sim, agent: AgentThread, fault: str
) -> None:
    failed_before = mqtt.request("health")["data"]["polls_failed"]
    mark = mqtt.probe.mark()
    sim.do(lambda m: setattr(m, "fault", fault))
    mqtt.probe.wait_for(mqtt.topic("/availability"), lambda m: m.text == "offline", since=mark)
    health = mqtt.request("health")["data"]
    assert health["devices_offline"] == 1
    assert health["polls_failed"] >= failed_before + 2
    devices = mqtt.request("devices")["data"]
    assert "JSON" in devices[0]["last_error"] or "json" in devices[0]["last_error"]
    assert devices[0]["status"] == "offline"
    refused = mqtt.command("/kick_client", "abc")  # commands still get their one result
    assert refused["error"]["code"] == "protocol"

    mark = mqtt.probe.mark()
    sim.do(lambda m: setattr(m, "fault", None))
    mqtt.probe.wait_for(mqtt.topic("/availability"), lambda m: m.text == "online", since=mark)
    state = mqtt.state(lambda s: True, since=mark)
    assert state["server"]["live_streams"] == 1
    assert agent.agent.workers[DEVICE].stats.last_error is None


BAD_KICKS = {
    "empty": (b"", "needs a value for 'client_id'"),
    "blank": (b"   ", "needs a value for 'client_id'"),
    "path": (b"../raw?rpc=reload", "does not match"),
    "space": (b"a b", "does not match"),
    "too long": (b"x" * 65, "at most 64 characters"),
    "empty id": (b'{"client_id": ""}', "does not match"),
    "list id": (b'{"client_id": ["x"]}', "must be text"),
    "unknown param": (b'{"client": "abc"}', "unknown parameter"),
    "broken json": (b"{not json", "not valid JSON"),
    "1 MB": (b"x" * (1024 * 1024), "limited to"),
    "not utf-8": (b"\xff\xfe\x00", "not UTF-8"),
}


@pytest.mark.parametrize(("payload", "complaint"), BAD_KICKS.values(), ids=BAD_KICKS.keys())
def test_bad_kick_payloads_are_refused_before_anything_is_sent(
    mqtt: Mqtt, sim: Sim, payload: bytes, complaint: str
) -> None:
    deletes_before = sim.do(lambda m: sum(1 for method, _ in m.requests if method == "DELETE"))
    mark = mqtt.probe.mark()
    result = mqtt.command("/kick_client", payload)
    assert result["ok"] is False
    assert result["command"] == "kick_client"
    assert result["error"]["code"] == "validation"
    assert complaint in result["error"]["message"]
    assert len(result["error"]["message"]) < 300
    # Still serving, and nothing else came (a stock SRS: reload refused by the agent).
    assert mqtt.command("/reload", "")["error"]["code"] == "unsupported"
    assert len(mqtt.results_since(mark)) == 2
    deletes = sim.do(lambda m: sum(1 for method, _ in m.requests if method == "DELETE"))
    assert deletes == deletes_before


def test_kick_without_a_client_id_by_name_is_refused(mqtt: Mqtt) -> None:
    result = mqtt.command("", json.dumps({"command": "kick_client", "transaction": 9}))
    assert (result["ok"], result["transaction"]) == (False, 9)
    assert result["error"]["code"] == "validation"
    assert "'client_id' is required" in result["error"]["message"]


# --- agents of their own ------------------------------------------------------------------

# The shared agent stays connected meanwhile: a second session with its client id would
# take over the first's, and the broker would keep switching between them.
OWN_CLIENT = {"client_id": "edge-agent-srs-own"}


@pytest.fixture
def serve(sim_loop: LoopThread) -> Iterator[Callable[..., SimDevice]]:
    fleets: list[SimFleet] = []

    def start(**options: Any) -> SimDevice:
        started = sim_loop.run(start_fleet(1, **options))
        fleets.append(started)
        return started.devices[0]

    yield start
    for started in fleets:
        sim_loop.run(started.close())


def test_wrong_password_takes_the_device_offline_with_a_reason_and_no_secret(
    broker: Mosquitto, probe: Probe, serve: Callable[..., SimDevice]
) -> None:
    right, wrong = "Right-Pa55-word", "Wr0ng-Pa55-word"
    server = serve(username="admin", password=right)
    devices = [
        srs_device(server, id="good", username="admin", password=right),
        srs_device(server, id="bad", username="admin", password=wrong),
    ]
    with capture_logs() as logs:
        runner = AgentThread(make_settings(broker.url, devices, mqtt=OWN_CLIENT))
        try:
            mqtt = Mqtt(probe, runner)
            offline = probe.wait_for(mqtt.topic("/availability", "bad"), lambda m: True)
            assert (offline.text, offline.retain) == ("offline", True)
            assert mqtt.state(lambda s: True, device="good")["server"]["live_streams"] == 2
            listed = {d["id"]: d for d in mqtt.request("devices")["data"]}
            assert listed["bad"]["status"] == "offline"
            assert "refused the credentials" in listed["bad"]["last_error"]
            assert listed["good"]["status"] == "online"
            info = probe.wait_for(
                f"{mqtt.base}/bridge/test/info",
                lambda m: {d["status"] for d in m.json()["devices"]} == {"online", "offline"},
            )
            assert info.retain is True
            assert mqtt.command("/kick_client", "abc", device="bad")["error"]["code"] == "auth"
        finally:
            runner.stop()
    reasons = [e for e in logs if e["event"] == "poll failed" and e.get("device") == "bad"]
    assert reasons and "wrong username or password" in reasons[0]["error"]
    offline_logs = [e for e in logs if e["event"] == "device offline"]
    assert [(e["device"], e["after"]) for e in offline_logs] == [("bad", 2)]  # offline_after
    everything = b"\n".join(m.topic.encode() + b" " + m.payload for m in probe.messages)
    for secret in (right, wrong):
        assert secret.encode() not in everything
        assert secret not in repr(logs)
    assert b"refused the credentials" in everything  # the reason is there, the secret is not


def test_reload_without_a_watched_stream_clears_its_entities(
    broker: Mosquitto, probe: Probe, serve: Callable[..., SimDevice], tmp_path: Path
) -> None:
    server = serve(streams=1, players=0)
    settings = make_settings(broker.url, [])
    config = tmp_path / "config.toml"

    def write(watch: list[str]) -> None:
        config.write_text(
            f'[agent]\nid = "test"\njitter = 0.0\n'
            f'[mqtt]\nurl = "{broker.url}"\nbase_topic = "{settings.mqtt.base_topic}"\n'
            f'client_id = "{OWN_CLIENT["client_id"]}"\n'
            f'[homeassistant]\ndiscovery_prefix = "{settings.homeassistant.discovery_prefix}"\n'
            f'status_topic = "{settings.homeassistant.status_topic}"\n'
            f'[[devices]]\nid = "{DEVICE}"\nkind = "srs"\nurl = "{server.url}"\n'
            f'poll_interval = "0.1s"\nwatch_streams = {json.dumps(watch)}\n'
        )

    write(["live/stream0", "live/cam"])
    runner = AgentThread(load_config(config).settings, config)
    try:
        mqtt = Mqtt(probe, runner)
        for platform, key in stream_entities("live_cam") | stream_entities("live_stream0"):
            assert probe.wait_for(mqtt.config_topic(platform, key)).payload
        write(["live/stream0", "live/studio"])
        mark = probe.mark()
        response = mqtt.request("reload", {"transaction": "w"})
        assert response["status"] == "ok", response
        assert response["data"]["changed"] == [DEVICE]
        for platform, key in stream_entities("live_studio"):
            assert probe.wait_for(mqtt.config_topic(platform, key), since=mark).payload
        mqtt.state(lambda s: set(s["watched"]) == {"live_stream0", "live_studio"}, since=mark)
    finally:
        runner.stop()

    def last(topic: str) -> Message:
        return probe.all(topic, since=mark)[-1]

    for platform, key in stream_entities("live_cam"):
        assert last(mqtt.config_topic(platform, key)).payload == b""
    for platform, key in stream_entities("live_stream0") | stream_entities("live_studio"):
        assert last(mqtt.config_topic(platform, key)).payload


# --- the demo's servers -------------------------------------------------------------------


def test_demo_config_is_valid_and_the_demo_server_comes_alive(sim_loop: LoopThread) -> None:
    counts = argparse.Namespace(xmrig=0, whatsminer=0, srs=2, pool=0)
    fleets, devices = sim_loop.run(start_fleets(counts))
    try:
        configs = [SrsConfig.model_validate(d) for d in devices]
        assert [c.id for c in configs] == ["srs-1", "srs-2"]
        assert [str(c.url).rstrip("/") for c in configs] == [d.url for d in fleets[0].devices]
        assert configs[0].watch_streams == [
            "__defaultVhost__/live/stream0",
            f"__defaultVhost__/{ACTIVITY_STREAMS[0]}",
        ]
        model: SrsModel = fleets[0].devices[0].model
        sim_loop.call(lambda: model.rng.seed(7))

        def story() -> tuple[set[str], set[str], int]:
            """Drive the activity through simulated minutes: what went live, what stopped."""
            went_live: set[str] = set()
            stopped: set[str] = set()
            now = model.started
            changes = 0
            for _ in range(200):
                before = {s.key for s in model.streams.values() if s.publisher}
                now += model.activity
                changes += model.tick(now)
                after = {s.key for s in model.streams.values() if s.publisher}
                went_live |= after - before
                stopped |= before - after
            return went_live, stopped, changes

        went_live, stopped, changes = sim_loop.call(story)
        assert model.activity > 0
        assert changes >= 199
        assert went_live & stopped  # publishers come and go, again and again
        assert {s.split("/", 1)[1] for s in went_live} <= set(ACTIVITY_STREAMS)
        players = sim_loop.call(lambda: [c for c in model.clients.values() if not c.publish])
        assert players  # and players watch them
    finally:
        for started in fleets:
            sim_loop.run(started.close())


def test_without_the_activity_option_a_server_stands_still(sim_loop: LoopThread) -> None:
    started = sim_loop.run(start_fleet(1, streams=1))
    try:
        model: SrsModel = started.devices[0].model
        before = sim_loop.call(lambda: sorted(model.clients))
        assert sim_loop.call(lambda: model.tick(model.started + 3600)) == 0
        assert sim_loop.call(lambda: sorted(model.clients)) == before
    finally:
        sim_loop.run(started.close())
