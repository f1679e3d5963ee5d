"""One device's life in the agent: its poll schedule, its availability and its commands.

Each device runs as its own asyncio task, so a slow, hung or dead device delays nobody else.
A per-device lock serialises polls and commands: a command waits at most for that device's
own in-flight request.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from agent.catalog.filters import FilterRules, PublishFilter
from agent.config.base import DeviceConfig
from agent.devices.base import Driver, PollResult
from agent.devices.kind import DeviceKind
from agent.errors import AgentError, DeviceTimeoutError, ErrorCode
from agent.logs import get_logger
from agent.runtime.energy import EnergyBook

log = get_logger("device")
FIRST_POLL_SPREAD_MAX_S = 30.0  # a large fleet's first polls are spread over at most this
# The poll grid is at most this share of a device's poll interval, so that rounding a due time to
# the grid moves it by at most 2.5 % of the interval (a 1 s poll keeps a 50 ms grid).
GRID_SHARE_MAX = 0.05


def poll_grid(alignment: float, interval: float) -> float:
    """The grid step for a device polled every `interval` under `agent.poll_alignment`."""
    return min(alignment, interval * GRID_SHARE_MAX)


def on_grid(due: float, grid: float) -> float:
    """The grid point nearest `due`. Every device due near one grid point wakes in the same
    turn of the event loop, which shares that wake-up's cost (the system calls, the loop's
    pass over its timers) among them instead of paying it once per poll. The nearest point,
    not the next one, so that the mean poll interval stays the configured one."""
    return round(due / grid) * grid if grid else due


class Outlet(Protocol):
    """Where a worker's readings go (agent.runtime.publisher.Publisher in the agent)."""

    def publish_state(
        self, device: DeviceWorker, state: dict[str, Any], *, force: bool = False
    ) -> None: ...
    def publish_availability(self, device: DeviceWorker, online: bool) -> None: ...
    def announce(self, device: DeviceWorker) -> None: ...
    def publish_raw(self, device: DeviceWorker, raw: dict[str, Any]) -> None: ...
    def publish_events(self, device: DeviceWorker, events: list[dict[str, Any]]) -> None: ...


@dataclass(slots=True)
class PollStats:
    ok: int = 0
    failed: int = 0
    consecutive_failures: int = 0
    last_error: str | None = None
    last_success: float | None = None  # wall clock
    last_duration_ms: float | None = None
    missed_cycles: int = 0


