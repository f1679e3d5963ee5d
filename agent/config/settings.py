"""The whole config file: TOML, then environment overrides, validated in one go.

Precedence (highest first): `EDGE_AGENT_…` environment variables, the TOML file, defaults.
Nested fields use `__` (`EDGE_AGENT_MQTT__URL`); a device's field is addressed by its id
(`EDGE_AGENT_DEVICE__RIG1__TOKEN`). Every problem is reported with its field path.
"""

from __future__ import annotations

import copy
import fnmatch
import os
import socket
import stat
import tomllib
from collections import Counter
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from agent.catalog.filters import pattern_problems
from agent.config.base import (
    SLUG,
    DeviceConfig,
    Duration,
    SecretFields,
    Section,
    Slug,
    Topic,
    error_path_and_message,
    share_repeated_values,
)
from agent.config.fleet import (
    Fleet,
    GroupSummary,
    build_fleet,
    kind_problem,
    unknown_commands,
)
from agent.devices.kind import DeviceKind, PowerCapability, power_kinds

Kinds = Mapping[str, DeviceKind]
# The kinds a Settings is validated against, while build_settings/load_config build it: pydantic
# gives a settings model's validators no other way in, and the config must not import them.
_KINDS: ContextVar[Kinds | None] = ContextVar("edge_agent_kinds", default=None)

DEFAULT_PATH = Path("/etc/edge-agent/config.toml")
ENV_PREFIX = "EDGE_AGENT_"


def default_agent_id() -> str:
    slug = "".join(c if c.isalnum() else "-" for c in socket.gethostname().lower()).strip("-")
    return slug or "edge-agent"


def _protocol_text(value: Any) -> Any:
    """`protocol = 5` (a TOML integer) means the same as `"5"`."""
    text = str(value).strip() if isinstance(value, int | str) else None  # True: 'True', refused
    if text in ("5", "3.1.1"):
        return text
    raise ValueError(f'{value!r} is not an MQTT version: use 5 (or "5") or "3.1.1"')


class AgentSection(Section):
    id: Slug = Field(default_factory=default_agent_id)
    state_refresh: Duration = 300.0
    offline_after: int = Field(default=3, ge=1)
    jitter: float = Field(default=0.1, ge=0, le=0.5)  # poll spread, as a fraction of interval
    # Polls start on a grid of this step (at most 5 % of each poll interval): polls due near one
    # grid point share one wake-up of the event loop. 0: every poll at its own time.
    poll_alignment: Duration = Field(default=0.1, ge=0, le=2.0)
    command_timeout: Duration = 30.0
    audit_topic: bool = False  # also publish each audit line on {base}/bridge/{id}/audit
    workers: int = Field(default=32, ge=1, le=1024)  # threads for blocking (HTTP) clients
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"
    # Where the energy counters persist; default: $STATE_DIRECTORY (systemd's StateDirectory=),
    # else $XDG_STATE_HOME/edge-agent (~/.local/state/edge-agent).
    state_directory: str | None = None


class MqttSection(SecretFields):
    secret_fields: ClassVar[tuple[str, ...]] = ("password",)

    url: str = "mqtt://127.0.0.1:1883"
    base_topic: Topic = "edge-agent"
    username: str | None = None
    password: SecretStr | None = None
    password_file: str | None = None
    client_id: str | None = None
    protocol: Annotated[Literal["5", "3.1.1"], BeforeValidator(_protocol_text)] = "5"
    keepalive: int = Field(default=30, ge=5, le=3600)
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    tls_insecure: bool = False  # skip certificate hostname checks: self-signed test brokers only
    reconnect_min: Duration = 1.0
    reconnect_max: Duration = 60.0
    max_queued: int = Field(default=1000, ge=10)  # non-retained messages kept while offline

    def credential_prefix(self) -> str:
        return "mqtt"

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            raise ValueError("must start with mqtt:// or mqtts://")
        if not parts.hostname:
            raise ValueError("has no host")
        try:
            port = parts.port  # urlsplit checks the port only when asked for it
        except ValueError:
            port = -1
        if port is not None and not 1 <= port <= 65535:
            raise ValueError("has an invalid port (a number from 1 to 65535)")
        if parts.username or parts.password:
            raise ValueError("put credentials in username/password, not in the URL")
        return url

    # Field validators that look back at earlier fields (info.data) rather than one model
    # validator: they run, and are reported, even when some other mqtt field is wrong.
    @field_validator("ca_file", "cert_file", "key_file")
    @classmethod
    def _tls_file_exists(cls, path: str | None) -> str | None:
        if path and not Path(path).is_file():
            raise ValueError(f"{path} does not exist")
        return path

    @field_validator("key_file")
    @classmethod
    def _key_with_cert(cls, key_file: str | None, info: ValidationInfo) -> str | None:
        if "cert_file" in info.data and bool(info.data["cert_file"]) != bool(key_file):
            raise ValueError("cert_file and key_file go together: set both or neither")
        return key_file

    @field_validator("reconnect_max")
    @classmethod
    def _max_above_min(cls, longest: float, info: ValidationInfo) -> float:
        shortest = info.data.get("reconnect_min")
        if shortest is not None and longest < shortest:
            raise ValueError(f"{longest:g}s is below reconnect_min ({shortest:g}s)")
        return longest

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme in ("mqtts", "ssl")

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or (8883 if self.tls else 1883)


