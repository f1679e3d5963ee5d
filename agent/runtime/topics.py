"""Every MQTT topic of design §2, in one place."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Topics:
    base: str
    agent_id: str

    @property
    def bridge(self) -> str:
        return f"{self.base}/bridge/{self.agent_id}"

    @property
    def bridge_state(self) -> str:
        return f"{self.bridge}/state"

    @property
    def bridge_info(self) -> str:
        return f"{self.bridge}/info"

    @property
    def audit(self) -> str:
        return f"{self.bridge}/audit"

    @property
    def power(self) -> str:
        return f"{self.bridge}/power"

    @property
    def power_set(self) -> str:
        return f"{self.bridge}/power/set"

    def request(self, action: str) -> str:
        return f"{self.bridge}/request/{action}"

    def response(self, action: str) -> str:
        return f"{self.bridge}/response/{action}"

    def state(self, device: str) -> str:
        return f"{self.base}/{device}"

    def availability(self, device: str) -> str:
        return f"{self.base}/{device}/availability"

    def result(self, device: str) -> str:
        return f"{self.base}/{device}/result"

    def event(self, device: str) -> str:
        return f"{self.base}/{device}/event"

    def raw(self, device: str, endpoint: str) -> str:
        return f"{self.base}/{device}/raw/{endpoint}"

    def subscriptions(self, ha_status: str) -> list[str]:
        return [
            f"{self.base}/+/get",
            f"{self.base}/+/set",
            f"{self.base}/+/set/+",
            f"{self.bridge}/request/+",
            f"{self.bridge}/power/set",
            f"{self.bridge}/power/set/+",
            ha_status,
        ]

    def parse(self, topic: str) -> tuple[str, ...] | None:
        """`base/x/y…` → ('x', 'y', …); None for topics outside the base."""
        prefix = self.base + "/"
        if not topic.startswith(prefix):
            return None
        return tuple(topic[len(prefix) :].split("/"))
