"""Errors that end up in a command result or in the log.

Every failure a command can meet is one of these, so that the runtime can turn it into the
result payload of design §2 (`error: {code, message}`) without guessing.
"""

from __future__ import annotations

from typing import Any


class ErrorCode:
    VALIDATION = "validation"  # nothing was sent to the device
    NOT_ALLOWED = "not_allowed"  # disruptive or sensitive command not in allow_commands
    UNKNOWN_COMMAND = "unknown_command"
    DEVICE = "device_error"  # the device answered with its own error
    AUTH = "auth"  # the device refused our credentials
    UNREACHABLE = "unreachable"  # connection refused, reset, DNS, TLS
    TIMEOUT = "timeout"
    PROTOCOL = "protocol"  # the device answered something we cannot read
    UNSUPPORTED = "unsupported"  # the device (or its firmware) has no such operation
    INTERNAL = "internal"


class AgentError(Exception):
    """An error with a stable machine-readable code and an operator-readable message."""

    code: str = ErrorCode.INTERNAL

    def __init__(self, message: str, *, code: str | None = None, data: Any = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message
        self.data = data

    def as_dict(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["detail"] = self.data
        return error


class ValidationError(AgentError):
    code = ErrorCode.VALIDATION


class NotAllowedError(AgentError):
    code = ErrorCode.NOT_ALLOWED


class UnknownCommandError(AgentError):
    code = ErrorCode.UNKNOWN_COMMAND


class DeviceError(AgentError):
    """The device answered and said no. `device_code` is the device's own code, if any."""

    code = ErrorCode.DEVICE

    def __init__(
        self,
        message: str,
        *,
        device_code: int | str | None = None,
        code: str | None = None,
        data: Any = None,
    ) -> None:
        super().__init__(message, code=code, data=data)
        self.device_code = device_code

    def as_dict(self) -> dict[str, Any]:
        error = super().as_dict()
        if self.device_code is not None:
            error["device_code"] = self.device_code
        return error


class AuthError(DeviceError):
    code = ErrorCode.AUTH


class UnreachableError(AgentError):
    code = ErrorCode.UNREACHABLE


class DeviceTimeoutError(AgentError):
    code = ErrorCode.TIMEOUT


class ProtocolError(AgentError):
    code = ErrorCode.PROTOCOL


class UnsupportedError(DeviceError):
    code = ErrorCode.UNSUPPORTED
