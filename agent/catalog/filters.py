"""Publish filters for a device's retained state, after Zigbee2MQTT's device options.

A live miner's state changes on every poll (uptime, share counters, a hash rate that wobbles),
so publishing every change means publishing every poll. A `PublishFilter` decides, poll by
poll, whether the state goes out now, is held, or is not worth sending:

- `immediate` fields (the kind's catalog: mining, power mode, errors, pools, settings) publish
  at once, past any debounce or throttle;
- `deadband` fields publish when they moved by at least their band since the last publish
  (absolute, or `"5%"` of the value last published);
- `quiet` fields never publish on their own; they ride along on the next publish;
- any other change publishes;
- `max_interval`: the state goes out at least this often while the device answers;
- `debounce` waits that long after a change for later polls and publishes the newest state
  (a change in a `debounce_ignore` field first sends the held state, so no value of it is
  lost); `throttle` sends at most one state per window, the newest one at the window's end;
- `filtered_attributes` are left out of the retained state altogether.

Pure: state and a clock in, a `Decision` out. The publisher (agent.runtime.publisher) sends
what it says and calls `due()` at `recheck_at`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from fnmatch import fnmatchcase
from typing import Any

from agent.catalog.model import Catalog, PublishDefaults

Clock = Callable[[], float]


class Trigger(Enum):
    IMMEDIATE = "immediate"
    CHANGE = "change"
    DEADBAND = "deadband"
    QUIET = "quiet"


@dataclass(frozen=True, slots=True)
class Band:
    """`|new - old| >= width` (absolute) or `>= width * |old|` (relative)."""

    width: float
    relative: bool = False

    def exceeded(self, old: Any, new: Any) -> bool:
        if not (_number(old) and _number(new)):
            return True  # a value appeared, vanished or changed type
        limit = self.width * abs(old) if self.relative else self.width
        return bool(abs(new - old) >= limit)


def parse_band(value: Any) -> Band:
    """`2`, `0.5` (absolute) or `"5%"` (relative); ValueError says what is accepted."""
    if isinstance(value, str) and value.strip().endswith("%"):
        width = _finite(value.strip()[:-1], value)
        return Band(width / 100, relative=True)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{value!r} is not a deadband; use a number (absolute) or '5%'")
    return Band(_finite(value, value))


def _finite(text: Any, original: Any) -> float:
    try:
        width = float(text)
    except ValueError:
        raise ValueError(f"{original!r} is not a deadband; use a number or '5%'") from None
    if not math.isfinite(width) or width < 0:
        raise ValueError(f"{original!r}: a deadband is a finite number ≥ 0")
    return width


@dataclass(frozen=True, slots=True)
class FilterRules:
    """What one device's filter obeys: its kind's defaults overlaid with its config."""

    immediate: tuple[str, ...] = ()
    deadband: tuple[tuple[str, Band], ...] = ()  # the device's; first match wins
    quiet: tuple[str, ...] = ()
    kind_deadband: tuple[tuple[str, Band], ...] = ()  # looked at after the device's own
    kind_quiet: tuple[str, ...] = ()
    filtered_attributes: tuple[str, ...] = ()
    debounce: float = 0.0
    debounce_ignore: tuple[str, ...] = ()
    throttle: float = 0.0
    max_interval: float = 300.0

    @classmethod
    def build(
        cls,
        defaults: PublishDefaults,
        overrides: Mapping[str, Any] | None,
        state_refresh: float,
    ) -> FilterRules:
        """Device patterns are looked at before the kind's, except `immediate`, which nothing
        overrides. `overrides` is the device's `publish` table, validated."""
        given = dict(overrides or {})
        device_bands = [(p, parse_band(v)) for p, v in (given.get("deadband") or {}).items()]
        kind_bands = [(p, parse_band(v)) for p, v in defaults.deadband.items()]
        max_interval = given.get("max_interval") or defaults.max_interval or state_refresh
        rules = cls(
            immediate=defaults.immediate,
            deadband=tuple(device_bands),
            quiet=tuple(given.get("quiet") or ()),
            filtered_attributes=tuple(given.get("filtered_attributes") or ()),
            debounce=float(given.get("debounce") or 0.0),
            debounce_ignore=tuple(given.get("debounce_ignore") or ()),
            throttle=float(given.get("throttle") or 0.0),
            max_interval=float(max_interval),
            kind_deadband=tuple(kind_bands),
            kind_quiet=defaults.quiet,
        )
        return _SHARED_RULES.setdefault(rules, rules)

    def classify(self, path: str) -> tuple[Trigger, Band | None]:
        if _matches(path, self.immediate):
            return Trigger.IMMEDIATE, None
        for pattern, band in self.deadband:
            if fnmatchcase(path, pattern):
                return Trigger.DEADBAND, band
        if _matches(path, self.quiet):
            return Trigger.QUIET, None
        for pattern, band in self.kind_deadband:
            if fnmatchcase(path, pattern):
                return Trigger.DEADBAND, band
        if _matches(path, self.kind_quiet):
            return Trigger.QUIET, None
        return Trigger.CHANGE, None


