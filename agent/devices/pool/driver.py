"""The `pool` driver: reads a BitMinter-shaped API into one state object, and reports blocks.

Per poll: the user (with an API key), the round (stats, shift, chains), blocks, shifts and the
top 50. Blocks and shifts are read incrementally: after the first poll only a small window at
offset 0 is asked for (just deep enough to cover the blocks still processing or unconfirmed, so
their status changes are seen), paging further only while everything on a page is new. With
conditional requests an unchanged window costs a 304 and no work at all.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from agent.devices.base import BlockingDriver, PollResult
from agent.devices.pool.catalog import CATALOG
from agent.devices.pool.client import PAGE_MAX, Clock, PoolClient
from agent.devices.pool.config import PoolConfig
from agent.devices.pool.normalise import (
    Row,
    block_row,
    pool_section,
    round_section,
    shift_row,
    top50_section,
    user_section,
)
from agent.errors import DeviceTimeoutError, UnknownCommandError

PENDING_STATUSES = frozenset({"processing", "unconfirmed"})
TRACK_LIMIT = 50  # rows remembered per list (the published ones plus older pending blocks)
SCAN_LIMIT = 200  # rows read in one poll at most while catching up after a long gap

Fetch = Callable[[int, int], list[dict[str, Any]]]
Change = tuple[Row | None, Row]


class Ledger:
    """The newest rows of an id-keyed, newest-first API list, read incrementally."""

    def __init__(self, keep: int, normalise: Callable[[dict[str, Any]], Row]) -> None:
        self.keep = keep
        self.rows: list[Row] = []  # newest first, down to the oldest pending row (>= keep)
        self.raw: list[dict[str, Any]] = []  # what the last read received
        self._normalise = normalise
        self._started = False
        self._first_page: Any = None
        self._newest_id: int | None = None  # rows at or below it are never news

    @property
    def published(self) -> list[Row]:
        return self.rows[: self.keep]

    def read(self, fetch: Fetch) -> list[Change]:
        """Fetch what is new or may have changed; return (old, new) for new rows and rows
        whose status changed. The first read sets the baseline and reports nothing."""
        size = self._window()
        first = fetch(size, 0)
        if self._started and first is self._first_page:
            return []  # 304: the window is exactly as it was
        self._first_page = first
        pages = [first]
        rows = [self._normalise(raw) for raw in first]
        while self._started and len(pages[-1]) == size and not self._caught_up(rows):
            if len(rows) >= SCAN_LIMIT:
                break
            offset, size = len(rows), min(PAGE_MAX, max(size, self.keep))
            pages.append(fetch(size, offset))
            rows.extend(self._normalise(raw) for raw in pages[-1])
        self.raw = first if len(pages) == 1 else [raw for page in pages for raw in page]
        return self._merge(rows)

    def _window(self) -> int:
        """Deep enough to reach the oldest pending row, plus one row of overlap or news."""
        if not self._started:
            return self.keep
        depth = max((i + 1 for i, row in enumerate(self.rows) if _pending(row)), default=0)
        return min(PAGE_MAX, max(2, depth + 1))

    def _caught_up(self, rows: list[Row]) -> bool:
        """Read down to the oldest pending row (or, without any, to the newest known one)."""
        if not self.rows:
            return len(rows) >= self.keep
        pending = [_row_id(row) for row in self.rows if _pending(row)]
        target = min(pending) if pending else _row_id(self.rows[0])
        return min(_row_id(row) for row in rows) <= target

    def _merge(self, rows: list[Row]) -> list[Change]:
        by_id = {row["id"]: row for row in self.rows}
        if rows:  # the read ran from offset 0 down to `oldest`: what it missed is gone
            oldest, read = min(_row_id(r) for r in rows), {r["id"] for r in rows}
            for gone in [i for i in by_id if i > oldest and i not in read]:
                del by_id[gone]
        newest = self._newest_id
        changes: list[Change] = []
        for row in rows:
            old = by_id.get(row["id"])
            if old is None:
                if newest is None or _row_id(row) > newest:  # else an old row resurfacing
                    changes.append((None, row))
            elif old.get("status") != row.get("status"):
                changes.append((old, row))
            by_id[row["id"]] = row
        ordered = sorted(by_id.values(), key=_row_id, reverse=True)
        if ordered:
            self._newest_id = max(newest or 0, _row_id(ordered[0]))
        # Keep an unbroken run from the top down to the oldest pending row, so that a row's
        # index here is its offset in the API and the next window is exactly deep enough.
        depth = max((i + 1 for i, row in enumerate(ordered) if _pending(row)), default=0)
        self.rows = ordered[: min(max(self.keep, depth), TRACK_LIMIT)]
        started, self._started = self._started, True
        return changes if started else []


class PoolDriver(BlockingDriver[PoolConfig]):
    catalog = CATALOG

    def __init__(
        self, config: PoolConfig, *, clock: Clock = time.monotonic, wall_clock: Clock = time.time
    ) -> None:
        super().__init__(config)
        key = config.api_key.get_secret_value() if config.api_key is not None else None
        self.client = PoolClient(
            config.url,
            api_key=key,
            auth=config.auth,
            timeout=config.timeout,
            verify=config.verify_tls,
            backoff_initial=config.backoff_initial,
            backoff_max=config.backoff_max,
            clock=clock,
            wall_clock=wall_clock,
        )
        self.blocks = Ledger(config.blocks_page, block_row)
        self.shifts = Ledger(config.shifts_page, shift_row)
        self._events: list[dict[str, Any]] = []  # kept until a poll succeeds
        self._bodies: dict[str, Any] = {}  # endpoint → last body, to skip re-normalising
        self._sections: dict[str, Any] = {}
        self._polling = threading.Lock()

    def poll_blocking(self) -> PollResult:
        # The runtime gives up on a slow poll but cannot stop its thread: never run two.
        if not self._polling.acquire(blocking=False):
            raise DeviceTimeoutError("the previous poll of this pool is still running")
        try:
            return self._poll()
        finally:
            self._polling.release()

    def _poll(self) -> PollResult:
        raw: dict[str, Any] = {}
        user = None
        if self.config.api_key is not None:  # first: a refused key costs one request
            raw["user"] = body = self.client.user(self.config.user)
            user = self._section("user", body, user_section)
        raw["round"] = body = self.client.round()
        pool = self._section("pool", body, lambda b: pool_section(b, self.config.url))
        round_ = self._section("round", body, round_section)
        self._events.extend(_block_events(self.blocks.read(self._fetch_blocks)))
        raw["blocks"] = self.blocks.raw
        self.shifts.read(self._fetch_shifts)
        raw["shifts"] = self.shifts.raw
        top50 = None
        if self.config.top50:
            raw["top50"] = body = self.client.top50()
            top50 = self._section("top50", body, top50_section)
        blocks = self.blocks.published
        state = {
            "pool": pool,
            "round": round_,
            "blocks": blocks,
            "latest_block": blocks[0] if blocks else None,
            "shifts": self.shifts.published,
            "top50": top50,
            "user": user,
        }
        events, self._events = self._events, []
        return PollResult(state=state, raw=raw, events=events)

    def execute_blocking(self, command: str, params: dict[str, Any]) -> Any:
        raise UnknownCommandError(f"the pool API is read-only; there is no command {command!r}")

    def close_blocking(self) -> None:
        self.client.close()

    def _section(self, name: str, body: Any, normalise: Callable[[Any], Any]) -> Any:
        """Normalise `body`, unless it is the very object seen last time (a 304 reuse)."""
        if self._bodies.get(name) is not body:
            self._sections[name] = normalise(body)
            self._bodies[name] = body
        return self._sections[name]

    def _fetch_blocks(self, size: int, offset: int) -> list[dict[str, Any]]:
        return self.client.blocks(max=size, offset=offset, commodity=self.config.commodity)

    def _fetch_shifts(self, size: int, offset: int) -> list[dict[str, Any]]:
        return self.client.shifts(max=size, offset=offset)


def _block_events(changes: list[Change]) -> list[dict[str, Any]]:
    """Oldest first, so a block found and confirmed between two polls reads in order."""
    events: list[dict[str, Any]] = []
    for old, new in reversed(changes):
        if old is None:
            events.append({"event": "block_found", "block": new})
        else:
            events.append(
                {"event": "block_status", "from": old["status"], "to": new["status"], "block": new}
            )
    return events


def _pending(row: Row) -> bool:
    return row.get("status") in PENDING_STATUSES


def _row_id(row: Row) -> int:
    return int(row["id"])
