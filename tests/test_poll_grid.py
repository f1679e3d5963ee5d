"""Poll start times on a grid (agent.poll_alignment): devices due near one grid point are woken
by timers set at that same instant, which asyncio runs in one turn of its loop.

The workers here poll a counting driver: what is under test is the schedule, not a device."""

from __future__ import annotations

import asyncio
import math
from typing import Any

from agent.config.settings import AgentSection
from agent.devices.base import Driver, PollResult
from agent.kinds import KINDS
from agent.runtime.worker import GRID_SHARE_MAX, DeviceWorker, on_grid

XMRIG = KINDS["xmrig"]


class CountingDriver(Driver[Any]):
    def __init__(self, config: Any, polled: asyncio.Queue[str]) -> None:
        super().__init__(config)
        self.polled = polled

    async def poll(self) -> PollResult:
        self.polled.put_nowait(self.config.id)
        return PollResult(state={"hashrate_hs": {"10s": 1.0}})

    async def execute(self, command: str, params: dict[str, Any]) -> Any:
        raise AssertionError("no command is sent here")


class Outlet:
    def publish_state(self, device: Any, state: dict[str, Any], *, force: bool = False) -> None:
        pass

    def publish_availability(self, device: Any, online: bool) -> None:
        pass

    def announce(self, device: Any) -> None:
        pass

    def publish_raw(self, device: Any, raw: dict[str, Any]) -> None:
        pass

    def publish_events(self, device: Any, events: list[dict[str, Any]]) -> None:
        pass


def worker(
    index: int, polled: asyncio.Queue[str], *, interval: float, alignment: float
) -> DeviceWorker:
    config = XMRIG.config(
        kind="xmrig", id=f"rig-{index}", url="http://127.0.0.1:9", poll_interval=interval
    )
    return DeviceWorker(
        config,
        XMRIG,
        Outlet(),
        offline_after=3,
        state_refresh=300,
        jitter=0.5,
        alignment=alignment,
        driver_factory=lambda c: CountingDriver(c, polled),
    )


def is_grid_point(when: float, grid: float) -> bool:
    return math.isclose(when / grid, round(when / grid), abs_tol=1e-6)


def test_the_grid_is_the_alignment_but_at_most_a_twentieth_of_the_interval() -> None:
    polled: asyncio.Queue[str] = asyncio.Queue()
    assert worker(0, polled, interval=10, alignment=0.25).grid == 0.25
    assert worker(0, polled, interval=1, alignment=0.25).grid == 1 * GRID_SHARE_MAX
    assert worker(0, polled, interval=10, alignment=0).grid == 0
    assert AgentSection().poll_alignment == 0.1


def test_a_due_time_goes_to_the_nearest_grid_point_so_the_mean_interval_stays() -> None:
    rig = worker(0, asyncio.Queue(), interval=10, alignment=0.25)
    assert on_grid(100.1, rig.grid) == 100.0
    assert on_grid(100.2, rig.grid) == 100.25
    assert on_grid(100.125 + 1e-9, rig.grid) == 100.25
    unaligned = worker(0, asyncio.Queue(), interval=10, alignment=0)
    assert on_grid(100.1, unaligned.grid) == 100.1


async def wake_times(alignment: float, count: int, polls_each: int) -> list[float]:
    """The instants the workers' sleep timers were set for, over `polls_each` polls of each."""
    loop = asyncio.get_running_loop()
    whens: list[float] = []
    call_at = loop.call_at

    def recording_call_at(when: float, callback: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(callback, "__name__", "") == "_wake":
            whens.append(when)
        return call_at(when, callback, *args, **kwargs)

    loop.call_at = recording_call_at  # type: ignore[method-assign]
    polled: asyncio.Queue[str] = asyncio.Queue()
    workers = [worker(i, polled, interval=1.0, alignment=alignment) for i in range(count)]
    try:
        for rig in workers:
            rig.start()
        for _ in range(count * polls_each):
            await asyncio.wait_for(polled.get(), 10)
    finally:
        for rig in workers:
            await rig.stop()
        del loop.call_at
    return whens


def test_devices_due_near_one_grid_point_share_its_timer_instant() -> None:
    whens = asyncio.run(wake_times(alignment=0.05, count=40, polls_each=2))
    assert len(whens) >= 40  # every first poll slept (spread over the first interval)
    assert all(is_grid_point(when, 0.05) for when in whens)
    # 40 devices over a 1 s interval of 20 grid points: they share wake-up instants
    points_spanned = round((max(whens) - min(whens)) / 0.05) + 1
    assert len(set(whens)) <= points_spanned < len(whens)


def test_without_alignment_every_device_sleeps_to_its_own_instant() -> None:
    whens = asyncio.run(wake_times(alignment=0, count=40, polls_each=2))
    assert len(set(whens)) == len(whens)