class HomeAssistantSection(Section):
    enabled: bool = True
    discovery_prefix: Topic = "homeassistant"
    status_topic: Topic = "homeassistant/status"


class PowerSection(Section):
    """Site power control (design §9)."""

    enabled: bool = False
    members: list[str] = Field(default_factory=list)
    ramp: Literal["fast", "normal"] = "fast"
    # The vendor doc: too low a percent unbalances the miner and restarts btminer; the stable
    # floor depends on the machine and its cooling, so the default stays well clear of it.
    min_percent: int = Field(default=50, ge=1, le=100)
    hold: Duration = 30.0
    deadband_percent: float = Field(default=1.5, ge=0, le=20)
    on_mqtt_loss: Literal["hold", "release"] = "hold"
    # The vendor doc gives no preheat time and no promise that `complete` ever comes.
    preheat_max: Duration = 120.0


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    agent: AgentSection = Field(default_factory=AgentSection)
    mqtt: MqttSection = Field(default_factory=MqttSection)
    homeassistant: HomeAssistantSection = Field(default_factory=HomeAssistantSection)
    power: PowerSection = Field(default_factory=PowerSection)
    devices: list[DeviceConfig] = Field(default_factory=list)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return env_settings, init_settings

    @field_validator("devices", mode="before")
    @classmethod
    def _typed_devices(cls, devices: Any) -> Any:
        if not isinstance(devices, list):
            return devices
        models = [_device_model(i, entry) for i, entry in enumerate(devices)]
        share_repeated_values(m for m in models if isinstance(m, DeviceConfig))
        return models

    @model_validator(mode="after")
    def _check_fleet(self) -> Settings:
        """Ids, commands and power members across devices; every problem at once.

        load_config has checked ids and commands per entry already, with the file's labels.
        """
        problems = []
        seen: set[str] = set()
        for device in self.devices:
            if device.id in seen:
                problems.append(f"device id {device.id!r} is used twice")
            seen.add(device.id)
            problems.extend(
                f"device {device.id!r}: allow_commands: {name!r} is not a command of its kind"
                for name in unknown_commands(_kinds()[device.kind], device.allow_commands)
            )
            problems.extend(_publish_problems(device))
        members, member_problems = (
            _power_members(self.power.members, self.devices, power_kinds(_kinds().values()))
            if self.power.members
            else ([], [])
        )
        problems.extend(member_problems)
        if problems:
            raise ValueError("\n".join(problems))
        if members != self.power.members:
            self.power = self.power.model_copy(update={"members": members})
        return self

    def secret_values(self) -> list[str]:
        found = self.mqtt.secret_values()
        for device in self.devices:
            found.extend(device.secret_values())
        return found


def _publish_problems(device: DeviceConfig) -> list[str]:
    catalog = _kinds()[device.kind].catalog
    problems = []
    for option, patterns in device.publish.patterns().items():
        where = f"device {device.id!r}: publish.{option}"
        problems.extend(pattern_problems(catalog, patterns, where))
    return problems


