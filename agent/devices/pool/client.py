"""A polite blocking client for BitMinter-shaped pool APIs (`/api/pool/*`, `/api/users`).

Politeness is per pool (scheme, host and port), shared by every client talking to it: one
request in flight at a time, and after HTTP 429 or 5xx no request at all until the pool's
Retry-After (or an exponential backoff) has passed; calls in that window fail at once with
BackoffError. Bodies with an ETag or Last-Modified are cached and revalidated; on 304 the
cached body object itself is returned, so callers can skip work with an identity check.

The API key only goes to `/api/users*`, and never appears in an error message: every error
leaving this module is scrubbed of it and detached from the `requests` exception behind it
(which carries the URL and headers).
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Literal
from urllib.parse import quote, quote_plus, urlencode, urlsplit

import requests

from agent.devices.http import make_session, send
from agent.errors import (
    AgentError,
    AuthError,
    DeviceError,
    DeviceTimeoutError,
    ProtocolError,
)
from agent.logs import get_logger

AuthMode = Literal["header", "basic", "query"]
Clock = Callable[[], float]

MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_RETRY_AFTER_S = 86_400.0  # a pool asking for more than a day is misconfigured
PAGE_MAX = 50  # the API's limit for `max`
CACHE_ENTRIES = 32

log = get_logger("pool")

_KEY_IN_URL = re.compile(r"([?&]key=)[^&#\s\"']*")


class BackoffError(DeviceError):
    """The pool asked us to slow down (429) or is failing (5xx); `retry_in` seconds to wait."""

    def __init__(self, message: str, *, status: int, retry_in: float) -> None:
        super().__init__(message, device_code=status)
        self.retry_in = retry_in


class _PoolGate:
    """What every client of one pool shares: the in-flight lock and the backoff deadline."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.not_before = 0.0
        self.failures = 0
        self.status = 0
        self.reason = ""  # one message for the whole backoff, so the log does not churn


_gates: weakref.WeakValueDictionary[str, _PoolGate] = weakref.WeakValueDictionary()
_gates_lock = threading.Lock()


def _gate_for(origin: str) -> _PoolGate:
    with _gates_lock:
        gate = _gates.get(origin)
        if gate is None:
            gate = _gates[origin] = _PoolGate()
        return gate


@dataclass(slots=True)
class _Cached:
    etag: str | None
    last_modified: str | None
    body: Any


