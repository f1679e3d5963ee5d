"""Reading loosely typed values out of device replies: one function per rule.

Devices differ in how much they bend JSON, so each rule is its own function rather than a flag:
XMRig and SRS send real JSON numbers and booleans (`number`, `integer`, `flag`); Whatsminer
firmwares send numbers as text and booleans as words (`number_or_text`, `flag_or_word`); the
pool's documented API is typed, so a wrong type there is a protocol error (`strict_*`). Every
function maps "not this" to None (the `strict_*` ones raise instead); None stays None.
"""

from __future__ import annotations

import math
import sys
from typing import Any

from agent.errors import ProtocolError

_TRUE_WORDS = frozenset({"true", "y", "yes", "1"})
_FALSE_WORDS = frozenset({"false", "n", "no", "0"})


def number(value: Any) -> int | float | None:
    """A finite JSON number (true/false are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value if math.isfinite(value) else None


def number_or_text(value: Any) -> int | float | None:
    """A finite JSON number, or text that reads as one (as a float)."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    return number(value)


def integer(value: Any) -> int | None:
    """A JSON integer, nothing else (a float is not rounded)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def truncated(value: Any) -> int | None:
    """A JSON number cut toward zero, or text of digits only (SRS sends some counts as text)."""
    if isinstance(value, str) and value.isdigit():
        return int(value)
    found = number(value)
    return None if found is None else int(found)


def truncated_or_text(value: Any) -> int | None:
    """`number_or_text`, cut toward zero."""
    found = number_or_text(value)
    return None if found is None else int(found)


def flag(value: Any) -> bool | None:
    """JSON true or false."""
    return value if isinstance(value, bool) else None


def flag_or_word(value: Any) -> bool | None:
    """true/false, a number (non-zero is true), or a yes/no word in any case."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
    return None


def text(value: Any) -> str | None:
    """A scalar as text; objects and lists are not text."""
    if value is None or isinstance(value, dict | list):
        return None
    return str(value)


def stripped_text(value: Any) -> str | None:
    """`text` without surrounding blanks, `shared`; blank text is None."""
    found = text(value)
    return shared(found.strip() or None) if found is not None else None


def shared(value: Any) -> Any:
    """Text as one object per distinct text (`sys.intern`), anything else as it is. A device's
    models, statuses, versions and pool URLs are the same text poll after poll, board after
    board and often device after device, and each reply's copy stayed alive in the states
    kept (the worker's and the filter's: ~1 KB a Whatsminer state)."""
    return sys.intern(value) if type(value) is str else value


def mapping(value: Any) -> dict[str, Any]:
    """A JSON object, or an empty one in its place."""
    return value if isinstance(value, dict) else {}


def items(value: Any) -> list[Any]:
    """A JSON list, or an empty one in its place."""
    return value if isinstance(value, list) else []


# -- strict: a typed API, where a wrong type means the reply cannot be trusted -------------


def strict_number(value: Any, name: str) -> int | float | None:
    if value is None:
        return None
    found = number(value)
    if found is None:
        raise ProtocolError(f"{name} is {shown(value)}, not a number")
    return found


def strict_integer(value: Any, name: str) -> int | None:
    """A whole JSON number (2.0 counts), as an int."""
    found = strict_number(value, name)
    if found is None:
        return None
    if found != int(found):
        raise ProtocolError(f"{name} is {found}, not a whole number")
    return int(found)


def strict_text(value: Any, name: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ProtocolError(f"{name} is {shown(value)}, not text")


def strict_flag(value: Any, name: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise ProtocolError(f"{name} is {shown(value)}, not true/false")


def shown(value: Any) -> str:
    """A value as an error message quotes it: its repr, cut to 40 characters."""
    rendered = repr(value)
    return rendered if len(rendered) <= 40 else rendered[:37] + "..."
