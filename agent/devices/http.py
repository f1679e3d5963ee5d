"""What the HTTP device clients share: one keep-alive session and one mapping of failures.

Messages name the device URL and the status, never the credentials.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlsplit

import orjson

from agent.errors import DeviceTimeoutError, ProtocolError, UnreachableError

if TYPE_CHECKING:
    import requests


def make_session(*, verify: bool | str = True, user_agent: str = "edge-agent") -> requests.Session:
    # Imported on first use: a fleet that only polls over KeepAliveClient never loads requests
    # (and urllib3, charset detection, certifi: several MB and a fraction of a second).
    import requests

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
    import requests

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
MAX_HEAD_BYTES = 64 * 1024


class Reply(NamedTuple):
    """What the clients read of an HTTP response (the part of requests.Response they use)."""

    url: str
    status_code: int
    reason: str
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        try:
            return orjson.loads(self.content)
        except orjson.JSONDecodeError:
            return json.loads(self.content)  # what json reads and orjson refuses (NaN), or why not


class KeepAliveClient:
    """HTTP/1.1 to one device over one persistent asyncio connection, for polls.

    A poll is a few small GETs every few seconds: `requests` in a worker thread costs several
    times the CPU of the exchange itself (thread hand-offs, urllib3's pool and header
    machinery), and even asyncio streams cost a task wake-up per read call. This is a bare
    `asyncio.Protocol` that reads just what a device API needs: Content-Length or chunked
    bodies, `Connection: close`, TLS with the same `verify` meaning as requests (True, False
    or a CA bundle path). A request on a kept connection that the device closed meanwhile is
    sent once more on a new one; errors are the agent errors `send()` raises, with the same
    texts. The timeout covers a whole request (connecting, the retry, the reply).
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
        self._head = (" HTTP/1.1\r\n" + "\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self._connection: _Connection | None = None
        self.connections_opened = 0

    async def get(self, path: str) -> Reply:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        try:
            try:
                return await self._exchange(loop, path, deadline)
            except _StaleConnectionError as stale:
                if not stale.reused:
                    raise
                return await self._exchange(loop, path, deadline)  # the device closed it
        except TimeoutError:
            self._drop()
            raise DeviceTimeoutError(
                f"{_where(self.base + path)} did not answer within {self.timeout:g}s"
            ) from None
        except ssl.SSLError as exc:
            self._drop()
            raise UnreachableError(
                f"TLS failed for {_where(self.base + path)}: {_reason(exc)}"
            ) from None
        except _StaleConnectionError:
            self._drop()
            raise ProtocolError(
                f"{_where(self.base + path)} closed the connection without answering"
            ) from None
        except OSError as exc:
            self._drop()
            raise UnreachableError(
                f"cannot connect to {_where(self.base + path)}: {_reason(exc)}"
            ) from None
        except ValueError as exc:
            self._drop()
            raise ProtocolError(
                f"{_where(self.base + path)} sent a broken reply: {_reason(exc)}"
            ) from None
        except asyncio.CancelledError:
            self._drop()  # a reply may be half read: the next request needs a new connection
            raise

    async def close(self) -> None:
        self._drop()

    async def _exchange(self, loop: asyncio.AbstractEventLoop, path: str, deadline: float) -> Reply:
        connection = self._connection
        reused = connection is not None and connection.reusable
        if connection is None or not reused:
            connection = await self._connect(loop, deadline)
        waiter: asyncio.Future[tuple[int, str, bytes, bool]] = loop.create_future()
        connection.expect(waiter, reused)
        connection.transport.write(b"GET " + path.encode() + self._head)
        timer = loop.call_at(deadline, _expire, waiter)
        try:
            status, reason, body, closes = await waiter
        finally:
            timer.cancel()
        if closes:
            self._drop()
        return Reply(self.base + path, status, reason, body)

    async def _connect(self, loop: asyncio.AbstractEventLoop, deadline: float) -> _Connection:
        self._drop()
        async with asyncio.timeout_at(deadline):
            _, connection = await loop.create_connection(
                _Connection, self.host, self.port, ssl=self.ssl
            )
        self._connection = connection
        self.connections_opened += 1
        return connection

    def _drop(self) -> None:
        if self._connection is not None:
            self._connection.transport.close()
            self._connection = None


class _StaleConnectionError(Exception):
    """The device closed the connection before a byte of the reply."""

    def __init__(self, reused: bool) -> None:
        super().__init__("closed before a reply")
        self.reused = reused


def _expire(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class _Connection(asyncio.Protocol):
    """One connection's bytes, parsed into the reply that `expect()` waits for.

    Parsing happens in the socket callback itself, so a reply costs one wake-up of the waiting
    task however many segments it arrives in.
    """

    transport: asyncio.Transport

    def __init__(self) -> None:
        self.closed = False
        self._buffer = bytearray()
        self._waiter: asyncio.Future[tuple[int, str, bytes, bool]] | None = None
        self._reused = False
        self._head: tuple[int, str, int, bool, bool] | None = None  # status … closes
        self._body_at = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    @property
    def reusable(self) -> bool:
        """Open, and no bytes nobody asked for (after which its replies cannot be trusted)."""
        return not self.closed and not self._buffer

    def expect(self, waiter: asyncio.Future[tuple[int, str, bytes, bool]], reused: bool) -> None:
        self._waiter, self._reused, self._head = waiter, reused, None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        try:
            reply = self._reply()
        except ValueError as exc:
            waiter.set_exception(exc)
            self.transport.close()
            return
        if reply is not None:
            self._waiter = None
            self._buffer.clear()
            waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter, self._waiter = self._waiter, None
        if waiter is None or waiter.done():
            return
        if isinstance(exc, ssl.SSLError):
            waiter.set_exception(exc)
        elif self._buffer:
            waiter.set_exception(ValueError("the connection closed in the middle of the reply"))
        else:
            waiter.set_exception(_StaleConnectionError(self._reused))

    def _reply(self) -> tuple[int, str, bytes, bool] | None:
        buffer = self._buffer
        if self._head is None:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD_BYTES:
                    raise ValueError(f"a header of more than {MAX_HEAD_BYTES} bytes")
                return None
            self._head = _parse_head(bytes(buffer[: end + 2]))
            self._body_at = end + 4
        status, reason, length, chunked, closes = self._head
        if chunked:
            body = _dechunk(buffer, self._body_at)
            if body is None:
                return None
        elif len(buffer) - self._body_at < length:
            return None
        else:
            body = bytes(buffer[self._body_at : self._body_at + length])
        return status, reason, body, closes


def _ssl_context(verify: bool | str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
    if verify is False:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _parse_head(head: bytes) -> tuple[int, str, int, bool, bool]:
    """Status, reason, Content-Length, chunked, Connection: close, from a head ending in CRLF.

    Only the three fields a reply's framing needs are looked up, in the lowered head: no
    dictionary of every header for each reply.
    """
    line_end = head.find(b"\r\n")
    version, _, rest = head[:line_end].partition(b" ")
    code, _, reason = rest.partition(b" ")
    if not version.startswith(b"HTTP/1.") or not code.isdigit():
        raise ValueError(f"not an HTTP status line: {head[:line_end][:40]!r}")
    fields = head[line_end:].lower()
    chunked = b"chunked" in _field(fields, b"\r\ntransfer-encoding:")
    length = 0 if chunked else int(_field(fields, b"\r\ncontent-length:") or b"0")
    if length > MAX_BODY_BYTES or length < 0:
        raise ValueError(f"a body of {length} bytes")
    closes = _field(fields, b"\r\nconnection:") == b"close"
    return int(code), reason.decode("latin-1"), length, chunked, closes


def _field(fields: bytes, name: bytes) -> bytes:
    start = fields.find(name)
    if start < 0:
        return b""
    start += len(name)
    return fields[start : fields.index(b"\r\n", start)].strip()


def _dechunk(buffer: bytearray, at: int) -> bytes | None:
    """A chunked body from `at`, or None while it is incomplete (no trailers expected)."""
    body = bytearray()
    while True:
        line_end = buffer.find(b"\r\n", at)
        if line_end < 0:
            return None
        size = int(bytes(buffer[at:line_end]).split(b";")[0], 16)
        at = line_end + 2
        if size == 0:
            return bytes(body) if buffer.find(b"\r\n", at) >= 0 else None
        if len(buffer) < at + size + 2:
            return None
        body += buffer[at : at + size]
        at += size + 2
        if len(body) > MAX_BODY_BYTES:
            raise ValueError(f"a body of more than {MAX_BODY_BYTES} bytes")