@dataclass(frozen=True, slots=True)
class Decision:
    """What to publish now (oldest first) and when to call `due()` again, if ever."""

    payloads: tuple[bytes, ...] = ()
    recheck_at: float | None = None


HOLD = Decision()


class PublishFilter:
    def __init__(self, rules: FilterRules, clock: Clock) -> None:
        self.rules = rules
        self.clock = clock
        self._published: dict[str, Any] | None = None  # the last state sent, as sent
        self._published_at = -math.inf
        self._pending: dict[str, Any] | None = None  # a state held by debounce or throttle
        self._send_at = math.inf  # when the pending state goes out
        self._blocked_until = -math.inf  # end of the throttle window
        self._triggers = _classified(rules)
        # Without debounce or throttle any change publishes at once: the first one decides.
        self._first_change_decides = not (rules.debounce or rules.throttle)

    @property
    def published(self) -> dict[str, Any] | None:
        """The last state sent, as sent: what a broker that lost it gets again."""
        return self._published

    def retained_state(self, state: Mapping[str, Any]) -> dict[str, Any]:
        """The state as it is published: `filtered_attributes` left out. Without any, the
        state itself: a copy of it would be one more dict kept per device."""
        if not self.rules.filtered_attributes and isinstance(state, dict):
            return state
        kept: dict[str, Any] = _without(dict(state), self.rules.filtered_attributes, "")
        return kept

    def offer(self, state: Mapping[str, Any], *, force: bool = False) -> Decision:
        """A new poll's state. `force`: a command's follow-up or a `get`, sent at once."""
        now = self.clock()
        kept = self.retained_state(state)
        if force or now - self._published_at >= self.rules.max_interval:
            return self._send_now(now, kept, ahead=self._flush_for(kept))
        trigger = self._trigger(kept, self._published)
        if trigger is Trigger.IMMEDIATE:
            return self._send_now(now, kept, ahead=self._flush_for(kept))
        if trigger is None:
            if self._pending is not None:  # keep the held state fresh
                self._pending = kept
            return self._wait()
        ahead = self._flush_for(kept)
        if self.rules.debounce and self._changed_since_held(kept):
            self._send_at = max(now + self.rules.debounce, self._blocked_until)
        elif self._pending is None:
            self._send_at = self._blocked_until
        if self._send_at <= now and not ahead:
            return self._send_now(now, kept)
        self._pending = kept
        return Decision(ahead, self._send_at)

    def due(self) -> Decision:
        """Called at a `recheck_at`: the held state, if its time has come."""
        now = self.clock()
        if self._pending is None:
            return HOLD
        if now < self._send_at:
            return self._wait()
        return self._send_now(now, self._pending)

    def _changed_since_held(self, kept: Mapping[str, Any]) -> bool:
        """Debounce restarts on a new change, not on each poll of the change it holds."""
        return self._pending is None or self._trigger(kept, self._pending) is not None

    def _trigger(self, new: Mapping[str, Any], old: Mapping[str, Any] | None) -> Trigger | None:
        """The strongest reason in `new` to publish over `old`, or None to publish nothing."""
        if old is None:
            return Trigger.IMMEDIATE  # nothing out yet: the first state goes at once
        if _same(old, new):
            return None
        return self._walk(old, new, "")

    def _walk(self, old: Any, new: Any, prefix: str) -> Trigger | None:
        """`_changes` and the verdict on each change in one recursive pass, over an `old` and a
        `new` that differ: a poll's state is walked on every poll, and a generator per level
        costs more than the walk itself. Stops at the first change that decides (IMMEDIATE;
        any change when nothing is held).

        What is equal in `new` is replaced by the same value's object in `old`: a device keeps
        two states (its latest and the one last published, mostly an older one) and they
        now share everything that did not change instead of holding two copies of it. Only
        objects are swapped, never values as `==` sees them (0.0 for -0.0, a dict with its keys
        in another order), and only where the walk looks anyway."""
        if type(old) in _SCALARS and type(new) in _SCALARS:
            return self._verdict(prefix, old, new)  # most changes: no container checks
        # `type(…) is dict` first: the ABC's isinstance check costs more, and states are dicts
        old_is_map = type(old) is dict or isinstance(old, Mapping)
        new_is_map = type(new) is dict or isinstance(new, Mapping)
        if old_is_map or new_is_map:
            before = old if old_is_map else {}
            after = new if new_is_map else {}
            if before or after:
                share = type(after) is dict
                strongest: Trigger | None = None
                for key, value in after.items():
                    previous = before.get(key, _MISSING)
                    if previous == value and type(previous) is type(value):  # _same, inlined
                        if share and previous is not value:
                            after[key] = previous  # an existing key: iteration goes on
                        continue  # most keys: the comparison here is cheaper than a call
                    if type(previous) in _SCALARS and type(value) in _SCALARS:
                        found = self._verdict(_join(prefix, key), previous, value)  # no call
                    else:
                        found = self._walk(previous, value, _join(prefix, key))
                    if found is not None:
                        if found is Trigger.IMMEDIATE or self._first_change_decides:
                            return found
                        strongest = found
                for key, value in before.items():
                    if key not in after:
                        found = self._walk(value, _MISSING, _join(prefix, key))
                        if found is not None:
                            if found is Trigger.IMMEDIATE or self._first_change_decides:
                                return found
                            strongest = found
                return self._with_container(strongest, prefix, old, new, old_is_map and new_is_map)
        elif isinstance(old, list) or isinstance(new, list):
            old_is_list, new_is_list = isinstance(old, list), isinstance(new, list)
            before_items = old if old_is_list else []
            after_items = new if new_is_list else []
            if before_items or after_items:
                strongest = None
                for index in range(max(len(before_items), len(after_items))):
                    previous = before_items[index] if index < len(before_items) else _MISSING
                    item = after_items[index] if index < len(after_items) else _MISSING
                    if previous == item and type(previous) is type(item):  # _same, inlined
                        if previous is not item:
                            after_items[index] = previous
                        continue
                    found = self._walk(previous, item, _join(prefix, index))
                    if found is not None:
                        if found is Trigger.IMMEDIATE or self._first_change_decides:
                            return found
                        strongest = found
                both = old_is_list and new_is_list
                return self._with_container(strongest, prefix, old, new, both)
        return self._verdict(prefix, old, new)

    def _with_container(
        self, strongest: Trigger | None, prefix: str, old: Any, new: Any, same_shape: bool
    ) -> Trigger | None:
        """A container that appeared or went is a change of its own path too."""
        if same_shape:
            return strongest
        found = self._verdict(prefix, old, new)
        return found if found is Trigger.IMMEDIATE or strongest is None else strongest

    def _verdict(self, path: str, before: Any, after: Any) -> Trigger | None:
        """What one changed leaf calls for: IMMEDIATE, CHANGE or nothing."""
        trigger, band = self._triggers.get(path) or self._classify(path)
        if trigger is Trigger.QUIET:
            return None
        if trigger is Trigger.DEADBAND and band is not None and not band.exceeded(before, after):
            return None
        return Trigger.IMMEDIATE if trigger is Trigger.IMMEDIATE else Trigger.CHANGE

    def _classify(self, path: str) -> tuple[Trigger, Band | None]:
        found = self._triggers.get(path)
        if found is None:
            found = self._triggers[path] = self.rules.classify(path)
        return found

    def _flush_for(self, kept: Mapping[str, Any]) -> tuple[bytes, ...]:
        """The held state, when a `debounce_ignore` field is about to change past it."""
        held = self._pending
        if held is None or not self.rules.debounce_ignore:
            return ()
        for path, _, _ in _changes(held, kept, ""):
            if _matches(path, self.rules.debounce_ignore):
                self._pending = None
                self._record(self.clock(), held)
                return (encode(held),)
        return ()

    def _send_now(
        self, now: float, kept: dict[str, Any], ahead: tuple[bytes, ...] = ()
    ) -> Decision:
        self._pending = None
        self._send_at = math.inf
        self._record(now, kept)
        return Decision((*ahead, encode(kept)))

    def _record(self, now: float, kept: dict[str, Any]) -> None:
        self._published = kept
        self._published_at = now
        self._blocked_until = now + self.rules.throttle

    def _wait(self) -> Decision:
        return Decision((), self._send_at) if self._pending is not None else HOLD


