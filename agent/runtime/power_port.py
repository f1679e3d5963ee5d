"""The site power port bound to the running agent: workers' readings in, commands and the
retained power state out (agent.power.port describes the interface)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from agent.devices.kind import PowerCapability
from agent.power.port import MemberReading, Outcome, Write

if TYPE_CHECKING:
    from agent.runtime.worker import DeviceWorker

Execute = Callable[..., Any]  # CommandRouter.execute_internal


class AgentPowerPort:
    def __init__(
        self,
        workers: Mapping[str, DeviceWorker],
        execute: Execute,
        spawn: Callable[[Any], asyncio.Task[Any]],
        publish: Callable[[bytes], None],
    ) -> None:
        self.workers = workers
        self.execute = execute
        self.spawn = spawn
        self.publish = publish
        self._polled: dict[str, tuple[float, float]] = {}  # wall clock → monotonic, per member

    def readings(self, member_ids: Sequence[str]) -> dict[str, MemberReading]:
        return {
            member_id: _reading(member_id, worker, self._monotonic(member_id, worker))
            for member_id in member_ids
            if (worker := self.workers.get(member_id)) is not None
        }

    def _monotonic(self, member_id: str, worker: DeviceWorker) -> float | None:
        """The poll's time on the controller's clock, the same value for the same poll."""
        last = worker.stats.last_success
        if last is None:
            return None
        seen = self._polled.get(member_id)
        if seen is None or seen[0] != last:
            seen = self._polled[member_id] = (last, time.monotonic() - (time.time() - last))
        return seen[1]

    def write(
        self, member_id: str, write: Write, transaction: str, done: Callable[[Outcome], None]
    ) -> None:
        worker = self.workers.get(member_id)
        if worker is None:
            done(Outcome(False, f"{member_id} is no longer configured"))
            return
        power = worker.kind.power
        if power is None:
            done(Outcome(False, f"{member_id} is not a power member"))
            return
        command, params = power.command(write.action, write.percent, write.ramp)
        task = self.spawn(self.execute(worker, command, params, transaction=transaction))
        task.add_done_callback(lambda finished: done(_outcome(finished, power)))

    def refresh(self, member_id: str) -> None:
        worker = self.workers.get(member_id)
        if worker is not None:
            worker.poll_soon()

    def publish_state(self, payload: bytes) -> None:
        self.publish(payload)


def _reading(member_id: str, worker: DeviceWorker, polled_at: float | None) -> MemberReading:
    state = worker.state or {}
    online = None if worker.available is None else bool(worker.available) and bool(state)
    power = worker.kind.power
    return MemberReading(
        id=member_id,
        switch_only=power is None or power.switch_only,
        nominal_w=getattr(worker.config, "nominal_w", None),
        online=online,
        power_w=power.watts(state) if power else None,
        mining=power.mining(state) if power else None,
        efficiency_j_th=power.efficiency(state) if power else None,
        polled_at=polled_at,
    )


def _outcome(task: asyncio.Task[Any], power: PowerCapability) -> Outcome:
    if task.cancelled():
        return Outcome(False, "cancelled")
    if task.exception() is not None:
        return Outcome(False, f"internal error: {type(task.exception()).__name__}")
    result = task.result()
    if not result["ok"]:
        return Outcome(False, str((result.get("error") or {}).get("message")))
    return Outcome(True, complete=power.preheat_complete(result.get("data")))