class DeviceWorker:
    def __init__(
        self,
        config: DeviceConfig,
        kind: DeviceKind,
        publisher: Outlet,
        *,
        offline_after: int,
        state_refresh: float,
        jitter: float,
        alignment: float = 0.0,
        driver_factory: Callable[[DeviceConfig], Driver[Any]] | None = None,
        energy: EnergyBook | None = None,
    ) -> None:
        self.config = config
        self.kind = kind
        self.publisher = publisher
        self.offline_after = config.offline_after or offline_after
        self.state_refresh = config.state_refresh or state_refresh
        self.jitter = jitter
        self.grid = poll_grid(alignment, config.poll_interval)
        self.driver: Driver[Any] = (driver_factory or kind.driver)(config)
        self.energy = energy  # set for kinds whose state carries an energy counter
        self.lock = asyncio.Lock()
        self.stats = PollStats()
        self.state: dict[str, Any] | None = None
        self.available: bool | None = None
        rules = FilterRules.build(
            kind.catalog.publish, config.publish.model_dump(), self.state_refresh
        )
        self.publish_filter = PublishFilter(rules, time.monotonic)  # applied by the publisher
        self._publish_next = False  # a command's follow-up poll: its state goes out at once
        self._wake_requested = False
        self._waiter: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def tried(self) -> bool:
        """Polled at least once, answered or not: its connections and discovery exist."""
        return bool(self.stats.ok or self.stats.failed)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"device:{self.id}")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        try:
            await asyncio.wait_for(self.driver.close(), 5)
        except (TimeoutError, Exception) as exc:  # closing must not stop the shutdown
            log.debug("driver close failed", device=self.id, error=str(exc))

    def poll_soon(self) -> None:
        self._publish_next = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        else:
            self._wake_requested = True

    async def _run(self) -> None:
        interval = self.config.poll_interval
        # Spread the first polls of a large fleet over one interval (at most 30 s) instead of a
        # thundering herd that would time out at start.
        spread = min(interval, FIRST_POLL_SPREAD_MAX_S) if self.jitter else 0.0
        next_due = time.monotonic() + random.uniform(0, spread)
        while True:
            await self._sleep_until(on_grid(next_due, self.grid))
            started = time.monotonic()
            try:
                await self.poll()
            except Exception:  # a publishing bug must not silently end this device's polling
                log.exception("poll cycle failed", device=self.id)
            spread = interval * self.jitter
            next_due = started + interval + random.uniform(-spread, spread)
            if time.monotonic() > next_due:
                self.stats.missed_cycles += 1
                next_due = time.monotonic()

    async def _sleep_until(self, due: float) -> None:
        """Sleep until `due` or until poll_soon(); a plain timer, since thousands of devices
        each creating a wait_for task per cycle is measurable CPU. The timer is set at `due`
        itself (call_at, not call_later), so that devices given one grid point share it."""
        loop = asyncio.get_running_loop()
        if self._wake_requested or due <= loop.time():
            self._wake_requested = False
            return
        self._waiter = waiter = loop.create_future()
        timer = loop.call_at(due, _wake, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    async def poll(self) -> dict[str, Any] | None:
        """One poll now; returns the new state, or None when the device could not be read."""
        started = time.monotonic()
        async with self.lock:
            try:
                async with asyncio.timeout(self._deadline()):
                    result = await self.driver.poll()
            except Exception as exc:  # every failure counts; the loop must go on
                self._poll_failed(_as_agent_error(exc, self._deadline()))
                return None
            finally:
                self._record_duration(started)
        self._poll_succeeded(result)
        return result.state

    def _deadline(self) -> float:
        # Drivers enforce their own per-request timeouts; this bounds a whole poll of several.
        return self.config.timeout * 4 + 1

    def _record_duration(self, started: float) -> None:
        elapsed = (time.monotonic() - started) * 1000
        self.stats.last_duration_ms = elapsed

    def _poll_failed(self, error: AgentError) -> None:
        self.stats.failed += 1
        self.stats.consecutive_failures += 1
        first = self.stats.last_error != error.message
        self.stats.last_error = error.message
        (log.warning if first else log.debug)(
            "poll failed",
            device=self.id,
            error=error.message,
            code=error.code,
            consecutive=self.stats.consecutive_failures,
        )
        if self.stats.failed == 1 and not self.stats.ok:
            self.publisher.announce(self)  # a successful poll would have announced it
        if self.stats.consecutive_failures >= self.offline_after and self.available is not False:
            self.available = False
            log.warning("device offline", device=self.id, after=self.stats.consecutive_failures)
            self.publisher.publish_availability(self, False)

    def _poll_succeeded(self, result: PollResult) -> None:
        self.stats.ok += 1
        self.stats.consecutive_failures = 0
        self.stats.last_error = None
        self.stats.last_success = time.time()
        if self.energy is not None:
            self.energy.record(self.id, self.config.poll_interval, result.state)
        self.state = result.state
        if self.available is not True:
            if self.available is False:
                log.info("device online", device=self.id)
            self.available = True
            self.publisher.publish_availability(self, True)
        forced, self._publish_next = self._publish_next, False
        self.publisher.publish_state(self, result.state, force=forced)
        if result.raw and self.config.publish_raw:
            self.publisher.publish_raw(self, result.raw)
        if result.events:
            self.publisher.publish_events(self, result.events)

    async def execute(self, command: str, params: dict[str, Any], timeout: float) -> Any:
        async with self.lock:
            try:
                return await asyncio.wait_for(self.driver.execute(command, params), timeout)
            except TimeoutError:
                raise DeviceTimeoutError(
                    f"{command}: no answer from the device within {timeout:g}s"
                ) from None


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _as_agent_error(exc: BaseException, deadline: float) -> AgentError:
    if isinstance(exc, AgentError):
        return exc
    if isinstance(exc, TimeoutError):
        return DeviceTimeoutError(f"no answer within {deadline:g}s")
    log.exception("driver raised an unexpected error", error=repr(exc))
    return AgentError(
        f"internal error while polling: {type(exc).__name__}", code=ErrorCode.INTERNAL
    )
