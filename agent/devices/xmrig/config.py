from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import AnyHttpUrl, SecretStr, field_validator

from agent.config.base import DeviceConfig, Duration


class XmrigConfig(DeviceConfig):
    """`kind = "xmrig"`: one miner's HTTP API."""

    secret_fields: ClassVar[tuple[str, ...]] = ("token",)

    kind: Literal["xmrig"]
    url: AnyHttpUrl
    token: SecretStr | None = None
    token_file: str | None = None
    verify_tls: bool | str = True  # false, or a CA bundle path, for self-signed certificates
    config_interval: Duration = 300.0  # how often /2/config is read when unrestricted
    nominal_w: float | None = None  # declared power draw, for site power control

    @field_validator("url")
    @classmethod
    def _no_credentials_in_url(cls, url: AnyHttpUrl) -> AnyHttpUrl:
        if url.username or url.password:
            raise ValueError("put the access token in `token`, not in the URL")
        return url
