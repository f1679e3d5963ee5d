from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import AnyHttpUrl, Field, SecretStr, field_validator, model_validator

from agent.config.base import DeviceConfig

DEFAULT_VHOST = "__defaultVhost__"
_TLS_WORDS = {"true": True, "on": True, "yes": True, "1": True}
_TLS_WORDS |= {"false": False, "off": False, "no": False, "0": False}


class SrsConfig(DeviceConfig):
    """`kind = "srs"`: one SRS media server's HTTP API (`http_api`, port 1985; HTTPS 1986)."""

    secret_fields: ClassVar[tuple[str, ...]] = ("password",)

    kind: Literal["srs"]
    url: AnyHttpUrl
    username: str | None = None  # http_api.auth (SRS 5.0.152+ / 6.0.40+)
    password: SecretStr | None = None
    password_file: str | None = None
    verify_tls: bool | str = True  # false, or a CA bundle path, for self-signed certificates
    watch_streams: list[str] = Field(default_factory=list)  # "vhost/app/name" or "app/name"
    max_streams: int = Field(default=2000, ge=1, le=100_000)
    # Clients change every poll (alive time, bytes): listing thousands would make every state
    # message hundreds of KB. Counts stay exact either way (per-vhost counters).
    max_clients: int = Field(default=200, ge=0, le=100_000)  # 0: do not list clients
    # SRS treats a page `count` below 10 as 10, so smaller pages would be misread.
    page_size: int = Field(default=500, ge=10, le=10_000)

    @field_validator("url")
    @classmethod
    def _no_credentials_in_url(cls, url: AnyHttpUrl) -> AnyHttpUrl:
        if url.username or url.password:
            raise ValueError("put the credentials in `username` and `password`, not in the URL")
        return url

    @field_validator("verify_tls", mode="before")
    @classmethod
    def _tls_choice(cls, value: Any) -> Any:
        if isinstance(value, str):
            word = _TLS_WORDS.get(value.strip().lower())
            if word is not None:
                return word
            if not Path(value).is_file():
                raise ValueError(f"verify_tls: CA file {value!r} does not exist")
        return value

    @field_validator("watch_streams")
    @classmethod
    def _stream_keys(cls, streams: list[str]) -> list[str]:
        keys: list[str] = []
        for entry in streams:
            key = stream_key(entry)
            if key not in keys:
                keys.append(key)
        return keys

    @model_validator(mode="after")
    def _password_needs_user(self) -> SrsConfig:
        if self.password is not None and not self.username:
            raise ValueError("a password is set but no username: SRS uses Basic auth with both")
        return self


def stream_key(entry: str) -> str:
    """`app/name` → `__defaultVhost__/app/name`; `vhost/app/name` stays; `/app/name` (SRS's own
    stream url for the default vhost) is accepted too."""
    parts = entry.strip().strip("/").split("/")
    if len(parts) < 2 or not all(parts):
        raise ValueError(f"watch_streams: {entry!r} is not 'app/name' or 'vhost/app/name'")
    if len(parts) == 2:
        parts.insert(0, DEFAULT_VHOST)
    return "/".join(parts)
