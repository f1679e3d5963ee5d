"""What every kind's simulator returns, and a thread to run simulators from synchronous code.

Each kind's module here (`edge_agent_sim.<kind>`) offers
`async def start_fleet(count, host, port, **options)` returning a `SimFleet`: one listening
socket per simulated device (port 0 = free ports), all served from the calling event loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(slots=True)
class SimDevice:
    """One simulated device: where it listens and the model the tests may steer."""

    host: str
    port: int
    model: Any  # the kind's own state object (hashrate, pause flag, streams…)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@dataclass(slots=True)
class SimFleet:
    kind: str
    devices: list[SimDevice]
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def close(self) -> None:
        for close in reversed(self.closers):
            await close()
        self.closers.clear()


class LoopThread:
    """An event loop on its own thread, for tests and CLI code that are not async."""

    def __init__(self, name: str = "simulators") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[[], T], timeout: float = 30.0) -> T:
        """Run a plain function on the loop thread (to touch simulator state safely)."""

        async def wrapper() -> T:
            return fn()

        return self.run(wrapper(), timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        if not self.loop.is_running():
            self.loop.close()
