"""The security gate inside the command service (agent.runtime.commands).

It resolves the command, validates its params, checks the call's class (routine, disruptive,
sensitive) against the device's allow_commands, runs it, and leaves exactly one audit line
with the outcome: on the log always, and on `{base}/bridge/{agent}/audit` when the agent's
`audit_topic` is on. A refusal is audited like a write, so an attempt to redirect a miner's
hashrate leaves a trace even though nothing reached the miner.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from agent.catalog.model import Catalog, CommandSpec, Security
from agent.catalog.validate import (
    MASK,
    CommandRequest,
    authorize,
    redact_params,
    resolve_command,
    validate_params,
)
from agent.config.base import DeviceConfig
from agent.errors import AgentError, NotAllowedError
from agent.logs import get_logger

log = get_logger("audit")
AuditSink = Callable[[dict[str, Any]], None]


@dataclass(frozen=True, slots=True)
class Origin:
    """Who asked: an MQTT topic (with the MQTT 5 response topic and user properties that
    came with it), the CLI, or the agent's own site power control."""

    via: Literal["mqtt", "cli", "power"]
    topic: str | None = None
    response_topic: str | None = None
    user_properties: tuple[tuple[str, str], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {"via": self.via}
        if self.topic is not None:
            found["topic"] = self.topic
        if self.response_topic is not None:
            found["response_topic"] = self.response_topic
        if self.user_properties:  # a list of pairs: MQTT 5 lets a name repeat
            found["user_properties"] = [list(pair) for pair in self.user_properties]
        return found


@dataclass(slots=True)
class Admitted:
    """A command that passed the gate: its spec, clean params and class for this call."""

    device: str
    request: CommandRequest
    origin: Origin
    spec: CommandSpec
    params: dict[str, Any]
    security: Security
    started: float = field(default_factory=time.monotonic)


class CommandGate:
    def __init__(self, sink: AuditSink | None = None) -> None:
        self.sink = sink

    def admit(
        self, device: DeviceConfig, catalog: Catalog, request: CommandRequest, origin: Origin
    ) -> Admitted:
        """Resolve, validate, authorize; a refusal is audited here and raised."""
        started = time.monotonic()
        spec: CommandSpec | None = None
        try:
            spec = resolve_command(
                catalog,
                request.name,
                device.allow_commands,
                via_mqtt=origin.via != "cli",
                device=device.id,
            )
            params = validate_params(spec, request.params)
            security = authorize(spec, params, device.allow_commands, device.id).security
        except AgentError as exc:
            self._audit_refusal(device.id, request, origin, spec, exc, started)
            raise
        return Admitted(device.id, request, origin, spec, params, security, started)

    def outcome(
        self, admitted: Admitted, *, data: Any = None, error: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The result of an admitted command that ran elsewhere (a CLI flow), audited."""
        result = command_result(
            admitted.request, admitted.started, ok=error is None, data=data, error=error
        )
        self.record(admitted, result)
        return result

    def refused_parse(
        self, device: str, request: CommandRequest, origin: Origin, result: dict[str, Any]
    ) -> None:
        """A payload that could not be read as a command is audited like any refusal."""
        self._audit(device, request, origin, None, {}, result)

    def record(self, admitted: Admitted, result: dict[str, Any]) -> None:
        """The outcome of an admitted command: one audit line."""
        shown = redact_params(admitted.spec, admitted.params)
        self._audit(
            admitted.device, admitted.request, admitted.origin, admitted.security, shown, result
        )

    def _audit_refusal(
        self,
        device: str,
        request: CommandRequest,
        origin: Origin,
        spec: CommandSpec | None,
        exc: AgentError,
        started: float,
    ) -> None:
        security: Security | None = spec.security if spec is not None else None
        if isinstance(exc, NotAllowedError) and isinstance(exc.data, dict):
            security = exc.data.get("security", security)
        shown = (
            redact_params(spec, request.params)
            if spec is not None
            else dict.fromkeys(request.params, MASK)  # unknown command: no idea what is secret
        )
        result = command_result(request, started, ok=False, error=exc.as_dict())
        self._audit(device, request, origin, security, shown, result)

    def _audit(
        self,
        device: str,
        request: CommandRequest,
        origin: Origin,
        security: Security | None,
        params: dict[str, Any],
        result: dict[str, Any],
    ) -> None:
        entry = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "device": device,
            "command": request.name,
            "class": security,
            "params": params,
            "origin": origin.as_dict(),
            "transaction": request.transaction,
            "ok": result["ok"],
            "error": result["error"],
            "duration_ms": result["duration_ms"],
        }
        fields = {k: v for k, v in entry.items() if k != "time"}
        if result["ok"]:
            log.info("audit", **fields)
        else:
            log.warning("audit", **fields)
        if self.sink is not None:
            self.sink(entry)


def command_result(
    request: CommandRequest,
    started: float,
    *,
    ok: bool,
    data: Any = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The result payload of design §2, the same for MQTT, the CLI and power control."""
    return {
        "command": request.name,
        "transaction": request.transaction,
        "ok": ok,
        "error": error,
        "data": data,
        "duration_ms": round((time.monotonic() - started) * 1000, 1),
    }
