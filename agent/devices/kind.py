"""What a device kind declares for the rest of the agent: its config model, driver, catalog,
command-line subcommands, simulator and power capability.

A ground-floor module: it knows the catalog vocabulary, the config building blocks and the
driver interface, never a kind. The registry of kinds (`agent.kinds`) is built from these.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from agent.catalog.model import Catalog
from agent.config.base import DeviceConfig
from agent.devices import coerce
from agent.devices.base import Driver

State = Mapping[str, Any]
Command = tuple[str, dict[str, Any]]  # a catalog command name and its params


def driver_imported_when_used(module: str, name: str) -> Callable[[Any], Driver[Any]]:
    """A `DeviceKind.driver` that imports its module with the kind's first device, so a heavy
    client library (the pool's and SRS's `requests` and urllib3, ~6 MB) stays out of an agent
    whose fleet has none of that kind."""

    def build(config: Any) -> Driver[Any]:
        driver: Callable[[Any], Driver[Any]] = getattr(importlib.import_module(module), name)
        return driver(config)

    return build


def _number(state: State, key: str) -> float | None:
    value = coerce.number(state.get(key))
    return None if value is None else float(value)


def _watts(state: State) -> float | None:
    return _number(state, "power_w")


def _mining(state: State) -> bool | None:
    return coerce.flag(state.get("mining"))


def _efficiency(state: State) -> float | None:
    return _number(state, "efficiency_j_th")


def _never_complete(_data: Any) -> bool:
    return False


@dataclass(frozen=True, slots=True)
class PowerCapability:
    """How site power control drives a kind, in the kind's own commands.

    `percent(value, ramp)` gives the command that sets a power limit (`ramp` is "fast" or
    "normal"); a kind without one is switch-only: on at its configured nominal_w, or off.
    """

    sleep: str
    wake: str
    percent: Callable[[int, str], Command] | None = None
    preheat: str | None = None  # a quick-wake warm-up, where the kind has one
    preheat_complete: Callable[[Any], bool] = _never_complete  # from the preheat's result data
    watts: Callable[[State], float | None] = _watts
    mining: Callable[[State], bool | None] = _mining
    efficiency: Callable[[State], float | None] = _efficiency

    @property
    def switch_only(self) -> bool:
        return self.percent is None

    def command(self, action: str, percent: int | None = None, ramp: str = "fast") -> Command:
        """The command carrying one power intent: percent, sleep, preheat or wake."""
        if action == "percent" and self.percent is not None and percent is not None:
            return self.percent(percent, ramp)
        name = {"sleep": self.sleep, "wake": self.wake, "preheat": self.preheat}.get(action)
        if name is None:
            raise ValueError(f"this kind has no {action!r} power command")
        return name, {}


@dataclass(frozen=True, slots=True)
class CliContext:
    """What the composition root lends a kind's subcommands: how to load the config
    (`-c/--config` in the parsed arguments) and how to send logs to stderr with secrets masked."""

    load: Callable[[Any], Any]
    log_to_stderr: Callable[[Any], None]


AddCommands = Callable[[Any, CliContext], None]  # (argparse subparsers, context)


@dataclass(frozen=True, slots=True)
class DeviceKind:
    name: str
    config: type[DeviceConfig]
    catalog: Catalog
    driver: Callable[[Any], Driver[Any]]
    power: PowerCapability | None = None  # None: not a site power member
    commands: AddCommands | None = None  # `edge-agent <kind> …` subcommands
    simulator: str | None = None  # module name, imported only by the simulation tools
    demo_count: int = 0  # how many `edge-agent demo` serves by default
    # Where the device's API listens out of the box: [[groups]] of URLs without a port use it,
    # and `simulate --spread` puts each simulated device there (None: no such port).
    usual_port: int | None = None


def registry(*kinds: DeviceKind) -> dict[str, DeviceKind]:
    """Kinds by name; a name given twice is a programming error caught at import."""
    by_name: dict[str, DeviceKind] = {}
    for kind in kinds:
        if kind.name in by_name:
            raise ValueError(f"device kind {kind.name!r} is registered twice")
        by_name[kind.name] = kind
    return by_name


def power_kinds(kinds: Iterable[DeviceKind]) -> dict[str, PowerCapability]:
    return {kind.name: kind.power for kind in kinds if kind.power is not None}
