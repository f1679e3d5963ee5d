"""The simulated Whatsminer's power modes where the vendor document is silent (§3.3, 3.4, 3.23):
what power_on does to a set_power_pct, and whether pre_power_on ever reports complete."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from agent.devices.whatsminer.client import WhatsminerClient
from edge_agent_sim.whatsminer import (
    PREHEAT_S,
    PREHEATED_START_S,
    SimClock,
    WhatsminerModel,
    running,
)

Scenario = Callable[[SimClock, WhatsminerModel, int], Awaitable[None]]


def powered(scenario: Scenario, **options: Any) -> None:
    """One miner with these power options, on a clock that moves only when the test says."""

    async def wrapper() -> None:
        clock = SimClock(time_scale=0)
        async with running(1, clock=clock, **options) as fleet:
            device = fleet.devices[0]
            await scenario(clock, device.model, device.port)

    asyncio.run(asyncio.wait_for(wrapper(), 15))


async def write(model: WhatsminerModel, port: int, command: str, **params: Any) -> Any:
    client = WhatsminerClient("127.0.0.1", port, model.password, read_timeout=2)
    return await client.write(command, params)


async def power(port: int) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(json.dumps({"cmd": "summary"}).encode())
    await writer.drain()
    body = await reader.read(1 << 20)
    writer.close()
    return float(json.loads(body)["SUMMARY"][0]["Power"])


async def sleep_and_wake(clock: SimClock, model: WhatsminerModel, port: int) -> None:
    await write(model, port, "power_off")
    await write(model, port, "pre_power_on")
    clock.advance(PREHEAT_S + 1)
    await write(model, port, "power_on")
    clock.advance(PREHEATED_START_S + 1)


@pytest.mark.parametrize(("mode", "back_at"), [("keep", 0.6), ("reset", 1.0)])
def test_power_on_keeps_or_resets_the_percent(mode: str, back_at: float) -> None:
    async def scenario(clock: SimClock, model: WhatsminerModel, port: int) -> None:
        full = await power(port)
        await write(model, port, "set_power_pct", percent=60)
        clock.advance(2)
        assert 0.55 * full < await power(port) < 0.65 * full
        await sleep_and_wake(clock, model, port)
        assert abs(await power(port) - back_at * full) < 0.06 * full

    powered(scenario, power_on_percent=mode)


def test_keep_is_the_default() -> None:
    assert WhatsminerModel().power_on_percent == "keep"


def test_unknown_power_on_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="power_on_percent"):
        WhatsminerModel(power_on_percent="maybe")


def test_preheat_completes_after_the_configured_delay() -> None:
    async def scenario(clock: SimClock, model: WhatsminerModel, port: int) -> None:
        await write(model, port, "power_off")
        assert (await write(model, port, "pre_power_on"))["complete"] is False
        clock.advance(29)
        assert (await write(model, port, "pre_power_on"))["msg"] == "adjust continue"
        clock.advance(2)
        assert await write(model, port, "pre_power_on") == {
            "complete": True,
            "msg": "adjust complete",
        }

    powered(scenario, preheat_s=30)


def test_preheat_that_never_completes_leaves_power_on_cold() -> None:
    async def scenario(clock: SimClock, model: WhatsminerModel, port: int) -> None:
        full = await power(port)
        await write(model, port, "power_off")
        await write(model, port, "pre_power_on")
        clock.advance(3600)
        reply = await write(model, port, "pre_power_on")
        assert reply == {"complete": False, "msg": "adjust continue"}
        await write(model, port, "power_on")
        clock.advance(PREHEATED_START_S + 1)
        assert await power(port) < 0.25 * full  # no preheat: the slow cold ramp

    powered(scenario, preheat_s=None)
