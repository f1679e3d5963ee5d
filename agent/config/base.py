"""Config building blocks shared by the agent sections and every device kind."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from agent.catalog.filters import parse_band

SLUG = r"[a-z0-9_-]+"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """`"500ms"`, `"10s"`, `"5m"`, `"1h"` or plain seconds → seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or text like '10s'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise ValueError(f"{value!r} is not a duration; use '500ms', '10s', '5m', '1h' or seconds")
    if not math.isfinite(seconds):
        raise ValueError("a duration must be a finite number of seconds")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]
Slug = Annotated[str, Field(pattern=f"^{SLUG}$", min_length=1, max_length=64)]


def check_topic(topic: str) -> str:
    """A topic the agent publishes under or subscribes to: plain levels, none of them empty."""
    if not topic.strip("/"):
        raise ValueError(f"{topic!r} has no topic level; use a name like 'edge-agent'")
    for wildcard in "+#":
        if wildcard in topic:
            raise ValueError(
                f"{topic!r} contains the wildcard {wildcard!r}: a topic here is plain levels "
                "like 'edge-agent' or 'site-7/edge-agent'"
            )
    if any(c.isspace() or not c.isprintable() for c in topic):
        raise ValueError(f"{topic!r} contains whitespace or a control character")
    end = "starts" if topic.startswith("/") else "ends" if topic.endswith("/") else None
    if end:
        raise ValueError(
            f"{topic!r} {end} with '/', which makes an empty topic level "
            f"(e.g. {topic + '/rig1'!r}); write {topic.strip('/')!r}"
        )
    if "//" in topic:
        raise ValueError(f"{topic!r} has an empty level ('//'); write {_no_empty_levels(topic)!r}")
    return topic


def _no_empty_levels(topic: str) -> str:
    return "/".join(level for level in topic.split("/") if level)


Topic = Annotated[str, AfterValidator(check_topic)]


def error_path_and_message(error: Any) -> tuple[str, str]:
    """A pydantic error as (`allow_commands[1]`, `…`): the field path and a plain message."""
    path = ""
    for part in error.get("loc", ()):
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    if error.get("type") == "extra_forbidden":
        message = "unknown field (check the spelling against config.example.toml)"
    return path, message


def read_secret_file(path: str | Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"cannot read secret file {path}: {exc.strerror}") from None


def credential(name: str) -> str | None:
    """A systemd credential (`LoadCredential=NAME:…`), if the service was given one."""
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        return None
    path = Path(directory) / name
    return read_secret_file(path) if path.is_file() else None


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class SecretFields(Section):
    """Resolves `X` from `X`, `X_file` or the systemd credential `{credential_prefix}.X`.

    Subclasses list their secret field names in `secret_fields`; each has a sibling `X_file`.
    The value stays a SecretStr, so printing the model never shows it.
    """

    secret_fields: ClassVar[tuple[str, ...]] = ()

    def credential_prefix(self) -> str:
        return ""

    @field_validator("*")
    @classmethod
    def _readable_secret_file(cls, value: Any, info: ValidationInfo) -> Any:
        """Check `X_file` here, so that an unreadable one is reported under its own name."""
        name = info.field_name or ""
        if value and name.endswith("_file") and name.removesuffix("_file") in cls.secret_fields:
            read_secret_file(value)
        return value

    @model_validator(mode="after")
    def _resolve_secrets(self) -> SecretFields:
        for name in self.secret_fields:
            if getattr(self, name) is not None:
                continue
            file_path = getattr(self, f"{name}_file", None)
            value = read_secret_file(file_path) if file_path else None
            if value is None:
                prefix = self.credential_prefix()
                value = credential(f"{prefix}.{name}" if prefix else name)
            if value is not None:
                object.__setattr__(self, name, SecretStr(value))
        return self

    def secret_values(self) -> list[str]:
        values = []
        for name in self.secret_fields:
            secret = getattr(self, name)
            if isinstance(secret, SecretStr) and secret.get_secret_value():
                values.append(secret.get_secret_value())
        return values


def _check_band(value: Any) -> Any:
    parse_band(value)  # the filter owns what a band is
    return value


