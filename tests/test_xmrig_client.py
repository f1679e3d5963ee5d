"""XmrigDriver against the XMRig simulator over real loopback HTTP, and normalise() against
the official XMRig API examples."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from agent.devices.xmrig.config import XmrigConfig
from agent.devices.xmrig.driver import XmrigDriver, normalise
from agent.errors import (
    AgentError,
    AuthError,
    DeviceError,
    DeviceTimeoutError,
    ErrorCode,
    ProtocolError,
    UnreachableError,
    UnsupportedError,
    ValidationError,
)
from edge_agent_sim.fleet import LoopThread, SimDevice
from edge_agent_sim.xmrig import XmrigModel, start_fleet

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "xmrig"
TOKEN = "tok-Vb93-must-never-leak"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture(scope="module")
def loop() -> Iterator[LoopThread]:
    thread = LoopThread("xmrig-sim")
    yield thread
    thread.stop()


Miner = tuple[SimDevice, XmrigModel]


@pytest.fixture
def start_miner(loop: LoopThread) -> Iterator[Callable[..., Miner]]:
    """Start one simulated miner with XmrigModel options; closed after the test."""
    fleets = []

    def start(**options: Any) -> Miner:
        options.setdefault("token", TOKEN)
        fleet = loop.run(start_fleet(1, **options))
        fleets.append(fleet)
        device = fleet.devices[0]
        return device, device.model

    yield start
    for fleet in fleets:
        loop.run(fleet.close())


@pytest.fixture
def make_driver() -> Iterator[Callable[..., XmrigDriver]]:
    drivers = []

    def make(device: SimDevice | str, **fields: Any) -> XmrigDriver:
        fields.setdefault("token", TOKEN)
        url = device if isinstance(device, str) else device.url
        driver = XmrigDriver(XmrigConfig(id="rig1", kind="xmrig", url=url, **fields))
        drivers.append(driver)
        return driver

    yield make
    for driver in drivers:
        driver.close_blocking()


@pytest.fixture
def miner(start_miner: Callable[..., Miner]) -> Miner:
    return start_miner()


def steer(loop: LoopThread, model: XmrigModel, **changes: Any) -> None:
    """Change the simulated miner on its own loop thread."""

    def apply() -> None:
        for name, value in changes.items():
            setattr(model, name, value)

    loop.call(apply)


def read(loop: LoopThread, model: XmrigModel, name: str) -> Any:
    return loop.call(lambda: copy.deepcopy(getattr(model, name)))


def paths(loop: LoopThread, model: XmrigModel) -> list[str]:
    return loop.call(lambda: [f"{method} {path}" for method, path, _ in model.requests])


def failure(call: Callable[[], Any], kind: type[AgentError] = AgentError) -> AgentError:
    with pytest.raises(kind) as caught:
        call()
    return caught.value


# normalise() on the official examples ------------------------------------------------------


def test_normalise_v2_summary_and_backends() -> None:
    state = normalise(fixture("v2_summary.json"), fixture("v2_backends.json"))
    assert state["miner_id"] == "51aca77da137cb62"
    assert state["worker_id"] == "tpad"
    assert state["version"] == "6.17.1-dev"
    assert state["user_agent"].startswith("XMRig/6.17.1-dev")
    assert state["algo"] == "rx/0"
    assert state["hashrate_hs"] == {
        "10s": 1207.19,
        "1m": 1210.82,
        "15m": None,
        "highest": 1316.85,
    }
    assert state["shares"] == {
        "accepted": 3,
        "rejected": 0,
        "total": 3,
        "avg_time_s": 35,
        "difficulty": 37638,
    }
    assert state["pool"] == {
        "url": "some.pool:20064",
        "ip": "127.1.2.3",
        "ping_ms": 405,
        "uptime_s": 106,
        "failures": 0,
        "tls": "TLSv1.3",
    }
    assert state["uptime_s"] == 106
    assert (state["paused"], state["mining"], state["restricted"]) == (False, True, False)
    assert state["donate_level"] == 0
    assert state["cpu"] == {
        "brand": "Intel(R) Core(TM) i7-4700MQ CPU @ 2.40GHz",
        "cores": 4,
        "threads": 8,
    }
    assert state["memory"] == {
        "free_bytes": 4977348608,
        "total_bytes": 16659546112,
        "rss_bytes": 16441344,
    }
    assert state["load_average"] == [3.4, 2.7, 2.44]
    assert state["hugepages"] == [6, 6]
    assert (state["power_w"], state["temperature_c"]) == (161, 69)
    assert state["errors"] == []


def test_normalise_v2_backends_detail() -> None:
    backends = normalise(fixture("v2_summary.json"), fixture("v2_backends.json"))["backends"]
    assert set(backends) == {"cpu", "cuda"}
    cpu = backends["cpu"]
    assert cpu["enabled"] is True
    assert cpu["algo"] == "rx/0"
    assert cpu["hashrate_hs"] == {"10s": 1235.78, "1m": 1228.89, "15m": None}
    assert [t["hashrate_hs"]["10s"] for t in cpu["threads"]] == [409.75, 412.9, 413.11]
    assert "gpus" not in cpu
    cuda = backends["cuda"]
    assert cuda["algo"] == "cn-heavy/xhv"
    assert cuda["hashrate_hs"] == {"10s": 247.02, "1m": 247.34, "15m": None}
    assert cuda["gpus"] == [
        {
            "index": 0,
            "name": "NVIDIA GeForce GTX 970",
            "bus_id": "01:00.0",
            "temperature_c": 69,
            "power_w": 161,
            "clock_mhz": 1328,
            "memory_clock_mhz": 3662,
            "fan_percent": [100],
        }
    ]


def test_normalise_v1_summary() -> None:
    state = normalise(fixture("v1_summary.json"), None)
    assert state["version"] == "2.6.0-beta3"
    assert state["hashrate_hs"] == {
        "10s": 296.24,
        "1m": 296.23,
        "15m": 295.97,
        "highest": 296.5,
    }
    assert state["shares"]["accepted"] == 30
    assert state["shares"]["rejected"] == 0
    assert state["pool"]["url"] == "pool.monero.hashvault.pro:3333"
    assert state["pool"]["ping_ms"] == 35
    assert state["pool"]["uptime_s"] == 953
    assert state["pool"]["ip"] is None
    assert state["cpu"] == {
        "brand": "Intel(R) Core(TM) i7-4770 CPU @ 3.40GHz",
        "cores": None,
        "threads": None,
    }
    assert state["donate_level"] == 5
    # XMRig 2.x reports `"hugepages": true`; the state keeps its [allocated, wanted] type.
    assert state["hugepages"] is None
    assert (state["power_w"], state["temperature_c"], state["backends"]) == (None, None, {})
    assert (state["paused"], state["mining"]) == (False, True)


def test_normalise_keeps_the_common_miner_core() -> None:
    for summary, backends in (
        (fixture("v2_summary.json"), fixture("v2_backends.json")),
        (fixture("v1_summary.json"), None),
    ):
        state = normalise(summary, backends)
        assert {"10s", "1m", "15m"} <= set(state["hashrate_hs"])
        assert {"accepted", "rejected"} <= set(state["shares"])
        assert "url" in state["pool"]
        for key in ("power_w", "temperature_c", "uptime_s", "errors"):
            assert key in state


def test_normalise_paused_or_disabled_is_not_mining() -> None:
    paused = dict(fixture("v2_summary.json"), paused=True)
    assert normalise(paused, fixture("v2_backends.json"))["mining"] is False
    disabled = [dict(b, enabled=False) for b in fixture("v2_backends.json")]
    state = normalise(fixture("v2_summary.json"), disabled)
    assert (state["paused"], state["mining"]) == (False, False)


def test_normalise_survives_wrong_types() -> None:
    summary = {"hashrate": {"total": "fast"}, "results": [], "connection": 5, "cpu": "x"}
    backends: list[Any] = [
        {"type": "cpu", "threads": 7, "hashrate": "fast"},
        {"type": "cuda", "threads": [{"health": "hot", "hashrate": [1]}, 3]},
        "junk",
        {"type": 3},
    ]
    state = normalise(summary, backends)
    assert state["hashrate_hs"] == {"10s": None, "1m": None, "15m": None, "highest": None}
    assert state["shares"]["accepted"] is None
    assert state["pool"]["url"] is None
    assert state["backends"]["cpu"]["threads"] == []
    [gpu] = state["backends"]["cuda"]["gpus"]
    assert (gpu["temperature_c"], gpu["fan_percent"]) == (None, [])
    assert state["backends"]["cuda"]["threads"][0]["hashrate_hs"]["10s"] == 1


# polling the simulator -------------------------------------------------------------------


def test_poll_reads_summary_backends_and_config(
    start_miner: Callable[..., Miner], make_driver: Callable[..., XmrigDriver], loop: LoopThread
) -> None:
    device, model = start_miner(gpu=True, hashrate_hs=5000.0)
    result = make_driver(device).poll_blocking()
    state = result.state
    assert state["api"] == "/2/summary"
    assert state["worker_id"] == "sim0"
    assert 4800 <= state["hashrate_hs"]["10s"] <= 5200
    assert state["mining"] is True
    assert set(state["backends"]) == {"cpu", "cuda"}
    assert (state["power_w"], state["temperature_c"]) == (161, 69)
    assert state["configured_pools"] == ["some.pool:10064"]
    assert set(result.raw) == {"summary", "backends", "config"}
    assert result.raw["config"]["http"]["access-token"] == "***"
    assert TOKEN not in json.dumps(result.raw) + json.dumps(state)
    assert paths(loop, model) == ["GET /2/summary", "GET /2/backends", "GET /2/config"]


def test_config_is_read_again_only_after_config_interval(
    miner: Miner, make_driver: Callable[..., XmrigDriver], loop: LoopThread
) -> None:
    device, model = miner
    driver = make_driver(device, config_interval="1h")
    driver.poll_blocking()
    second = driver.poll_blocking()
    assert "config" not in second.raw
    assert second.state["configured_pools"] == ["some.pool:10064"]
    assert paths(loop, model).count("GET /2/config") == 1


# XMRig's auth rules ----------------------------------------------------------------------


def test_no_header_when_auth_is_required_is_401(
    miner: Miner, make_driver: Callable[..., XmrigDriver]
) -> None:
    error = failure(make_driver(miner[0], token=None).poll_blocking, AuthError)
    assert (error.code, error.device_code) == (ErrorCode.AUTH, 401)
    assert "requires an access token" in error.message


@pytest.mark.parametrize("restricted", [False, True])
def test_header_sent_to_a_miner_without_token_is_401(
    start_miner: Callable[..., Miner], make_driver: Callable[..., XmrigDriver], restricted: bool
) -> None:
    device, _ = start_miner(token=None, restricted=restricted)
    error = failure(make_driver(device).poll_blocking, AuthError)
    assert error.device_code == 401
    assert TOKEN not in error.message


def test_wrong_token_is_403(miner: Miner, make_driver: Callable[..., XmrigDriver]) -> None:
    wrong = "wrong-Kp55-secret"
    error = failure(make_driver(miner[0], token=wrong).poll_blocking, AuthError)
    assert (error.code, error.device_code) == (ErrorCode.AUTH, 403)
    assert "access token is wrong" in error.message
    assert wrong not in error.message


def test_restricted_miner_without_token_allows_reads(
    start_miner: Callable[..., Miner], make_driver: Callable[..., XmrigDriver], loop: LoopThread
) -> None:
    device, model = start_miner(token=None, restricted=True)
    state = make_driver(device, token=None).poll_blocking().state
    assert state["restricted"] is True
    assert state["hashrate_hs"]["10s"] is not None
    assert "GET /2/config" not in paths(loop, model)


def test_unrestricted_miner_without_token_refuses_everything(
    start_miner: Callable[..., Miner], make_driver: Callable[..., XmrigDriver]
) -> None:
    device, _ = start_miner(token=None, restricted=False)
    assert failure(make_driver(device, token=None).poll_blocking, AuthError).device_code == 401


# restricted mode -------------------------------------------------------------------------


@pytest.mark.parametrize("polled_first", [True, False])
def test_restricted_miner_refuses_writes_clearly(
    start_miner: Callable[..., Miner],
    make_driver: Callable[..., XmrigDriver],
    loop: LoopThread,
    polled_first: bool,
) -> None:
    device, model = start_miner(restricted=True)
    driver = make_driver(device)
    if polled_first:
        state = driver.poll_blocking().state
        assert (state["restricted"], state["configured_pools"]) == (True, None)
        assert paths(loop, model) == ["GET /2/summary", "GET /2/backends"]  # config not read
    for command, params in (("pause", {}), ("mining", {"state": False}), ("config_get", {})):
        error = failure(lambda c=command, p=params: driver.execute_blocking(c, p), DeviceError)
        assert "restricted (http.restricted = true) and accepts no writes" in error.message
        assert error.message.startswith(f"{command}: ")
        assert error.device_code == 403
    assert read(loop, model, "paused") is False
    assert read(loop, model, "writes") == []


def test_wrong_token_on_write_is_not_called_restricted(
    miner: Miner, make_driver: Callable[..., XmrigDriver]
) -> None:
    error = failure(lambda: make_driver(miner[0], token="nope").execute_blocking("pause", {}))
    assert isinstance(error, AuthError)
    assert "restricted (http.restricted = true) and accepts no writes" not in error.message


# older XMRig APIs ------------------------------------------------------------------------


def test_api_level_1_falls_back_to_1_summary(
    start_miner: Callable[..., Miner], make_driver: Callable[..., XmrigDriver], loop: LoopThread
) -> None:
    device, model = start_miner(api_level=1)
    driver = make_driver(device)
    state = driver.poll_blocking().state
    assert state["api"] == "/1/summary"
    assert state["backends"] == {}
    assert state["configured_pools"] == ["some.pool:10064"]
    assert paths(loop, model) == ["GET /2/summary", "GET /1/summary", "GET /1/config"]
    driver.poll_blocking()  # the working path is remembered
    assert paths(loop, model)[3:] == ["GET /1/summary"]


def test_api_level_0_falls_back_to_api_json(
    start_miner: Callable[..., Miner], make_driver: Callable[..., XmrigDriver], loop: LoopThread
) -> None:
    device, model = start_miner(api_level=0)
    driver = make_driver(device)
    state = driver.poll_blocking().state
    assert state["api"] == "/api.json"
    assert state["hashrate_hs"]["10s"] is not None
    assert state["configured_pools"] is None
    assert paths(loop, model)[:3] == ["GET /2/summary", "GET /1/summary", "GET /api.json"]
    assert driver.poll_blocking().state["api"] == "/api.json"


# commands --------------------------------------------------------------------------------


def test_pause_and_resume_change_the_miner(
    miner: Miner, make_driver: Callable[..., XmrigDriver], loop: LoopThread
) -> None:
    device, model = miner
    driver = make_driver(device)
    assert driver.execute_blocking("pause", {}) == {"status": "OK"}
    assert read(loop, model, "paused") is True
    state = driver.poll_blocking().state
    assert (state["paused"], state["mining"], state["hashrate_hs"]["10s"]) == (True, False, 0.0)
    assert driver.execute_blocking("resume", {}) == {"status": "OK"}
    assert read(loop, model, "paused") is False
    assert driver.poll_blocking().state["mining"] is True


def test_mining_switch_maps_onto_pause_and_resume(
    miner: Miner, make_driver: Callable[..., XmrigDriver], loop: LoopThread
) -> None:
    device, model = miner
    driver = make_driver(device)
    driver.execute_blocking("mining", {"state": False})
    assert read(loop, model, "paused") is True
    driver.execute_blocking("mining", {"state": True})
    assert read(loop, model, "paused") is False
    assert [w[0] for w in read(loop, model, "writes")] == ["pause", "resume"]


def test_stop_stops_the_backends(
    miner: Miner, make_driver: Callable[..., XmrigDriver], loop: LoopThread
) -> None:
    device, model = miner
    driver = make_driver(device)
    assert driver.execute_blocking("stop", {}) == {"status": "OK"}
    assert read(loop, model, "stopped") is True
    state = driver.poll_blocking().state
    assert state["backends"]["cpu"]["enabled"] is False
    assert (state["paused"], state["mining"]) == (False, False)


def test_start_reports_method_not_found(
    miner: Miner, make_driver: Callable[..., XmrigDriver], loop: LoopThread
) -> None:
    error = failure(lambda: make_driver(miner[0]).execute_blocking("start", {}), UnsupportedError)
    assert (error.code, error.device_code) == (ErrorCode.UNSUPPORTED, -32601)
    assert error.message == "start: this XMRig version has no such method: Method not found"
    assert read(loop, miner[1], "writes") == []


def test_config_get_masks_secrets(
    miner: Miner, make_driver: Callable[..., XmrigDriver], loop: LoopThread
) -> None:
    config = make_driver(miner[0]).execute_blocking("config_get", {})
    assert config["http"]["access-token"] == "***"
    assert config["pools"][0]["pass"] == "***"
    assert config["pools"][0]["url"] == "some.pool:10064"
    assert TOKEN not in json.dumps(config)
    assert read(loop, miner[1], "config")["http"]["access-token"] == TOKEN


def test_config_set_replaces_the_whole_config(
    miner: Miner, make_driver: Callable[..., XmrigDriver], loop: LoopThread
) -> None:
    device, model = miner
    new = read(loop, model, "config")
    new["pools"] = [{"url": "other.pool:3333", "user": "w", "pass": "x2"}]
    new["donate-level"] = 1
    del new["randomx"]
    assert make_driver(device).execute_blocking("config_set", {"config": new}) == {"replaced": True}
    assert read(loop, model, "config") == new
    assert "PUT /2/config" in paths(loop, model)


def test_config_set_rejected_by_the_miner(
    miner: Miner, make_driver: Callable[..., XmrigDriver], loop: LoopThread
) -> None:
    device, model = miner
    before = read(loop, model, "config")
    error = failure(
        lambda: make_driver(device).execute_blocking("config_set", {"config": {"pools": "x"}}),
        DeviceError,
    )
    assert (error.code, error.device_code) == (ErrorCode.DEVICE, 400)
    assert "rejected the new config" in error.message
    assert read(loop, model, "config") == before


def test_config_set_written_back_from_config_get_keeps_the_secrets(
    miner: Miner, make_driver: Callable[..., XmrigDriver], loop: LoopThread
) -> None:
    device, model = miner
    driver = make_driver(device)
    shown = driver.execute_blocking("config_get", {})
    shown["donate-level"] = 3
    driver.execute_blocking("config_set", {"config": shown})
    config = read(loop, model, "config")
    assert config["donate-level"] == 3
    assert config["http"]["access-token"] == TOKEN
    assert config["pools"][0]["pass"] == "x"
    assert read(loop, model, "token") == TOKEN
    assert driver.poll_blocking().state["mining"] is True  # not locked out


def test_config_patch_merges_per_rfc_7386(
    miner: Miner, make_driver: Callable[..., XmrigDriver], loop: LoopThread
) -> None:
    device, model = miner
    before = read(loop, model, "config")
    patch = {"donate-level": 2, "cpu": {"yield": False, "asm": None}, "title": None}
    result = make_driver(device).execute_blocking("config_patch", {"patch": patch})
    assert result == {"changed": ["cpu", "donate-level", "title"]}
    after = read(loop, model, "config")
    assert after["donate-level"] == 2
    assert after["cpu"]["yield"] is False
    assert "asm" not in after["cpu"]
    assert "title" not in after
    assert after["cpu"]["huge-pages"] == before["cpu"]["huge-pages"]
    assert after["pools"] == before["pools"]
    assert after["http"]["access-token"] == TOKEN
    assert paths(loop, model)[-2:] == ["GET /2/config", "PUT /2/config"]


def test_config_patch_needs_an_object(
    miner: Miner, make_driver: Callable[..., XmrigDriver], loop: LoopThread
) -> None:
    driver = make_driver(miner[0])
    for patch in ([1], "x", {}):
        error = failure(lambda p=patch: driver.execute_blocking("config_patch", {"patch": p}))
        assert isinstance(error, ValidationError)
    assert paths(loop, miner[1]) == []


# faults ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["garbage", "truncated"])
def test_unreadable_replies_are_protocol_errors(
    start_miner: Callable[..., Miner], make_driver: Callable[..., XmrigDriver], fault: str
) -> None:
    device, _ = start_miner(fault=fault)
    error = failure(make_driver(device).poll_blocking, ProtocolError)
    assert error.code == ErrorCode.PROTOCOL
    assert "not JSON" in error.message


def test_error_500_is_a_device_error(
    start_miner: Callable[..., Miner], make_driver: Callable[..., XmrigDriver]
) -> None:
    device, _ = start_miner(fault="error500")
    error = failure(make_driver(device).poll_blocking, DeviceError)
    assert (error.code, error.device_code) == (ErrorCode.DEVICE, 500)
    assert not isinstance(error, AuthError)


def test_hung_miner_times_out(
    start_miner: Callable[..., Miner], make_driver: Callable[..., XmrigDriver]
) -> None:
    device, _ = start_miner(fault="hang")
    driver = make_driver(device, timeout="300ms")
    started = time.monotonic()
    error = failure(driver.poll_blocking, DeviceTimeoutError)
    assert time.monotonic() - started < 3
    assert error.code == ErrorCode.TIMEOUT
    assert "did not answer within 0.3s" in error.message
    error = failure(lambda: driver.execute_blocking("pause", {}), DeviceTimeoutError)
    assert "/json_rpc" in error.message


def test_connection_refused_is_unreachable(
    loop: LoopThread, make_driver: Callable[..., XmrigDriver]
) -> None:
    fleet = loop.run(start_fleet(1))
    url = fleet.devices[0].url
    loop.run(fleet.close())
    error = failure(make_driver(url).poll_blocking, UnreachableError)
    assert error.code == ErrorCode.UNREACHABLE
    assert f"cannot connect to {url}/2/summary" in error.message


def test_recovers_when_the_fault_clears(
    start_miner: Callable[..., Miner], make_driver: Callable[..., XmrigDriver], loop: LoopThread
) -> None:
    device, model = start_miner(fault="garbage")
    driver = make_driver(device)
    failure(driver.poll_blocking, ProtocolError)
    steer(loop, model, fault=None)
    assert driver.poll_blocking().state["api"] == "/2/summary"


def test_the_token_never_appears_in_errors(
    start_miner: Callable[..., Miner], make_driver: Callable[..., XmrigDriver], loop: LoopThread
) -> None:
    errors: list[AgentError] = []

    def collect(call: Callable[[], Any]) -> None:
        errors.append(failure(call))

    device, model = start_miner()
    driver = make_driver(device)
    collect(make_driver(device, token=None).poll_blocking)
    collect(make_driver(device, token=TOKEN + "x").poll_blocking)
    collect(lambda: driver.execute_blocking("start", {}))
    collect(lambda: driver.execute_blocking("config_set", {"config": {"http": {}}}))
    # A config that starts with the token, cut short: the reply is not JSON, and the error
    # must not quote its beginning.
    token_first = {"http": {"access-token": TOKEN}, "pools": [], "padding": "x" * 200}
    steer(loop, model, config=token_first)
    for fault in ("truncated", "garbage", "error500"):
        steer(loop, model, fault=fault)
        collect(lambda: driver.execute_blocking("config_get", {}))
        collect(driver.poll_blocking)
    restricted, _ = start_miner(restricted=True)
    collect(lambda: make_driver(restricted).execute_blocking("pause", {}))
    collect(lambda: make_driver(restricted, token="nope").poll_blocking())
    fleet = loop.run(start_fleet(1))
    url = fleet.devices[0].url
    loop.run(fleet.close())
    collect(make_driver(url).poll_blocking)
    assert len(errors) == 13
    assert {type(e) for e in errors} >= {AuthError, UnsupportedError, DeviceError, ProtocolError}
    for error in errors:
        assert TOKEN not in str(error)
        assert TOKEN not in json.dumps(error.as_dict(), default=str)


# the simulator's HTTP rules (research/http-apis.md) ----------------------------------------


def call(device: SimDevice, method: str, path: str, **kwargs: Any) -> requests.Response:
    return requests.request(method, device.url + path, timeout=5, **kwargs)


AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {**AUTH, "Content-Type": "application/json"}


def test_sim_options_is_a_cors_preflight(miner: Miner) -> None:
    response = call(miner[0], "OPTIONS", "/json_rpc")
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert response.headers["Access-Control-Allow-Methods"] == "GET, PUT, POST, DELETE"
    assert response.headers["Access-Control-Allow-Headers"] == "Authorization, Content-Type"


@pytest.mark.parametrize("method", ["PATCH", "PROPFIND", "TRACE"])
def test_sim_other_methods_are_405_before_auth(miner: Miner, method: str) -> None:
    response = call(miner[0], method, "/2/summary")
    assert response.status_code == 405
    assert response.json() == {"status": 405, "error": "Method Not Allowed"}


def test_sim_auth_statuses(start_miner: Callable[..., Miner]) -> None:
    device, _ = start_miner()
    assert call(device, "GET", "/2/summary").json() == {"status": 401, "error": "Unauthorized"}
    wrong = call(device, "GET", "/2/summary", headers={"Authorization": f"Bearer {TOKEN}x"})
    assert wrong.json() == {"status": 403, "error": "Forbidden"}
    not_bearer = call(device, "GET", "/2/summary", headers={"Authorization": TOKEN})
    assert not_bearer.status_code == 403
    assert call(device, "GET", "/2/summary", headers=AUTH).status_code == 200
    open_miner, _ = start_miner(token=None, restricted=True)
    assert call(open_miner, "GET", "/2/summary").status_code == 200
    assert call(open_miner, "GET", "/2/summary", headers=AUTH).status_code == 401


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/json; charset=utf-8", "application/JSON"]
)
def test_sim_writes_need_exactly_application_json(miner: Miner, content_type: str | None) -> None:
    headers = dict(AUTH)
    if content_type is not None:
        headers["Content-Type"] = content_type
    response = call(miner[0], "POST", "/json_rpc", headers=headers, data=b'{"method":"pause"}')
    assert response.status_code == 415
    assert response.json() == {"status": 415, "error": "Unsupported Media Type"}


def test_sim_restricted_refuses_writes_before_content_type(
    start_miner: Callable[..., Miner],
) -> None:
    device, _ = start_miner(restricted=True)
    for headers in (JSON, {**AUTH, "Content-Type": "text/plain"}):
        response = call(device, "POST", "/json_rpc", headers=headers, data=b'{"method":"pause"}')
        assert response.json() == {"status": 403, "error": "Forbidden"}
    assert call(device, "GET", "/2/config", headers=AUTH).status_code == 403
    assert call(device, "GET", "/2/backends", headers=AUTH).status_code == 200


def test_sim_json_rpc_errors_are_http_200(miner: Miner, loop: LoopThread) -> None:
    device, model = miner
    cases = [
        (b"not json", -32700),
        (b'{"id": 4}', -32600),
        (b'{"method": "start", "id": 4}', -32601),
    ]
    for body, code in cases:
        response = call(device, "POST", "/json_rpc", headers=JSON, data=body)
        assert response.status_code == 200
        assert response.json()["error"]["code"] == code
    ok = call(device, "POST", "/json_rpc", headers=JSON, data=b'{"method": "pause", "id": 9}')
    assert ok.json() == {"id": 9, "jsonrpc": "2.0", "result": {"status": "OK"}}
    assert read(loop, model, "paused") is True


def test_sim_config_put_is_204_and_unknown_paths_404(miner: Miner) -> None:
    device, _ = miner
    config = call(device, "GET", "/2/config", headers=AUTH).json()
    put = call(device, "PUT", "/1/config", headers=JSON, data=json.dumps(config))
    assert (put.status_code, put.content) == (204, b"")
    bad = call(device, "PUT", "/2/config", headers=JSON, data=b"{")
    assert bad.json() == {"status": 400, "error": "Bad Request"}
    missing = call(device, "GET", "/3/summary", headers=AUTH)
    assert missing.json() == {"status": 404, "error": "Not Found"}
