"""The simulated Whatsminer: its wire behaviour (raw sockets) and its power model."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from agent.devices.whatsminer import crypto
from agent.devices.whatsminer.client import NoReplyError, WhatsminerClient
from edge_agent_sim import whatsminer as simulator
from edge_agent_sim.whatsminer import (
    COLD_START_S,
    PREHEAT_S,
    REBOOT_S,
    RESTART_S,
    WARMUP_S,
    SimClock,
    WhatsminerModel,
    running,
    start_fleet,
    token_count,
)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 15))


async def exchange(port: int, payload: bytes, source: str | None = None) -> bytes:
    """One raw request: send, read until the miner closes."""
    local = (source, 0) if source else None
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=local)
    writer.write(payload)
    await writer.drain()
    try:
        async with asyncio.timeout(5):
            return await reader.read(1 << 20)
    finally:
        writer.close()


async def ask(port: int, request: dict[str, Any], source: str | None = None) -> dict[str, Any]:
    reply = json.loads(await exchange(port, json.dumps(request).encode(), source))
    assert isinstance(reply, dict)
    return reply


def client(model: WhatsminerModel, port: int) -> WhatsminerClient:
    return WhatsminerClient("127.0.0.1", port, model.password, read_timeout=2)


# ---------------------------------------------------------------------- wire


def test_cgminer_form_of_requests_is_accepted() -> None:
    async def scenario() -> None:
        async with running(1) as fleet:
            port = fleet.devices[0].port
            summary = await ask(port, {"command": "summary"})
            assert summary["SUMMARY"][0]["Power"] > 1000
            info = await ask(port, {"command": "get_miner_info", "parameter": "ip,mac"})
            assert set(info["Msg"]) == {"ip", "mac"}
            joined = await ask(port, {"command": "summary+pools"})
            assert set(joined) == {"summary", "pools", "id"}

    run(scenario)


# The doc: "The API command can be used for two joins"; what each firmware does beyond.
JOINS = [
    ({}, "summary+pools", ["summary", "pools"]),
    ({}, "summary+pools+edevs", ["summary", "pools"]),  # the first two parts
    ({"join_excess": "refuse"}, "summary+pools", ["summary", "pools"]),
    ({"join_excess": "refuse"}, "summary+pools+edevs", 14),
    (
        {"join_limit": "any"},
        "summary+pools+edevs+devdetails",
        ["summary", "pools", "edevs", "devdetails"],
    ),
    ({"join_limit": "none", "join_excess": "refuse"}, "summary+pools", 14),
    ({"join_limit": "none"}, "pools+summary", ["POOLS"]),  # the first part, as a plain read
    ({"join_limit": "none"}, "summary", ["SUMMARY"]),
]


@pytest.mark.parametrize(("options", "command", "answer"), JOINS)
def test_joins_as_far_as_the_firmware_goes(
    options: dict[str, str], command: str, answer: list[str] | int
) -> None:
    async def scenario() -> None:
        async with running(1, **options) as fleet:
            reply = await ask(fleet.devices[0].port, {"cmd": command})
            if isinstance(answer, int):
                assert (reply["STATUS"], reply["Code"]) == ("E", answer)
            else:
                assert [k for k in reply if k not in ("STATUS", "id")] == answer
                joined = [p for p in answer if p.islower()]  # a part's own reply, enveloped
                assert all(reply[p][0]["STATUS"][0]["STATUS"] == "S" for p in joined)

    run(scenario)


def test_every_join_variant_is_a_valid_model() -> None:
    assert {
        WhatsminerModel(**options).join_limit for options in simulator.JOIN_VARIANTS.values()
    } == {
        "none",
        "two",
        "any",
    }


@pytest.mark.parametrize(
    ("led_fields", "period", "code"),
    [
        ("integer", 1000, 131),
        ("integer", "1000", 14),  # the doc types period integer: a strict miner refuses text
        ("integer", True, 14),
        ("lenient", "1000", 131),
        ("lenient", "soon", 14),
    ],
)
def test_set_led_numbers_are_typed_as_the_doc_types_them(
    led_fields: str, period: Any, code: int
) -> None:
    async def scenario() -> None:
        async with running(1, led_fields=led_fields) as fleet:
            model, port = fleet.devices[0].model, fleet.devices[0].port
            salts = (await ask(port, {"cmd": "get_token"}))["Msg"]
            sign = crypto.sign_token(model.key, salts["time"], salts["newsalt"])
            command = {"cmd": "set_led", "color": "red", "period": period, "duration": 500}
            command |= {"start": 0, "token": sign}
            await exchange(port, crypto.encrypt_command(command, model.aeskey))
            assert [(w.command, w.code) for w in model.writes] == [("set_led", code)]
            assert model.led == ("red" if code == 131 else "auto")

    run(scenario)


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b'{"cmd": summary}', 23),
        (b"garbage", 23),
        (b"[1, 2]", 23),
        (b'{"cmd": "no_such"}', 14),
        (b'{"cmd": 5}', 14),
        (b'{"cmd": "summary+get_psu"}', 14),
        (b'{"cmd": "summary+status"}', 14),
        (b'{"cmd": "power_off"}', 45),
        (b'{"cmd": "update_pwd", "old": "admin", "new": "x"}', 45),
        (b'{"enc": 1, "data": "***"}', 137),
        (b'{"enc": 1, "data": "QUJD"}', 137),
        (b'{"enc": 1}', 23),
    ],
)
def test_refusals(payload: bytes, code: int) -> None:
    async def scenario() -> None:
        async with running(1) as fleet:
            reply = json.loads(await exchange(fleet.devices[0].port, payload))
            assert reply["STATUS"] == "E"
            assert reply["Code"] == code
            assert fleet.devices[0].model.errors_sent[code] == 1

    run(scenario)


def test_write_with_an_unknown_token_is_135() -> None:
    async def scenario() -> None:
        async with running(1) as fleet:
            model, port = fleet.devices[0].model, fleet.devices[0].port
            forged = {"cmd": "power_off", "token": "not-a-token"}
            reply = json.loads(await exchange(port, crypto.encrypt_command(forged, model.aeskey)))
            assert reply["Code"] == 135
            assert model.mining

    run(scenario)


def test_write_reply_is_encrypted_with_the_key() -> None:
    async def scenario() -> None:
        async with running(1) as fleet:
            model, port = fleet.devices[0].model, fleet.devices[0].port
            salts = (await ask(port, {"cmd": "get_token"}))["Msg"]
            key = crypto.derive_key("admin", salts["salt"])
            sign = crypto.sign_token(key, salts["time"], salts["newsalt"])
            command = {"cmd": "set_led", "param": "auto", "token": sign}
            raw = await exchange(port, crypto.encrypt_command(command, crypto.aes_key(key)))
            reply = json.loads(crypto.decrypt(json.loads(raw)["enc"], crypto.aes_key(key)))
            assert reply["Code"] == 131 and reply["Msg"] == "ok"
            assert [w.command for w in model.writes] == ["set_led"]

    run(scenario)


def test_idle_connection_is_closed() -> None:
    async def scenario() -> None:
        async with running(1, idle_timeout=0.2) as fleet:
            reader, writer = await asyncio.open_connection("127.0.0.1", fleet.devices[0].port)
            async with asyncio.timeout(3):
                assert await reader.read(100) == b""  # closed by the miner, nothing said
            writer.close()

    run(scenario)


def test_request_split_across_packets_is_read_whole() -> None:
    async def scenario() -> None:
        async with running(1) as fleet:
            reader, writer = await asyncio.open_connection("127.0.0.1", fleet.devices[0].port)
            for part in (b'{"cmd":', b' "get_ver', b'sion"}'):
                writer.write(part)
                await writer.drain()
            async with asyncio.timeout(5):
                reply = json.loads(await reader.read(1 << 16))
            writer.close()
            assert reply["Msg"]["api_ver"] == "2.0.5"

    run(scenario)


def test_32_tokens_per_client_ip() -> None:
    async def scenario() -> None:
        async with running(1) as fleet:
            port, model = fleet.devices[0].port, fleet.devices[0].model
            for _ in range(32):
                assert (await ask(port, {"cmd": "get_token"}))["Code"] == 134
            refused = await ask(port, {"cmd": "get_token"})
            assert refused["Code"] == 136 and refused["STATUS"] == "E"
            assert model.tokens_issued == 32
            other = await ask(port, {"cmd": "get_token"}, source="127.0.0.2")
            assert other["Code"] == 134

    run(scenario)


def test_16_client_ips() -> None:
    async def scenario() -> None:
        async with running(1) as fleet:
            port = fleet.devices[0].port
            for host in range(2, 18):
                reply = await ask(port, {"cmd": "get_token"}, source=f"127.0.0.{host}")
                assert reply["Code"] == 134
            refused = await ask(port, {"cmd": "get_token"}, source="127.0.0.18")
            assert refused["Code"] == 136
            # Reads stay open to everyone.
            assert (await ask(port, {"cmd": "summary"}, source="127.0.0.18"))["SUMMARY"]

    run(scenario)


def test_tokens_expire_after_their_life() -> None:
    async def scenario() -> None:
        async with running(1, token_life=0.3, max_tokens_per_ip=1) as fleet:
            port = fleet.devices[0].port
            assert (await ask(port, {"cmd": "get_token"}))["Code"] == 134
            assert (await ask(port, {"cmd": "get_token"}))["Code"] == 136
            await asyncio.sleep(0.35)  # the behaviour under test is the passing of time
            assert (await ask(port, {"cmd": "get_token"}))["Code"] == 134

    run(scenario)


def test_many_miners_from_one_process() -> None:
    async def scenario() -> None:
        fleet = await start_fleet(60)
        try:
            ports = {device.port for device in fleet.devices}
            assert len(ports) == 60
            serials = await asyncio.gather(
                *(ask(d.port, {"cmd": "get_miner_info", "info": "minersn"}) for d in fleet.devices)
            )
            assert [s["Msg"]["minersn"] for s in serials] == [f"SIM{i:08d}" for i in range(60)]
        finally:
            await fleet.close()

    run(scenario)


def test_reboot_drops_connections_until_it_is_over() -> None:
    async def scenario() -> None:
        clock = SimClock(time_scale=0)
        async with running(1, clock=clock) as fleet:
            model, port = fleet.devices[0].model, fleet.devices[0].port
            miner = client(model, port)
            await miner.write("reboot")
            with pytest.raises(NoReplyError):
                await miner.summary()
            clock.advance(REBOOT_S + 1)
            assert (await miner.summary())["SUMMARY"][0]["Uptime"] <= 1
            assert model.reboots == 1
            assert await miner.write("power_on") == "ok"  # its token table was cleared
            assert model.tokens_issued == 2

    run(scenario)


def test_factory_reset_restores_admin_and_closes_the_write_api() -> None:
    async def scenario() -> None:
        clock = SimClock(time_scale=0)
        async with running(1, clock=clock, password="pw_1") as fleet:
            model, port = fleet.devices[0].model, fleet.devices[0].port
            await client(model, port).write("factory_reset")
            assert model.password == "admin" and not model.write_api and model.pools == []

    run(scenario)


# -------------------------------------------------------------- power model


async def write(model: WhatsminerModel, port: int, command: str, **params: Any) -> Any:
    return await client(model, port).write(command, params)


async def reading(port: int) -> tuple[float, float]:
    """(power W, hash rate TH/s) from summary, as an operator would see them."""
    summary = (await ask(port, {"cmd": "summary"}))["SUMMARY"][0]
    return summary["Power"], summary["MHS 1m"] / 1e6


def powered(scenario: Callable[[SimClock, WhatsminerModel, int], Awaitable[None]]) -> None:
    """Run a power scenario on one miner whose clock only moves when the test says."""

    async def wrapper() -> None:
        clock = SimClock(time_scale=0)
        async with running(1, clock=clock) as fleet:
            await scenario(clock, fleet.devices[0].model, fleet.devices[0].port)

    run(wrapper)


def test_fast_percent_lands_within_a_second_and_only_approximately() -> None:
    async def scenario(clock: SimClock, model: WhatsminerModel, port: int) -> None:
        full, full_hash = await reading(port)
        await write(model, port, "set_power_pct", percent=60)
        clock.advance(0.5)
        halfway, _ = await reading(port)
        assert 0.6 * full < halfway < full
        clock.advance(0.6)
        power, hashrate = await reading(port)
        assert 0.55 * full < power < 0.65 * full
        assert abs(power - 0.6 * full) > 0.002 * full  # not exactly where it was told
        assert hashrate < 0.6 * full_hash  # fast mode costs more hash than power

    powered(scenario)


def test_normal_percent_ramps_over_minutes() -> None:
    async def scenario(clock: SimClock, model: WhatsminerModel, port: int) -> None:
        full, full_hash = await reading(port)
        await write(model, port, "set_power_pct_v2", percent=50)
        clock.advance(10)
        assert (await reading(port))[0] > 0.9 * full
        clock.advance(50)
        assert 0.55 * full < (await reading(port))[0] < 0.95 * full
        clock.advance(240)
        power, hashrate = await reading(port)
        assert 0.47 * full < power < 0.53 * full
        assert hashrate > 0.5 * full_hash * 0.98  # normal mode keeps efficiency
        assert model.btminer_restarts == 0

    powered(scenario)


def test_power_off_is_immediate_and_power_on_is_slow_when_cold() -> None:
    async def scenario(clock: SimClock, model: WhatsminerModel, port: int) -> None:
        full, _ = await reading(port)
        await write(model, port, "power_off", respbefore="true")
        power, hashrate = await reading(port)
        assert power < 50 and hashrate == 0
        assert (await ask(port, {"cmd": "status"}))["Msg"]["btmineroff"] == "true"
        await write(model, port, "power_on")
        clock.advance(60)
        assert (await reading(port))[0] < 0.25 * full
        clock.advance(COLD_START_S)
        assert (await reading(port))[0] > 0.98 * full

    powered(scenario)


def test_preheated_power_on_is_quick() -> None:
    async def scenario(clock: SimClock, model: WhatsminerModel, port: int) -> None:
        full, _ = await reading(port)
        await write(model, port, "power_off")
        first = await write(model, port, "pre_power_on")
        assert first == {"complete": False, "msg": "wait for adjust temp"}
        clock.advance(PREHEAT_S / 2)
        assert (await write(model, port, "pre_power_on"))["msg"] == "adjust continue"
        assert 50 < (await reading(port))[0] < 0.1 * full  # preheating draws a little
        clock.advance(PREHEAT_S)
        assert await write(model, port, "pre_power_on") == {
            "complete": True,
            "msg": "adjust complete",
        }
        await write(model, port, "power_on")
        clock.advance(20)
        assert (await reading(port))[0] > 0.98 * full

    powered(scenario)


@pytest.mark.parametrize(
    ("command", "params"),
    [
        ("set_low_power", {}),
        ("set_high_power", {}),
        ("adjust_power_limit", {"power_limit": 2500}),
        ("set_target_freq", {"percent": -20}),
        ("restart_btminer", {}),
    ],
)
def test_writes_that_restart_btminer(command: str, params: dict[str, Any]) -> None:
    async def scenario(clock: SimClock, model: WhatsminerModel, port: int) -> None:
        full, _ = await reading(port)
        await write(model, port, command, **params)
        assert model.btminer_restarts == 1
        clock.advance(RESTART_S / 2)
        power, hashrate = await reading(port)
        assert hashrate == 0 and power < 0.1 * full
        clock.advance(RESTART_S / 2 + WARMUP_S + 1)
        power, hashrate = await reading(port)
        assert hashrate > 0
        expected = {
            "set_low_power": 0.8 * full,
            "set_high_power": 1.15 * full,
            "adjust_power_limit": 2500,
            "set_target_freq": 0.8 * full,
            "restart_btminer": full,
        }[command]
        assert abs(power - expected) < 0.02 * full

    powered(scenario)


def test_power_limit_above_rated_power_changes_nothing() -> None:
    async def scenario(clock: SimClock, model: WhatsminerModel, port: int) -> None:
        await write(model, port, "adjust_power_limit", power_limit=99999)
        assert model.btminer_restarts == 0

    powered(scenario)


def test_percent_below_the_stable_floor_restarts_btminer() -> None:
    async def scenario(clock: SimClock, model: WhatsminerModel, port: int) -> None:
        full, _ = await reading(port)
        await write(model, port, "set_power_pct", percent=5)
        assert model.btminer_restarts == 1
        clock.advance(RESTART_S + WARMUP_S + 1)
        power, _ = await reading(port)
        assert abs(power - model.min_stable / 100 * full) < 0.02 * full

    powered(scenario)


def test_v2_refused_in_high_mode_on_air_cooled_miners() -> None:
    async def scenario(clock: SimClock, model: WhatsminerModel, port: int) -> None:
        await write(model, port, "set_high_power")
        with pytest.raises(Exception, match="code 132"):
            await write(model, port, "set_power_pct_v2", percent=80)

    powered(scenario)


def test_miners_differ_in_efficiency() -> None:
    async def scenario() -> None:
        async with running(8) as fleet:
            rates = [
                (await ask(d.port, {"cmd": "summary"}))["SUMMARY"][0]["Power Rate"]
                for d in fleet.devices
            ]
            assert len({round(r) for r in rates}) >= 4
            assert all(25 < r < 42 for r in rates)

    run(scenario)


def test_time_scale_makes_minutes_pass_in_seconds() -> None:
    async def scenario() -> None:
        async with running(1, time_scale=600) as fleet:
            model, port = fleet.devices[0].model, fleet.devices[0].port
            full, _ = await reading(port)
            started = asyncio.get_running_loop().time()
            await write(model, port, "set_power_pct_v2", percent=50)  # minutes of ramp
            while (await reading(port))[0] > 0.53 * full:
                assert asyncio.get_running_loop().time() - started < 5
                await asyncio.sleep(0.02)
            assert asyncio.get_running_loop().time() - started < 2

    run(scenario)


def test_counters_for_the_bench() -> None:
    async def scenario() -> None:
        async with running(3) as fleet:
            for device in fleet.devices:
                miner = client(device.model, device.port)
                await miner.write("set_power_pct", {"percent": 70})
                await miner.write("set_low_power")
            assert token_count(fleet) == 3
            model = fleet.devices[0].model
            assert [w.command for w in model.writes] == ["set_power_pct", "set_low_power"]
            assert model.writes[0].at <= model.writes[1].at
            assert all(w.code == 131 and w.ip == "127.0.0.1" for w in model.writes)
            assert model.btminer_restarts == 1
            assert model.connections == 3  # get_token and two writes

    run(scenario)


def test_unknown_quirk_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown quirks"):
        WhatsminerModel(quirks={"typo"})


@pytest.mark.parametrize("option", ["join_limit", "join_excess", "led_fields"])
def test_unknown_mode_is_refused(option: str) -> None:
    with pytest.raises(ValueError, match=f"unknown {option}"):
        WhatsminerModel(**{option: "typo"})


def test_the_simulator_shares_no_code_with_the_driver() -> None:
    source = (Path(simulator.__file__)).read_text()
    imports = {
        line.split()[1] for line in source.splitlines() if line.startswith(("from ", "import "))
    }
    assert (
        not {"agent.devices.whatsminer." + m for m in ("client", "driver", "parse", "catalog")}
        & imports
    )
