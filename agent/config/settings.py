"""The whole config file: TOML, then environment overrides, validated in one go.

Precedence (highest first): `EDGE_AGENT_…` environment variables, the TOML file, defaults.
Nested fields use `__` (`EDGE_AGENT_MQTT__URL`); a device's field is addressed by its id
(`EDGE_AGENT_DEVICE__RIG1__TOKEN`). Every problem is reported with its field path.
"""

from __future__ import annotations

import os
import socket
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from agent.config.base import SLUG, DeviceConfig, Duration, SecretFields, Section, Slug
from agent.devices import KINDS

DEFAULT_PATH = Path("/etc/edge-agent/config.toml")
ENV_PREFIX = "EDGE_AGENT_"
DEVICE_ENV_PREFIX = f"{ENV_PREFIX}DEVICE__"


def default_agent_id() -> str:
    slug = "".join(c if c.isalnum() else "-" for c in socket.gethostname().lower()).strip("-")
    return slug or "edge-agent"


class AgentSection(Section):
    id: Slug = Field(default_factory=default_agent_id)
    state_refresh: Duration = 300.0
    offline_after: int = Field(default=3, ge=1)
    jitter: float = Field(default=0.1, ge=0, le=0.5)  # poll spread, as a fraction of interval
    command_timeout: Duration = 30.0
    workers: int = Field(default=32, ge=1, le=1024)  # threads for blocking (HTTP) clients
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"
    # Where the energy counters persist; default: $STATE_DIRECTORY (systemd's StateDirectory=),
    # else $XDG_STATE_HOME/edge-agent (~/.local/state/edge-agent).
    state_directory: str | None = None


class MqttSection(SecretFields):
    secret_fields: ClassVar[tuple[str, ...]] = ("password",)

    url: str = "mqtt://127.0.0.1:1883"
    base_topic: str = Field(default="edge-agent", pattern=r"^[^#+\s]+$")
    username: str | None = None
    password: SecretStr | None = None
    password_file: str | None = None
    client_id: str | None = None
    protocol: Literal["5", "3.1.1"] = "5"
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

    @model_validator(mode="after")
    def _check_tls_files(self) -> MqttSection:
        for name in ("ca_file", "cert_file", "key_file"):
            path = getattr(self, name)
            if path and not Path(path).is_file():
                raise ValueError(f"{name} {path} does not exist")
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("cert_file and key_file go together")
        return self

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
    discovery_prefix: str = Field(default="homeassistant", pattern=r"^[^#+\s]+$")
    status_topic: str = "homeassistant/status"


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
        return [_device_model(i, entry) for i, entry in enumerate(devices)]

    @model_validator(mode="after")
    def _check_fleet(self) -> Settings:
        seen: set[str] = set()
        for device in self.devices:
            if device.id in seen:
                raise ValueError(f"device id {device.id!r} is used twice")
            seen.add(device.id)
            _check_allow_commands(device)
        ids = {d.id: d for d in self.devices}
        for member in self.power.members:
            if member not in ids:
                raise ValueError(f"power.members: {member!r} is not a configured device")
            if ids[member].kind not in ("whatsminer", "xmrig"):
                raise ValueError(f"power.members: {member!r} is not a miner")
            if ids[member].kind == "xmrig" and getattr(ids[member], "nominal_w", None) is None:
                raise ValueError(f"power.members: xmrig {member!r} needs nominal_w")
        return self

    def secret_values(self) -> list[str]:
        found = self.mqtt.secret_values()
        for device in self.devices:
            found.extend(device.secret_values())
        return found


def _device_model(index: int, entry: Any) -> Any:
    """Validate each device against its kind's model, so errors name that kind's fields."""
    if isinstance(entry, DeviceConfig) or not isinstance(entry, Mapping):
        return entry
    problem = _kind_problem(entry)
    if problem:
        raise ValueError(f"kind: {problem}")
    return KINDS[entry["kind"]].config.model_validate(entry)


def _kind_problem(entry: Mapping[str, Any]) -> str | None:
    kind = entry.get("kind")
    if isinstance(kind, str) and kind in KINDS:
        return None
    known = ", ".join(sorted(KINDS))
    return f"missing; use one of {known}" if kind is None else f"{kind!r} is not one of {known}"


def _check_allow_commands(device: DeviceConfig) -> None:
    problems = _allow_command_problems(device)
    if problems:
        raise ValueError(f"device {device.id!r}: {problems[0]}")


def _allow_command_problems(device: DeviceConfig) -> list[str]:
    catalog = KINDS[device.kind].catalog
    return [
        f"allow_commands: {name!r} is not a command {catalog.title} has"
        for name in device.allow_commands
        if catalog.command(name) is None
    ]


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    settings: Settings
    path: Path | None
    warnings: list[str]


