"""Site power control (design §9): steer the members' measured power to one target.

Every tick the controller reads the members' latest polls through its `PowerPort`, learns how
each miner lands (its power at 100 % and the ratio of measured to expected at the percent it
was given), plans with `agent.power.plan.allocate`, and sends what differs from the plan. What
the miners report outranks what the controller wrote: after a wake the wanted percent is
written again once the miner reports power, and a member whose reading stays off its plan for
two polls is written again. It never uses writes that restart btminer and never touches a
device outside `members`. Decisions are synchronous (`step(now)`), so they are unit-tested on
a fake port and a fake clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from dataclasses import dataclass
from typing import Any, Literal

from agent.config.settings import PowerSection
from agent.errors import ValidationError
from agent.logs import get_logger
from agent.power.plan import Assignment, MemberModel, allocate, fleet_max_w
from agent.power.port import MemberReading, Outcome, PowerPort, Write

log = get_logger("power")

Phase = Literal["awake", "asleep", "preheating", "starting"]

TICK_S = 1.0
LAND_FAST_S = 1.5  # a fast percent write lands within about a second
LAND_NORMAL_S = 300.0  # a normal percent write ramps over minutes
SETTLED_BAND = 0.03  # ±3 % of target counts as settled
PREHEAT_POLL_S = 1.0  # how often a preheat is asked whether it is complete
POWER_BACK = 0.1  # a woken miner reports power again above this fraction of its full power
RE_AIM = 0.01  # a new percent within 1 % of full power of the last aim re-aims, not reverses
OFF_PLAN_POLLS = 2  # landed readings off the plan before the member is written again
DEFAULT_STANDBY_W = 20.0
GAIN_LIMITS = (0.85, 1.15)  # a landing error; beyond it the miner is off its plan
INTEGRAL_LIMIT = 0.1  # site-level correction stays within ±10 % of the target
MAX_MARGIN = 0.05  # targets up to 5 % above the learned fleet maximum are clamped to it
RESTORE_WAIT_S = 3.0  # after a start, wait this long for the retained state before writing


@dataclass(slots=True)
class MemberTrack:
    """The controller's memory of one member: what it wrote, what it saw, what it learned."""

    model: MemberModel
    phase: Phase = "awake"
    written_percent: int | None = None
    wanted_percent: int | None = None  # written once a waking miner reports power again
    last_write: float = -math.inf
    last_direction: int = 0  # +1 more power, -1 less (hold applies to reversals)
    written_for: float | None = None  # the site target when the member was last written
    planned_w: float | None = None  # the watts its last percent aimed at
    pending: bool = False
    refresh_at: float | None = None
    preheat_started: float | None = None
    preheat_asked: float = -math.inf
    preheat_timed_out: bool = False
    woke_at: float | None = None
    reported_w: float | None = None
    mining: bool | None = None
    polled_at: float | None = None
    online: bool = False
    learned: bool = False
    settled: bool = False  # the latest reading reflects the latest write
    off_plan: int = 0  # consecutive landed readings off the plan
    note: str | None = None

    @property
    def waking(self) -> bool:
        return self.phase in ("preheating", "starting")

    def expected_w(self) -> float | None:
        """What the member should read now, given what was written and what it learned."""
        model = self.model
        if self.phase == "asleep":
            return model.standby_w
        if model.switch_only:
            return model.full_w
        if self.written_percent is None or self.waking:
            return None
        return model.full_w * self.written_percent / 100 * model.gain