def _device_model(index: int, entry: Any) -> Any:
    """Validate each device against its kind's model, so errors name that kind's fields."""
    if isinstance(entry, DeviceConfig) or not isinstance(entry, Mapping):
        return entry
    kinds = _kinds()
    problem = kind_problem(entry, kinds)
    if problem:
        raise ValueError(f"kind: {problem}")
    return kinds[entry["kind"]].config.model_validate(entry)


def _kinds() -> Kinds:
    kinds = _KINDS.get()
    if kinds is None:
        raise RuntimeError("Settings with devices are built by build_settings(kinds, ...)")
    return kinds


def build_settings(kinds: Kinds, **values: Any) -> Settings:
    """Settings validated against `kinds` (the composition root's registry)."""
    token = _KINDS.set(kinds)
    try:
        return Settings(**values)
    finally:
        _KINDS.reset(token)


def _power_members(
    members: list[str], devices: list[DeviceConfig], power: Mapping[str, PowerCapability]
) -> tuple[list[str], list[str]]:
    """Member ids, with patterns (`wm-10-0-1-*`) expanded to the miners they match."""
    by_id = {device.id: device for device in devices}
    chosen: list[str] = []
    problems: list[str] = []
    for member in members:
        if is_pattern(member):
            matched = [d for d in devices if fnmatch.fnmatchcase(d.id, member) and d.kind in power]
            if not matched:
                problems.append(
                    f"power.members: {member!r} matches no {' or '.join(sorted(power))}"
                )
        elif member not in by_id:
            problems.append(f"power.members: {member!r} is not a configured device")
            continue
        elif by_id[member].kind not in power:
            problems.append(f"power.members: {member!r} is not a miner")
            continue
        else:
            matched = [by_id[member]]
        for device in matched:
            switch_only = power[device.kind].switch_only
            if switch_only and getattr(device, "nominal_w", None) is None:
                problems.append(f"power.members: {device.kind} {device.id!r} needs nominal_w")
            elif device.id not in chosen:
                chosen.append(device.id)
    return chosen, problems


def is_pattern(member: str) -> bool:
    return any(c in member for c in "*?[")


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    settings: Settings
    path: Path | None
    warnings: list[str]
    groups: list[GroupSummary] = field(default_factory=list)

    def summary_lines(self, where: str) -> list[str]:
        """check-config's report: the device count per kind, then what each group made."""
        s = self.settings
        kinds = Counter(device.kind for device in s.devices)
        devices = f"{len(s.devices)} device{'' if len(s.devices) == 1 else 's'}"
        if kinds:
            devices += f" ({', '.join(f'{n} {kind}' for kind, n in sorted(kinds.items()))})"
        disabled = sum(not device.enabled for device in s.devices)
        if disabled:
            devices += f", {disabled} disabled"
        lines = [f"{where}: ok — agent {s.agent.id}, {devices}, broker {s.mqtt.url}"]
        lines.extend(f"  {g.label}: {g.count} {g.kind}, {g.first} … {g.last}" for g in self.groups)
        return lines