Classified = dict[str, tuple[Trigger, Band | None]]
# One FilterRules object and one classify() cache per distinct set of rules, not per device:
# a fleet's devices mostly share their kind's defaults, and each device's own copy of the
# bands (~1 KB) and of every state path its filter has looked at (up to ~150 strings, ~14 KB
# a Whatsminer over a long run) added up. Bounded by the distinct publish tables configured.
_SHARED_RULES: dict[FilterRules, FilterRules] = {}
_CLASSIFIED: dict[FilterRules, Classified] = {}


def _classified(rules: FilterRules) -> Classified:
    return _CLASSIFIED.setdefault(rules, {})


def encode(value: Any) -> bytes:
    """A state (or any JSON value) as it goes on the wire: compact, dates as text."""
    return json.dumps(value, separators=(",", ":"), default=str).encode()


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING = _Missing()
_SCALARS = frozenset({str, int, float, bool, type(None)})  # JSON's leaves


def _same(old: Any, new: Any) -> bool:
    """Nothing to look at: equal and of the same type (True is not 1), equal containers in
    one C-level comparison."""
    return bool(old == new and type(old) is type(new))


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _matches(path: str, patterns: Sequence[str]) -> bool:
    return any(fnmatchcase(path, pattern) for pattern in patterns)