Deadband = Annotated[float | str, AfterValidator(_check_band)]
Pattern = Annotated[str, Field(min_length=1, max_length=200)]


class PublishConfig(Section):
    """`publish`: the device's publish filters over its kind's defaults (README: Publish
    filters). Patterns are checked against the kind's state fields in Settings."""

    debounce: Duration = 0.0
    debounce_ignore: list[Pattern] = Field(default_factory=list)
    throttle: Duration = 0.0
    max_interval: Duration | None = None
    filtered_attributes: list[Pattern] = Field(default_factory=list)
    deadband: dict[Pattern, Deadband] = Field(default_factory=dict)
    quiet: list[Pattern] = Field(default_factory=list)

    @field_validator("max_interval")
    @classmethod
    def _positive_interval(cls, value: float | None) -> float | None:
        if value is not None and value <= 0:
            raise ValueError("must be positive")
        return value

    def patterns(self) -> dict[str, list[str]]:
        return {
            "debounce_ignore": self.debounce_ignore,
            "filtered_attributes": self.filtered_attributes,
            "deadband": list(self.deadband),
            "quiet": self.quiet,
        }


_PLAIN = (str, int, float, type(None))  # bool is an int: the type is part of the key


def share_repeated_values(models: Iterable[BaseModel]) -> None:
    """One object for each value that thousands of device configs repeat (the kind, the
    intervals, the default publish section): a farm's fleet otherwise holds one copy per device.

    Validated configs are read-only (a change is a model_copy), so equal values can be one
    object. Secrets, URLs and paths stay each device's own: only plain values, lists, dicts and
    sections of them are shared.
    """
    shared: dict[Any, Any] = {}
    for model in models:
        values = model.__dict__
        for name, value in values.items():
            key = _sharing_key(value)
            if key is not None:
                values[name] = shared.setdefault(key, value)


def _sharing_key(value: Any) -> Any:
    """A key equal for equal values of the same types all the way down, None when some part
    is not shareable."""
    if isinstance(value, _PLAIN):
        return (type(value), value)
    if isinstance(value, list | tuple):
        parts = tuple(_sharing_key(v) for v in value)
        return None if None in parts else (type(value), parts)
    if isinstance(value, dict):
        items = tuple((_sharing_key(k), _sharing_key(v)) for k, v in value.items())
        return None if any(None in item for item in items) else (dict, items)
    if isinstance(value, Section) and value.__pydantic_extra__ is None:
        fields = tuple((n, _sharing_key(v)) for n, v in value.__dict__.items())
        if any(key is None for _, key in fields):
            return None
        return (type(value), fields, frozenset(value.__pydantic_fields_set__))
    return None


class DeviceConfig(SecretFields):
    """What every `[[devices]]` entry has, whatever its kind."""

    # False: two entries at one address:port are a mistake (one device, polled twice). Kinds
    # whose address is a shared service (several accounts on one pool API) set it True.
    shared_address: ClassVar[bool] = False

    id: Slug
    kind: str
    name: str | None = None
    enabled: bool = True
    poll_interval: Duration = 10.0
    timeout: Duration = 5.0
    offline_after: int | None = Field(default=None, ge=1)
    state_refresh: Duration | None = None
    allow_commands: list[str] = Field(default_factory=list)
    publish_raw: bool = False
    publish: PublishConfig = Field(default_factory=PublishConfig)

    def credential_prefix(self) -> str:
        return self.id

    @property
    def display_name(self) -> str:
        return self.name or self.id

    # Field validators rather than one model validator, so that errors carry the field's path.
    @field_validator("id")
    @classmethod
    def _not_bridge(cls, value: str) -> str:
        if value == "bridge":
            raise ValueError("'bridge' is reserved for the agent's own topics")
        return value

    @field_validator("poll_interval")
    @classmethod
    def _poll_floor(cls, value: float) -> float:
        if value < 0.1:
            raise ValueError("must be at least 100ms")
        return value

    @field_validator("timeout")
    @classmethod
    def _positive_timeout(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be positive")
        return value
