"""Site power control (design §9): steer the members' measured power to one target.

Once a second the controller reads the members' latest polled power, learns how each miner
lands (its power at 100 % and the ratio of measured to expected at the percent it was given),
plans with `agent.power.plan.allocate`, and writes only what differs from what it last wrote,
through the normal command path (each write gets a normal result on the device's result topic).
It never uses writes that restart btminer (power modes, adjust_power_limit) and never touches a
device outside `members`.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.config.settings import PowerSection
from agent.errors import AgentError, ValidationError
from agent.logs import get_logger
from agent.power.plan import Assignment, MemberModel, allocate, fleet_max_w

if TYPE_CHECKING:
    from agent.runtime.agent import Agent
    from agent.runtime.worker import DeviceWorker

log = get_logger("power")

TICK_S = 1.0
LAND_FAST_S = 1.5  # set_power_pct lands within about a second
LAND_NORMAL_S = 300.0  # set_power_pct_v2 ramps over minutes
SETTLED_BAND = 0.03  # ±3 % of target counts as settled
PREHEAT_POLL_S = 2.0
PREHEAT_MAX_S = 600.0
DEFAULT_STANDBY_W = 20.0
GAIN_LIMITS = (0.7, 1.3)
INTEGRAL_LIMIT = 0.1  # site-level correction stays within ±10 % of the target
MAX_MARGIN = 0.05  # targets up to 5 % above the learned fleet maximum are clamped to it


@dataclass(slots=True)
class MemberTrack:
    """The controller's memory of one member: what it wrote and what it learned."""

    model: MemberModel
    written_percent: int | None = None
    written_awake: bool | None = None
    last_write: float = float("-inf")  # monotonic, for hold
    last_write_wall: float = float("-inf")  # wall clock, to compare with poll times
    busy: bool = False
    preheat_started: float | None = None
    reported_w: float | None = None
    online: bool = False
    learned: bool = False
    settled: bool = False  # the latest reading reflects the latest write
    note: str | None = None


