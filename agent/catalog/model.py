"""The declarative vocabulary every device kind's catalog is written in.

A catalog says, as data, what a kind publishes (state fields with units), what Home Assistant
sees (entity descriptions, in the spirit of Home Assistant's own EntityDescription) and what it
accepts (commands with their parameter ranges). `agent.catalog.validate`, `.discovery` and
`.docs` turn catalogs into command validation, discovery payloads and README tables, so no kind
writes any of those by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

ParamType = Literal["int", "float", "str", "bool", "json"]
Platform = Literal["sensor", "binary_sensor", "switch", "button", "number", "select", "text"]
EntityCategory = Literal["diagnostic", "config"]
# routine: runs on any device. disruptive: stops or restarts something (reboot, stop).
# sensitive: changes where hashrate or earnings go, credentials, network, firmware or where
# logs go. Disruptive and sensitive commands run only where the device's allow_commands lists
# them.
Security = Literal["routine", "disruptive", "sensitive"]


@dataclass(frozen=True, slots=True)
class StateField:
    """One field of a kind's state JSON, for the README schema table.

    `path` is dotted; `[]` marks a list (`boards[].temperature_c`), `{}` a map keyed by name.
    """

    path: str
    type: str
    description: str
    unit: str | None = None


@dataclass(frozen=True, slots=True)
class Param:
    """One parameter of a command. Ranges are inclusive, as the device documents are."""

    name: str
    type: ParamType
    description: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None
    required: bool = True
    default: Any = None
    max_length: int | None = None
    pattern: str | None = None  # a full-match regular expression for str params
    secret: bool = False  # never echoed back in results or logs
    secret_keys: frozenset[str] = frozenset()  # keys masked anywhere inside a json param


@dataclass(frozen=True, slots=True)
class SensitiveFields:
    """A routine command that turns sensitive when its `param` (a JSON object, merged into the
    device's config) touches anything but the `routine` paths, or touches one of `exceptions`.

    Paths are dotted (`cpu`, `opencl.loader`). Default deny: a key the catalog does not know
    is sensitive, so a new firmware field cannot slip through as routine.
    """

    param: str
    routine: tuple[str, ...]
    exceptions: tuple[str, ...] = ()
    summary: str = ""  # for the README: what the sensitive fields are


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """A command accepted on `{device}/set` and `{device}/set/{name}`.

    `plain` names the parameter that a non-JSON payload on `set/{name}` fills (`ON`, `75`,
    `auto`); a command without params takes any plain payload as a press.
    """

    name: str
    description: str
    params: tuple[Param, ...] = ()
    plain: str | None = None
    security: Security = "routine"  # above routine: refused unless in allow_commands
    cli_only: bool = False  # binary flows (firmware upload): refused over MQTT
    sensitive_when: SensitiveFields | None = None  # per call: routine unless params say so
    why: str = ""  # why the class, for the README's Security section and refusals

    @property
    def gated(self) -> bool:
        """Refused everywhere its device's allow_commands does not list it."""
        return self.security != "routine"

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)


@dataclass(frozen=True, slots=True)
class EntityDescription:
    """One Home Assistant entity, declared as data.

    `value` is a dotted path into the device's state JSON. `scale` converts the state's unit to
    the entity's (H/s in state, TH/s in Home Assistant: scale=1e-12). Controls name the command
    their `command_topic` goes to; a number/select/switch takes its range or options from that
    command's `plain` parameter unless given here.
    """

    key: str
    platform: Platform
    name: str | None
    value: str | None = None
    unit: str | None = None
    device_class: str | None = None
    state_class: str | None = None
    entity_category: EntityCategory | None = None
    icon: str | None = None
    enabled_by_default: bool = True
    precision: int | None = None
    scale: float | None = None
    command: str | None = None
    options: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    mode: Literal["box", "slider", "auto"] | None = None
    attributes: str | None = None  # dotted path published as json attributes
    payload_press: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)  # any further discovery keys


DynamicEntities = Callable[[Mapping[str, Any]], Sequence[EntityDescription]]


@dataclass(frozen=True, slots=True)
class DeviceInfoPaths:
    """Where in the state the HA device block finds its model, firmware and serial."""

    model: str | None = None
    sw_version: str | None = None
    hw_version: str | None = None
    serial_number: str | None = None


@dataclass(frozen=True, slots=True)
class PublishDefaults:
    """How a kind's retained state is filtered before it goes out (agent.catalog.filters).

    Patterns are shell-style globs over dotted state paths, list items numbered
    (`boards.0.temperature_c`, `*hashrate_hs*`). `immediate` fields are never held back and no
    config can change that; `deadband` holds a numeric change smaller than its band (a number:
    absolute, `"5%"`: relative to the value last published); a change in a `quiet` field alone
    publishes nothing, it rides along on the next publish. Any other change publishes.
    """

    immediate: tuple[str, ...] = ()
    deadband: Mapping[str, float | str] = field(default_factory=dict)
    quiet: tuple[str, ...] = ()
    max_interval: float | None = None  # None: the agent's state_refresh


@dataclass(frozen=True, slots=True)
class Catalog:
    kind: str
    title: str  # "XMRig"
    manufacturer: str
    default_model: str
    fields: tuple[StateField, ...]
    entities: tuple[EntityDescription, ...]
    commands: tuple[CommandSpec, ...]
    dynamic_entities: DynamicEntities | None = None
    device_info: DeviceInfoPaths = field(default_factory=DeviceInfoPaths)
    publish: PublishDefaults = field(default_factory=PublishDefaults)

    def command(self, name: str) -> CommandSpec | None:
        return next((c for c in self.commands if c.name == name), None)

    def entities_for(self, state: Mapping[str, Any] | None) -> list[EntityDescription]:
        """Static entities plus the ones the current state calls for (boards, workers…)."""
        found = list(self.entities)
        if self.dynamic_entities is not None and state:
            found.extend(self.dynamic_entities(state))
        return found