def _join(prefix: str, key: Any) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def _changes(old: Any, new: Any, prefix: str) -> Iterator[tuple[str, Any, Any]]:
    """Every leaf that differs, as (dotted path, old, new); equal subtrees are skipped whole
    (one C-level comparison), so a poll that changed three numbers costs three visits."""
    if old == new and type(old) is type(new):
        return
    if isinstance(old, Mapping) or isinstance(new, Mapping):
        before = old if isinstance(old, Mapping) else {}
        after = new if isinstance(new, Mapping) else {}
        if before or after:
            for key in before.keys() | after.keys():
                path = _join(prefix, key)
                yield from _changes(before.get(key, _MISSING), after.get(key, _MISSING), path)
            if not (isinstance(old, Mapping) and isinstance(new, Mapping)):
                yield prefix, old, new  # a container appeared or went: the path itself changed
            return
    elif isinstance(old, list) or isinstance(new, list):
        before_items = old if isinstance(old, list) else []
        after_items = new if isinstance(new, list) else []
        if before_items or after_items:
            for index in range(max(len(before_items), len(after_items))):
                yield from _changes(
                    before_items[index] if index < len(before_items) else _MISSING,
                    after_items[index] if index < len(after_items) else _MISSING,
                    _join(prefix, index),
                )
            if not (isinstance(old, list) and isinstance(new, list)):
                yield prefix, old, new
            return
    yield prefix, old, new


def _without(value: Any, patterns: Sequence[str], prefix: str) -> Any:
    """`value` less every key whose dotted path matches one of `patterns`."""
    if not patterns:
        return value
    if isinstance(value, Mapping):
        return {
            key: _without(item, patterns, path)
            for key, item in value.items()
            if not _matches(path := _join(prefix, key), patterns)
        }
    if isinstance(value, list):
        return [_without(item, patterns, _join(prefix, i)) for i, item in enumerate(value)]
    return value


def sample_paths(catalog: Catalog) -> list[str]:
    """Every documented state path as the filter sees it (`boards[].x` → `boards.0.x`), with
    the containers above it, so that a pattern can be checked against the kind."""
    found: set[str] = set()
    for state_field in catalog.fields:
        path = state_field.path.replace("[]", ".0").replace("{}", ".name")
        if state_field.type in ("array", "object"):
            path += ".0" if state_field.type == "array" else ".name"
        parts = path.split(".")
        found.update(".".join(parts[: i + 1]) for i in range(len(parts)))
    return sorted(found)


def pattern_problems(catalog: Catalog, patterns: Sequence[str], where: str) -> list[str]:
    """A pattern that matches no field of the kind is a typo: say so at start."""
    paths = sample_paths(catalog)
    problems = []
    for pattern in patterns:
        if not any(fnmatchcase(path, pattern) for path in paths):
            problems.append(
                f"{where}: {pattern!r} matches no state field of {catalog.title} "
                "(patterns are globs over dotted paths, e.g. 'boards.*.temperature_c')"
            )
    return problems
