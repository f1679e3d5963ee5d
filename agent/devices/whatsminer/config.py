from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, SecretStr, field_validator

from agent.config.base import DeviceConfig, Duration


class WhatsminerConfig(DeviceConfig):
    """`kind = "whatsminer"`: one miner's API on TCP 4028.

    Without a password the miner is read-only here: reads work, writes fail with a clear error.
    """

    secret_fields: ClassVar[tuple[str, ...]] = ("password",)

    kind: Literal["whatsminer"]
    host: str = Field(min_length=1, max_length=253)
    port: int = Field(default=4028, ge=1, le=65535)
    password: SecretStr | None = None
    password_file: str | None = None
    # Which name the firmware upload is sent under first; the other is tried on code 14.
    firmware_command: Literal["update_firmware", "upgrade_firmware"] = "update_firmware"
    slow_interval: Duration = 600.0  # version, devdetails, miner info (network, LED, serial)
    detail_interval: Duration = 60.0  # PSU and error codes
    status_interval: Duration = 30.0  # mining on/off, power mode; re-read at once after a write

    @field_validator("host")
    @classmethod
    def _bare_host(cls, host: str) -> str:
        host = host.strip()
        if not host or "/" in host or " " in host:
            raise ValueError("host is a bare name or address (no scheme, path or spaces)")
        return host