class ConfigError(Exception):
    """Every problem found in a config, each line naming its file and field."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def load_config(path: Path | None, environ: Mapping[str, str] | None = None) -> LoadedConfig:
    """Read, override and validate; raise ConfigError listing every problem found.

    `environ` feeds the per-device overrides; section overrides (`EDGE_AGENT_MQTT__URL`) are
    read by pydantic-settings from the process environment.
    """
    environ = os.environ if environ is None else environ
    where = str(path) if path else "<defaults>"
    data = _read_toml(path) if path else {}
    holds_secrets = _file_holds_secrets(data)
    problems = _apply_device_env(data, environ, where)
    raw_devices = data.pop("devices", [])
    devices, broken, device_problems = _validate_devices(raw_devices, where)
    problems.extend(device_problems)
    _forget_broken_members(data, broken)
    settings: Settings | None = None
    try:
        # With broken devices, still validate the rest so that every problem is listed at once.
        settings = Settings(**data, devices=devices)
    except ValidationError as exc:
        problems.extend(f"{where}: {_describe(err)}" for err in exc.errors())
    except SettingsError as exc:  # an EDGE_AGENT_… variable that is not valid JSON
        problems.append(f"environment: {exc}")
    if problems or settings is None:
        raise ConfigError(problems)
    return LoadedConfig(settings, path, _warnings(path, settings, holds_secrets))


def _validate_devices(raw: Any, where: str) -> tuple[list[DeviceConfig], set[str], list[str]]:
    """The devices that are valid, the ids of those that are not, and every problem."""
    if not isinstance(raw, list):
        return [], set(), [f"{where}: devices: must be a list of [[devices]] tables"]
    devices: list[DeviceConfig] = []
    broken: set[str] = set()
    problems: list[str] = []
    first_index: dict[str, int] = {}
    for index, entry in enumerate(raw):
        label = f"devices[{index}]"
        if not isinstance(entry, dict):
            problems.append(f"{where}: {label}: must be a [[devices]] table")
            continue
        if entry.get("id"):
            label += f" ({entry['id']})"
        device, found = _checked_device(entry, label, first_index)
        if device is None:
            problems.extend(f"{where}: {problem}" for problem in found)
            broken.add(str(entry.get("id")))
        else:
            devices.append(device)
        first_index.setdefault(str(entry.get("id")), index)  # broken entries claim ids too
    return devices, broken, problems


def _checked_device(
    entry: dict[str, Any], label: str, first_index: dict[str, int]
) -> tuple[DeviceConfig | None, list[str]]:
    kind_problem = _kind_problem(entry)
    if kind_problem:
        return None, [f"{label}.kind: {kind_problem}"]
    try:
        device = KINDS[entry["kind"]].config.model_validate(entry)
    except ValidationError as exc:
        return None, [_at(label, err) for err in exc.errors()]
    problems = [f"{label}.{problem}" for problem in _allow_command_problems(device)]
    if device.id in first_index:
        problems.append(f"{label}.id: already used by devices[{first_index[device.id]}]")
    return (None if problems else device), problems


def _at(label: str, error: Any) -> str:
    """`devices[0] (rig1).poll_interval: …`, or `devices[0] (rig1): …` for a whole-entry error."""
    return f"{label}{'.' if error.get('loc') else ': '}{_describe(error)}"


def _forget_broken_members(data: dict[str, Any], broken: set[str]) -> None:
    """A broken device is reported once, not again as an unknown power member."""
    power = data.get("power")
    if broken and isinstance(power, dict) and isinstance(power.get("members"), list):
        power["members"] = [m for m in power["members"] if m not in broken]


def _file_holds_secrets(data: Mapping[str, Any]) -> bool:
    """Whether the file itself spells out a secret (not a *_file path, not the environment)."""
    mqtt = data.get("mqtt")
    if isinstance(mqtt, dict) and any(mqtt.get(n) for n in MqttSection.secret_fields):
        return True
    devices = data.get("devices")
    for entry in devices if isinstance(devices, list) else ():
        kind = KINDS.get(str(entry.get("kind"))) if isinstance(entry, dict) else None
        if kind is not None and any(entry.get(n) for n in kind.config.secret_fields):
            return True
    return False


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


def _apply_device_env(data: dict[str, Any], environ: Mapping[str, str], where: str) -> list[str]:
    """`EDGE_AGENT_DEVICE__<ID>__<FIELD>=value` overrides one field of the device with that id."""
    devices = data.get("devices")
    entries = [d for d in devices if isinstance(d, dict)] if isinstance(devices, list) else []
    by_id = {str(d.get("id", "")).lower(): d for d in entries}
    problems = []
    for name, value in environ.items():
        if not name.startswith(DEVICE_ENV_PREFIX):
            continue
        device_id, _, field = name[len(DEVICE_ENV_PREFIX) :].lower().partition("__")
        target = by_id.get(device_id) or by_id.get(device_id.replace("_", "-"))
        if target is None or not field:
            problems.append(f"{where}: {name} names no configured device field")
        else:
            target[field] = value
    return problems


def _describe(error: Any) -> str:
    path = ""
    for part in error.get("loc", ()):
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    if error.get("type") == "extra_forbidden":
        message = "unknown field (check the spelling against config.example.toml)"
    return f"{path}: {message}" if path else message


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


__all__ = ["SLUG", "ConfigError", "LoadedConfig", "Settings", "load_config"]
