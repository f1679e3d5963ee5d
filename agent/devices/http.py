"""What the HTTP device clients share: one keep-alive session and one mapping of failures.

Messages name the device URL and the status, never the credentials.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import requests

from agent.errors import DeviceTimeoutError, ProtocolError, UnreachableError


def make_session(*, verify: bool | str = True, user_agent: str = "edge-agent") -> requests.Session:
    session = requests.Session()
    # Devices sit on the local network: no proxies or netrc from the environment, which
    # requests would otherwise re-read on every request.
    session.trust_env = False
    session.verify = verify
    session.headers["User-Agent"] = user_agent
    session.headers["Accept"] = "application/json"
    return session


def send(
    session: requests.Session, method: str, url: str, *, timeout: float, **kwargs: Any
) -> requests.Response:
    """One request; connection-level failures become agent errors with a readable message."""
    # `verify` per request: requests lets REQUESTS_CA_BUNDLE override the session's setting.
    kwargs.setdefault("verify", session.verify)
    try:
        return session.request(method, url, timeout=timeout, allow_redirects=False, **kwargs)
    except (
        requests.exceptions.ChunkedEncodingError,
        requests.exceptions.ContentDecodingError,
    ) as exc:
        raise ProtocolError(f"{_where(url)} sent a broken reply: {_reason(exc)}") from None
    except requests.exceptions.SSLError as exc:
        raise UnreachableError(f"TLS failed for {_where(url)}: {_reason(exc)}") from None
    except requests.exceptions.Timeout:
        raise DeviceTimeoutError(f"{_where(url)} did not answer within {timeout:g}s") from None
    except requests.exceptions.ConnectionError as exc:
        raise UnreachableError(f"cannot connect to {_where(url)}: {_reason(exc)}") from None
    except requests.exceptions.RequestException as exc:
        raise UnreachableError(f"request to {_where(url)} failed: {_reason(exc)}") from None


def json_body(response: requests.Response) -> Any:
    try:
        return response.json()
    except (ValueError, json.JSONDecodeError):
        snippet = response.text[:80].replace("\n", " ")
        raise ProtocolError(
            f"{_where(response.url)} answered HTTP {response.status_code} with a body that is "
            f"not JSON: {snippet!r}"
        ) from None


def _where(url: str) -> str:
    """scheme://host:port/path without userinfo or query (a query may carry a key)."""
    parsed = urlsplit(url)
    host = parsed.hostname or ""
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{host}{port}{parsed.path}"


def _reason(exc: Exception) -> str:
    """The innermost cause, which is the readable part (`Connection refused`)."""
    cause: BaseException = exc
    while cause.__cause__ is not None or cause.__context__ is not None:
        nxt = cause.__cause__ or cause.__context__
        if nxt is None:
            break
        cause = nxt
    text = str(cause.args[-1] if cause.args else cause)
    return text.split("] ")[-1].rstrip(")'\"")[:160]
