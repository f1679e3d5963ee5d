"""What site power control needs from the running agent, and nothing more.

The controller reads member readings and sends writes through a `PowerPort`; the agent binds
it to its workers and command path (`agent.runtime.power_port`), the unit tests to a plain
model of a few miners. Writes are intents (a percent, sleep, preheat, wake), so the controller
names no vendor command.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

Action = Literal["percent", "sleep", "preheat", "wake"]
Ramp = Literal["fast", "normal"]


@dataclass(frozen=True, slots=True)
class MemberReading:
    """A member's latest poll as the controller sees it."""

    id: str
    switch_only: bool  # on (nominal_w) or off, no percent (XMRig)
    nominal_w: float | None = None
    online: bool | None = None  # None: not polled yet
    power_w: float | None = None
    mining: bool | None = None  # None: the member did not say
    efficiency_j_th: float | None = None
    polled_at: float | None = None  # on the controller's clock (time.monotonic in the agent)


@dataclass(frozen=True, slots=True)
class Write:
    action: Action
    percent: int | None = None
    ramp: Ramp = "fast"


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    error: str | None = None
    complete: bool = False  # preheat: the member says it is ready for a quick wake


class PowerPort(Protocol):
    def readings(self, member_ids: Sequence[str]) -> dict[str, MemberReading]:
        """The configured members among `member_ids` (absent: no such device)."""
        ...

    def write(
        self, member_id: str, write: Write, transaction: str, done: Callable[[Outcome], None]
    ) -> None:
        """Send one write as a normal command with a normal result; `done` gets its outcome."""
        ...

    def refresh(self, member_id: str) -> None:
        """Poll the member soon, out of its interval (to see a write land)."""
        ...

    def publish_state(self, payload: bytes) -> None: ...
