"""The contract between the runtime and a device kind.

A driver owns one device's protocol client. `poll()` reads the device and returns its
normalised state (the schema its catalog documents); `execute()` runs one already validated
command and returns the data for the result. Drivers know nothing of MQTT: the runtime
publishes what they return and turns what they raise (agent.errors) into results.
"""

from __future__ import annotations

import asyncio
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from agent.catalog.model import Catalog
from agent.config.base import DeviceConfig

ConfigT = TypeVar("ConfigT", bound=DeviceConfig)


@dataclass(slots=True)
class PollResult:
    state: dict[str, Any]
    raw: dict[str, Any] = field(default_factory=dict)  # endpoint name → body as received
    events: list[dict[str, Any]] = field(default_factory=list)  # published on {device}/event


class Driver(ABC, Generic[ConfigT]):
    catalog: ClassVar[Catalog]

    def __init__(self, config: ConfigT) -> None:
        self.config = config

    @abstractmethod
    async def poll(self) -> PollResult: ...

    @abstractmethod
    async def execute(self, command: str, params: dict[str, Any]) -> Any: ...

    async def close(self) -> None:
        """Release sockets and sessions."""


class BlockingDriver(Driver[ConfigT]):
    """A driver over a blocking client (requests): its calls run on the agent's worker threads.

    The runtime serialises calls per device, but when it gives up waiting on one (a timeout)
    the thread still runs; the lock here keeps the next call from using the same HTTP session
    until that thread is done.
    """

    def __init__(self, config: ConfigT) -> None:
        super().__init__(config)
        self._io = threading.Lock()

    async def poll(self) -> PollResult:
        result: PollResult = await _in_thread(self._serialised(self.poll_blocking))
        return result

    async def execute(self, command: str, params: dict[str, Any]) -> Any:
        return await _in_thread(self._serialised(lambda: self.execute_blocking(command, params)))

    async def close(self) -> None:
        await _in_thread(self.close_blocking)

    def _serialised(self, call: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            with self._io:
                return call()

        return run

    @abstractmethod
    def poll_blocking(self) -> PollResult: ...

    @abstractmethod
    def execute_blocking(self, command: str, params: dict[str, Any]) -> Any: ...

    def close_blocking(self) -> None:
        """Release the HTTP session."""


async def _in_thread(call: Callable[[], Any]) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, call)
