"""The pool driver against the simulated pool: state, incremental reads, events, politeness."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from agent.devices import KINDS
from agent.devices.pool.client import BackoffError
from agent.devices.pool.config import PoolConfig
from agent.devices.pool.driver import PoolDriver
from agent.errors import AuthError, ProtocolError, UnknownCommandError
from edge_agent_sim.fleet import LoopThread, SimDevice
from edge_agent_sim.pool import (
    START_TIME,
    PoolModel,
    RequestRecord,
    demo_config,
    start_fleet,
)

KEY = "K3Y-77-SECRET"


class FakeClock:
    def __init__(self) -> None:
        self.now = 5000.0

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


def driver_for(pool: SimDevice, clock: FakeClock | None = None, **fields: Any) -> PoolDriver:
    fields.setdefault("api_key", KEY)
    config = PoolConfig.model_validate(
        {"id": "pool1", "kind": "pool", "url": pool.url, "timeout": 2, **fields}
    )
    return PoolDriver(config, clock=clock or FakeClock())


def requests_since(pool: SimDevice, mark: int) -> list[RequestRecord]:
    return model(pool).requests[mark:]


def block_requests(pool: SimDevice, mark: int) -> list[dict[str, str]]:
    return [r.query for r in requests_since(pool, mark) if r.path == "/api/pool/blocks"]


def test_first_poll_publishes_the_whole_documented_state(pool: SimDevice) -> None:
    result = driver_for(pool).poll_blocking()
    state = result.state
    assert state["pool"] == {
        "url": pool.url,
        "hashrate_hs": 20_513_370_000_000.0,
        "active_workers": 412,
        "active_users": 187,
    }
    assert state["round"]["chains"]["BTC"]["duration_s"] == 389221
    assert len(state["blocks"]) == 10 and state["latest_block"] == state["blocks"][0]
    assert state["latest_block"]["status"] == "processing"
    assert len(state["shifts"]) == 10
    assert state["top50"]["user00"] == 2_500_000_000_000.0
    assert state["user"]["hashrate_hs"] == 14_200_500_000.0
    assert set(state["user"]["workers"]) == {"rig1", "rig2"}
    assert result.events == []  # the first poll is the baseline, not news
    assert set(result.raw) == {"user", "round", "blocks", "shifts", "top50"}
    assert KEY not in json.dumps(state) + json.dumps(result.raw)


def test_the_registry_builds_the_driver_and_the_async_poll_works(pool: SimDevice) -> None:
    config = KINDS["pool"].config.model_validate(
        {"id": "p", "kind": "pool", "url": pool.url, "api_key": KEY}
    )
    driver = KINDS["pool"].driver(config)
    state = asyncio.run(driver.poll()).state
    asyncio.run(driver.close())
    assert state["user"]["name"] == "alice"


def test_without_a_key_only_pool_data_is_read(pool: SimDevice) -> None:
    state = driver_for(pool, api_key=None).poll_blocking().state
    assert state["user"] is None
    assert not any(r.path.startswith("/api/users") for r in model(pool).requests)
    keys = {e.key for e in PoolDriver.catalog.entities_for(state)}
    assert "pool_hashrate" in keys and not any(k.startswith("worker_") for k in keys)


def test_a_named_user_is_read_from_its_own_path(pool: SimDevice) -> None:
    driver_for(pool, user="alice").poll_blocking()
    assert model(pool).requests[0].path == "/api/users/alice"


def test_top50_can_be_left_out(pool: SimDevice) -> None:
    state = driver_for(pool, top50=False).poll_blocking().state
    assert state["top50"] is None
    assert not model(pool).requests_to("/api/pool/top50")


def test_a_wrong_key_fails_the_poll_after_one_request(pool: SimDevice) -> None:
    with pytest.raises(AuthError) as caught:
        driver_for(pool, api_key="WRONG-SECRET").poll_blocking()
    assert "WRONG-SECRET" not in str(caught.value)
    assert len(model(pool).requests) == 1


# -- incremental blocks and shifts --------------------------------------------------------


def test_later_polls_read_only_a_small_window(pool: SimDevice) -> None:
    driver = driver_for(pool)
    driver.poll_blocking()
    mark = len(model(pool).requests)
    result = driver.poll_blocking()
    # three pending blocks at the top (processing, 2 x unconfirmed) plus one of overlap
    assert block_requests(pool, mark) == [{"max": "4", "offset": "0"}]
    shifts = [r.query for r in requests_since(pool, mark) if r.path == "/api/pool/shifts"]
    assert shifts == [{"max": "2", "offset": "0"}]
    assert result.events == []
    mark = len(model(pool).requests)
    again = driver.poll_blocking()
    assert len(requests_since(pool, mark)) == 5
    assert all(r.status == 304 for r in requests_since(pool, mark))  # nothing changed
    assert again.state == result.state and again.events == []


def test_a_found_block_is_an_event_and_the_latest_block(
    pool: SimDevice, sim_loop: LoopThread
) -> None:
    driver = driver_for(pool)
    driver.poll_blocking()
    block = sim_loop.call(lambda: model(pool).find_block("BTC"))
    result = driver.poll_blocking()
    assert [e["event"] for e in result.events] == ["block_found"]
    assert result.events[0]["block"]["id"] == block["id"]
    assert result.state["latest_block"]["height"] == block["height"]
    assert result.state["latest_block"]["status"] == "processing"
    assert len(result.state["blocks"]) == 10
    assert result.state["round"]["chains"]["BTC"]["accepted"] == 0  # the round restarted


def test_many_new_blocks_are_paged_in_each_reported_once_oldest_first(
    pool: SimDevice, sim_loop: LoopThread
) -> None:
    driver = driver_for(pool)
    driver.poll_blocking()
    found = sim_loop.call(lambda: [model(pool).find_block() for _ in range(12)])
    mark = len(model(pool).requests)
    result = driver.poll_blocking()
    ids = [e["block"]["id"] for e in result.events if e["event"] == "block_found"]
    assert ids == [b["id"] for b in found]
    offsets = [int(q["offset"]) for q in block_requests(pool, mark)]
    assert offsets[0] == 0 and len(offsets) > 1 and offsets == sorted(offsets)
    assert [b["id"] for b in result.state["blocks"]] == [b["id"] for b in reversed(found)][:10]
    assert driver.poll_blocking().events == []


def test_block_statuses_are_followed_to_confirmed(pool: SimDevice, sim_loop: LoopThread) -> None:
    driver = driver_for(pool)
    driver.poll_blocking()
    new = sim_loop.call(lambda: model(pool).find_block())["id"]
    driver.poll_blocking()
    seen: list[tuple[int, str, str]] = []
    for _ in range(4):
        sim_loop.call(lambda: model(pool).advance_blocks(confirmations=40))
        for event in driver.poll_blocking().events:
            assert event["event"] == "block_status"
            seen.append((event["block"]["id"], event["from"], event["to"]))
    assert [(f, t) for i, f, t in seen if i == new] == [
        ("processing", "unconfirmed"),
        ("unconfirmed", "confirmed"),
    ]
    assert (31876, "processing", "unconfirmed") in seen
    assert (31875, "unconfirmed", "confirmed") in seen
    mark = len(model(pool).requests)
    state = driver.poll_blocking().state
    assert state["latest_block"]["confirmations_left"] == 0
    # nothing pending any more: the window shrinks to one new row plus one known
    assert block_requests(pool, mark) == [{"max": "2", "offset": "0"}]


@pytest.mark.parametrize("final", ["stale", "orphan"])
def test_stale_and_orphaned_blocks_are_events(
    pool: SimDevice, sim_loop: LoopThread, final: str
) -> None:
    driver = driver_for(pool)
    driver.poll_blocking()
    sim_loop.call(lambda: model(pool).set_block_status(31875, final))
    events = driver.poll_blocking().events
    assert events == [
        {
            "event": "block_status",
            "from": "unconfirmed",
            "to": final,
            "block": next(b for b in driver.blocks.rows if b["id"] == 31875),
        }
    ]
    assert events[0]["block"]["confirmations_left"] == -1


def test_a_pending_block_pushed_out_of_the_published_list_is_still_followed(
    pool: SimDevice, sim_loop: LoopThread
) -> None:
    driver = driver_for(pool, blocks_page=3)
    driver.poll_blocking()
    sim_loop.call(lambda: [model(pool).find_block() for _ in range(4)])
    driver.poll_blocking()
    assert 31876 not in [b["id"] for b in driver.poll_blocking().state["blocks"]]
    sim_loop.call(lambda: model(pool).set_block_status(31876, "orphan"))
    events = driver.poll_blocking().events
    assert [(e["block"]["id"], e["to"]) for e in events] == [(31876, "orphan")]


def test_events_of_a_failed_poll_are_delivered_by_the_next_one(
    pool: SimDevice, sim_loop: LoopThread
) -> None:
    driver = driver_for(pool)
    driver.poll_blocking()
    block = sim_loop.call(lambda: model(pool).find_block())
    sim_loop.call(lambda: model(pool).malform("/api/pool/shifts", "garbage"))
    with pytest.raises(ProtocolError):
        driver.poll_blocking()  # blocks were read, shifts failed
    sim_loop.call(model(pool).clear_malformed)
    events = driver.poll_blocking().events
    assert [(e["event"], e["block"]["id"]) for e in events] == [("block_found", block["id"])]


def test_the_commodity_filter_reaches_the_pool(pool: SimDevice) -> None:
    state = driver_for(pool, commodity="NMC").poll_blocking().state
    assert {b["chain"] for b in state["blocks"]} == {"NMC"}
    assert all(q.get("commodity") == "NMC" for q in block_requests(pool, 0))


def test_new_shifts_are_read_incrementally(pool: SimDevice, sim_loop: LoopThread) -> None:
    driver = driver_for(pool)
    driver.poll_blocking()
    shift = sim_loop.call(model(pool).complete_shift)
    state = driver.poll_blocking().state
    assert state["shifts"][0]["id"] == shift["id"]
    assert len(state["shifts"]) == 10 and state["round"]["shift"]["accepted"] == 0
    sim_loop.call(lambda: [model(pool).complete_shift() for _ in range(5)])
    mark = len(model(pool).requests)
    state = driver.poll_blocking().state
    assert [s["id"] for s in state["shifts"][:6]] == list(
        range(shift["id"] + 5, shift["id"] - 1, -1)
    )
    pages = [r.query for r in requests_since(pool, mark) if r.path == "/api/pool/shifts"]
    assert pages[0] == {"max": "2", "offset": "0"} and len(pages) == 2


# -- workers and entities -----------------------------------------------------------------


def worker_keys(state: dict[str, Any]) -> set[str]:
    return {e.key for e in PoolDriver.catalog.entities_for(state) if e.key.startswith("worker_")}


def test_workers_that_come_and_go_add_and_remove_entities(
    pool: SimDevice, sim_loop: LoopThread
) -> None:
    driver = driver_for(pool)
    before = worker_keys(driver.poll_blocking().state)
    assert before == {
        "worker_rig1_hashrate",
        "worker_rig1_alive",
        "worker_rig2_hashrate",
        "worker_rig2_alive",
    }
    sim_loop.call(lambda: model(pool).add_worker("rig3", 900.0))
    state = driver.poll_blocking().state
    assert worker_keys(state) == before | {"worker_rig3_hashrate", "worker_rig3_alive"}
    assert state["user"]["workers"]["rig3"] == {
        "hashrate_hs": 900_000_000.0,
        "alive": True,
        "last_work": model(pool).now,
        "work": state["user"]["workers"]["rig3"]["work"],
    }
    assert state["user"]["active_workers"] == 2
    sim_loop.call(lambda: model(pool).remove_worker("rig1"))
    state = driver.poll_blocking().state
    assert worker_keys(state) == {
        "worker_rig2_hashrate",
        "worker_rig2_alive",
        "worker_rig3_hashrate",
        "worker_rig3_alive",
    }
    assert state["user"]["hashrate_hs"] == 900_000_000.0


# -- politeness through the driver --------------------------------------------------------


def test_a_429_storm_slows_the_driver_down(pool: SimDevice, sim_loop: LoopThread) -> None:
    clock = FakeClock()
    driver = driver_for(pool, clock)
    driver.poll_blocking()
    sim_loop.call(lambda: model(pool).throttle(None, retry_after="120"))
    mark = len(model(pool).requests)
    for _ in range(30):  # 30 minutes of polls every 60 s
        with pytest.raises(BackoffError) as caught:
            driver.poll_blocking()
        assert caught.value.device_code == 429
        clock.now += 60
    # one request per Retry-After window (15), where a healthy pool would have had 150
    assert len(requests_since(pool, mark)) == 15
    sim_loop.call(model(pool).unthrottle)
    clock.now += 120
    assert driver.poll_blocking().state["pool"]["active_users"] == 187


@pytest.mark.parametrize(
    ("path", "mode"),
    [
        ("/api/pool/round", "wrong_types"),
        ("/api/pool/round", "wrong_shape"),
        ("/api/pool/blocks", "wrong_types"),
        ("/api/pool/blocks", "truncated"),
        ("/api/pool/shifts", "wrong_shape"),
        ("/api/pool/top50", "nan"),
        ("/api/users", "wrong_types"),
        ("/api/users", "garbage"),
        ("/api/users", "close"),
    ],
)
def test_malformed_answers_fail_the_poll_with_a_protocol_error(
    pool: SimDevice, sim_loop: LoopThread, path: str, mode: str
) -> None:
    driver = driver_for(pool)
    sim_loop.call(lambda: model(pool).malform(path, mode))
    with pytest.raises(ProtocolError):
        driver.poll_blocking()
    sim_loop.call(model(pool).clear_malformed)
    assert driver.poll_blocking().state["pool"]["active_workers"] == 412


def test_a_malformed_block_after_the_baseline_is_an_error_not_an_event(
    pool: SimDevice, sim_loop: LoopThread
) -> None:
    driver = driver_for(pool)
    driver.poll_blocking()

    def corrupt() -> None:
        model(pool).find_block()["id"] = "not-a-number"

    sim_loop.call(corrupt)
    with pytest.raises(ProtocolError, match="id"):
        driver.poll_blocking()


def test_the_api_is_read_only(pool: SimDevice) -> None:
    with pytest.raises(UnknownCommandError, match="read-only"):
        driver_for(pool).execute_blocking("refresh", {})


# -- a pool that keeps moving -------------------------------------------------------------


def test_the_driver_follows_a_moving_pool_without_missing_or_repeating_anything(
    pool: SimDevice, sim_loop: LoopThread
) -> None:
    driver = driver_for(pool)
    state = driver.poll_blocking().state
    statuses = {b["id"]: b["status"] for b in state["blocks"]}
    found: list[int] = []
    moves = 0
    for _ in range(150):
        sim_loop.call(lambda: model(pool).step(seconds=60))
        result = driver.poll_blocking()
        for event in result.events:
            block = event["block"]
            if event["event"] == "block_found":
                assert block["id"] not in statuses
                found.append(block["id"])
            else:
                assert statuses[block["id"]] == event["from"] != event["to"] == block["status"]
                moves += 1
            statuses[block["id"]] = block["status"]
    served = sim_loop.call(lambda: json.loads(json.dumps(model(pool).blocks[:10])))
    state = result.state
    assert [(b["id"], b["status"], b["confirmations_left"]) for b in state["blocks"]] == [
        (b["id"], b["status"], b["confirmations_left"]) for b in served
    ]
    assert found, "150 steps of a live pool found no block: the simulator is too quiet"
    assert moves >= len(found), "found blocks were never seen moving on"
    workers = sim_loop.call(lambda: {w["name"] for w in model(pool).users["alice"]["workers"]})
    assert set(state["user"]["workers"]) == workers
    assert state["shifts"][0]["id"] == sim_loop.call(lambda: model(pool).shifts[0]["id"])


def test_the_demo_entry_is_a_valid_polite_config_of_a_live_pool(
    pool: SimDevice, sim_loop: LoopThread
) -> None:
    entry = demo_config(pool, 0)
    config = PoolConfig.model_validate(entry)
    assert config.warnings() == [] and config.api_key is not None
    assert model(pool).live == 10.0
    sim_loop.call(lambda: setattr(model(pool), "live", 0.01))
    driver = PoolDriver(config)
    for _ in range(500):  # each poll is a few requests; the pool steps as wall time passes
        driver.poll_blocking()
        if sim_loop.call(lambda: model(pool).now) > START_TIME:
            break
    assert sim_loop.call(lambda: model(pool).now) > START_TIME


def test_a_fleet_serves_independent_pools(sim_loop: LoopThread) -> None:
    fleet = sim_loop.run(start_fleet(2, api_key=KEY))
    try:
        first, second = fleet.devices
        assert first.port != second.port
        sim_loop.call(lambda: first.model.find_block())
        one = driver_for(first).poll_blocking().state
        two = driver_for(second).poll_blocking().state
        assert one["latest_block"]["id"] == two["latest_block"]["id"] + 1
    finally:
        sim_loop.run(fleet.close())
