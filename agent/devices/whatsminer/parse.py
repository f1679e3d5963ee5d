"""A tolerant reader for what Whatsminer firmware sends, which is not always JSON.

Valid JSON takes the fast path (one `orjson.loads`; `json` for what orjson refuses and Python's
json reads, such as NaN; an integer past 64 bits, which no miner counter reaches, reads as a
float). Otherwise the repairs of the research notes
run in order: trailing NUL, raw newlines (`strict=False` keeps them inside strings), `,}`,
a list shaped like a dict (`"error_code":["329":"…"]`), a missing comma between two items,
and a body cut off by a small receive buffer (the last partial item is dropped). Anything
still unreadable is a ProtocolError naming the position, never another exception.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

from agent.errors import ProtocolError

MAX_REPAIRS = 64
_STRIP = b"\x00 \t\r\n"
_TRAILING_COMMA = re.compile(r",\s*([}\]])")
# A `[` whose first item is `"key":` — a list only a dict can be (API 2.0.4 error codes).
_DICT_SHAPED_LIST = re.compile(r'\[(?=\s*"(?:[^"\\]|\\.)*"\s*:)')
_CLOSER = {"{": "}", "[": "]"}
# One decoder for every reply: json.loads(strict=False) builds a new one per call.
_DECODER = json.JSONDecoder(strict=False)


def parse_reply(data: bytes) -> dict[str, Any]:
    """One reply as received → a dict; ProtocolError if it cannot be read as one."""
    try:
        fast = orjson.loads(data)
    except orjson.JSONDecodeError:
        pass  # the slow path says exactly what is wrong, or repairs it
    else:
        if isinstance(fast, dict):
            return fast
    text = data.strip(_STRIP).decode("utf-8", "replace")
    if not text:
        raise ProtocolError("the miner sent an empty reply")
    try:
        value = _DECODER.decode(text)
    except json.JSONDecodeError:
        value = _parse_repaired(text)
    if not isinstance(value, dict):
        raise ProtocolError(f"the miner's reply is not a JSON object: {_excerpt(text, 0)}")
    return value


def _parse_repaired(text: str) -> Any:
    text = _TRAILING_COMMA.sub(r"\1", text)
    if _DICT_SHAPED_LIST.search(text):
        text = _rebalance(_DICT_SHAPED_LIST.sub("{", text))
    for _ in range(MAX_REPAIRS):
        try:
            return _DECODER.decode(text)
        except json.JSONDecodeError as exc:
            text = _repair(text, exc)
    raise ProtocolError("the miner's reply needed too many repairs to read")


def _repair(text: str, exc: json.JSONDecodeError) -> str:
    if exc.msg.startswith("Unterminated string") or not text[exc.pos :].strip():
        return _drop_partial_tail(text)
    if exc.msg == "Expecting ',' delimiter":
        return text[: exc.pos] + "," + text[exc.pos :]
    raise ProtocolError(
        f"the miner's reply is not valid JSON ({exc.msg} at byte {exc.pos}): "
        f"{_excerpt(text, exc.pos)}"
    )


def _drop_partial_tail(text: str) -> str:
    """Cut back to the last comma outside a string and close whatever is open there."""
    cut: tuple[int, str] | None = None
    stack: list[str] = []
    in_string = escaped = False
    for index, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in _CLOSER:
            stack.append(_CLOSER[char])
        elif char in "}]":
            if stack:
                stack.pop()
        elif char == ",":
            cut = (index, "".join(reversed(stack)))
    if cut is None:
        raise ProtocolError(f"the miner's reply is cut off: {_excerpt(text, len(text))}")
    return text[: cut[0]] + cut[1]


def _rebalance(text: str) -> str:
    """Make every closer match its opener (the `]` of a list turned into a dict → `}`)."""
    chars = list(text)
    stack: list[str] = []
    in_string = escaped = False
    for index, char in enumerate(chars):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in _CLOSER:
            stack.append(_CLOSER[char])
        elif char in "}]" and stack:
            chars[index] = stack.pop()
    return "".join(chars)


def _excerpt(text: str, position: int) -> str:
    start = max(0, position - 30)
    return repr(text[start : start + 60])


class ObjectScanner:
    """Finds where the first top-level JSON object of a byte stream ends.

    Binary flows (firmware upload, log download) share one connection between a JSON reply and
    raw bytes, so the reply has to be split off without waiting for the miner to close.
    """

    __slots__ = ("_depth", "_escaped", "_in_string", "_position", "_started")

    def __init__(self) -> None:
        self._depth = 0
        self._in_string = False
        self._escaped = False
        self._started = False
        self._position = 0

    def feed(self, buffer: bytes) -> int | None:
        """Scan the new part of `buffer`; the end offset of the object once it is complete."""
        for index in range(self._position, len(buffer)):
            byte = buffer[index]
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif byte == 0x5C:  # backslash
                    self._escaped = True
                elif byte == 0x22:
                    self._in_string = False
            elif byte == 0x22:
                self._in_string = True
            elif byte in (0x7B, 0x5B):
                self._depth += 1
                self._started = True
            elif byte in (0x7D, 0x5D):
                self._depth -= 1
                if self._started and self._depth <= 0:
                    self._position = index + 1
                    return index + 1
            elif not self._started and byte not in b" \t\r\n\x00":
                self._position = index + 1
                return index + 1  # not JSON at all: hand over what there is
        self._position = len(buffer)
        return None
