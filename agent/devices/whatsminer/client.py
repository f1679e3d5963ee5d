"""Whatsminer API v2 over TCP: one request per connection, reads in plaintext, writes encrypted.

Protocol only (no MQTT, no state schema). Every failure is an agent error: connection trouble
→ UnreachableError / DeviceTimeoutError, unreadable replies → ProtocolError, the miner's own
refusals → DeviceError with its code, a password the miner does not accept → AuthError.
The admin password never appears in a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from agent.devices.whatsminer import crypto
from agent.devices.whatsminer.exchange import Address, Exchange, literal_address, resolve
from agent.devices.whatsminer.parse import ObjectScanner, parse_reply
from agent.errors import (
    AuthError,
    DeviceError,
    DeviceTimeoutError,
    ProtocolError,
    UnknownCommandError,
    UnreachableError,
    ValidationError,
)

DEFAULT_PORT = 4028
TOKEN_LIFETIME_S = 30 * 60  # the miner's documented token life
TOKEN_MARGIN_S = 2 * 60  # renew this long before the miner would expire it
REFUSED_BACKOFF_S = 60.0  # after code 136, no new token is asked for this long
MAX_REPLY_BYTES = 8 * 1024 * 1024
MAX_LOG_BYTES = 512 * 1024 * 1024
MAX_FIRMWARE_BYTES = 0xFFFFFFFF  # the upload's length prefix is 4 bytes
CHUNK = 64 * 1024

# Joinable reads and the section their own reply carries.
JOINABLE = {
    "summary": "SUMMARY",
    "pools": "POOLS",
    "edevs": "DEVS",
    "devs": "DEVS",
    "devdetails": "DEVDETAILS",
}
# The doc types these integer (§3.5); every other parameter is a string on the wire.
INTEGER_PARAMS = {"set_led": frozenset({"period", "duration", "start"})}
MINER_INFO_FIELDS = (
    "ip",
    "proto",
    "netmask",
    "gateway",
    "dns",
    "hostname",
    "mac",
    "ledstat",
    "minersn",
    "powersn",
)
WRITE_COMMANDS = frozenset(
    {
        "update_pools",
        "restart_btminer",
        "power_off",
        "power_on",
        "set_led",
        "set_low_power",
        "set_normal_power",
        "set_high_power",
        "update_firmware",
        "upgrade_firmware",
        "reboot",
        "factory_reset",
        "update_pwd",
        "net_config",
        "download_logs",
        "set_target_freq",
        "enable_btminer_fast_boot",
        "disable_btminer_fast_boot",
        "enable_web_pools",
        "disable_web_pools",
        "set_hostname",
        "set_zone",
        "load_log",
        "set_power_pct",
        "set_power_pct_v2",
        "pre_power_on",
        "set_temp_offset",
        "adjust_power_limit",
        "adjust_upfreq_speed",
        "set_poweroff_cool",
        "set_fan_zero_speed",
    }
)
WRITE_DISABLED_MSG = "can't access write cmd"
DEVICE_MESSAGES = {
    14: "the miner rejected the command or its data (code 14: invalid API command or data)",
    23: "the miner could not read the request (code 23: invalid JSON message)",
    45: "write API not enabled on the miner (code 45); turn it on with WhatsMinerTool",
    132: "the miner could not carry out the command (code 132: command error)",
    135: "the miner rejected the write token (code 135: check token error)",
    136: (
        "the miner has no write tokens left for this host (code 136: token over max times); "
        "they expire 30 minutes after issue"
    ),
    137: "the miner could not decode the encrypted request (code 137: base64 decode error)",
}
_GOOD = ("S", "I", "W")  # success, informational, warning (cgminer's letters)
AUTH_REFUSED = "wrong admin password: the miner rejected a freshly signed token"

Progress = Callable[[int, int], None]
T = TypeVar("T")


class NoReplyError(ProtocolError):
    """The miner closed the connection without a byte (as it may when a write restarts it)."""


class JoinNotAnsweredError(ProtocolError):
    """A readable reply to a joined read that holds none of its parts (firmware that does not
    join may answer that way instead of refusing)."""


@dataclass(frozen=True, slots=True)
class Token:
    sign: str
    aeskey: bytes
    fetched_at: float


class WhatsminerClient:
    """One miner. Safe to share between tasks: token handling is serialised by a lock."""

    def __init__(
        self,
        host: str,
        port: int = DEFAULT_PORT,
        password: str | None = None,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 5.0,
        firmware_command: str = "update_firmware",
        token_lifetime: float = TOKEN_LIFETIME_S - TOKEN_MARGIN_S,
        refused_backoff: float = REFUSED_BACKOFF_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.firmware_command = firmware_command
        self.token_lifetime = token_lifetime
        self.refused_backoff = refused_backoff
        self.clock = clock
        self.tokens_fetched = 0
        self._password = password
        self._key: tuple[str, str] | None = None  # (salt, key): the key only changes with both
        self._token: Token | None = None
        self._token_lock = asyncio.Lock()
        self._refused_until = 0.0
        self._auth_refused_until = float("-inf")
        # (host, port) → its socket address when host is an IP literal, else None (resolved)
        self._literal: tuple[tuple[str, int], list[Address] | None] | None = None

    def __repr__(self) -> str:
        return f"WhatsminerClient({self.where})"

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def can_write(self) -> bool:
        return bool(self._password)

    # ----------------------------------------------------------------- reads

    async def read(self, command: str, **params: Any) -> dict[str, Any]:
        """One plaintext read; the whole reply with its envelope checked."""
        if command in WRITE_COMMANDS:
            raise UnknownCommandError(f"{command} is a write; use write()")
        reply = parse_reply(await self._exchange(_request(command, params)))
        self._check(reply, command)
        return reply

    async def read_msg(self, command: str, **params: Any) -> Any:
        """A read whose payload is the envelope's `Msg` (get_*, status)."""
        reply = await self.read(command, **params)
        if "Msg" not in reply:
            raise ProtocolError(f"{self.where} answered {command} without a Msg")
        return reply["Msg"]

    async def joined(self, *commands: str) -> dict[str, dict[str, Any]]:
        """`summary+pools+…` on one connection → {command: its reply}, for the commands the
        miner answered: firmware that joins fewer (the doc promises two) leaves the rest out,
        and the caller reads those another way. A join the miner refuses is a DeviceError
        (code 14); a reply that answers none of them is a JoinNotAnsweredError."""
        refused = [c for c in commands if c not in JOINABLE]
        if refused or not commands:
            raise UnknownCommandError(f"cannot join {', '.join(refused) or 'nothing'}")
        joined = "+".join(commands)
        reply = parse_reply(await self._exchange(_request(joined, {})))
        self._check(reply, joined)
        sections: dict[str, dict[str, Any]] = {}
        for command in commands:
            section = reply.get(command)
            if isinstance(section, list) and section:
                section = section[0]
            if isinstance(section, dict):
                self._check(section, command)
                sections[command] = section
        if not sections and JOINABLE[commands[0]] in reply:
            sections[commands[0]] = reply  # "+…" ignored: the first command's plain reply
        if not sections:
            raise JoinNotAnsweredError(f"{self.where} answered none of {joined}")
        return sections

    async def summary(self) -> dict[str, Any]:
        return await self.read("summary")

    async def pools(self) -> dict[str, Any]:
        return await self.read("pools")

    async def edevs(self) -> dict[str, Any]:
        return await self.read("edevs")

    async def devs(self) -> dict[str, Any]:
        return await self.read("devs")

    async def devdetails(self) -> dict[str, Any]:
        return await self.read("devdetails")

    async def get_psu(self) -> dict[str, Any]:
        return _require_dict(await self.read_msg("get_psu"), "get_psu", self.where)

    async def get_version(self) -> dict[str, Any]:
        return _require_dict(await self.read_msg("get_version"), "get_version", self.where)

    async def get_token(self) -> dict[str, Any]:
        return _require_dict(await self.read_msg("get_token"), "get_token", self.where)

    async def status(self) -> dict[str, Any]:
        """btminer status; `mineroff` (some firmware) is reported as `btmineroff`."""
        reply = await self.read("status")
        msg = reply.get("Msg") if "Msg" in reply else reply  # the doc shows it bare
        status = _require_dict(msg, "status", self.where)
        if "btmineroff" not in status and "mineroff" in status:
            status["btmineroff"] = status["mineroff"]
        return status

    async def get_miner_info(self, fields: Iterable[str] = MINER_INFO_FIELDS) -> dict[str, Any]:
        msg = await self.read_msg("get_miner_info", info=",".join(fields))
        return _require_dict(msg, "get_miner_info", self.where)

    async def get_error_code(self) -> dict[str, str | None]:
        """Error code → the time it was raised, whatever shape the firmware sends."""
        msg = _require_dict(await self.read_msg("get_error_code"), "get_error_code", self.where)
        return error_codes(msg.get("error_code"))

    # ---------------------------------------------------------------- writes

    async def write(self, command: str, params: Mapping[str, Any] | None = None) -> Any:
        """One encrypted write; the `Msg` of the decoded reply.

        The device's token is reused; on code 135 it is fetched once more and the write
        retried, and if a fresh token is refused too the password is wrong.
        """
        if command not in WRITE_COMMANDS:
            raise UnknownCommandError(f"{command} is not a write command of the Whatsminer API")
        body = {"cmd": command, **_wire(params or {}, INTEGER_PARAMS.get(command, frozenset()))}
        if command == "update_pwd":
            if not (isinstance(body.get("new"), str) and body["new"]):
                raise ValidationError("update_pwd needs the new password")
            body["old"] = body.get("old") or self._password or ""
        msg = await self._signed(lambda token: self._write_with(token, body))
        if command == "update_pwd":
            self._rekey(str(body["new"]))
        return msg

    async def _signed(self, attempt: Callable[[Token], Awaitable[T]]) -> T:
        """Run `attempt` with the device's token; on code 135 fetch one more and retry once.
        A freshly fetched token that is refused means the password is wrong."""
        token, fresh = await self._current_token()
        try:
            return await attempt(token)
        except DeviceError as exc:
            if exc.device_code != 135:
                raise
            if fresh:
                raise self._password_refused(token) from None
            self._forget(token)
        token, _ = await self._current_token()
        try:
            return await attempt(token)
        except DeviceError as exc:
            if exc.device_code == 135:
                raise self._password_refused(token) from None
            raise

    def _password_refused(self, token: Token) -> AuthError:
        """Every new try costs one of the host's 32 tokens: pause before the next one."""
        self._forget(token)
        self._auth_refused_until = self.clock() + self.refused_backoff
        return AuthError(AUTH_REFUSED, device_code=135)

    async def update_password(self, new: str, old: str | None = None) -> Any:
        """update_pwd; later writes sign with the new password."""
        return await self.write("update_pwd", {"old": old, "new": new})

    async def _write_with(self, token: Token, body: dict[str, Any]) -> Any:
        payload = crypto.encrypt_command({**body, "token": token.sign}, token.aeskey)
        reply = self._decode(parse_reply(await self._exchange(payload)), token, body["cmd"])
        return reply.get("Msg")

    def _decode(self, reply: dict[str, Any], token: Token, command: str) -> dict[str, Any]:
        """An encrypted reply `{"enc": BASE64}` → its plaintext reply, envelope checked."""
        encrypted = reply.get("enc")
        if isinstance(encrypted, str):
            try:
                plain = crypto.decrypt(encrypted, token.aeskey)
            except ValueError as exc:
                raise ProtocolError(f"{self.where} sent an undecodable reply: {exc}") from None
            reply = parse_reply(plain)
        self._check(reply, command, encrypted=True)
        return reply

    # ---------------------------------------------------------------- tokens

    async def _current_token(self) -> tuple[Token, bool]:
        """The cached token, or a new one; the flag says whether it was just fetched."""
        if not self._password:
            raise AuthError(
                f"no admin password configured for {self.where}: the miner is read-only "
                "here; set password or password_file to send writes"
            )
        async with self._token_lock:
            now = self.clock()
            if self._token is not None and now - self._token.fetched_at < self.token_lifetime:
                return self._token, False
            if now < self._refused_until:
                raise DeviceError(DEVICE_MESSAGES[136], device_code=136)
            if now < self._auth_refused_until:
                wait = self._auth_refused_until - now
                raise AuthError(
                    f"{AUTH_REFUSED}; not retried for another {wait:.0f} s, to spare the "
                    "miner's tokens",
                    device_code=135,
                )
            try:
                salts = await self.get_token()
            except DeviceError as exc:
                if exc.device_code == 136:
                    self._refused_until = self.clock() + self.refused_backoff
                raise
            self._token = self._sign(salts)
            self.tokens_fetched += 1
            return self._token, True

    def _sign(self, salts: Mapping[str, Any]) -> Token:
        stamp, salt, newsalt = (salts.get(k) for k in ("time", "salt", "newsalt"))
        if not all(isinstance(v, str | int) and str(v) for v in (stamp, salt, newsalt)):
            raise ProtocolError(f"{self.where} sent a token without time, salt and newsalt")
        if self._key is None or self._key[0] != str(salt):
            self._key = (str(salt), crypto.derive_key(self._password or "", str(salt)))
        key = self._key[1]
        sign = crypto.sign_token(key, str(stamp), str(newsalt))
        return Token(sign=sign, aeskey=crypto.aes_key(key), fetched_at=self.clock())

    def _forget(self, token: Token) -> None:
        if self._token is token:
            self._token = None

    def _rekey(self, password: str) -> None:
        self._password = password
        self._key = None
        self._token = None
        self._auth_refused_until = float("-inf")

    # -------------------------------------------------------- binary flows

    async def upload_firmware(
        self, path: str | Path, progress: Progress | None = None
    ) -> dict[str, Any]:
        """Send a firmware file: the configured command (the other name if refused with 14),
        `ready`, then a 4-byte little-endian length and the file on the same connection."""
        size = _firmware_size(Path(path))
        first = self.firmware_command
        second = "upgrade_firmware" if first == "update_firmware" else "update_firmware"
        try:
            return await self._upload(first, Path(path), size, progress)
        except DeviceError as exc:
            if exc.device_code != 14:
                raise
        return await self._upload(second, Path(path), size, progress)

    async def _upload(
        self, command: str, path: Path, size: int, progress: Progress | None
    ) -> dict[str, Any]:
        return await self._signed(
            lambda token: self._upload_with(token, command, path, size, progress)
        )

    async def _upload_with(
        self, token: Token, command: str, path: Path, size: int, progress: Progress | None
    ) -> dict[str, Any]:
        payload = crypto.encrypt_command({"cmd": command, "token": token.sign}, token.aeskey)
        reader, writer = await self._open()
        try:
            await self._send(writer, payload)
            head, _rest = await self._read_object(reader)
            msg = self._decode(parse_reply(head), token, command).get("Msg")
            if msg != "ready":
                raise DeviceError(f"{self.where} is not ready for a firmware upload: {msg!r}")
            await self._send(writer, struct.pack("<I", size))
            await self._stream_file(writer, path, size, progress)
            tail = await self._upload_tail(reader)
        finally:
            writer.close()
        result: dict[str, Any] = {"command": command, "bytes": size, "confirmed": tail is not None}
        if tail is not None:
            result["reply"] = self._decode(parse_reply(tail), token, command).get("Msg")
        return result

    async def _upload_tail(self, reader: asyncio.StreamReader) -> bytes | None:
        """What the miner says after the file, if anything: the doc promises nothing (check
        the firmware version afterwards), so silence or a bare close is not a failure."""
        try:
            tail = await self._read_rest(reader, b"")
        except (NoReplyError, DeviceTimeoutError):
            return None
        return tail if tail.strip(b"\x00 \r\n") else None

    async def _stream_file(
        self, writer: asyncio.StreamWriter, path: Path, size: int, progress: Progress | None
    ) -> None:
        sent = 0
        with path.open("rb") as source:
            while chunk := source.read(CHUNK):
                await self._send(writer, chunk)
                sent += len(chunk)
                if progress is not None:
                    progress(sent, size)
        if sent != size:
            raise ValidationError(f"{path} changed size during the upload ({sent} of {size})")

    async def download_logs(
        self, sink: Callable[[bytes], object], progress: Progress | None = None
    ) -> int:
        """download_logs: the reply's `logfilelen`, then that many bytes passed to `sink`."""
        return await self._signed(lambda token: self._download_with(token, sink, progress))

    async def _download_with(
        self, token: Token, sink: Callable[[bytes], object], progress: Progress | None
    ) -> int:
        command = {"cmd": "download_logs", "token": token.sign}
        reader, writer = await self._open()
        try:
            await self._send(writer, crypto.encrypt_command(command, token.aeskey))
            head, rest = await self._read_object(reader)
            msg = self._decode(parse_reply(head), token, "download_logs").get("Msg")
            length = _log_length(msg, self.where)
            return await self._receive(reader, rest, length, sink, progress)
        finally:
            writer.close()

    async def _receive(
        self,
        reader: asyncio.StreamReader,
        first: bytes,
        length: int,
        sink: Callable[[bytes], object],
        progress: Progress | None,
    ) -> int:
        received = 0
        chunk = first
        while True:
            if chunk:
                chunk = chunk[: length - received]
                sink(chunk)
                received += len(chunk)
                if progress is not None:
                    progress(received, length)
            if received >= length:
                return received
            chunk = await self._read_chunk(reader)
            if not chunk:
                raise ProtocolError(
                    f"{self.where} closed the log download after {received} of {length} bytes"
                )

    # ------------------------------------------------------------ transport

    async def _exchange(self, payload: bytes) -> bytes:
        """Connect, send, read until the miner closes (exchange.Exchange: straight on the loop,
        for a fraction of what a transport and its protocol cost a poll)."""
        loop = asyncio.get_running_loop()
        connect_by = loop.time() + self.connect_timeout
        exchange = Exchange(loop, payload, MAX_REPLY_BYTES)
        try:
            with self._connect_errors():
                exchange.start(
                    await self._addresses(loop, connect_by), connect_by, self.read_timeout
                )
            try:
                await exchange.done
            except TimeoutError:
                raise self._timed_out(exchange) from None
            except OSError as exc:
                if not exchange.connected:
                    raise _connection_error(self.where, self.connect_timeout, exc) from None
                if not exchange.buffer:
                    raise UnreachableError(
                        f"{self.where} dropped the connection: {_reason(exc)}"
                    ) from None
        finally:
            exchange.close()
        if exchange.overflow:
            raise ProtocolError(f"{self.where} sent more than {MAX_REPLY_BYTES} bytes")
        if not exchange.buffer:
            raise NoReplyError(f"{self.where} closed the connection without answering")
        return bytes(exchange.buffer)

    async def _addresses(self, loop: asyncio.AbstractEventLoop, connect_by: float) -> list[Address]:
        if self._literal is None or self._literal[0] != (self.host, self.port):
            self._literal = ((self.host, self.port), literal_address(self.host, self.port))
        if self._literal[1] is not None:
            return self._literal[1]
        async with asyncio.timeout_at(connect_by):
            return await resolve(loop, self.host, self.port)

    def _timed_out(self, exchange: Exchange) -> DeviceTimeoutError:
        if not exchange.connected:
            return DeviceTimeoutError(
                f"{self.where} did not accept a connection within {self.connect_timeout:g}s"
            )
        if exchange.buffer:
            return DeviceTimeoutError(
                f"{self.where} sent {len(exchange.buffer)} bytes, then nothing for "
                f"{self.read_timeout:g}s without closing"
            )
        return DeviceTimeoutError(f"{self.where} did not answer within {self.read_timeout:g}s")

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        with self._connect_errors():
            async with asyncio.timeout(self.connect_timeout):
                return await asyncio.open_connection(self.host, self.port)

    @contextlib.contextmanager
    def _connect_errors(self) -> Iterator[None]:
        """A connection attempt's failures, in the words every caller reports."""
        try:
            yield
        except (TimeoutError, OSError) as exc:
            raise _connection_error(self.where, self.connect_timeout, exc) from None

    async def _send(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        try:
            writer.write(data)
            async with asyncio.timeout(self.read_timeout):
                await writer.drain()
        except TimeoutError:
            raise DeviceTimeoutError(f"{self.where} stopped taking data") from None
        except OSError as exc:
            raise UnreachableError(f"{self.where} dropped the connection: {_reason(exc)}") from None

    async def _read_rest(self, reader: asyncio.StreamReader, start: bytes) -> bytes:
        buffer = bytearray(start)
        try:
            async with asyncio.timeout(self.read_timeout):
                while chunk := await reader.read(CHUNK):
                    buffer += chunk
                    if len(buffer) > MAX_REPLY_BYTES:
                        raise ProtocolError(f"{self.where} sent more than {MAX_REPLY_BYTES} bytes")
        except TimeoutError:
            if buffer:
                raise DeviceTimeoutError(
                    f"{self.where} sent {len(buffer)} bytes, then nothing for "
                    f"{self.read_timeout:g}s without closing"
                ) from None
            raise DeviceTimeoutError(
                f"{self.where} did not answer within {self.read_timeout:g}s"
            ) from None
        except OSError as exc:
            if not buffer:
                raise UnreachableError(
                    f"{self.where} dropped the connection: {_reason(exc)}"
                ) from None
        if not buffer:
            raise NoReplyError(f"{self.where} closed the connection without answering")
        return bytes(buffer)

    async def _read_object(self, reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
        """The first JSON object on the connection and whatever followed it."""
        buffer = b""
        scanner = ObjectScanner()
        while (end := scanner.feed(buffer)) is None:
            chunk = await self._read_chunk(reader)
            if not chunk:
                if not buffer:
                    raise NoReplyError(f"{self.where} closed the connection without answering")
                return buffer, b""
            buffer += chunk
        return buffer[:end], buffer[end:]

    async def _read_chunk(self, reader: asyncio.StreamReader) -> bytes:
        try:
            async with asyncio.timeout(self.read_timeout):
                return await reader.read(CHUNK)
        except TimeoutError:
            raise DeviceTimeoutError(
                f"{self.where} sent nothing for {self.read_timeout:g}s"
            ) from None
        except OSError as exc:
            raise UnreachableError(f"{self.where} dropped the connection: {_reason(exc)}") from None

    # -------------------------------------------------------------- replies

    def _check(self, reply: Mapping[str, Any], command: str, *, encrypted: bool = False) -> None:
        """Raise the agent error for a refusal in the STATUS/Code/Msg envelope."""
        letter, code, msg = _envelope(reply)
        if msg == WRITE_DISABLED_MSG:
            code = 45
        elif letter not in ("E", "F") and (letter in _GOOD or code not in DEVICE_MESSAGES):
            return
        text = DEVICE_MESSAGES.get(code) if code is not None else None
        if text is None:
            text = f"the miner refused {command}"
        if isinstance(msg, str) and msg and code not in (45, 136):
            text = f"{text}: {self._redact(msg)}"
        if encrypted and code == 23:
            text += "; the encrypted request did not decrypt, check the admin password"
        raise DeviceError(f"{command}: {text}", device_code=code)

    def _redact(self, text: str) -> str:
        if self._password and self._password in text:
            text = text.replace(self._password, "***")
        return text[:200]


_PLAIN_REQUESTS: dict[str, bytes] = {}  # a poll's reads carry no parameters: encoded once


def _request(command: str, params: Mapping[str, Any]) -> bytes:
    if params:
        return json.dumps({"cmd": command, **params}).encode()
    request = _PLAIN_REQUESTS.get(command)
    if request is None:
        if len(_PLAIN_REQUESTS) >= 64:  # commands come from code and config: a bound anyway
            _PLAIN_REQUESTS.clear()
        request = _PLAIN_REQUESTS[command] = json.dumps({"cmd": command}).encode()
    return request


def error_codes(value: Any) -> dict[str, str | None]:
    """`error_code` as a dict, a list of one-key dicts, or a list of bare codes → code → time."""
    found: dict[str, str | None] = {}
    items: Iterable[Any] = value.items() if isinstance(value, dict) else ()
    if isinstance(value, list):
        pairs: list[tuple[Any, Any]] = []
        for item in value:
            if isinstance(item, dict):
                pairs.extend(item.items())
            elif isinstance(item, str | int):
                pairs.append((item, None))
        items = pairs
    for code, when in items:
        found[str(code)] = when if isinstance(when, str) else None
    return found


def _envelope(reply: Mapping[str, Any]) -> tuple[Any, int | None, Any]:
    status = reply.get("STATUS")
    entry: Mapping[str, Any] = reply
    if isinstance(status, list) and status and isinstance(status[0], dict):
        entry = status[0]
        status = entry.get("STATUS")
    return status, _code(entry.get("Code")), entry.get("Msg")


def _code(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _wire(params: Mapping[str, Any], integers: frozenset[str]) -> dict[str, Any]:
    """Parameters as the doc types them: the `integers` as JSON integers, every other number
    as text."""
    wire: dict[str, Any] = {}
    for name, value in params.items():
        if name in integers and (number := _integer(value)) is not None:
            wire[name] = number
        elif isinstance(value, bool):
            wire[name] = "true" if value else "false"
        elif isinstance(value, float) and value.is_integer():
            wire[name] = str(int(value))
        elif isinstance(value, int | float):
            wire[name] = str(value)
        else:
            wire[name] = value
    return wire


def _integer(value: Any) -> int | None:
    """An integral number, or its text, as an int; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return int(value.strip())
    return None


def _require_dict(value: Any, command: str, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ProtocolError(
            f"{where} answered {command} with {type(value).__name__}, not an object"
        )
    return value


def _firmware_size(path: Path) -> int:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ValidationError(f"cannot read firmware file {path}: {exc.strerror}") from None
    if not path.is_file():
        raise ValidationError(f"{path} is not a regular file")
    if size == 0 or size > MAX_FIRMWARE_BYTES:
        raise ValidationError(f"{path} is {size} bytes; firmware must be 1 B … 4 GiB")
    return size


def _log_length(msg: Any, where: str) -> int:
    raw = msg.get("logfilelen") if isinstance(msg, dict) else None
    length = _code(raw)
    if length is None or length > MAX_LOG_BYTES:
        raise ProtocolError(f"{where} announced a log of {raw!r} bytes")
    return length


def _connection_error(
    where: str, timeout: float, exc: OSError
) -> UnreachableError | DeviceTimeoutError:
    """A failed connection attempt, in the words every caller reports."""
    if isinstance(exc, TimeoutError):
        return DeviceTimeoutError(f"{where} did not accept a connection within {timeout:g}s")
    return UnreachableError(f"cannot connect to {where}: {_reason(exc)}")


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__
