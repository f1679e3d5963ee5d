"""Command payloads from MQTT (or the CLI) → validated parameters, driven by the catalogs.

Nothing reaches a device until its parameters have passed here, so every range in a catalog
is enforced in one place and every refusal reads the same.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from agent.catalog.model import Catalog, CommandSpec, Param
from agent.errors import NotAllowedError, UnknownCommandError, ValidationError

MAX_PAYLOAD_BYTES = 64 * 1024
_RESERVED_KEYS = {"command", "transaction"}
_TRUE_WORDS = {"on", "true", "1", "yes", "enable", "enabled"}
_FALSE_WORDS = {"off", "false", "0", "no", "disable", "disabled"}


@dataclass(frozen=True, slots=True)
class CommandRequest:
    """A command as received, before validation: its name, raw params and transaction."""

    name: str | None
    params: dict[str, Any]
    transaction: Any = None


def decode_payload(payload: bytes) -> str:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ValidationError(
            f"payload is {len(payload)} bytes; commands are limited to {MAX_PAYLOAD_BYTES}"
        )
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationError(f"payload is not UTF-8 text (byte {exc.start})") from None


def _load_json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError(f"payload is not valid JSON: {exc.msg} at char {exc.pos}") from None
    except RecursionError:  # "[[[[…" within the size limit still overflows the decoder
        raise ValidationError("payload is nested too deeply") from None


def parse_set_payload(payload: bytes) -> CommandRequest:
    """`{device}/set`: a JSON object with `command`, its params and an optional transaction."""
    body = _load_json(decode_payload(payload))
    if not isinstance(body, dict):
        raise ValidationError('payload must be a JSON object like {"command": "pause"}')
    transaction = body.get("transaction")
    name = body.get("command")
    if not isinstance(name, str) or not name:
        raise ValidationError(
            '"command" is missing or not a string', data={"transaction": transaction}
        )
    params = {k: v for k, v in body.items() if k not in _RESERVED_KEYS}
    return CommandRequest(name=name, params=params, transaction=transaction)


def parse_command_payload(spec: CommandSpec, payload: bytes) -> CommandRequest:
    """`{device}/set/{command}`: a plain value for the command's `plain` param, or JSON params."""
    text = decode_payload(payload).strip()
    if text.startswith("{"):
        body = _load_json(text)
        if isinstance(body, dict):
            params = {k: v for k, v in body.items() if k not in _RESERVED_KEYS}
            return CommandRequest(spec.name, params, body.get("transaction"))
    if spec.plain is None:
        return CommandRequest(spec.name, {})  # a press: the payload carries nothing
    if text == "":
        raise ValidationError(f"{spec.name} needs a value for {spec.plain!r}")
    return CommandRequest(spec.name, {spec.plain: text})


def resolve_command(
    catalog: Catalog, name: str | None, allowed: Collection[str], *, via_mqtt: bool = True
) -> CommandSpec:
    spec = catalog.command(name) if name else None
    if spec is None:
        known = ", ".join(sorted(c.name for c in catalog.commands if not c.cli_only))
        raise UnknownCommandError(f"unknown command {name!r} for {catalog.title}; known: {known}")
    if spec.cli_only and via_mqtt:
        raise NotAllowedError(f"{spec.name} moves files and runs only from the CLI")
    if spec.disruptive and spec.name not in allowed:
        raise NotAllowedError(f"{spec.name} is disruptive and not in this device's allow_commands")
    return spec


def validate_params(spec: CommandSpec, raw: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(raw) - {p.name for p in spec.params})
    if unknown:
        accepted = ", ".join(p.name for p in spec.params) or "none"
        raise ValidationError(
            f"{spec.name}: unknown parameter(s) {', '.join(unknown)}; accepted: {accepted}"
        )
    clean: dict[str, Any] = {}
    for param in spec.params:
        if param.name in raw and raw[param.name] is not None:
            clean[param.name] = coerce_param(spec.name, param, raw[param.name])
        elif param.required:
            raise ValidationError(f"{spec.name}: parameter {param.name!r} is required")
        elif param.default is not None:
            clean[param.name] = param.default
    return clean


def coerce_param(command: str, param: Param, value: Any) -> Any:
    where = f"{command}.{param.name}"
    converted = _convert(where, param, value)
    _check_bounds(where, param, converted)
    return converted


def _shown(param: Param, value: Any) -> str:
    """A rejected value as an error message may quote it: never a secret's, never all of 60 KB."""
    if param.secret:
        return "the value given"
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _convert(where: str, param: Param, value: Any) -> Any:
    if param.type == "json":
        return value
    if param.type == "bool":
        return _to_bool(where, param, value)
    if param.type in ("int", "float"):
        return _to_number(where, param, value)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValidationError(f"{where} must be text, got {type(value).__name__}")
    return str(value)


def _to_bool(where: str, param: Param, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    raise ValidationError(f"{where} must be ON/OFF or true/false, got {_shown(param, value)}")


def _to_number(where: str, param: Param, value: Any) -> int | float:
    if isinstance(value, bool):
        raise ValidationError(f"{where} must be a number, got a boolean")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ValidationError(f"{where} must be a number, got {_shown(param, value)}") from None
    if not isinstance(value, int | float):
        raise ValidationError(f"{where} must be a number, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValidationError(f"{where} must be a finite number")
    if param.type == "int":
        if isinstance(value, float) and not value.is_integer():
            raise ValidationError(f"{where} must be a whole number, got {_shown(param, value)}")
        return int(value)
    try:
        return float(value)
    except OverflowError:  # a JSON integer with hundreds of digits
        raise ValidationError(f"{where} is too large") from None


def _check_bounds(where: str, param: Param, value: Any) -> None:
    if param.minimum is not None and value < param.minimum:
        limit = _num(param.minimum)
        raise ValidationError(f"{where} must be at least {limit}, got {_shown(param, value)}")
    if param.maximum is not None and value > param.maximum:
        limit = _num(param.maximum)
        raise ValidationError(f"{where} must be at most {limit}, got {_shown(param, value)}")
    if param.choices is not None and value not in param.choices:
        choices = ", ".join(param.choices)
        raise ValidationError(f"{where} must be one of {choices}, got {_shown(param, value)}")
    if param.max_length is not None and len(value) > param.max_length:
        raise ValidationError(f"{where} must be at most {param.max_length} characters")
    if param.pattern is not None and not re.fullmatch(param.pattern, value):
        raise ValidationError(f"{where}: {_shown(param, value)} does not match {param.pattern}")


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def redact_params(spec: CommandSpec, params: Mapping[str, Any]) -> dict[str, Any]:
    """Params as they may appear in results and logs."""
    secret = {p.name for p in spec.params if p.secret}
    return {k: ("***" if k in secret else v) for k, v in params.items()}
