"""SrsDriver against the simulator: state, events, restarts, commands and their errors."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError as ConfigError

from agent.catalog.validate import resolve_command, validate_params
from agent.devices import KINDS
from agent.devices.srs.config import SrsConfig
from agent.devices.srs.driver import RAW_API_RECHECK_POLLS, SrsDriver
from agent.errors import (
    AuthError,
    DeviceError,
    ProtocolError,
    UnsupportedError,
    ValidationError,
)
from edge_agent_sim.fleet import LoopThread, SimDevice
from edge_agent_sim.srs import SrsModel, start_fleet


@pytest.fixture(scope="module")
def loop() -> Iterator[LoopThread]:
    thread = LoopThread("srs-sim")
    yield thread
    thread.stop()


@pytest.fixture
def serve(loop: LoopThread) -> Iterator[Callable[..., SimDevice]]:
    fleets = []

    def start(**options: Any) -> SimDevice:
        fleet = loop.run(start_fleet(1, **options))
        fleets.append(fleet)
        return fleet.devices[0]

    yield start
    for fleet in fleets:
        loop.run(fleet.close())


@pytest.fixture
def drivers() -> Iterator[Callable[..., SrsDriver]]:
    made: list[SrsDriver] = []

    def make(device: SimDevice, **fields: Any) -> SrsDriver:
        config = SrsConfig.model_validate(
            {"id": "srs1", "kind": "srs", "url": device.url, **fields}
        )
        driver = SrsDriver(config)
        made.append(driver)
        return driver

    yield make
    for driver in made:
        driver.close_blocking()


def steer(loop: LoopThread, device: SimDevice, action: Callable[[SrsModel], Any]) -> Any:
    return loop.call(lambda: action(device.model))


def test_poll_reports_server_streams_and_clients(
    serve: Callable[..., SimDevice], drivers: Callable[..., SrsDriver]
) -> None:
    device = serve(streams=2, players=3, kbps=2500)
    result = drivers(device).poll_blocking()
    state = result.state
    assert state["server"]["id"] == device.model.server_id
    assert state["server"]["version"] == "7.0.18"
    assert (state["server"]["streams"], state["server"]["live_streams"]) == (2, 2)
    assert state["server"]["clients"] == 8
    assert (state["server"]["kbps_in"], state["server"]["kbps_out"]) == (5000, 15000)
    assert {s["stream"] for s in state["streams"]} == {
        "__defaultVhost__/live/stream0",
        "__defaultVhost__/live/stream1",
    }
    assert len(state["clients"]) == 8
    assert state["truncated"] == {"streams": False, "clients": False}
    assert set(result.raw) == {"summaries", "vhosts", "streams", "clients"}
    assert result.events == []
    # summaries, rpc=raw (first poll only), vhosts, one page each
    assert [path.split("?")[0] for _, path in device.model.requests] == [
        "/api/v1/summaries",
        "/api/v1/raw",
        "/api/v1/vhosts/",
        "/api/v1/streams/",
        "/api/v1/clients/",
    ]
    # A stock SRS: raw API and reload off.
    assert (state["server"]["raw_api"], state["server"]["reload_allowed"]) == (False, False)
    drivers(device).poll_blocking()
    later = [path for _, path in device.model.requests[5:]]
    assert len(later) == 5 and sum("/raw" in path for path in later) == 1  # a new driver asks


def test_poll_runs_through_the_async_driver_interface(
    serve: Callable[..., SimDevice], drivers: Callable[..., SrsDriver]
) -> None:
    driver = drivers(serve(streams=1))
    result = asyncio.run(driver.poll())
    assert result.state["server"]["live_streams"] == 1


def test_events_when_streams_start_and_stop(
    loop: LoopThread, serve: Callable[..., SimDevice], drivers: Callable[..., SrsDriver]
) -> None:
    device = serve(streams=1, players=0)
    driver = drivers(device, watch_streams=["live/cam"])
    first = driver.poll_blocking()
    assert first.state["watched"]["live_cam"]["live"] is False
    publisher = steer(loop, device, lambda m: m.start_stream("live/cam", audio=False))
    second = driver.poll_blocking()
    cam = steer(loop, device, lambda m: m.find_stream("live/cam"))
    assert second.events == [
        {
            "event": "stream_live",
            "stream": "__defaultVhost__/live/cam",
            "stream_id": cam.id,
            "publisher_client": publisher,
            "video_codec": "H264",
            "audio_codec": None,
            "resolution": "1280x720",
        }
    ]
    assert second.state["watched"]["live_cam"] == {
        "stream": "__defaultVhost__/live/cam",
        "live": True,
        "clients": 1,
        "kbps_in": 1000,
        "kbps_out": 0,
    }
    steer(loop, device, lambda m: m.stop_stream("live/cam"))
    third = driver.poll_blocking()
    assert [(e["event"], e["stream"], e["reason"]) for e in third.events] == [
        ("stream_stopped", "__defaultVhost__/live/cam", "unpublished")
    ]
    assert third.state["watched"]["live_cam"]["live"] is False
    assert driver.poll_blocking().events == []


@pytest.mark.parametrize("keep_server_id", [False, True])
def test_restart_is_noticed_by_server_or_service_id(
    loop: LoopThread,
    serve: Callable[..., SimDevice],
    drivers: Callable[..., SrsDriver],
    keep_server_id: bool,
) -> None:
    device = serve(streams=1, players=1)
    driver = drivers(device)
    before = driver.poll_blocking().state["server"]
    steer(loop, device, lambda m: m.restart(keep_server_id=keep_server_id, republish=True))
    after = driver.poll_blocking()
    assert after.state["server"]["restarts"] == 1
    assert (after.state["server"]["id"] == before["id"]) is keep_server_id
    assert after.state["server"]["service_id"] != before["service_id"]
    restart = after.events[0]
    assert restart["event"] == "server_restarted"
    assert restart["previous"]["service_id"] == before["service_id"]
    assert restart["pid"] == device.model.pid
    # The old process's publishing session ended; the republished one is a new session.
    assert [e["event"] for e in after.events[1:]] == ["stream_stopped", "stream_live"]
    assert driver.poll_blocking().state["server"]["restarts"] == 1


def test_caps_limit_lists_and_say_so(
    serve: Callable[..., SimDevice], drivers: Callable[..., SrsDriver]
) -> None:
    device = serve(streams=30, players=1)
    state = drivers(device, max_streams=25, max_clients=40, page_size=10).poll_blocking().state
    assert (len(state["streams"]), len(state["clients"])) == (25, 40)
    assert state["truncated"] == {"streams": True, "clients": True}
    assert state["server"]["streams"] == 30  # SRS's own count is still whole
    assert len(state["errors"]) == 2


def test_max_clients_zero_skips_the_client_list(
    serve: Callable[..., SimDevice], drivers: Callable[..., SrsDriver]
) -> None:
    device = serve(streams=2, players=2)
    state = drivers(device, max_clients=0).poll_blocking().state
    assert state["clients"] == []
    assert state["server"]["clients"] == 6
    assert not any("/clients/" in path for _, path in device.model.requests)


def test_kick_a_client_then_one_that_just_left(
    loop: LoopThread, serve: Callable[..., SimDevice], drivers: Callable[..., SrsDriver]
) -> None:
    device = serve(streams=1, players=2)
    driver = drivers(device)
    players = [c["id"] for c in driver.poll_blocking().state["clients"] if not c["publish"]]
    assert driver.execute_blocking("kick_client", {"client_id": players[0]}) == {
        "client_id": players[0],
        "kicked": True,
    }
    steer(loop, device, lambda m: m.remove_client(players[1]))  # leaves on its own
    with pytest.raises(DeviceError, match="it may have just left") as caught:
        driver.execute_blocking("kick_client", {"client_id": players[1]})
    assert caught.value.device_code == 2049
    assert caught.value.as_dict()["device_code"] == 2049


def reload_requests(device: SimDevice) -> int:
    return sum(1 for _, path in device.model.requests if path.endswith("rpc=reload"))


def raw_asks(device: SimDevice) -> int:
    return sum(1 for _, path in device.model.requests if path.endswith("rpc=raw"))


@pytest.mark.parametrize(
    ("switches", "raw_api", "why"),
    [
        ({}, False, "raw API is off"),  # the strict default: a stock SRS
        ({"allow_reload": True}, False, "raw API is off"),
        ({"raw_api": True}, True, "does not allow reloads"),
    ],
    ids=["stock", "allow_reload only", "raw_api only"],
)
def test_reload_where_srs_says_it_cannot_work_is_refused_without_a_call(
    serve: Callable[..., SimDevice],
    drivers: Callable[..., SrsDriver],
    switches: dict[str, bool],
    raw_api: bool,
    why: str,
) -> None:
    device = serve(**switches)
    driver = drivers(device)
    server = driver.poll_blocking().state["server"]
    assert (server["raw_api"], server["reload_allowed"]) == (raw_api, False)
    with pytest.raises(UnsupportedError, match=why) as caught:
        driver.execute_blocking("reload", {})
    assert "Nothing was sent" in caught.value.message
    assert caught.value.as_dict()["code"] == "unsupported"
    assert reload_requests(device) == 0
    assert device.model.reloads == 0


def test_reload_with_the_raw_api_on_reloads_and_asks_again(
    loop: LoopThread, serve: Callable[..., SimDevice], drivers: Callable[..., SrsDriver]
) -> None:
    device = serve(raw_api=True, allow_reload=True)
    driver = drivers(device)
    server = driver.poll_blocking().state["server"]
    assert (server["raw_api"], server["reload_allowed"]) == (True, True)
    assert driver.execute_blocking("reload", {}) == {"reloaded": True}
    assert device.model.reloads == 1
    # The config SRS re-read turned the raw API off: the next poll asks and learns it.
    steer(loop, device, lambda m: m.reconfigure(raw_api=False))
    asked = raw_asks(device)
    assert driver.poll_blocking().state["server"]["reload_allowed"] is False
    assert raw_asks(device) == asked + 1
    with pytest.raises(UnsupportedError):
        driver.execute_blocking("reload", {})
    assert reload_requests(device) == 1


def test_reload_before_anything_is_known_learns_from_code_1061(
    serve: Callable[..., SimDevice], drivers: Callable[..., SrsDriver]
) -> None:
    device = serve()
    driver = drivers(device)
    with pytest.raises(DeviceError, match="raw API is disabled") as caught:
        driver.execute_blocking("reload", {})  # nothing polled yet: worth one try
    assert caught.value.device_code == 1061
    with pytest.raises(UnsupportedError, match="refused the last reload"):
        driver.execute_blocking("reload", {})
    assert reload_requests(device) == 1
    # The next poll asks rpc=raw for the whole picture.
    assert driver.poll_blocking().state["server"]["raw_api"] is False
    assert raw_asks(device) == 1


def test_the_switches_are_asked_again_after_a_restart_and_every_few_polls(
    loop: LoopThread, serve: Callable[..., SimDevice], drivers: Callable[..., SrsDriver]
) -> None:
    device = serve()
    driver = drivers(device)
    assert driver.poll_blocking().state["server"]["reload_allowed"] is False
    steer(loop, device, lambda m: m.restart(raw_api=True, allow_reload=True))
    assert driver.poll_blocking().state["server"]["reload_allowed"] is True  # a new process
    assert raw_asks(device) == 2
    # An operator's edit reloaded by signal: same process, seen at the next periodic ask.
    steer(loop, device, lambda m: m.reconfigure(allow_reload=False))
    seen = [
        driver.poll_blocking().state["server"]["reload_allowed"]
        for _ in range(RAW_API_RECHECK_POLLS)
    ]
    assert seen == [True] * (RAW_API_RECHECK_POLLS - 1) + [False]
    assert raw_asks(device) == 3


def test_an_unreadable_raw_answer_leaves_reload_unknown_not_the_poll_failed(
    loop: LoopThread, serve: Callable[..., SimDevice], drivers: Callable[..., SrsDriver]
) -> None:
    device = serve(raw_api=True, allow_reload=True, fault="malformed", fault_on="/raw")
    driver = drivers(device)
    server = driver.poll_blocking().state["server"]
    assert (server["raw_api"], server["reload_allowed"], server["live_streams"]) == (
        None,
        None,
        2,
    )
    steer(loop, device, lambda m: setattr(m, "fault", None))
    assert driver.execute_blocking("reload", {}) == {"reloaded": True}  # unknown: tried


def test_auth_failure_through_the_driver_keeps_the_password_out(
    serve: Callable[..., SimDevice], drivers: Callable[..., SrsDriver]
) -> None:
    device = serve(username="admin", password="right-one")
    with pytest.raises(AuthError) as caught:
        drivers(device, username="admin", password="Wr0ng-Pa55").poll_blocking()
    assert "Wr0ng-Pa55" not in repr(caught.value.as_dict())
    state = drivers(device, username="admin", password="right-one").poll_blocking().state
    assert state["server"]["live_streams"] == 2


@pytest.mark.parametrize("fault", ["malformed", "truncated"])
def test_bad_json_fails_the_poll_with_a_protocol_error(
    loop: LoopThread,
    serve: Callable[..., SimDevice],
    drivers: Callable[..., SrsDriver],
    fault: str,
) -> None:
    device = serve()
    driver = drivers(device)
    driver.poll_blocking()
    steer(loop, device, lambda m: setattr(m, "fault", fault))
    with pytest.raises(ProtocolError):
        driver.poll_blocking()
    steer(loop, device, lambda m: setattr(m, "fault", None))
    assert driver.poll_blocking().state["server"]["live_streams"] == 2


def test_kick_client_parameter_is_checked_before_anything_is_sent() -> None:
    catalog = KINDS["srs"].catalog
    spec = resolve_command(catalog, "kick_client", allowed=[])
    assert validate_params(spec, {"client_id": "187ba839"}) == {"client_id": "187ba839"}
    for bad in ("../raw?rpc=reload", "a b", ""):
        with pytest.raises(ValidationError):
            validate_params(spec, {"client_id": bad})
    assert not resolve_command(catalog, "reload", allowed=[]).gated


def test_config_normalises_watch_streams_and_tls_choice(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    config = SrsConfig.model_validate(
        {
            "id": "srs1",
            "kind": "srs",
            "url": "https://srs.local:1986",
            "watch_streams": ["live/cam1", "/live/cam1", "studio.example/show/s1"],
            "verify_tls": str(ca),
        }
    )
    assert config.watch_streams == ["__defaultVhost__/live/cam1", "studio.example/show/s1"]
    assert config.verify_tls == str(ca)
    env_style = SrsConfig.model_validate(
        {"id": "srs1", "kind": "srs", "url": "http://h:1985", "verify_tls": "false"}
    )
    assert env_style.verify_tls is False


@pytest.mark.parametrize(
    ("fields", "complaint"),
    [
        ({"watch_streams": ["cam1"]}, "app/name"),
        ({"password": "x"}, "no username"),
        ({"verify_tls": "/nowhere/ca.pem"}, "does not exist"),
        ({"url": "http://admin:pw@h:1985"}, "not in the URL"),
        ({"page_size": 5}, "greater than or equal to 10"),
    ],
)
def test_config_errors_say_what_is_wrong(fields: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        SrsConfig.model_validate({"id": "srs1", "kind": "srs", "url": "http://h:1985", **fields})


def test_password_stays_out_of_the_config_dump() -> None:
    config = SrsConfig.model_validate(
        {"id": "srs1", "kind": "srs", "url": "http://h:1985", "username": "a", "password": "pw9"}
    )
    assert "pw9" not in config.model_dump_json() and "pw9" not in repr(config)
    assert KINDS["srs"].config is SrsConfig