class PoolClient:
    """Blocking access to one pool; pool data is public, user data needs `api_key`."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        auth: AuthMode = "header",
        timeout: float = 10.0,
        verify: bool = True,
        backoff_initial: float = 30.0,
        backoff_max: float = 3600.0,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
    ) -> None:
        parts = urlsplit(base_url)
        self.origin = f"{parts.scheme}://{parts.netloc}".lower()
        self._base = base_url.rstrip("/")
        self._api_key = api_key or None
        self._auth = auth
        self._timeout = timeout
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._clock = clock
        self._wall_clock = wall_clock
        self._session = make_session(verify=verify)
        self._gate = _gate_for(self.origin)
        self._cache: dict[str, _Cached] = {}
        self._secrets = _secret_forms(self._api_key)
        if self._api_key and auth == "query":
            _redact_urllib3_debug_log()

    # -- pool data (public) -------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """`hash_rate` (GH/s), `active_workers`, `active_users`."""
        return _expect_object(self.get("/api/pool/stats"), "/api/pool/stats")

    def hashrate(self) -> float:
        """The pool hash rate in GH/s."""
        return _expect_number(self.get("/api/pool/hashrate"), "/api/pool/hashrate")

    def workers(self) -> int:
        return int(_expect_number(self.get("/api/pool/workers"), "/api/pool/workers"))

    def users(self) -> int:
        return int(_expect_number(self.get("/api/pool/users"), "/api/pool/users"))

    def round(self) -> dict[str, Any]:
        """Stats plus the current shift and `chains` (per chain round data)."""
        return _expect_object(self.get("/api/pool/round"), "/api/pool/round")

    def blocks(
        self, max: int = 10, offset: int = 0, commodity: str | None = None
    ) -> list[dict[str, Any]]:
        """Latest blocks, newest first; `max` 1…50."""
        params: dict[str, Any] = {"max": _page_size(max), "offset": _offset(offset)}
        if commodity:
            params["commodity"] = commodity
        return _expect_rows(self.get("/api/pool/blocks", params), "/api/pool/blocks")

    def shifts(self, max: int = 10, offset: int = 0) -> list[dict[str, Any]]:
        """Latest shifts, newest first; `max` 1…50."""
        params = {"max": _page_size(max), "offset": _offset(offset)}
        return _expect_rows(self.get("/api/pool/shifts", params), "/api/pool/shifts")

    def top50(self) -> dict[str, float]:
        """User name → hash rate in MH/s."""
        body = _expect_object(self.get("/api/pool/top50"), "/api/pool/top50")
        for name, rate in body.items():
            if not _is_number(rate):
                raise ProtocolError(f"/api/pool/top50: hash rate of {name!r} is not a number")
        return body

    # -- user data (API key) ------------------------------------------------------------

    def user(self, name: str | None = None) -> dict[str, Any]:
        """Workers and balances of `name`, or of the key's owner when `name` is None."""
        path = "/api/users" if name is None else f"/api/users/{quote(name, safe='')}"
        return _expect_object(self.get(path, user_data=True), path)

    # -- transport ----------------------------------------------------------------------

    def get(
        self, path: str, params: Mapping[str, Any] | None = None, *, user_data: bool = False
    ) -> Any:
        """GET `path` politely and return the parsed JSON (the cached object on 304)."""
        try:
            return self._get(path, params or {}, user_data)
        except AgentError as exc:
            error = exc
        raise self._scrubbed(error)  # outside `except`, so no exception context is chained

    def close(self) -> None:
        self._session.close()

    def _get(self, path: str, params: Mapping[str, Any], user_data: bool) -> Any:
        cache_key = f"{path}?{urlencode(sorted(params.items()))}"
        query = dict(params)
        headers = self._auth_headers(query) if user_data else {}
        cached = self._cache.get(cache_key)
        if cached is not None:
            if cached.etag:
                headers["If-None-Match"] = cached.etag
            if cached.last_modified:
                headers["If-Modified-Since"] = cached.last_modified
        if not self._gate.lock.acquire(timeout=self._timeout * 3):
            raise DeviceTimeoutError(f"another request to {self.origin} is still running")
        try:
            self._check_backoff()
            response = send(
                self._session,
                "GET",
                self._base + path,
                timeout=self._timeout,
                params=query or None,
                headers=headers,
                stream=True,
            )
            try:
                content = _read_body(response, path)
                return self._answer(response, content, path, cache_key, cached, user_data)
            finally:
                response.close()
        finally:
            self._gate.lock.release()

    def _auth_headers(self, query: dict[str, Any]) -> dict[str, str]:
        if self._api_key is None:
            raise AuthError("user data needs an API key; set api_key for this device")
        if self._auth == "query":
            query["key"] = self._api_key
            return {}
        if self._auth == "basic":
            token = base64.b64encode(f"key:{self._api_key}".encode()).decode("ascii")
            return {"Authorization": f"Basic {token}"}
        return {"Authorization": f"key={self._api_key}"}

    def _check_backoff(self) -> None:
        wait = self._gate.not_before - self._clock()
        if wait > 0:
            raise BackoffError(self._gate.reason, status=self._gate.status, retry_in=wait)

    def _answer(
        self,
        response: requests.Response,
        content: bytes,
        path: str,
        cache_key: str,
        cached: _Cached | None,
        user_data: bool,
    ) -> Any:
        status = response.status_code
        if status == 429 or status >= 500:
            self._back_off(response, path)
        self._gate.failures = 0
        if status == 304:
            if cached is None:
                raise ProtocolError(f"{path} answered 304 Not Modified to an unconditional GET")
            return cached.body
        if status != 200:
            raise _status_error(response, path, content, user_data)
        body = _parse_json(content, path)
        etag = response.headers.get("ETag")
        last_modified = response.headers.get("Last-Modified")
        self._cache.pop(cache_key, None)
        if etag or last_modified:
            self._cache[cache_key] = _Cached(etag, last_modified, body)
            if len(self._cache) > CACHE_ENTRIES:  # window sizes vary: drop the oldest
                del self._cache[next(iter(self._cache))]
        return body

    def _back_off(self, response: requests.Response, path: str) -> None:
        status = response.status_code
        delay = retry_after_seconds(
            response.headers.get("Retry-After"), response.headers.get("Date"), self._wall_clock()
        )
        if delay is None:
            delay = min(self._backoff_max, self._backoff_initial * 2**self._gate.failures)
        delay = min(delay, MAX_RETRY_AFTER_S)
        gate = self._gate
        gate.failures += 1
        gate.not_before = self._clock() + delay
        gate.status = status
        until = time.strftime("%H:%M:%S", time.localtime(self._wall_clock() + delay))
        why = "rate limited" if status == 429 else "server error"
        gate.reason = (
            f"{self.origin}{path} answered HTTP {status} ({why}): no requests to this pool "
            f"for {delay:.0f}s, until {until}"
        )
        log.warning("pool backoff", pool=self.origin, path=path, status=status, retry_in_s=delay)
        raise BackoffError(gate.reason, status=status, retry_in=delay)

    def _scrubbed(self, error: AgentError) -> AgentError:
        message = error.message
        for secret in self._secrets:
            message = message.replace(secret, "***")
        message = _KEY_IN_URL.sub(r"\1***", message)
        error.message = message
        error.args = (message,)
        error.data = None
        error.__cause__ = None
        error.__context__ = None
        error.__suppress_context__ = True
        return error


