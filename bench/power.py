"""Site power control benchmark (issue 8): the controller beside a naive baseline.

    python -m bench.power                 # 200 Whatsminers per fleet, about 17 minutes
    python -m bench.power --quick         # 40 miners, compressed scenarios, about 4 minutes

Two identical simulated fleets run side by side in one process, each behind its own agent on
one Mosquitto. Fleet A is steered by site power control (`power/set`); fleet B by the naive
baseline, which writes the same percent to every miner on every target change. Both get the
same target schedule: a step from full power to 60 % and back, a demand-response cut to 20 %,
and a solar day compressed into 10 minutes. A meter reads the simulated miners' true power and
hash rate twice a second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent import logs
from agent.config.settings import LoadedConfig, Settings
from agent.devices.whatsminer.config import WhatsminerConfig
from agent.devices.whatsminer.simulator import start_fleet
from agent.runtime.agent import Agent
from agent.simulate.fleet import LoopThread, SimFleet
from bench.procs import Mosquitto

BAND = 0.03  # "settled" = within ±3 % of the target
METER_S = 0.5


@dataclass
class Phase:
    name: str
    seconds: float
    target: Callable[[float], float]  # fraction of full power at t seconds into the phase
    update_s: float = 0.0  # 0: set once; else re-send the target this often


@dataclass
class Sample:
    t: float
    phase: str
    target_w: float
    power_w: float
    hashrate_ths: float


@dataclass
class Side:
    name: str
    fleet: SimFleet
    agent: Agent
    thread: LoopThread
    running: Future[None]
    full_w: float = 0.0
    samples: list[Sample] = field(default_factory=list)
    writes_start: int = 0
    restarts_start: int = 0


def scenario(quick: bool) -> list[Phase]:
    scale = 0.25 if quick else 1.0
    solar_s = 150.0 if quick else 600.0

    def solar(t: float) -> float:
        sun = max(0.0, math.sin(math.pi * t / solar_s))
        cloud = 0.25 if 0.55 < t / solar_s < 0.62 else 0.0  # a passing cloud
        return max(0.05, 0.9 * sun * (1 - cloud))

    return [
        Phase("step_down_60", 60 * scale + 15, lambda t: 0.6),
        Phase("step_up_100", 60 * scale + 15, lambda t: 1.0),
        Phase("dr_cut_20", 60 * scale + 15, lambda t: 0.2),
        Phase("dr_release", 90 * scale + 30, lambda t: 1.0),
        Phase("solar_day", solar_s, solar, update_s=5.0),
    ]


def agent_settings(
    broker: Mosquitto, fleet: SimFleet, agent_id: str, *, controlled: bool
) -> Settings:
    devices = [
        WhatsminerConfig(
            id=f"{agent_id}-wm{i}",
            kind="whatsminer",
            host=d.host,
            port=d.port,
            password=d.model.password,
            poll_interval=2.0,
        )
        for i, d in enumerate(fleet.devices)
    ]
    members = [d.id for d in devices] if controlled else []
    return Settings(
        agent={"id": agent_id, "log_level": "warning"},
        mqtt={"url": broker.url, "base_topic": "bench-power", "client_id": f"bench-{agent_id}"},
        homeassistant={"enabled": False},
        power={
            "enabled": controlled,
            "members": members,
            "ramp": "fast",
            "hold": 10,
            "min_percent": 50,
        },
        devices=devices,
    )


def start_agent(settings: Settings) -> tuple[Agent, LoopThread, Future[None]]:
    thread = LoopThread(settings.agent.id)
    agent = Agent(LoadedConfig(settings, None, []))
    running = asyncio.run_coroutine_threadsafe(agent.run(), thread.loop)
    if not agent.running.wait(30):
        raise SystemExit(f"agent {settings.agent.id} did not start")
    return agent, thread, running


class Operator:
    """The MQTT client that plays the site operator (A) and the naive baseline (B)."""

    def __init__(self, broker: Mosquitto) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-power-operator")
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        self.last_percent: int | None = None

    def controller_target(self, agent_id: str, watts: float) -> None:
        topic = f"bench-power/bridge/{agent_id}/power/set"
        self.client.publish(topic, json.dumps({"target_w": round(watts)}), qos=1)

    def naive_target(self, side: Side, fraction: float) -> None:
        percent = max(0, min(100, round(fraction * 100)))
        if percent == self.last_percent:
            return
        self.last_percent = percent
        for worker_id in side.agent.workers:
            self.client.publish(f"bench-power/{worker_id}/set/set_power_pct", str(percent), qos=1)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def meter(sim: LoopThread, side: Side, t: float, phase: str, target_w: float) -> Sample:
    def read() -> tuple[float, float]:
        power = hashrate = 0.0
        for device in side.fleet.devices:
            model = device.model
            now = model.now()
            power += model.power_w(now)
            hashrate += model.hashrate_hs(now)
        return power, hashrate / 1e12

    power, hashrate = sim.call(read)
    return Sample(t, phase, target_w, power, hashrate)


def counters(sim: LoopThread, side: Side) -> tuple[int, int]:
    def read() -> tuple[int, int]:
        writes = sum(
            1
            for d in side.fleet.devices
            for w in d.model.writes
            if w.code == 131 and w.command not in ("get_token",)
        )
        restarts = sum(d.model.btminer_restarts for d in side.fleet.devices)
        return writes, restarts

    return sim.call(read)


def run_schedule(
    sim: LoopThread, sides: list[Side], operator: Operator, phases: list[Phase]
) -> None:
    started = time.monotonic()
    controlled, naive = sides
    for phase in phases:
        phase_start = time.monotonic()
        next_update = phase_start
        print(f"  phase {phase.name} ({phase.seconds:.0f} s)", flush=True)
        while (elapsed := time.monotonic() - phase_start) < phase.seconds:
            fraction = phase.target(elapsed)
            if time.monotonic() >= next_update:
                operator.controller_target(
                    controlled.agent.settings.agent.id, fraction * controlled.full_w
                )
                operator.naive_target(naive, fraction)
                next_update = time.monotonic() + phase.update_s if phase.update_s else float("inf")
            now = time.monotonic() - started
            for side in sides:
                side.samples.append(meter(sim, side, now, phase.name, fraction * side.full_w))
            time.sleep(METER_S)


def settle_time(samples: list[Sample], hold_s: float = 5.0) -> float | None:
    """Seconds from the phase start until the power entered ±3 % and stayed for hold_s."""
    if not samples:
        return None
    t0 = samples[0].t
    entered: float | None = None
    for s in samples:
        inside = abs(s.power_w - s.target_w) <= BAND * s.target_w
        if inside and entered is None:
            entered = s.t
        elif not inside:
            entered = None
        if entered is not None and s.t - entered >= hold_s:
            return round(entered - t0, 1)
    return None


def overshoot(samples: list[Sample], before_w: float) -> float:
    """How far past the target the power went, in % of the target, against the step."""
    if not samples:
        return 0.0
    target = samples[0].target_w
    going_down = target < before_w
    worst = min(s.power_w for s in samples) if going_down else max(s.power_w for s in samples)
    past = (target - worst) if going_down else (worst - target)
    return round(max(0.0, past) / target * 100, 2)


def figures(side: Side, sim: LoopThread, hours: float) -> dict[str, Any]:
    by_phase: dict[str, list[Sample]] = {}
    for s in side.samples:
        by_phase.setdefault(s.phase, []).append(s)
    writes, restarts = counters(sim, side)
    miners = len(side.fleet.devices)
    solar = by_phase.get("solar_day", [])
    lit = [s for s in solar if s.target_w > 0]
    mae = (
        sum(abs(s.power_w - s.target_w) for s in lit) / sum(s.target_w for s in lit) * 100
        if lit
        else None
    )
    power = sum(s.power_w for s in side.samples) / max(1, len(side.samples))
    hashrate = sum(s.hashrate_ths for s in side.samples) / max(1, len(side.samples))
    return {
        "settle_s": {
            "step_down_60": settle_time(by_phase.get("step_down_60", [])),
            "step_up_100": settle_time(by_phase.get("step_up_100", [])),
            "dr_cut_20": settle_time(by_phase.get("dr_cut_20", [])),
        },
        "overshoot_pct": {
            "step_down_60": overshoot(by_phase.get("step_down_60", []), side.full_w),
            "step_up_100": overshoot(by_phase.get("step_up_100", []), side.full_w * 0.6),
            "dr_cut_20": overshoot(by_phase.get("dr_cut_20", []), side.full_w),
        },
        "solar_mean_abs_error_pct": None if mae is None else round(mae, 2),
        "writes_per_miner_per_hour": round((writes - side.writes_start) / miners / hours, 1),
        "btminer_restarts": restarts - side.restarts_start,
        "hashrate_ths_per_kw": round(hashrate / (power / 1000), 2) if power else None,
    }


def markdown(results: dict[str, Any]) -> str:
    a, b = results["controller"], results["naive"]
    rows = [
        ("settle step 100→60 % (s)", a["settle_s"]["step_down_60"], b["settle_s"]["step_down_60"]),
        ("settle step 60→100 % (s)", a["settle_s"]["step_up_100"], b["settle_s"]["step_up_100"]),
        (
            "settle DR cut to 20 % (s, target ≤ 30)",
            a["settle_s"]["dr_cut_20"],
            b["settle_s"]["dr_cut_20"],
        ),
        (
            "overshoot step down (%)",
            a["overshoot_pct"]["step_down_60"],
            b["overshoot_pct"]["step_down_60"],
        ),
        (
            "overshoot step up (%)",
            a["overshoot_pct"]["step_up_100"],
            b["overshoot_pct"]["step_up_100"],
        ),
        ("overshoot DR cut (%)", a["overshoot_pct"]["dr_cut_20"], b["overshoot_pct"]["dr_cut_20"]),
        (
            "solar day mean abs tracking error (%, target ≤ 5)",
            a["solar_mean_abs_error_pct"],
            b["solar_mean_abs_error_pct"],
        ),
        (
            "writes per miner per hour",
            a["writes_per_miner_per_hour"],
            b["writes_per_miner_per_hour"],
        ),
        ("btminer restarts caused", a["btminer_restarts"], b["btminer_restarts"]),
        ("hashrate kept per kW (TH/s per kW)", a["hashrate_ths_per_kw"], b["hashrate_ths_per_kw"]),
    ]
    lines = [
        f"Site power control, {results['miners']} simulated Whatsminers per fleet, miner clocks "
        f"x{results['time_scale']:g} (`{results['command']}`, {results['date']})",
        "",
        "| figure | controller | naive baseline |",
        "|---|---|---|",
        *(f"| {name} | {_cell(x)} | {_cell(y)} |" for name, x, y in rows),
        "",
        "Settle: from the target change until the fleet's true power is within ±3 % of the "
        "target and stays there 5 s (— = never within the phase).",
    ]
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    return "—" if value is None else str(value)


def plot(results_dir: Path, sides: list[Side]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(12, 5))
    first = sides[0].samples
    axis.plot([s.t for s in first], [s.target_w / 1000 for s in first], "k--", label="target")
    for side in sides:
        axis.plot(
            [s.t for s in side.samples], [s.power_w / 1000 for s in side.samples], label=side.name
        )
    axis.set_xlabel("seconds")
    axis.set_ylabel("site power (kW)")
    axis.legend()
    axis.set_title("Site power control: controller vs naive baseline")
    figure.tight_layout()
    figure.savefig(results_dir / "power_tracking.png", dpi=100)


async def _start_fleets(count: int, time_scale: float) -> list[SimFleet]:
    return [
        await start_fleet(count, time_scale=time_scale),
        await start_fleet(count, time_scale=time_scale),
    ]


def wait_learned(side: Side, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        power = side.agent.router.power
        if (
            power
            and len(power.tracks) == len(side.fleet.devices)
            and all(t.learned and t.online for t in power.tracks.values())
        ):
            return
        time.sleep(0.5)
    raise SystemExit("the controller did not learn every member's full power in time")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.power", description=__doc__)
    parser.add_argument("--miners", type=int, default=200, help="miners per fleet")
    parser.add_argument("--quick", action="store_true", help="40 miners, compressed scenarios")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument(
        "--time-scale",
        type=float,
        default=10.0,
        help="the simulated miners' clock speed: preheating (90 s) and power_on ramps pass this "
        "much faster, so the compressed day keeps a realistic ratio to miner physics",
    )
    args = parser.parse_args(argv)
    miners = 40 if args.quick and args.miners == 200 else args.miners
    args.out.mkdir(parents=True, exist_ok=True)
    logs.configure("warning", "console")
    broker = Mosquitto(Path(tempfile.mkdtemp(prefix="bench-power-")))
    broker.start()
    sim = LoopThread("simulators")
    fleets = sim.run(_start_fleets(miners, args.time_scale), timeout=300)
    sides = []
    for name, fleet, controlled in (("controller", fleets[0], True), ("naive", fleets[1], False)):
        agent, thread, running = start_agent(
            agent_settings(broker, fleet, name, controlled=controlled)
        )
        sides.append(Side(name, fleet, agent, thread, running))
    operator = Operator(broker)
    try:
        wait_learned(sides[0])
        for side in sides:
            side.full_w = sim.call(
                lambda side=side: sum(d.model.power_w(d.model.now()) for d in side.fleet.devices)
            )
            side.writes_start, side.restarts_start = counters(sim, side)
        phases = scenario(args.quick)
        started = time.monotonic()
        print(f"bench.power: {miners} miners per fleet, {sum(p.seconds for p in phases):.0f} s")
        run_schedule(sim, sides, operator, phases)
        hours = (time.monotonic() - started) / 3600
        results = {
            "command": "python -m bench.power" + (" --quick" if args.quick else ""),
            "date": time.strftime("%Y-%m-%d"),
            "miners": miners,
            "time_scale": args.time_scale,
            "controller": figures(sides[0], sim, hours),
            "naive": figures(sides[1], sim, hours),
        }
        (args.out / "power.json").write_text(json.dumps(results, indent=2))
        table = markdown(results)
        (args.out / "power.md").write_text(table)
        plot(args.out, sides)
        print(table)
    finally:
        operator.close()
        for side in sides:
            _stop(side)
        sim.run(_close(fleets), timeout=60)
        sim.stop()
        broker.stop()
    return 0


def _stop(side: Side) -> None:
    side.thread.loop.call_soon_threadsafe(side.agent.request_stop)
    side.running.result(30)
    side.thread.stop()


async def _close(fleets: list[SimFleet]) -> None:
    for fleet in fleets:
        await fleet.close()


if __name__ == "__main__":
    raise SystemExit(main())
