"""`[[devices]]` entries of kind `pool`: a BitMinter-shaped pool API at some base URL."""

from __future__ import annotations

import ipaddress
import re
from typing import ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from agent.config.base import DeviceConfig, Duration

AuthMode = Literal["header", "basic", "query"]
_PRINTABLE = re.compile(r"[\x21-\x7e]+")


class PoolConfig(DeviceConfig):
    """Pool data is public; user data (workers, balances) needs `api_key`.

    With `api_key` the driver reads `/api/users/{user}`, or `/api/users` (the key's owner) when
    `user` is not set. `auth` picks how the key travels: `header` (`Authorization: key=…`),
    `basic` (`Authorization: Basic base64(key:…)`) or `query` (`?key=…`, which proxies and
    server logs record: an explicit opt-in).
    """

    secret_fields: ClassVar[tuple[str, ...]] = ("api_key",)
    shared_address: ClassVar[bool] = True  # one pool API serves many accounts

    kind: Literal["pool"]
    url: str
    api_key: SecretStr | None = None
    api_key_file: str | None = None
    user: str | None = Field(default=None, min_length=1, max_length=128)
    auth: AuthMode = "header"
    poll_interval: Duration = 60.0
    min_poll_interval: Duration = 60.0
    timeout: Duration = 10.0
    verify_tls: bool = True
    commodity: str | None = Field(default=None, pattern=r"^[A-Za-z0-9]{1,16}$")
    blocks_page: int = Field(default=10, ge=1, le=50)
    shifts_page: int = Field(default=10, ge=1, le=50)
    top50: bool = True
    backoff_initial: Duration = 30.0
    backoff_max: Duration = 3600.0

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("url must be an http:// or https:// address like https://pool.example")
        if parts.username or parts.password:
            raise ValueError("url must not carry credentials; use api_key")
        if parts.query or parts.fragment:
            raise ValueError("url must not carry a query or fragment; use api_key for the key")
        path = parts.path.rstrip("/")
        if path.endswith("/api"):  # people paste the API root; the driver adds /api itself
            path = path[: -len("/api")]
        return f"{parts.scheme}://{parts.netloc}{path}"

    @model_validator(mode="after")
    def _check_user_needs_key(self) -> PoolConfig:
        key = self.api_key.get_secret_value() if self.api_key is not None else None
        if key is not None and not _PRINTABLE.fullmatch(key):
            # the message must not show the key: it ends up in logs
            raise ValueError("api_key must be printable ASCII without spaces (check api_key_file)")
        if self.user is not None and self.api_key is None:
            raise ValueError(
                "user data needs an API key: set api_key or api_key_file, or drop user"
            )
        if self.backoff_max < self.backoff_initial:
            raise ValueError("backoff_max must be at least backoff_initial")
        return self

    def warnings(self) -> list[str]:
        """Advice the config loader logs: the config is valid but impolite or unsafe."""
        found = []
        if self.poll_interval < self.min_poll_interval:
            found.append(
                f"poll_interval {self.poll_interval:g}s is below "
                f"min_poll_interval {self.min_poll_interval:g}s; the pool asks clients not to "
                "poll more often than necessary and blocks abusive ones"
            )
        if self.api_key is not None and self.auth == "query":
            found.append(
                'auth = "query" puts the API key in the URL, where proxies '
                'and server logs record it; prefer auth = "header"'
            )
        if self.api_key is not None and not _key_travels_safely(self.url):
            found.append(f"the API key goes to {self.url} over plain http; use https")
        return found


def _key_travels_safely(url: str) -> bool:
    """True for https, and for plain http to loopback or private addresses."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        return True
    host = parts.hostname or ""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private
