"""Energy counters for Home Assistant's Energy dashboard, integrated from polled power.

Each metered device (a kind whose catalog declares the `energy_kwh` state field) gets a
trapezoidal integral of its `power_w` readings; two readings further apart than three poll
intervals earn nothing (a gap is not a guess). The members of site power control share one
more counter, the site's, which adds what they add.

The counters live in `energy.json` in the state directory, written atomically at most once a
minute and at shutdown. What is published is the last value written, never the running sum
ahead of it: an agent that crashes between two writes restarts from a value at least as high
as anything Home Assistant has seen, so a counter never goes backwards.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.catalog.model import Catalog, EntityDescription, StateField
from agent.logs import get_logger

log = get_logger("energy")

ENERGY_FIELD = "energy_kwh"
POWER_FIELD = "power_w"
SITE_KEY = "@site"  # not a valid device id, so it cannot clash with one
FILE_NAME = "energy.json"
SAVE_INTERVAL_S = 60.0
MAX_GAP_POLLS = 3
DIGITS = 6  # 1 mWh


# What a metered kind's catalog lists (its power must be the `power_w` field).
ENERGY_STATE_FIELD = StateField(
    ENERGY_FIELD,
    "number",
    "energy used, integrated by the agent from power_w (persisted; null until a reading)",
    "kWh",
)
ENERGY_ENTITY = EntityDescription(
    "energy",
    "sensor",
    "Energy",
    value=ENERGY_FIELD,
    unit="kWh",
    device_class="energy",
    state_class="total_increasing",
    precision=3,
)


def metered(catalog: Catalog) -> bool:
    return any(f.path == ENERGY_FIELD for f in catalog.fields)


@dataclass(slots=True)
class EnergyMeter:
    """The trapezoidal integral of one power reading, in kWh."""

    total_kwh: float = 0.0
    last: tuple[float, float] | None = None  # (monotonic seconds, watts) of the last reading

    def add(self, at: float, watts: Any, max_gap_s: float) -> float:
        """Take one reading; returns the kWh it adds (0 for the first, after a gap or junk)."""
        if not _usable(watts):
            self.last = None
            return 0.0
        reading = float(watts)
        previous, self.last = self.last, (at, reading)
        if previous is None:
            return 0.0
        elapsed = at - previous[0]
        if elapsed <= 0 or elapsed > max_gap_s:
            return 0.0
        added = (previous[1] + reading) / 2 * elapsed / 3_600_000
        self.total_kwh += added
        return added


@dataclass
class EnergyBook:
    """Every counter of one agent, and the file they persist in."""

    directory: Path | None
    members: Collection[str] = ()
    clock: Callable[[], float] = time.monotonic
    on_saved: Callable[[], None] | None = None
    meters: dict[str, EnergyMeter] = field(default_factory=dict)
    saved: dict[str, float] = field(default_factory=dict)  # what is on disk, and published

    def __post_init__(self) -> None:
        self._warned = False
        self._dirty = False
        self.saved = self._load()
        self._saved_at = self.clock()

    @property
    def path(self) -> Path | None:
        return self.directory / FILE_NAME if self.directory else None

    def record(self, device_id: str, poll_interval: float, state: dict[str, Any]) -> None:
        """Integrate the state's power and put the device's published counter into it."""
        meter = self.meters.get(device_id)
        if meter is None:
            meter = self.meters[device_id] = EnergyMeter(self.saved.get(device_id, 0.0))
        added = meter.add(self.clock(), state.get(POWER_FIELD), MAX_GAP_POLLS * poll_interval)
        if meter.last is not None and device_id not in self.saved:
            self.saved[device_id] = 0.0  # seen: from now on the counter has a value
            self._dirty = True
        if added > 0:
            self._dirty = True
            if device_id in self.members:
                site = self.meters.setdefault(SITE_KEY, EnergyMeter(self.saved.get(SITE_KEY, 0.0)))
                site.total_kwh += added
        self.save_if_due()
        state[ENERGY_FIELD] = self.published(device_id)

    def published(self, key: str) -> float | None:
        value = self.saved.get(key)
        return None if value is None else round(value, DIGITS)

    def site_state(self) -> dict[str, Any]:
        return {"site_kwh": self.published(SITE_KEY) or 0.0, "members": sorted(self.members)}

    def save_if_due(self) -> None:
        if self._dirty and self.clock() - self._saved_at >= SAVE_INTERVAL_S:
            self.save()

    def save(self) -> None:
        """Write every counter (atomically: a crash leaves the old file or the new one)."""
        self._saved_at = self.clock()
        totals = dict(self.saved)
        for key, meter in self.meters.items():
            totals[key] = max(totals.get(key, 0.0), meter.total_kwh)
        if self.path is not None:
            try:
                _write_atomically(self.path, {"version": 1, "kwh": totals})
            except OSError as exc:
                self._warn("energy counters not saved", error=str(exc))
                return  # published values stay at what is on disk
        self.saved = totals
        self._dirty = False
        if self.on_saved is not None:
            self.on_saved()

    def _load(self) -> dict[str, float]:
        path = self.path
        if path is None or not path.exists():
            return {}
        try:
            body = json.loads(path.read_text())
            totals = body["kwh"]
            return {str(k): float(v) for k, v in totals.items() if _usable(v)}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            # Starting from zero is a new meter cycle for Home Assistant, not a crash here.
            self._warn("energy counters unreadable: starting from zero", error=str(exc))
            return {}

    def _warn(self, message: str, **details: Any) -> None:
        if not self._warned:
            log.warning(message, path=str(self.path), **details)
        self._warned = True


def site_entity(state_topic: str) -> EntityDescription:
    """The site counter on the bridge device, next to the site power target."""
    return EntityDescription(
        "site_energy",
        "sensor",
        "Site energy",
        value="site_kwh",
        unit="kWh",
        device_class="energy",
        state_class="total_increasing",
        precision=3,
        extra={"state_topic": state_topic},
    )


def state_directory(configured: str | None, environ: Mapping[str, str] = os.environ) -> Path:
    """The configured path, else systemd's StateDirectory=, else the XDG state home."""
    if configured:
        return Path(configured).expanduser()
    if environ.get("STATE_DIRECTORY"):
        return Path(environ["STATE_DIRECTORY"].split(":")[0])
    home = environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(home) / "edge-agent"


def _usable(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


def _write_atomically(path: Path, body: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(body, handle, separators=(",", ":"))
            handle.flush()
            os.fsync(handle.fileno())
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
