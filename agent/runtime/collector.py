"""The cyclic garbage collector in a long-running agent with thousands of devices.

A full collection walks every tracked object with the event loop stopped. At 2,500 devices
(their configs, drivers, connections, filters, states and tasks, besides every imported
module) one takes a few hundred milliseconds, and it comes back every few seconds of
allocation, so a command that arrives meanwhile waits behind it: that was the long tail of
the command latency. What the agent builds at start lives until the next reload, so once the
fleet has settled (every device polled once, discovery sent) it is collected one last time and
frozen (`gc.freeze()`): later collections walk only what was allocated since. A reload gives
the frozen objects back to the collector first, so that the replaced workers' cycles are
freed, and the new fleet is frozen again once it has settled.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable

from agent.logs import get_logger
from agent.runtime.worker import FIRST_POLL_SPREAD_MAX_S

log = get_logger("agent")
# First polls are spread over up to 30 s; one more poll interval lets every device's first
# state, discovery and connections exist before the fleet is frozen.
MAX_SETTLE_S = 120.0
# What is left for full collections after the freeze is what churns (timers, futures, states
# that live one poll interval): about 25 objects a device. Python's default looks at it every
# 10 younger collections, a ~90 ms pause every ~25 s at 2,500 devices; every 100th bounds that
# to one every few minutes, while young garbage is still collected as often as before.
FULL_COLLECTION_EVERY = 100


class HeapSettler:
    def __init__(self) -> None:
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        self.freezes = 0

    @staticmethod
    def settle_delay(poll_intervals: list[float]) -> float:
        longest = max(poll_intervals, default=10.0)
        return min(min(longest, FIRST_POLL_SPREAD_MAX_S) + longest, MAX_SETTLE_S)

    def settle_after(self, delay: float, settled: Callable[[], bool] = lambda: True) -> None:
        """Freeze what exists `delay` seconds from now (again, after a reload), or later, every
        `delay`, until `settled()` says the fleet is up; at most MAX_SETTLE_S past the first."""
        self.cancel()
        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + delay + MAX_SETTLE_S
        self._timer = loop.call_later(delay, self._check, delay, settled)

    def _check(self, delay: float, settled: Callable[[], bool]) -> None:
        loop = asyncio.get_running_loop()
        if settled() or loop.time() + delay > self._deadline:
            self.freeze()
        else:
            self._timer = loop.call_later(delay, self._check, delay, settled)

    def freeze(self) -> None:
        self._timer = None
        started = time.perf_counter()
        gc.collect()
        gc.freeze()
        young, middle, _ = gc.get_threshold()
        gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)
        self.freezes += 1
        log.debug(
            "heap settled",
            frozen_objects=gc.get_freeze_count(),
            collect_ms=round(1000 * (time.perf_counter() - started), 1),
        )

    def thaw(self) -> None:
        """Before a reload: what it replaces must be collectable again."""
        self.cancel()
        gc.unfreeze()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
