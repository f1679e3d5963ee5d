"""One request on a connection of its own, read until the miner closes, straight on the loop.

btminer answers one request per connection, so a poll opens two to four of them. Through
`create_connection` each one costs a resolver round, a transport, a protocol, two timeout
contexts and a handful of futures and handles; here it is one non-blocking socket, the loop's
reader and writer callbacks, one future and one timer (issue 14: CPU per poll).

Failures reach the awaiting caller as the exceptions `create_connection` and a transport
would raise (OSError with the same text, TimeoutError), with `connected` and `buffer` telling
the client which of its messages applies.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import ipaddress
import os
import socket
from collections.abc import Callable, Sequence

Address = tuple[int, tuple[object, ...]]  # (address family, socket address)
_PENDING = (errno.EINPROGRESS, errno.EAGAIN)


def literal_address(host: str, port: int) -> list[Address] | None:
    """The socket address of an IP literal, or None for a name the resolver must look up."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if ip.version == 6:
        return [(socket.AF_INET6, (host, port, 0, 0))]
    return [(socket.AF_INET, (host, port))]


async def resolve(loop: asyncio.AbstractEventLoop, host: str, port: int) -> list[Address]:
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [(family, address) for family, _, _, _, address in infos]


class Exchange:
    """Connect to the first address that accepts, send `payload`, collect bytes until EOF,
    `limit` bytes or the deadline; `done` resolves then (or fails with the reason)."""

    __slots__ = (
        "_addresses",
        "_errors",
        "_fd",
        "_loop",
        "_payload",
        "_read_timeout",
        "_sock",
        "_timer",
        "_writing",
        "buffer",
        "connected",
        "done",
        "limit",
        "overflow",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, payload: bytes, limit: int) -> None:
        self._loop = loop
        self._payload = payload
        self._sock: socket.socket | None = None
        self._fd = -1
        self._timer: asyncio.TimerHandle | None = None
        self._writing = False
        self._errors: list[OSError] = []
        self._addresses: list[Address] = []
        self._read_timeout = 0.0
        self.limit = limit
        self.buffer = bytearray()
        self.connected = False
        self.overflow = False
        self.done: asyncio.Future[None] = loop.create_future()

    def start(self, addresses: Sequence[Address], connect_by: float, read_timeout: float) -> None:
        """Connect by the loop time `connect_by`; then the whole reply within `read_timeout`."""
        self._addresses = list(reversed(addresses))  # popped from the end: first address first
        self._read_timeout = read_timeout
        self._timer = self._loop.call_at(connect_by, self._expire)
        self._connect_next()

    def close(self) -> None:
        """Idempotent: stop watching the socket, close it, drop the timer."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        sock = self._sock
        if sock is not None:
            self._sock = None
            self._loop.remove_reader(self._fd)
            if self._writing:
                self._loop.remove_writer(self._fd)
            sock.close()

    # ---------------------------------------------------------------- connect

    def _connect_next(self) -> None:
        while self._addresses:
            family, address = self._addresses.pop()
            # Non-blocking from socket() on (one syscall less than setblocking). No
            # TCP_NODELAY: the request is one send on a fresh connection, which Nagle never
            # holds back (nothing of ours is unacknowledged when it goes).
            sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
            try:
                code = sock.connect_ex(address)
            except OSError as exc:
                sock.close()
                self._errors.append(exc)
                continue
            if code == 0:
                self._adopt(sock)
                self._connected()
                return
            if code in _PENDING:
                self._adopt(sock)
                self._watch_writable(functools.partial(self._connect_done, address))
                return
            sock.close()
            self._errors.append(OSError(code, os.strerror(code)))
        self._fail(_combined(self._errors))

    def _adopt(self, sock: socket.socket) -> None:
        self._sock = sock
        self._fd = sock.fileno()

    def _connect_done(self, address: tuple[object, ...]) -> None:
        sock = self._sock
        if sock is None:
            return
        self._stop_writing()
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code == 0:
            self._connected()
            return
        self._sock = None
        sock.close()
        # asyncio's own wording for a connection that failed after EINPROGRESS
        self._errors.append(OSError(code, f"Connect call failed {address}"))
        self._connect_next()

    def _connected(self) -> None:
        self.connected = True
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(self._loop.time() + self._read_timeout, self._expire)
        self._loop.add_reader(self._fd, self._readable)
        self._send()

    # ----------------------------------------------------------- send, receive

    def _send(self) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            sent = sock.send(self._payload)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._fail(exc)
            return
        self._payload = self._payload[sent:]
        if self._payload and not self._writing:
            self._watch_writable(self._send)
        elif not self._payload and self._writing:
            self._stop_writing()

    def _readable(self) -> None:
        """Read until the socket has nothing more: the miner's close usually comes with its
        last bytes, and taking it now saves a trip round the loop for the EOF alone."""
        sock = self._sock
        while sock is not None:
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._fail(exc)
                return
            if not data:
                self._finish()
                return
            self.buffer += data
            if len(self.buffer) > self.limit:
                self.overflow = True
                self._finish()
                return
            sock = self._sock

    def _watch_writable(self, callback: Callable[[], None]) -> None:
        self._writing = True
        self._loop.add_writer(self._fd, callback)

    def _stop_writing(self) -> None:
        self._writing = False
        self._loop.remove_writer(self._fd)

    # ------------------------------------------------------------------- end

    def _expire(self) -> None:
        self._timer = None
        self._fail(TimeoutError())

    def _finish(self) -> None:
        self.close()
        if not self.done.done():
            self.done.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        self.close()
        if not self.done.done():
            self.done.set_exception(exc)


def _combined(errors: list[OSError]) -> OSError:
    """As create_connection reports the addresses it tried."""
    if not errors:
        return OSError("no address to connect to")
    if len(errors) == 1 or all(str(e) == str(errors[0]) for e in errors):
        return errors[0]
    return OSError(f"Multiple exceptions: {', '.join(str(e) for e in errors)}")
