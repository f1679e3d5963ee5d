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

from agent.catalog.model import Catalog, CommandSpec, Param, Security, SensitiveFields
from agent.errors import NotAllowedError, UnknownCommandError, ValidationError

MAX_PAYLOAD_BYTES = 64 * 1024
MASK = "***"
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
        raise ValidationError('"command" is missing or not a string')
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
    catalog: Catalog,
    name: str | None,
    allowed: Collection[str],
    *,
    via_mqtt: bool = True,
    device: str | None = None,
) -> CommandSpec:
    """The command's spec, refused when unknown, CLI-only over MQTT, or gated and not allowed.

    A command that is routine by declaration but sensitive by its params (`config_patch`)
    passes here; `authorize` decides once the params are known.
    """
    spec = catalog.command(name) if name else None
    if spec is None:
        known = ", ".join(sorted(c.name for c in catalog.commands if not c.cli_only))
        raise UnknownCommandError(f"unknown command {name!r} for {catalog.title}; known: {known}")
    if spec.cli_only and via_mqtt:
        raise NotAllowedError(f"{spec.name} moves files and runs only from the CLI")
    if spec.gated and spec.name not in allowed:
        raise not_allowed(spec, spec.security, spec.why, allowed, device)
    return spec


@dataclass(frozen=True, slots=True)
class Classified:
    """A command's class for one call, and why (the fields a patch touches)."""

    security: Security
    reason: str


def classify(spec: CommandSpec, params: Mapping[str, Any]) -> Classified:
    rule = spec.sensitive_when
    if spec.gated or rule is None:
        return Classified(spec.security, spec.why)
    touched = sensitive_paths(rule, params.get(rule.param))
    if touched:
        return Classified("sensitive", f"the {rule.param} touches {', '.join(touched)}")
    return Classified("routine", "")


def sensitive_paths(rule: SensitiveFields, value: Any) -> list[str]:
    """The paths in `value` that are not routine under `rule`, in the order given."""
    if not isinstance(value, Mapping):
        raise ValidationError(f"{rule.param} must be a JSON object")
    found: list[str] = []
    for path in _leaf_paths(value, ""):
        if not _is_routine(rule, path) and path not in found:
            found.append(path)
    return found


def _leaf_paths(value: Mapping[str, Any], prefix: str) -> list[str]:
    paths = []
    for key, inner in value.items():
        path = f"{prefix}{key}"
        if isinstance(inner, Mapping) and inner:
            paths.extend(_leaf_paths(inner, path + "."))
        else:
            paths.append(path)
    return paths


def _is_routine(rule: SensitiveFields, path: str) -> bool:
    def covers(outer: str, inner: str) -> bool:
        return inner == outer or inner.startswith(outer + ".")

    # A leaf above an exception (`cuda: null`) replaces the exception too.
    if any(covers(e, path) or covers(path, e) for e in rule.exceptions):
        return False
    return any(covers(r, path) for r in rule.routine)


def authorize(
    spec: CommandSpec,
    params: Mapping[str, Any],
    allowed: Collection[str],
    device: str | None = None,
) -> Classified:
    """The call's class; NotAllowedError when it is gated and the device does not allow it."""
    found = classify(spec, params)
    if found.security != "routine" and spec.name not in allowed:
        raise not_allowed(spec, found.security, found.reason, allowed, device)
    return found


def not_allowed(
    spec: CommandSpec,
    security: Security,
    reason: str,
    allowed: Collection[str],
    device: str | None,
) -> NotAllowedError:
    """A refusal that names the config line which would allow the command."""
    why = f" ({reason})" if reason else ""
    line = "allow_commands = " + json.dumps([*allowed, spec.name])
    where = f"device {device!r}" if device else "this device"
    return NotAllowedError(
        f"{spec.name} is {security}{why} and {where} does not allow it; to allow it, "
        f"set {line} in its [[devices]] entry",
        data={"security": security, "allow": line},
    )


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
    """Params as they may appear in results, logs and the audit trail."""
    shown: dict[str, Any] = {}
    for key, value in params.items():
        param = spec.param(key)
        if param is not None and param.secret:
            shown[key] = MASK
        elif param is not None and param.secret_keys:
            shown[key] = mask_keys(value, param.secret_keys)
        else:
            shown[key] = value
    return shown


def mask_keys(value: Any, keys: Collection[str]) -> Any:
    """`value` with every non-empty value under one of `keys`, at any depth, masked."""
    if isinstance(value, Mapping):
        return {k: (MASK if k in keys and v else mask_keys(v, keys)) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_keys(v, keys) for v in value]
    return value