def retry_after_seconds(value: str | None, server_date: str | None, now: float) -> float | None:
    """Retry-After as seconds from now: delta-seconds, or an HTTP date (read against the
    response's own Date header when there is one, so clock skew does not matter)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    when = _http_date(value)
    if when is None:
        return None
    reference = _http_date(server_date) if server_date else None
    return max(0.0, when - (reference if reference is not None else now))


def _offset(offset: int) -> int:
    if offset < 0:
        raise ValueError("offset cannot be negative")
    return offset


def _page_size(size: int) -> int:
    if not 1 <= size <= PAGE_MAX:
        raise ValueError(f"max must be 1…{PAGE_MAX}, got {size}")
    return size


def _http_date(text: str) -> float | None:
    try:
        return parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


def _read_body(response: requests.Response, path: str) -> bytes:
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise ProtocolError(f"{path} answered a {declared}-byte body; the API's are small")
    chunks = []
    size = 0
    try:
        for chunk in response.iter_content(65536):
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise ProtocolError(f"{path} answered more than {MAX_BODY_BYTES} bytes")
            chunks.append(chunk)
    except requests.exceptions.Timeout:
        raise DeviceTimeoutError(f"{path}: the pool stopped sending mid-answer") from None
    except requests.exceptions.RequestException:
        raise ProtocolError(f"{path}: the pool closed the connection mid-answer") from None
    return b"".join(chunks)


def _parse_json(content: bytes, path: str) -> Any:
    try:
        return json.loads(content, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        snippet = content[:60].decode("utf-8", "replace")
        raise ProtocolError(
            f"{path} answered something that is not JSON ({exc}): {snippet!r}"
        ) from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _status_error(
    response: requests.Response, path: str, content: bytes, user_data: bool
) -> AgentError:
    status = response.status_code
    detail = " ".join(content[:120].decode("utf-8", "replace").split())
    said = f": {detail}" if detail else ""
    if status in (401, 403):
        refused = "the API key" if user_data else "access"
        return AuthError(
            f"the pool refused {refused} for {path} (HTTP {status}){said}", device_code=status
        )
    if 300 <= status < 400:
        where = _KEY_IN_URL.sub(r"\1***", response.headers.get("Location") or "?")
        return DeviceError(
            f"{path} redirects (HTTP {status}) to {where}; set url to the final address",
            device_code=status,
        )
    return DeviceError(f"{path} answered HTTP {status}{said}", device_code=status)


def _expect_object(body: Any, path: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ProtocolError(f"{path} answered {_kind(body)} where an object was expected")
    return body


def _expect_rows(body: Any, path: str) -> list[dict[str, Any]]:
    if not isinstance(body, list) or not all(isinstance(row, dict) for row in body):
        raise ProtocolError(f"{path} answered {_kind(body)} where a list of objects was expected")
    return body


def _expect_number(body: Any, path: str) -> float:
    if not _is_number(body):
        raise ProtocolError(f"{path} answered {_kind(body)} where a number was expected")
    return float(body)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _kind(body: Any) -> str:
    if isinstance(body, list):
        return "a list" if all(isinstance(row, dict) for row in body) else "a list of non-objects"
    return {dict: "an object", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(body), "a number"
    )


def _secret_forms(api_key: str | None) -> tuple[str, ...]:
    """Every spelling in which the key could surface: raw, URL-quoted, inside Basic."""
    if not api_key:
        return ()
    basic = base64.b64encode(f"key:{api_key}".encode()).decode("ascii")
    forms = {api_key, quote(api_key, safe=""), quote_plus(api_key), basic}
    return tuple(sorted(forms, key=len, reverse=True))


class _UrlKeyRedactor(logging.Filter):
    """urllib3 logs request lines at DEBUG; with `auth = "query"` they hold the key."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _KEY_IN_URL.sub(r"\1***", arg) if isinstance(arg, str) else arg
                for arg in record.args
            )
        if isinstance(record.msg, str):
            record.msg = _KEY_IN_URL.sub(r"\1***", record.msg)
        return True


_REDACTOR = _UrlKeyRedactor()


def _redact_urllib3_debug_log() -> None:
    logger = logging.getLogger("urllib3.connectionpool")
    if _REDACTOR not in logger.filters:
        logger.addFilter(_REDACTOR)
