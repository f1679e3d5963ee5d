"""Plain-text tables and the human units the CLI prints (TH/s, W, J/TH, °C, ages)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

HASH_PREFIXES = (
    (1e18, "EH/s"),
    (1e15, "PH/s"),
    (1e12, "TH/s"),
    (1e9, "GH/s"),
    (1e6, "MH/s"),
    (1e3, "kH/s"),
)


def render(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = [_line(headers, widths), _line(["-" * w for w in widths], widths)]
    lines += [_line(row, widths) for row in cells]
    return "\n".join(lines)


def _line(values: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()


def _cell(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def hashrate(hs: float | None) -> str | None:
    """H/s in the largest unit that keeps a number ≥ 1: 97444925360000 → '97.44 TH/s'."""
    if hs is None:
        return None
    for scale, unit in HASH_PREFIXES:
        if abs(hs) >= scale:
            return f"{hs / scale:.2f} {unit}"
    return f"{hs:.0f} H/s"


def watts(value: float | None) -> str | None:
    return None if value is None else f"{value:.0f} W"


def joules_per_th(value: float | None) -> str | None:
    return None if value is None else f"{value:.1f} J/TH"


def celsius(value: float | None) -> str | None:
    return None if value is None else f"{value:.0f} °C"


def age(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"
