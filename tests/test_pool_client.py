"""The pool client against the simulated pool over real sockets: auth, politeness, errors."""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest

from agent.devices.pool.client import AuthMode, BackoffError, PoolClient, retry_after_seconds
from agent.errors import (
    AgentError,
    AuthError,
    DeviceError,
    DeviceTimeoutError,
    ProtocolError,
    UnreachableError,
)
from edge_agent_sim.fleet import LoopThread, SimDevice
from edge_agent_sim.pool import MALFORMED_MODES, PoolModel, start_fleet

KEY = "K3Y-4f9a2c-SECRET"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "bitminter"


class FakeClock:
    """Monotonic time the test moves by hand, so backoff needs no sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def pool(sim_loop: LoopThread) -> Iterator[SimDevice]:
    fleet = sim_loop.run(start_fleet(1, api_key=KEY))
    yield fleet.devices[0]
    sim_loop.run(fleet.close())


def model(pool: SimDevice) -> PoolModel:
    sim: PoolModel = pool.model
    return sim


def client_for(pool: SimDevice, **options: Any) -> PoolClient:
    options.setdefault("api_key", KEY)
    options.setdefault("timeout", 2.0)
    return PoolClient(pool.url, **options)


def assert_key_hidden(error: BaseException) -> None:
    """Not in the message, the repr, or any exception chained behind it."""
    seen: BaseException | None = error
    while seen is not None:
        assert KEY not in str(seen) and KEY not in repr(seen)
        assert "SECRET" not in str(seen)
        seen = seen.__cause__ or seen.__context__
    assert error.__context__ is None and error.__cause__ is None


# -- auth ---------------------------------------------------------------------------------


def test_header_auth_sends_the_key_only_in_the_header_and_only_for_user_data(
    pool: SimDevice,
) -> None:
    client = client_for(pool)
    assert client.user()["name"] == "alice"
    client.round()
    user_request, round_request = model(pool).requests
    assert user_request.headers["Authorization"] == f"key={KEY}"
    assert "key" not in user_request.query
    assert "Authorization" not in round_request.headers
    assert all(KEY not in json.dumps(r.query) for r in model(pool).requests)


def test_basic_auth_encodes_key_colon_apikey(pool: SimDevice) -> None:
    client = client_for(pool, auth="basic")
    assert client.user("alice")["name"] == "alice"
    request = model(pool).requests[0]
    token = request.headers["Authorization"].removeprefix("Basic ")
    assert base64.b64decode(token).decode() == f"key:{KEY}"
    assert request.path == "/api/users/alice" and "key" not in request.query


def test_query_auth_puts_the_key_in_the_url_of_user_requests_only(pool: SimDevice) -> None:
    client = client_for(pool, auth="query")
    assert client.user()["workers"][0]["name"] == "rig1"
    client.top50()
    user_request, top_request = model(pool).requests
    assert user_request.query == {"key": KEY}
    assert "Authorization" not in user_request.headers
    assert top_request.query == {}


def test_query_auth_keeps_the_key_out_of_urllib3_debug_logs(
    pool: SimDevice, caplog: pytest.LogCaptureFixture
) -> None:
    client = client_for(pool, auth="query")
    with caplog.at_level(logging.DEBUG, logger="urllib3.connectionpool"):
        client.user()
    request_lines = [r.getMessage() for r in caplog.records if "/api/users" in r.getMessage()]
    assert request_lines, "urllib3 logged no request line to check"
    assert all(KEY not in line and "key=***" in line for line in request_lines)


@pytest.mark.parametrize("auth", ["header", "basic", "query"])
def test_a_wrong_key_is_an_auth_error_that_never_shows_either_key(
    pool: SimDevice, auth: str
) -> None:
    client = client_for(pool, api_key="WRONG-SECRET-KEY", auth=auth)
    with pytest.raises(AuthError) as caught:
        client.user()
    assert caught.value.device_code == 403
    assert caught.value.code == "auth"
    assert "WRONG-SECRET-KEY" not in str(caught.value)
    assert_key_hidden(caught.value)


def test_another_users_data_is_refused(pool: SimDevice) -> None:
    with pytest.raises(AuthError, match="403"):
        client_for(pool).user("bob")


def test_the_pool_answers_401_without_a_key(pool: SimDevice) -> None:
    with pytest.raises(AuthError, match="401"):
        client_for(pool).get("/api/users")  # sent as pool data: no key attached
    assert "Authorization" not in model(pool).requests[0].headers


def test_user_data_without_a_key_fails_before_sending(pool: SimDevice) -> None:
    with pytest.raises(AuthError, match="needs an API key"):
        client_for(pool, api_key=None).user()
    assert model(pool).requests == []


@pytest.mark.parametrize("auth", ["header", "basic", "query"])
def test_connection_errors_never_carry_the_key(auth: AuthMode) -> None:
    client = PoolClient("http://127.0.0.1:9", api_key=KEY, auth=auth, timeout=1.0)
    with pytest.raises(UnreachableError) as caught:
        client.user()
    assert "127.0.0.1:9" in caught.value.message
    assert_key_hidden(caught.value)


def test_a_timeout_is_a_timeout_error_without_the_key(pool: SimDevice) -> None:
    model(pool).latency = 1.0
    client = client_for(pool, auth="query", timeout=0.2)
    with pytest.raises(DeviceTimeoutError) as caught:
        client.user()
    assert_key_hidden(caught.value)


# -- politeness ---------------------------------------------------------------------------


def test_retry_after_seconds_is_honoured(pool: SimDevice) -> None:
    clock = FakeClock()
    client = client_for(pool, clock=clock)
    model(pool).throttle(1, retry_after="120")
    with pytest.raises(BackoffError) as caught:
        client.round()
    assert caught.value.retry_in == 120 and caught.value.device_code == 429
    clock.now += 119
    with pytest.raises(BackoffError):
        client.stats()
    assert len(model(pool).requests) == 1  # nothing was sent while waiting
    clock.now += 2
    assert client.stats()["active_users"] == 187
    assert len(model(pool).requests) == 2


def test_retry_after_as_an_http_date_is_read_against_the_servers_date(pool: SimDevice) -> None:
    client = client_for(pool, wall_clock=lambda: 0.0)  # a badly wrong local clock
    model(pool).throttle(1, retry_after=formatdate(time.time() + 300, usegmt=True))
    with pytest.raises(BackoffError) as caught:
        client.round()
    assert 295 <= caught.value.retry_in <= 301


def test_retry_after_parsing() -> None:
    date = "Wed, 01 Jul 2020 00:00:00 GMT"
    assert retry_after_seconds("30", None, 0.0) == 30
    assert retry_after_seconds(date, "Tue, 30 Jun 2020 23:59:00 GMT", 0.0) == 60
    assert retry_after_seconds(date, None, 1593561600 - 5) == 5
    assert retry_after_seconds(date, None, 1593561600 + 5) == 0  # in the past: go now
    assert retry_after_seconds("soon", None, 0.0) is None
    assert retry_after_seconds(None, None, 0.0) is None


def test_a_429_storm_without_retry_after_backs_off_exponentially(pool: SimDevice) -> None:
    clock = FakeClock()
    client = client_for(pool, clock=clock, backoff_initial=30, backoff_max=600)
    model(pool).throttle(None, retry_after=None)
    failures = 0
    for _ in range(200):  # one call every 10 s for 2000 s
        try:
            client.round()
        except BackoffError:
            failures += 1
        clock.now += 10
    sent = len(model(pool).requests)
    # waits of 30, 60, 120, 240, 480, 600, 600…: requests at t=0,30,90,210,450,930,1530
    assert failures == 200
    assert sent == 7
    model(pool).unthrottle()
    clock.now += 600
    assert client.round()["active_workers"] == 412


def test_5xx_backs_off_too_and_success_resets_the_backoff(pool: SimDevice) -> None:
    clock = FakeClock()
    client = client_for(pool, clock=clock, backoff_initial=30)
    model(pool).throttle(1, status=503, retry_after=None)
    with pytest.raises(BackoffError) as caught:
        client.round()
    assert caught.value.device_code == 503 and caught.value.retry_in == 30
    clock.now += 31
    client.round()
    model(pool).throttle(1, status=502, retry_after=None)
    with pytest.raises(BackoffError) as again:
        client.round()
    assert again.value.retry_in == 30  # not 60: the success in between reset it


def test_backoff_is_shared_by_every_client_of_the_same_pool(pool: SimDevice) -> None:
    clock = FakeClock()
    first, second = client_for(pool, clock=clock), client_for(pool, clock=clock)
    model(pool).throttle(1, retry_after="60")
    with pytest.raises(BackoffError):
        first.round()
    with pytest.raises(BackoffError):
        second.user()
    assert len(model(pool).requests) == 1


def test_one_request_in_flight_per_pool(pool: SimDevice) -> None:
    model(pool).latency = 0.05
    clients = [client_for(pool) for _ in range(3)]
    errors: list[BaseException] = []

    def work(client: PoolClient) -> None:
        try:
            for _ in range(3):
                client.round()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert errors == []
    assert len(model(pool).requests) == 9
    assert model(pool).max_in_flight == 1


def test_etag_revalidation_reuses_the_cached_body(pool: SimDevice, sim_loop: LoopThread) -> None:
    client = client_for(pool)
    first = client.round()
    second = client.round()
    assert second is first
    revalidation = model(pool).requests[1]
    assert revalidation.headers["If-None-Match"].startswith('"')
    assert revalidation.status == 304
    sim_loop.call(lambda: setattr(model(pool), "active_users", 190))
    third = client.round()
    assert third is not first and third["active_users"] == 190
    assert model(pool).requests[2].status == 200


def test_last_modified_revalidation_without_etags(sim_loop: LoopThread) -> None:
    fleet = sim_loop.run(start_fleet(1, etag=False))
    try:
        sim = fleet.devices[0]
        client = PoolClient(sim.url, timeout=2.0)
        first = client.blocks(max=5)
        assert client.blocks(max=5) is first
        request = sim.model.requests[1]
        assert "If-None-Match" not in request.headers
        assert request.headers["If-Modified-Since"].endswith("GMT")
        assert request.status == 304
        sim_loop.call(sim.model.find_block)
        assert client.blocks(max=5)[0]["id"] == first[0]["id"] + 1
    finally:
        sim_loop.run(fleet.close())


def test_no_conditional_headers_when_the_pool_sends_no_validators(sim_loop: LoopThread) -> None:
    fleet = sim_loop.run(start_fleet(1, etag=False, last_modified=False))
    try:
        sim = fleet.devices[0]
        client = PoolClient(sim.url, timeout=2.0)
        client.stats()
        client.stats()
        second = sim.model.requests[1]
        assert second.status == 200
        assert "If-None-Match" not in second.headers
        assert "If-Modified-Since" not in second.headers
    finally:
        sim_loop.run(fleet.close())


# -- shapes and bad answers ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "call"),
    [
        ("pool_stats.json", lambda c: c.stats()),
        ("pool_round.json", lambda c: c.round()),
        ("pool_blocks.json", lambda c: c.blocks()),
        ("pool_shifts.json", lambda c: c.shifts()),
        ("pool_top50.json", lambda c: c.top50()),
        ("pool_hashrate.txt", lambda c: c.hashrate()),
        ("pool_workers.txt", lambda c: c.workers()),
        ("pool_users.txt", lambda c: c.users()),
    ],
)
def test_the_simulator_serves_the_fixtures(pool: SimDevice, fixture: str, call: Any) -> None:
    assert call(client_for(pool)) == json.loads((FIXTURES / fixture).read_text())


def test_the_simulated_user_has_the_fixtures_shape(pool: SimDevice) -> None:
    def shape(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: shape(v) for k, v in value.items()}
        if isinstance(value, list):
            return [shape(v) for v in value]
        return type(value).__name__.replace("int", "float")

    served = client_for(pool).user()
    assert shape(served) == shape(json.loads((FIXTURES / "user.json").read_text()))


def test_paging_parameters_reach_the_pool(pool: SimDevice) -> None:
    client = client_for(pool)
    rows = client.blocks(max=3, offset=2, commodity="BTC")
    assert [r["id"] for r in rows] == [31872, 31871, 31869]
    assert model(pool).requests[0].query == {"max": "3", "offset": "2", "commodity": "BTC"}
    assert [s["id"] for s in client.shifts(max=2, offset=8)] == [986504, 986503]
    with pytest.raises(ValueError, match="1…50"):
        client.blocks(max=51)


CALLS: dict[str, Any] = {
    "/api/pool/round": lambda c: c.round(),
    "/api/pool/blocks": lambda c: c.blocks(),
    "/api/pool/top50": lambda c: c.top50(),
    "/api/pool/hashrate": lambda c: c.hashrate(),
    "/api/users": lambda c: c.user(),
}


@pytest.mark.parametrize(
    ("path", "mode"),
    [
        (path, mode)
        for path in CALLS
        for mode in MALFORMED_MODES
        # half of a plain number is still a number: nothing can tell
        if (path, mode) != ("/api/pool/hashrate", "truncated")
    ],
)
def test_malformed_answers_are_protocol_errors(pool: SimDevice, path: str, mode: str) -> None:
    call = CALLS[path]
    model(pool).malform(path, mode)
    client = client_for(pool)
    try:
        value = call(client)
    except ProtocolError as exc:
        assert_key_hidden(exc)
        return
    # Numbers turned to text inside an object keep the top-level shape: the driver's
    # normaliser refuses them (test_pool_driver); everything else must fail here.
    assert mode == "wrong_types" and path in ("/api/pool/round", "/api/pool/blocks", "/api/users")
    assert isinstance(value, dict | list)


def test_an_unknown_endpoint_is_a_device_error(pool: SimDevice) -> None:
    with pytest.raises(DeviceError, match="404") as caught:
        client_for(pool).get("/api/pool/nothing")
    assert type(caught.value) is DeviceError


def test_every_client_error_is_an_agent_error(pool: SimDevice) -> None:
    model(pool).malform("/api/pool/stats", "close")
    with pytest.raises(AgentError):
        client_for(pool).stats()
