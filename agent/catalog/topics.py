"""Every MQTT topic of design §2 and §3, in one place: no other module forms a topic string.

It sits on the ground floor (next to the catalog vocabulary) so that discovery payloads, the
running agent, the sweeper and the bridge client all build topics the same way.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Topics:
    base: str
    agent_id: str

    # the bridge (design §2) ------------------------------------------------------------

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
    def energy(self) -> str:
        return f"{self.bridge}/energy"

    @property
    def power(self) -> str:
        return f"{self.bridge}/power"

    @property
    def power_set(self) -> str:
        return f"{self.bridge}/power/set"

    @property
    def power_result(self) -> str:
        return f"{self.bridge}/power/result"

    def power_setting(self, field: str) -> str:
        return f"{self.power_set}/{field}"

    def request(self, action: str) -> str:
        return f"{self.bridge}/request/{action}"

    def response(self, action: str) -> str:
        return f"{self.bridge}/response/{action}"

    def cli_reply(self, session: str) -> str:
        return f"{self.bridge}/cli/{session}"

    # a device (design §2) --------------------------------------------------------------

    def state(self, device: str) -> str:
        return f"{self.base}/{device}"

    def availability(self, device: str) -> str:
        return f"{self.base}/{device}/availability"

    def set(self, device: str, command: str | None = None) -> str:
        plain = f"{self.base}/{device}/set"
        return plain if command is None else f"{plain}/{command}"

    def result(self, device: str) -> str:
        return f"{self.base}/{device}/result"

    def event(self, device: str) -> str:
        return f"{self.base}/{device}/event"

    def raw(self, device: str, endpoint: str) -> str:
        return f"{self.base}/{device}/raw/{endpoint}"

    # what the agent listens to ---------------------------------------------------------

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


@dataclass(frozen=True, slots=True)
class DiscoveryTopics:
    """Home Assistant discovery config topics (design §3)."""

    prefix: str

    def config(self, platform: str, node: str, key: str) -> str:
        return f"{self.prefix}/{platform}/{node}/{key}/config"

    def device_configs(self, node: str) -> str:
        """The subscription that collects every config retained for one node."""
        return f"{self.prefix}/+/{node}/+/config"

    def parse_config(self, topic: str) -> str | None:
        """The node of `{prefix}/{platform}/{node}/{key}/config`; None for other topics."""
        parts = topic.split("/")
        if len(parts) == 5 and parts[0] == self.prefix and parts[4] == "config":
            return parts[2]
        return None