class PowerController:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.config: PowerSection = agent.settings.power
        self.enabled = self.config.enabled
        self.ramp = self.config.ramp
        self.target_w: float | None = None
        self.tracks: dict[str, MemberTrack] = {}
        self.integral_w = 0.0
        self.restored = False
        self.started = time.monotonic()
        self._writes = 0
        self._last_payload: bytes | None = None
        self._last_publish = float("-inf")
        self._task: asyncio.Task[None] | None = None

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
            try:
                await self.step()
            except Exception:  # a bad reading must not end site control
                log.exception("power step failed")
            await asyncio.sleep(TICK_S)

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
        ramp = saved.get("ramp")
        if ramp in ("fast", "normal"):
            self.ramp = ramp
        self.enabled = bool(saved.get("enabled", self.enabled))
        for member_id, entry in (saved.get("members") or {}).items():
            if member_id in self.config.members and isinstance(entry, dict):
                self._restore_member(member_id, entry)
        log.info("power control resumed", target_w=self.target_w, ramp=self.ramp)

    def _restore_member(self, member_id: str, entry: dict[str, Any]) -> None:
        track = self.tracks.get(member_id) or self._new_track(member_id)
        if track is None:
            return
        percent = entry.get("planned_percent")
        track.written_percent = percent if isinstance(percent, int) else None
        track.written_awake = entry.get("awake") if isinstance(entry.get("awake"), bool) else None
        full = entry.get("full_w")
        if isinstance(full, int | float) and full > 0:
            track.model.full_w = float(full)
            track.learned = True
        self.tracks[member_id] = track

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

    async def step(self) -> None:
        now = time.monotonic()
        self._observe(now)
        if self.enabled and self._ready(now):
            self._steer(now)
        self._publish(now)

    def _ready(self, now: float) -> bool:
        # Give the retained state a moment to arrive after a restart before writing anything.
        return self.restored or now - self.started > 3.0

    def _observe(self, now: float) -> None:
        for member_id in self.config.members:
            worker = self.agent.workers.get(member_id)
            track = self.tracks.get(member_id) or self._new_track(member_id)
            if worker is None or track is None:
                continue
            self.tracks[member_id] = track
            self._read(track, worker)

    def _new_track(self, member_id: str) -> MemberTrack | None:
        worker = self.agent.workers.get(member_id)
        if worker is None:
            return None
        nominal = getattr(worker.config, "nominal_w", None)
        switch_only = worker.config.kind == "xmrig"
        model = MemberModel(
            id=member_id,
            switch_only=switch_only,
            full_w=float(nominal or 0.0),
            floor_percent=float(self.config.min_percent),
            standby_w=0.0 if switch_only else DEFAULT_STANDBY_W,
            efficiency_j_th=math.inf if switch_only else 50.0,
        )
        return MemberTrack(model=model, learned=switch_only and bool(nominal))

    def _read(self, track: MemberTrack, worker: DeviceWorker) -> None:
        state = worker.state or {}
        track.online = bool(worker.available) and bool(state)
        if not track.online:
            waiting = worker.available is None
            track.note = "no reading yet" if waiting else "offline: left out of the site sum"
            return
        track.note = None
        mining = bool(state.get("mining", True))
        model = track.model
        model.awake = mining
        if model.switch_only:
            track.reported_w = model.full_w if mining else 0.0
            track.settled = not track.busy
            return
        power = state.get("power_w")
        if not isinstance(power, int | float):
            return
        track.reported_w = float(power)
        efficiency = state.get("efficiency_j_th")
        at_full = track.written_percent in (None, 100)
        if isinstance(efficiency, int | float) and efficiency > 0 and mining and at_full:
            # Only at full power: throttled miners look less efficient, and a merit order
            # that moved with the throttle would make the controller flap.
            model.efficiency_j_th = float(efficiency)
        self._learn(track, float(power), mining, worker.stats.last_success or 0.0)

    def _landed(self, track: MemberTrack, polled_at: float) -> bool:
        """The reading was taken after the last write had time to take effect."""
        land = LAND_FAST_S if self.ramp == "fast" else LAND_NORMAL_S
        return polled_at - track.last_write_wall >= land and not track.busy

    def _learn(self, track: MemberTrack, power: float, mining: bool, polled_at: float) -> None:
        model = track.model
        track.settled = self._landed(track, polled_at)
        if not mining:
            if track.settled:
                model.standby_w = power
            return
        percent = track.written_percent
        if not track.learned and (percent is None or percent == 100):
            model.full_w = power  # the stable mining power that percents refer to
            track.learned = True
            return
        if percent is None or not track.settled or model.full_w <= 0:
            return
        expected = model.full_w * percent / 100
        ratio = power / expected if expected > 0 else 1.0
        model.gain = min(GAIN_LIMITS[1], max(GAIN_LIMITS[0], 0.5 * model.gain + 0.5 * ratio))

    def _steer(self, now: float) -> None:
        online = [t for t in self.tracks.values() if t.online and t.model.full_w > 0]
        if not online:
            return
        if self.target_w is None:
            self._release(online, now)
            return
        if abs(self.measured_w() - self.target_w) <= self._deadband_w():
            return  # on target: corrections inside the deadband would only flap
        target = self.target_w + self.integral_w
        plan = allocate(max(0.0, target), [t.model for t in online])
        over = self.measured_w() > self.target_w * (1 + self.config.deadband_percent / 100)
        wrote = [self._drive(track, plan[track.model.id], now, urgent=over) for track in online]
        if not any(wrote):
            self._integrate(online)

    def _integrate(self, online: list[MemberTrack]) -> None:
        """Correct what per-miner gains cannot explain: only when nothing is being written
        and every member's reading reflects its last write."""
        assert self.target_w is not None
        if not all(t.settled for t in online):
            return
        error = self.target_w - self.measured_w()
        if abs(error) <= self._deadband_w():
            return
        limit = INTEGRAL_LIMIT * self.target_w
        self.integral_w = max(-limit, min(limit, self.integral_w + 0.5 * error))

    def _deadband_w(self) -> float:
        return (self.target_w or 0.0) * self.config.deadband_percent / 100

    def _release(self, online: list[MemberTrack], now: float) -> None:
        for track in online:
            if track.written_awake is False or (track.written_percent or 100) < 100:
                full = Assignment(
                    True, None if track.model.switch_only else 100, track.model.full_w
                )
                self._drive(track, full, now, urgent=False)

    def _drive(self, track: MemberTrack, want: Assignment, now: float, *, urgent: bool) -> bool:
        """Start the write that brings a member to its plan; True when one is under way."""
        if track.busy:
            return True
        model = track.model
        if not want.awake and model.awake:
            write = self._sleep(track)
        elif want.awake and not model.awake:
            write = self._wake(track, want.percent)
        elif want.awake and want.percent is not None and want.percent != track.written_percent:
            write = self._set_percent(track, want.percent)
        else:
            return False
        held = now - track.last_write < self.config.hold
        reducing = not want.awake or (want.percent or 100) < (track.written_percent or 100)
        if held and not (urgent and reducing):
            write.close()
            return True  # a change is due: do not let the integral chase it meanwhile
        self._spawn(track, write)
        return True

    def _spawn(self, track: MemberTrack, coro: Any) -> None:
        track.busy = True
        task = self.agent.spawn(coro)
        task.add_done_callback(lambda _: setattr(track, "busy", False))

    # writes (each a normal command with a normal result) --------------------------------

    async def _command(self, track: MemberTrack, command: str, params: dict[str, Any]) -> Any:
        worker = self.agent.workers.get(track.model.id)
        if worker is None:
            raise AgentError(f"{track.model.id} is no longer configured")
        self._writes += 1
        track.last_write = time.monotonic()
        track.last_write_wall = time.time()
        return await self.agent.router.execute_internal(
            worker, command, params, transaction=f"power-{self._writes}"
        )

    async def _set_percent(self, track: MemberTrack, percent: int) -> None:
        command = "set_power_pct" if self.ramp == "fast" else "set_power_pct_v2"
        if await self._ok(track, command, {"percent": percent}):
            track.written_percent = percent
            track.written_awake = True

    async def _sleep(self, track: MemberTrack) -> None:
        command = "pause" if track.model.switch_only else "power_off"
        if await self._ok(track, command, {}):
            track.written_awake = False
            track.model.awake = False

    async def _wake(self, track: MemberTrack, percent: int | None) -> None:
        if track.model.switch_only:
            if await self._ok(track, "resume", {}):
                track.written_awake = True
                track.model.awake = True
            return
        if not await self._preheat(track):
            return
        if await self._ok(track, "power_on", {}):
            track.written_awake = True
            track.model.awake = True
            track.preheat_started = None
            if percent is not None and percent < 100:
                await self._set_percent(track, percent)
            else:
                track.written_percent = 100

    async def _preheat(self, track: MemberTrack) -> bool:
        """pre_power_on until the miner says `complete` (or it has waited long enough)."""
        track.preheat_started = track.preheat_started or time.monotonic()
        while time.monotonic() - track.preheat_started < PREHEAT_MAX_S:
            result = await self._command(track, "pre_power_on", {})
            if not result["ok"]:
                track.note = f"pre_power_on failed: {result['error']['message']}"
                return False
            if _complete(result.get("data")):
                return True
            await asyncio.sleep(PREHEAT_POLL_S)
        return True  # preheating only speeds power_on up; waking must not hang forever

    async def _ok(self, track: MemberTrack, command: str, params: dict[str, Any]) -> bool:
        result = await self._command(track, command, params)
        if not result["ok"]:
            track.note = f"{command} failed: {result['error']['message']}"
        return bool(result["ok"])

    # state -----------------------------------------------------------------------------

    def measured_w(self) -> float:
        return sum(t.reported_w or 0.0 for t in self.tracks.values() if t.online)

    def snapshot(self) -> dict[str, Any]:
        measured = self.measured_w()
        target = self.target_w
        waking = any(t.preheat_started is not None for t in self.tracks.values())
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
            "members": {mid: _member_view(t) for mid, t in sorted(self.tracks.items())},
        }

    def _publish(self, now: float) -> None:
        payload = json.dumps(self.snapshot(), separators=(",", ":")).encode()
        if payload != self._last_payload or now - self._last_publish > 30:
            self._last_payload = payload
            self._last_publish = now
            self.agent.link.publish_retained(self.agent.topics.power, payload)


def _member_view(track: MemberTrack) -> dict[str, Any]:
    model = track.model
    planned_w = None
    if track.written_awake is False:
        planned_w = model.standby_w
    elif track.written_percent is not None and not model.switch_only:
        planned_w = round(model.full_w * track.written_percent / 100 * model.gain, 1)
    elif model.switch_only:
        planned_w = model.full_w
    return {
        "online": track.online,
        "awake": track.written_awake if track.written_awake is not None else model.awake,
        "planned_percent": track.written_percent,
        "planned_w": planned_w,
        "reported_w": track.reported_w,
        "full_w": round(model.full_w, 1),
        "efficiency_j_th": None if math.isinf(model.efficiency_j_th) else model.efficiency_j_th,
        "note": track.note,
    }


def _complete(data: Any) -> bool:
    if isinstance(data, dict):
        value = data.get("complete")
        return value is True or str(value).lower() == "true"
    return False