class ConfigError(Exception):
    """Every problem found in a config, each line naming its file and field."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def load_config(
    path: Path | None, environ: Mapping[str, str] | None = None, *, kinds: Kinds
) -> LoadedConfig:
    """Read, expand, override and validate against `kinds`; raise ConfigError listing every
    problem found.

    `environ` feeds the per-device and per-kind overrides; section overrides
    (`EDGE_AGENT_MQTT__URL`) are read by pydantic-settings from the process environment.
    """
    environ = os.environ if environ is None else environ
    where = str(path) if path else "<defaults>"
    data = _read_toml(path) if path else {}
    holds_secrets = _file_holds_secrets(data, kinds)
    fleet = build_fleet(data, environ, kinds)
    problems = [f"{where}: {problem}" for problem in fleet.problems]
    _forget_broken_members(data, fleet)
    settings: Settings | None = None
    try:
        # With broken devices, still validate the rest so that every problem is listed at once.
        settings = build_settings(kinds, **data, devices=fleet.devices)
    except ValidationError as exc:
        problems.extend(f"{where}: {p}" for p in _section_problems(exc, data, fleet.devices, kinds))
    except SettingsError as exc:  # an EDGE_AGENT_… variable that is not valid JSON
        problems.append(f"environment: {exc}")
    if problems or settings is None:
        raise ConfigError(problems)
    warnings = _warnings(path, settings, holds_secrets)
    return LoadedConfig(settings, path, warnings, fleet.groups)


def _section_problems(
    exc: ValidationError, data: dict[str, Any], devices: list[DeviceConfig], kinds: Kinds
) -> list[str]:
    errors = exc.errors()
    found = [line for error in errors for line in _describe(error)]
    if not any(not error["loc"] for error in errors):  # the checks across devices did not run
        found.extend(_fleet_problems_behind(errors, data, devices, kinds))
    return found


def _fleet_problems_behind(
    errors: list[Any], data: dict[str, Any], devices: list[DeviceConfig], kinds: Kinds
) -> list[str]:
    """Settings' checks across devices (power members) run only once every section is valid:
    run them again with the wrong fields dropped, so that their problems come in this run too."""
    for _ in range(3):  # a default standing in for a dropped field can clash too: drop again
        data = _without_errors(data, errors)
        try:
            build_settings(kinds, **data, devices=devices)
        except ValidationError as again:
            errors = again.errors()
        except SettingsError:
            return []
        else:
            return []
        if any(not error["loc"] for error in errors):
            return [line for e in errors if not e["loc"] for line in _describe(e)]
    return []


def _without_errors(data: dict[str, Any], errors: list[Any]) -> dict[str, Any]:
    """The data with each wrong field dropped, so that its default stands in for it (or the
    whole section's defaults, when the field was not in the file or its default is refused)."""
    kept = copy.deepcopy(data)
    for error in errors:
        section, name = [*error["loc"], None][:2]
        table = kept.get(section)
        if isinstance(table, dict) and name in table:
            del table[name]
        else:
            kept.pop(section, None)
    return kept


def _forget_broken_members(data: dict[str, Any], fleet: Fleet) -> None:
    """A broken device is reported once, not again as an unknown power member."""
    power = data.get("power")
    if not (fleet.broken and isinstance(power, dict) and isinstance(power.get("members"), list)):
        return
    valid = [device.id for device in fleet.devices]
    power["members"] = [m for m in power["members"] if not _only_broken(m, valid, fleet.broken)]


def _only_broken(member: Any, valid: list[str], broken: set[str]) -> bool:
    if not isinstance(member, str) or not is_pattern(member):
        return member in broken
    return not fnmatch.filter(valid, member) and bool(fnmatch.filter(broken, member))


def _file_holds_secrets(data: Mapping[str, Any], kinds: Kinds) -> bool:
    """Whether the file itself spells out a secret (not a *_file path, not the environment)."""
    names = {*MqttSection.secret_fields}
    names.update(n for kind in kinds.values() for n in kind.config.secret_fields)
    defaults = data.get("defaults")
    tables = [data.get("mqtt"), *(defaults.values() if isinstance(defaults, dict) else ())]
    for section in ("devices", "groups"):
        listed = data.get(section)
        tables.extend(listed if isinstance(listed, list) else ())
    return any(isinstance(t, dict) and any(t.get(n) for n in names) for t in tables)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file"]) from None
    except PermissionError:
        raise ConfigError([f"{path}: permission denied"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None


def _describe(error: Any) -> list[str]:
    path, message = error_path_and_message(error)
    return [f"{path}: {line}" if path else line for line in message.splitlines()]


def _warnings(path: Path | None, settings: Settings, holds_secrets: bool) -> list[str]:
    found = []
    if path and holds_secrets and _readable_by_others(path):
        found.append(
            f"{path} holds secrets and is readable by other users: chmod 600 it (or 640 "
            "with the service's group), or move the secrets to *_file paths or credentials"
        )
    for device in settings.devices:
        warn = getattr(device, "warnings", None)
        if callable(warn):
            found.extend(f"devices ({device.id}): {w}" for w in warn())
    return found


def _readable_by_others(path: Path) -> bool:
    try:
        return bool(path.stat().st_mode & stat.S_IROTH)
    except OSError:
        return False


__all__ = ["SLUG", "ConfigError", "LoadedConfig", "Settings", "build_settings", "load_config"]