class PowerController:
    def __init__(self, config: PowerSection, port: PowerPort, *, now: float | None = None):
        self.config = config
        self.port = port
        self.enabled = config.enabled
        self.ramp = config.ramp
        self.target_w: float | None = None
        self.tracks: dict[str, MemberTrack] = {}
        self.integral_w = 0.0
        self.restored = False
        self.started = time.monotonic() if now is None else now
        self._writes = 0
        self._saved: dict[str, dict[str, Any]] = {}  # retained members not seen yet
        self._last_payload: bytes | None = None
        self._last_publish = -math.inf
        self._task: asyncio.Task[None] | None = None
        self._nudge = asyncio.Event()  # a new target: step now, not at the next tick

    # lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="power")

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def reconfigure(self, config: PowerSection) -> None:
        self.config = config
        for gone in set(self.tracks) - set(config.members):
            del self.tracks[gone]

    async def _loop(self) -> None:
        while True:
            self._nudge.clear()
            try:
                self.step(time.monotonic())
            except Exception:  # a bad reading must not end site control
                log.exception("power step failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._nudge.wait(), TICK_S)

    # inputs ----------------------------------------------------------------------------

    def restore(self, payload: bytes) -> None:
        """The retained power state from before a restart: resume without rewriting."""
        if self.restored or not payload:
            return
        self.restored = True
        try:
            saved = json.loads(payload)
        except ValueError:
            return
        if not isinstance(saved, dict):
            return
        target = saved.get("target_w")
        self.target_w = float(target) if isinstance(target, int | float) else None
        if saved.get("ramp") in ("fast", "normal"):
            self.ramp = saved["ramp"]
        self.enabled = bool(saved.get("enabled", self.enabled))
        members = saved.get("members")
        if isinstance(members, dict):
            self._saved = {k: v for k, v in members.items() if isinstance(v, dict)}
        for member_id, track in self.tracks.items():
            if member_id in self._saved:
                _restore_member(track, self._saved.pop(member_id))
        log.info("power control resumed", target_w=self.target_w, ramp=self.ramp)

    def set_request(self, sub: str | None, payload: bytes) -> dict[str, Any]:
        """`power/set` (number, null or JSON) and `power/set/{target,ramp,enabled}`."""
        text = payload.decode("utf-8", errors="strict").strip() if payload else ""
        if sub in (None, "target"):
            return self._set_target_text(text)
        if sub == "ramp":
            return self._apply({"ramp": text})
        if sub == "enabled":
            word = text.lower()
            if word not in ("on", "off", "true", "false"):
                raise ValidationError(f"enabled must be ON or OFF, got {text!r}")
            self.enabled = word in ("on", "true")
            if not self.enabled:
                self.integral_w = 0.0
            return {"enabled": self.enabled}
        raise ValidationError(f"unknown power setting {sub!r}; use target, ramp or enabled")

    def _set_target_text(self, text: str) -> dict[str, Any]:
        if text.startswith("{"):
            try:
                body = json.loads(text)
            except ValueError as exc:
                raise ValidationError(f"power/set: not valid JSON: {exc}") from None
            if not isinstance(body, dict):
                raise ValidationError("power/set: expected a JSON object")
            return self._apply({k: v for k, v in body.items() if k != "transaction"})
        if text.lower() in ("null", "none", ""):
            return self._apply({"target_w": None})
        try:
            value = float(text)
        except ValueError:
            raise ValidationError(f"power target must be watts or null, got {text!r}") from None
        return self._apply({"target_w": value})

    def _apply(self, body: dict[str, Any]) -> dict[str, Any]:
        unknown = set(body) - {"target_w", "ramp", "enabled"}
        if unknown:
            raise ValidationError(f"power/set: unknown field(s) {', '.join(sorted(unknown))}")
        if "ramp" in body and body["ramp"] not in ("fast", "normal"):
            raise ValidationError(f"ramp must be fast or normal, got {body['ramp']!r}")
        if "target_w" in body:
            self._check_target(body["target_w"])
        if "enabled" in body:
            if not isinstance(body["enabled"], bool):
                raise ValidationError("enabled must be true or false")
            self.enabled = body["enabled"]
        self.ramp = body.get("ramp", self.ramp)
        if "target_w" in body:
            target = body["target_w"]
            # The fleet's maximum is itself learned from readings: a target within the margin
            # above it means "everything", not an error.
            maximum = self.fleet_max_w() or math.inf
            self.target_w = None if target is None else min(float(target), maximum)
            self.integral_w = 0.0
            self._nudge.set()
            log.info("power target", target_w=self.target_w, ramp=self.ramp)
        return {"target_w": self.target_w, "ramp": self.ramp, "enabled": self.enabled}

    def _check_target(self, value: Any) -> None:
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValidationError(f"target_w must be a number of watts, got {value!r}")
        if math.isnan(value) or math.isinf(value):
            raise ValidationError("target_w must be a finite number of watts")
        if value < 0:
            raise ValidationError(f"target_w cannot be negative, got {value:g}")
        maximum = self.fleet_max_w()
        if maximum and value > maximum * (1 + MAX_MARGIN):
            raise ValidationError(
                f"target_w {value:g} W is above what the members can draw ({maximum:.0f} W)"
            )

    def fleet_max_w(self) -> float:
        return fleet_max_w(t.model for t in self.tracks.values())

    def mqtt_lost(self) -> None:
        if self.config.on_mqtt_loss == "release" and self.target_w is not None:
            log.warning("mqtt lost: releasing site power control (on_mqtt_loss = release)")
            self.target_w = None

    # the control step ------------------------------------------------------------------

    def step(self, now: float) -> None:
        self._observe(now)
        if self.enabled and (self.restored or now - self.started > RESTORE_WAIT_S):
            self._steer(now)
        self._refresh_due(now)
        self._publish(now)

    def _observe(self, now: float) -> None:
        readings = self.port.readings(self.config.members)
        for member_id in self.config.members:
            reading = readings.get(member_id)
            if reading is None:
                continue
            track = self.tracks.get(member_id)
            if track is None:
                track = self.tracks[member_id] = self._new_track(reading)
                if member_id in self._saved:
                    _restore_member(track, self._saved.pop(member_id))
            self._read(track, reading, now)

    def _new_track(self, reading: MemberReading) -> MemberTrack:
        switch_only = reading.switch_only
        model = MemberModel(
            id=reading.id,
            switch_only=switch_only,
            full_w=float(reading.nominal_w or 0.0),
            floor_percent=float(self.config.min_percent),
            standby_w=0.0 if switch_only else DEFAULT_STANDBY_W,
            efficiency_j_th=math.inf if switch_only else 50.0,
        )
        track = MemberTrack(model=model, learned=switch_only and bool(reading.nominal_w))
        if reading.mining is False:
            track.phase = "asleep"
            model.awake = False
        return track

    def _read(self, track: MemberTrack, reading: MemberReading, now: float) -> None:
        track.online = bool(reading.online)
        if not track.online:
            waiting = reading.online is None
            track.note = "no reading yet" if waiting else "offline: left out of the site sum"
            return
        if track.note and track.note.startswith(("no reading", "offline")):
            track.note = None
        if reading.polled_at is None or reading.polled_at == track.polled_at:
            return  # nothing new since the last tick
        track.polled_at = reading.polled_at
        track.mining = reading.mining
        model = track.model
        if model.switch_only:
            mining = reading.mining is not False
            track.reported_w = model.full_w if mining else 0.0
        elif isinstance(reading.power_w, int | float):
            track.reported_w = float(reading.power_w)
        else:
            return
        if (
            reading.efficiency_j_th
            and reading.efficiency_j_th > 0
            and reading.mining is not False
            and track.phase == "awake"
            and track.written_percent in (None, 100)
        ):
            # Only at full power: throttled miners look less efficient, and a merit order
            # that moved with the throttle would make the controller flap.
            model.efficiency_j_th = float(reading.efficiency_j_th)
        self._learn(track, reading.polled_at, now)

    def _landed(self, track: MemberTrack, polled_at: float) -> bool:
        """The reading was taken after the last write had time to take effect."""
        land = LAND_FAST_S if self.ramp == "fast" else LAND_NORMAL_S
        return polled_at - track.last_write >= land and not track.pending

    def _learn(self, track: MemberTrack, polled_at: float, now: float) -> None:
        model = track.model
        power = track.reported_w or 0.0
        if track.phase == "starting":
            self._check_power_back(track, power, polled_at, now)
            return
        track.settled = self._landed(track, polled_at) and not track.waking
        if not track.settled:
            return
        if track.phase == "asleep":
            if track.mining is True:
                track.off_plan += 1  # it is mining although told to sleep
            else:
                model.standby_w = power
                track.off_plan = 0
            return
        if model.switch_only:
            track.off_plan = track.off_plan + 1 if track.mining is False else 0
            return
        percent = track.written_percent
        if not track.learned and percent in (None, 100) and track.mining is not False:
            model.full_w = power  # the stable mining power that percents refer to
            track.learned = True
            return
        if percent is None or model.full_w <= 0:
            return
        self._judge(track, power, percent)

    def _judge(self, track: MemberTrack, power: float, percent: int) -> None:
        """Landing error (learned as a gain) or off its plan (written again after two polls)."""
        model = track.model
        ratio = power / (model.full_w * percent / 100)
        if track.mining is not False and GAIN_LIMITS[0] <= ratio <= GAIN_LIMITS[1]:
            model.gain = 0.5 * model.gain + 0.5 * ratio
        expected = track.expected_w() or 0.0
        band = max(self.config.deadband_percent, SETTLED_BAND * 100) / 100 * model.full_w
        if track.mining is False or abs(power - expected) > band:
            track.off_plan += 1
        else:
            track.off_plan = 0

    def _check_power_back(
        self, track: MemberTrack, power: float, polled_at: float, now: float
    ) -> None:
        """A woken miner: once it reports power again, write the percent the plan wants."""
        model = track.model
        if track.woke_at is None or polled_at <= track.woke_at or track.pending:
            return
        if track.mining is False or power < POWER_BACK * model.full_w:
            return
        track.phase = "awake"
        percent = track.wanted_percent if track.wanted_percent is not None else 100
        self._send(track, Write("percent", percent, self.ramp), now, direction=0)

    def _steer(self, now: float) -> None:
        online = [t for t in self.tracks.values() if t.online and t.model.full_w > 0]
        for track in online:
            if track.waking:
                self._advance_wake(track, now)
        if not online:
            return
        if self.target_w is None:
            self._release(online, now)
            return
        steered = online
        if abs(self.measured_w() - self.target_w) <= self._deadband_w():
            # On target: only a member off its plan is written (other corrections inside the
            # deadband would only flap).
            steered = [t for t in online if t.off_plan >= OFF_PLAN_POLLS]
            if not steered:
                return
        target = self.target_w + self.integral_w
        plan = allocate(max(0.0, target), [t.model for t in online])
        over = self.measured_w() > self.target_w + self._deadband_w()
        wrote = [self._drive(track, plan[track.model.id], now, urgent=over) for track in steered]
        if not any(wrote):
            self._integrate(online)

    def _integrate(self, online: list[MemberTrack]) -> None:
        """Correct what per-miner gains cannot explain: only when nothing is being written
        and every member's reading reflects its last write."""
        assert self.target_w is not None
        if not all(t.settled and not t.off_plan for t in online):
            return  # an off-plan member is corrected by its own rewrite, not by the integral
        error = self.target_w - self.measured_w()
        if abs(error) <= self._deadband_w():
            return
        limit = INTEGRAL_LIMIT * self.target_w
        self.integral_w = max(-limit, min(limit, self.integral_w + 0.5 * error))

    def _deadband_w(self) -> float:
        return (self.target_w or 0.0) * self.config.deadband_percent / 100

    def _release(self, online: list[MemberTrack], now: float) -> None:
        """`null`: everything back to full, at once (no hold), whatever the miners kept."""
        for track in online:
            if track.written_percent is None and track.phase == "awake" and not track.off_plan:
                continue  # never written: it runs as it was before control started
            full = Assignment(True, None if track.model.switch_only else 100, track.model.full_w)
            self._drive(track, full, now, urgent=True)

    def _drive(self, track: MemberTrack, want: Assignment, now: float, *, urgent: bool) -> bool:
        """Start the write that brings a member to its plan; True when one is due."""
        if track.pending or now - track.last_write < LAND_FAST_S:
            return True  # one write at a time, and time for it to land before the next
        if track.waking:
            if want.awake:
                track.wanted_percent = want.percent
                return True
            return self._try(track, Write("sleep"), now, -1, urgent=urgent)
        corrective = track.off_plan >= OFF_PLAN_POLLS
        if not want.awake:
            if track.phase == "asleep" and not corrective:
                return False
            return self._try(track, Write("sleep"), now, -1, urgent=urgent)
        if track.phase == "asleep":
            return self._try(track, self._wake_write(track, want), now, +1, urgent=urgent)
        if want.percent is None or (want.percent == track.written_percent and not corrective):
            if corrective and track.model.switch_only:
                return self._try(track, Write("wake"), now, +1, urgent=urgent)
            return False
        if corrective and track.mining is False:
            track.phase = "asleep"  # it stopped on its own: wake it the normal way
            return self._try(track, self._wake_write(track, want), now, +1, urgent=urgent)
        write = Write("percent", want.percent, self.ramp)
        # An off-plan rewrite reverses nothing the controller did: hold never delays it.
        direction = 0 if corrective else self._direction(track, want)
        return self._try(track, write, now, direction, urgent=urgent)

    def _direction(self, track: MemberTrack, want: Assignment) -> int:
        """+1 more wanted watts than last time, -1 fewer, 0 the same watts re-aimed (a landing
        correction or an off-plan rewrite, which `hold` never delays)."""
        full = track.model.full_w
        before = track.planned_w if track.planned_w is not None else full
        delta = want.planned_w - before
        if abs(delta) <= RE_AIM * full:
            return 0
        return 1 if delta > 0 else -1

    def _wake_write(self, track: MemberTrack, want: Assignment) -> Write:
        if track.model.switch_only:
            return Write("wake")
        track.wanted_percent = want.percent
        return Write("preheat")

    def _try(
        self, track: MemberTrack, write: Write, now: float, direction: int, *, urgent: bool
    ) -> bool:
        """Send unless `hold` keeps this member: a reversal of direction within `hold` waits,
        unless the operator moved the target that way since (or the site is over target and
        the write reduces, or it is a release)."""
        reverses = track.last_direction and direction and direction != track.last_direction
        if reverses and now - track.last_write < self.config.hold:
            released = self.target_w is None
            moved = self._target_moved(track, direction)
            if not (released or moved or (urgent and direction < 0)):
                return True  # a change is due: do not let the integral chase it meanwhile
        if write.action == "percent" and write.percent is not None:
            track.planned_w = track.model.full_w * write.percent / 100 * track.model.gain
        if write.action == "preheat":
            track.phase = "preheating"
            track.preheat_started = now
            track.preheat_timed_out = False
            track.model.awake = True
        self._send(track, write, now, direction)
        return True

    def _target_moved(self, track: MemberTrack, direction: int) -> bool:
        if self.target_w is None or track.written_for is None:
            return False
        step = self.target_w - track.written_for
        return step * direction > self._deadband_w()

    def _advance_wake(self, track: MemberTrack, now: float) -> None:
        """Preheat until `complete` or `preheat_max`, then power on; then wait for power."""
        if track.pending:
            return
        if track.phase == "starting":
            self.port.refresh(track.model.id)  # see the power come back as soon as it does
            return
        assert track.preheat_started is not None
        waited = now - track.preheat_started
        if waited >= self.config.preheat_max:
            track.preheat_timed_out = True
            track.note = (
                f"pre_power_on did not report complete within {self.config.preheat_max:g} s: "
                "powered on without it"
            )
            log.warning("preheat timed out", device=track.model.id, waited_s=round(waited, 1))
            self._send(track, Write("wake"), now, +1)
        elif now - track.preheat_asked >= PREHEAT_POLL_S:
            track.preheat_asked = now
            self._send(track, Write("preheat"), now, +1)

    # writes (each a normal command with a normal result) --------------------------------

    def _send(self, track: MemberTrack, write: Write, now: float, direction: int) -> None:
        self._writes += 1
        track.pending = True
        track.last_write = now
        if direction:
            track.last_direction = direction
        track.written_for = self.target_w
        track.off_plan = 0
        track.settled = False

        def done(outcome: Outcome) -> None:
            track.pending = False
            self._done(track, write, outcome)

        self.port.write(track.model.id, write, f"power-{self._writes}", done)

    def _done(self, track: MemberTrack, write: Write, outcome: Outcome) -> None:
        if not outcome.ok:
            track.note = f"{write.action} failed: {outcome.error}"
            if write.action in ("preheat", "wake") and track.phase == "preheating":
                track.phase = "asleep"  # try again on a later tick
                track.model.awake = False
            return
        model = track.model
        if write.action == "percent":
            track.written_percent = write.percent
            if track.phase == "awake" and track.note and "failed" in track.note:
                track.note = None
            if self.ramp == "fast":
                track.refresh_at = track.last_write + LAND_FAST_S
        elif write.action == "sleep":
            track.phase = "asleep"
            model.awake = False
            track.preheat_started = None
        elif write.action == "preheat" and outcome.complete and track.phase == "preheating":
            self._send(track, Write("wake"), track.last_write, +1)
        elif write.action == "wake":
            model.awake = True
            if model.switch_only:
                track.phase = "awake"
            else:
                track.phase = "starting"
                track.woke_at = track.last_write
                if not track.preheat_timed_out:
                    track.note = None

    def _refresh_due(self, now: float) -> None:
        for track in self.tracks.values():
            if track.refresh_at is not None and now >= track.refresh_at and not track.pending:
                track.refresh_at = None
                self.port.refresh(track.model.id)

    # state -----------------------------------------------------------------------------

    def measured_w(self) -> float:
        return sum(t.reported_w or 0.0 for t in self.tracks.values() if t.online)

    def snapshot(self) -> dict[str, Any]:
        measured = self.measured_w()
        target = self.target_w
        waking = sorted(mid for mid, t in self.tracks.items() if t.waking)
        settled = (
            target is not None
            and abs(measured - target) <= SETTLED_BAND * max(target, 1.0)
            and not waking
        )
        return {
            "enabled": self.enabled,
            "target_w": target,
            "measured_w": round(measured, 1),
            "ramp": self.ramp,
            "settled": settled,
            "error_w": None if target is None else round(measured - target, 1),
            "fleet_max_w": round(self.fleet_max_w(), 1),
            "writes": self._writes,
            "waking": waking,
            "preheat_timed_out": sorted(
                mid for mid, t in self.tracks.items() if t.waking and t.preheat_timed_out
            ),
            "members": {mid: _member_view(t) for mid, t in sorted(self.tracks.items())},
        }

    def _publish(self, now: float) -> None:
        payload = json.dumps(self.snapshot(), separators=(",", ":")).encode()
        if payload != self._last_payload or now - self._last_publish > 30:
            self._last_payload = payload
            self._last_publish = now
            self.port.publish_state(payload)


def _restore_member(track: MemberTrack, entry: dict[str, Any]) -> None:
    percent = entry.get("planned_percent")
    track.written_percent = percent if isinstance(percent, int) else None
    if entry.get("awake") is False:
        track.phase = "asleep"
        track.model.awake = False
    full = entry.get("full_w")
    if isinstance(full, int | float) and full > 0:
        track.model.full_w = float(full)
        track.learned = True


def _member_view(track: MemberTrack) -> dict[str, Any]:
    model = track.model
    expected = track.expected_w()
    return {
        "online": track.online,
        "awake": track.phase != "asleep",
        "phase": track.phase,
        "planned_percent": track.written_percent,
        "planned_w": None if expected is None else round(expected, 1),
        "reported_w": track.reported_w,
        "full_w": round(model.full_w, 1),
        "efficiency_j_th": None if math.isinf(model.efficiency_j_th) else model.efficiency_j_th,
        "off_plan": track.off_plan >= OFF_PLAN_POLLS,
        "note": track.note,
    }
