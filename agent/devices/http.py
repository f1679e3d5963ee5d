"""What the HTTP device clients share: one keep-alive session and one mapping of failures.

Messages name the device URL and the status, never the credentials.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import dataclass
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


def json_body(response: requests.Response | Reply) -> Any:
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


# ---------------------------------------------------------------- asyncio keep-alive

MAX_BODY_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Reply:
    """What the clients read of an HTTP response (the part of requests.Response they use)."""

    url: str
    status_code: int
    reason: str
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


class KeepAliveClient:
    """HTTP/1.1 to one device over one persistent asyncio connection, for polls.

    A poll is a few small GETs every few seconds: `requests` in a worker thread costs several
    times the CPU of the exchange itself (thread hand-offs, urllib3's pool and header
    machinery). This speaks just what a device API needs: Content-Length or chunked bodies,
    `Connection: close`, TLS with the same `verify` meaning as requests (True, False or a CA
    bundle path). A request on a kept connection that the device closed meanwhile is sent
    once more on a new one; errors are the agent errors `send()` raises, with the same texts.
    """

    def __init__(
        self,
        url: str,
        *,
        headers: dict[str, str],
        timeout: float,
        verify: bool | str = True,
    ) -> None:
        parsed = urlsplit(url)
        self.base = url.rstrip("/")
        self.host = parsed.hostname or ""
        self.port = parsed.port or (443 if parsed.scheme == "https" else 80)
        self.timeout = timeout
        self.ssl = _ssl_context(verify) if parsed.scheme == "https" else None
        lines = [f"Host: {parsed.netloc}", "Accept: application/json"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        self._head = ("\r\n".join(lines) + "\r\n").encode("latin-1")
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self.connections_opened = 0

    async def get(self, path: str) -> Reply:
        url = self.base + path
        reused = self._streams is not None
        try:
            async with asyncio.timeout(self.timeout):
                try:
                    return await self._exchange(path, url)
                except _StaleConnectionError:
                    if not reused:
                        raise
                    return await self._exchange(path, url)  # the device closed the idle one
        except TimeoutError:
            self._drop()
            raise DeviceTimeoutError(
                f"{_where(url)} did not answer within {self.timeout:g}s"
            ) from None
        except ssl.SSLError as exc:
            self._drop()
            raise UnreachableError(f"TLS failed for {_where(url)}: {_reason(exc)}") from None
        except _StaleConnectionError:
            self._drop()
            raise ProtocolError(f"{_where(url)} closed the connection without answering") from None
        except OSError as exc:
            self._drop()
            raise UnreachableError(f"cannot connect to {_where(url)}: {_reason(exc)}") from None
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            self._drop()
            raise ProtocolError(f"{_where(url)} sent a broken reply: {_reason(exc)}") from None
        except asyncio.CancelledError:
            self._drop()  # a reply may be half read: the next request needs a new connection
            raise

    async def close(self) -> None:
        self._drop()

    async def _exchange(self, path: str, url: str) -> Reply:
        if self._streams is None:
            self._streams = await asyncio.open_connection(self.host, self.port, ssl=self.ssl)
            self.connections_opened += 1
        reader, writer = self._streams
        writer.write(b"GET " + path.encode() + b" HTTP/1.1\r\n" + self._head + b"\r\n")
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError):
            self._drop()
            raise _StaleConnectionError from None
        status, reason, fields = _parse_head(head)
        body = await _read_body(reader, fields)
        if fields.get("connection", "").lower() == "close":
            self._drop()
        return Reply(url=url, status_code=status, reason=reason, content=body)

    def _drop(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


class _StaleConnectionError(Exception):
    """The device closed the connection before a byte of the reply."""


def _ssl_context(verify: bool | str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
    if verify is False:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _parse_head(head: bytes) -> tuple[int, str, dict[str, str]]:
    status_line, *lines = head.decode("latin-1").split("\r\n")
    version, _, rest = status_line.partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or not code.isdigit():
        raise ValueError(f"not an HTTP status line: {status_line[:40]!r}")
    fields = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if sep:
            fields[name.strip().lower()] = value.strip()
    return int(code), reason, fields


async def _read_body(reader: asyncio.StreamReader, fields: dict[str, str]) -> bytes:
    if "chunked" in fields.get("transfer-encoding", "").lower():
        chunks = bytearray()
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            chunks += await reader.readexactly(size)
            await reader.readexactly(2)
            if len(chunks) > MAX_BODY_BYTES:
                raise ValueError(f"a body of more than {MAX_BODY_BYTES} bytes")
        await reader.readuntil(b"\r\n")  # no trailers expected: the empty line
        return bytes(chunks)
    length = int(fields.get("content-length", "0"))
    if length > MAX_BODY_BYTES:
        raise ValueError(f"a body of {length} bytes")
    return await reader.readexactly(length)
