"""Progress on stderr: a one-line bar on a terminal, a plain line per 10 % elsewhere (logs, CI)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO


class Progress:
    """Call with (done, total). `unit="B"` shows bytes with a rate and the time left."""

    def __init__(
        self,
        stream: TextIO,
        label: str,
        *,
        unit: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.label = label
        self.unit = unit
        self.tty = stream.isatty()
        self.clock = clock
        self.started = clock()
        self._shown = 0

    def __call__(self, done: int, total: int) -> None:
        percent = 100 if total <= 0 else min(100, done * 100 // total)
        if self.tty:
            filled = percent * 30 // 100
            bar = "#" * filled + "-" * (30 - filled)
            end = "\n" if done >= total else ""
            self.stream.write(
                f"\r{self.label} [{bar}] {percent:3d}% {self.detail(done, total)}{end}"
            )
        elif percent // 10 != self._shown // 10 or (done >= total and self._shown < 100):
            self.stream.write(f"{self.label}: {percent}% {self.detail(done, total)}\n")
        self._shown = percent
        self.stream.flush()

    def detail(self, done: int, total: int) -> str:
        if self.unit != "B":
            return f"{done}/{total}"
        elapsed = max(self.clock() - self.started, 1e-6)
        rate = done / elapsed
        text = f"({done}/{total} bytes) {human_bytes(rate)}/s"
        if done < total and rate > 0:
            text += f" {format_seconds((total - done) / rate)} left"
        return text


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"  # unreachable; keeps mypy's return check simple


def format_seconds(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
