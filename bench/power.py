"""Site power control benchmark (issues 8, 11, 17): the controller beside a naive baseline.

    python -m bench.power                 # 20 and 200 miners x keep and reset: about 25 minutes
    python -m bench.power --quick         # the 20-miner home site, percent-keeping miners only
    python -m bench.power --sizes 200 --models reset

For each site size and power model, two identical simulated fleets run side by side in one
process, each behind its own agent on one Mosquitto. Fleet A is steered by site power control
(`power/set`); fleet B by the naive baseline, which writes the same percent to every miner on
every target change. Both get the same schedule: a step from full power to 60 % and back (an
upward step the awake miners cover), a demand-response cut to 20 % and a step up to 90 % (an
upward step that needs sleepers woken), the cut again and a release (`null`), and issue 17's
solar arc: full down to 45 % and back over 3 minutes, two cloud dips of -20 % for 15 s,
published every 5 s. Power models (the vendor document is silent): `keep`, miners come back
from power_off/power_on at their last percent; `reset`, at 100 %. A meter reads the simulated
miners' true power and hash rate twice a second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
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
from agent.runtime.agent import Agent
from bench.procs import Mosquitto
from edge_agent_sim.fleet import LoopThread, SimFleet
from edge_agent_sim.whatsminer import start_fleet

BAND = 0.03  # "settled" = within ±3 % of the target
METER_S = 0.5
FULL_BAND = 0.97  # a release is done at 97 % of full power
ARC_MAE_TARGET_PCT = {20: 3.0, 200: 2.0}  # issue 17; other sizes: the 200-miner one


@dataclass
class Phase:
    name: str
    seconds: float
    target: Callable[[float], float | None]  # fraction of full at t s in; None = release
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


ARC_S = 180.0
CLOUDS = ((52.0, 67.0), (120.0, 135.0))  # two dips of -20 % for 15 s


def solar_arc(t: float) -> float:
    """Issue 17's PV profile: full down to 45 % and back over 3 minutes, two cloud dips."""
    sun = 1.0 - 0.55 * math.sin(math.pi * min(t, ARC_S) / ARC_S)
    cloud = any(start <= t < end for start, end in CLOUDS)
    return sun * (0.8 if cloud else 1.0)


def scenario() -> list[Phase]:
    return [
        Phase("step_down_60", 25, lambda t: 0.6),
        Phase("step_up_100", 25, lambda t: 1.0),
        Phase("dr_cut_20", 30, lambda t: 0.2),
        Phase("step_up_wake_90", 30, lambda t: 0.9),
        Phase("dr_cut_20b", 30, lambda t: 0.2),
        Phase("release", 35, lambda t: None),
        Phase("solar_arc", ARC_S, solar_arc, update_s=5.0),
    ]


def agent_settings(
    broker: Mosquitto, fleet: SimFleet, agent_id: str, *, controlled: bool, hold: float
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
            "hold": hold,
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

    def __init__(self, broker: Mosquitto, name: str) -> None:
        client_id = f"bench-power-operator-{name}"
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        self.last_percent: int | None = None

    def controller_target(self, agent_id: str, watts: float | None) -> None:
        topic = f"bench-power/bridge/{agent_id}/power/set"
        body = None if watts is None else round(watts)
        self.client.publish(topic, json.dumps({"target_w": body}), qos=1)

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
        sent: float | None = None
        print(f"  phase {phase.name} ({phase.seconds:.0f} s)", flush=True)
        while (elapsed := time.monotonic() - phase_start) < phase.seconds:
            if time.monotonic() >= next_update:
                fraction = phase.target(elapsed)
                sent = 1.0 if fraction is None else fraction
                watts = None if fraction is None else fraction * controlled.full_w
                operator.controller_target(controlled.agent.settings.agent.id, watts)
                operator.naive_target(naive, sent)
                next_update = time.monotonic() + phase.update_s if phase.update_s else math.inf
            now = time.monotonic() - started
            assert sent is not None
            for side in sides:
                side.samples.append(meter(sim, side, now, phase.name, sent * side.full_w))
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


def time_to_full(samples: list[Sample], full_w: float) -> float | None:
    """Seconds from the phase start until the power first reached 97 % of full."""
    for s in samples:
        if s.power_w >= FULL_BAND * full_w:
            return round(s.t - samples[0].t, 1)
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
    arc = by_phase.get("solar_arc", [])
    mae = sum(abs(s.power_w - s.target_w) for s in arc) / sum(s.target_w for s in arc) * 100
    worst = max(abs(s.power_w - s.target_w) / s.target_w for s in arc) * 100
    power = sum(s.power_w for s in side.samples) / max(1, len(side.samples))
    hashrate = sum(s.hashrate_ths for s in side.samples) / max(1, len(side.samples))
    return {
        "settle_s": {
            "step_down_60": settle_time(by_phase.get("step_down_60", [])),
            "step_up_100": settle_time(by_phase.get("step_up_100", [])),
            "dr_cut_20": settle_time(by_phase.get("dr_cut_20", [])),
            "step_up_wake_90": settle_time(by_phase.get("step_up_wake_90", [])),
        },
        "release_to_full_s": time_to_full(by_phase.get("release", []), side.full_w),
        "overshoot_pct": {
            "step_down_60": overshoot(by_phase.get("step_down_60", []), side.full_w),
            "dr_cut_20": overshoot(by_phase.get("dr_cut_20", []), side.full_w),
        },
        "arc_mean_abs_error_pct": round(mae, 2),
        "arc_worst_error_pct": round(worst, 1),
        "writes_per_miner_per_hour": round((writes - side.writes_start) / miners / hours, 1),
        "btminer_restarts": restarts - side.restarts_start,
        "hashrate_ths_per_kw": round(hashrate / (power / 1000), 2) if power else None,
    }


ROWS: list[tuple[str, Callable[[dict[str, Any]], Any], Callable[[int], str]]] = [
    (
        "step up 60→100 %, awake miners (s to ±3 %)",
        lambda f: f["settle_s"]["step_up_100"],
        lambda n: "≤ 10",
    ),
    (
        "step up 20→90 %, miners wake (s to ±3 %)",
        lambda f: f["settle_s"]["step_up_wake_90"],
        lambda n: "≤ 15",
    ),
    (
        "release (`null`) after a cut to 20 % (s to ≥ 97 % of full)",
        lambda f: f["release_to_full_s"],
        lambda n: "≤ 30",
    ),
    ("step down 100→60 % (s to ±3 %)", lambda f: f["settle_s"]["step_down_60"], lambda n: ""),
    ("DR cut to 20 % (s to ±3 %)", lambda f: f["settle_s"]["dr_cut_20"], lambda n: "≤ 30"),
    ("overshoot DR cut (%)", lambda f: f["overshoot_pct"]["dr_cut_20"], lambda n: ""),
    (
        "solar arc mean abs error (%)",
        lambda f: f["arc_mean_abs_error_pct"],
        lambda n: f"≤ {ARC_MAE_TARGET_PCT.get(n, 2.0):g}",
    ),
    ("solar arc worst error (%)", lambda f: f["arc_worst_error_pct"], lambda n: ""),
    ("btminer restarts caused", lambda f: f["btminer_restarts"], lambda n: "0"),
    ("writes per miner per hour", lambda f: f["writes_per_miner_per_hour"], lambda n: ""),
    ("hashrate kept per kW (TH/s per kW)", lambda f: f["hashrate_ths_per_kw"], lambda n: ""),
]


def markdown(runs: list[dict[str, Any]], command: str) -> str:
    heads = [f"{r['miners']} miners, {r['model']}" for r in runs]
    lines = [
        f"Site power control, miner clocks x{runs[0]['time_scale']:g}, pre_power_on complete "
        f"after {runs[0]['preheat_s']:g} simulated s, hold {runs[0]['hold']:g} s "
        f"(`{command}`, {time.strftime('%Y-%m-%d')}); controller / naive baseline",
        "",
        "| figure | " + " | ".join(heads) + " | target |",
        "|---|" + "---|" * len(runs) + "---|",
    ]
    for name, pick, target in ROWS:
        cells = [f"{_cell(pick(r['controller']))} / {_cell(pick(r['naive']))}" for r in runs]
        goals = {r["miners"]: target(r["miners"]) for r in runs}
        goal = (
            next(iter(goals.values()))
            if len(set(goals.values())) == 1
            else ", ".join(f"{g} at {n}" for n, g in goals.items())
        )
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {goal} |")
    lines += [
        "",
        "Step times: from the target change until the fleet's true power is within ±3 % of "
        "the target and stays there 5 s (— = never within the phase). Release: until the true "
        "power first reaches 97 % of full. Solar arc: against the target last published.",
    ]
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    return "—" if value is None else str(value)


def plot(results_dir: Path, runs: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(runs), 1, figsize=(12, 3.2 * len(runs)), squeeze=False)
    for axis, run in zip(axes[:, 0], runs, strict=True):
        controller, naive = run["samples"]
        axis.plot(
            [s.t for s in controller],
            [s.target_w / 1000 for s in controller],
            "k--",
            label="target",
        )
        axis.plot(
            [s.t for s in controller],
            [s.power_w / 1000 for s in controller],
            label="site power control",
        )
        axis.plot(
            [s.t for s in naive],
            [s.power_w / 1000 for s in naive],
            alpha=0.5,
            label="naive baseline",
        )
        axis.set_ylabel("kW")
        axis.set_title(
            f"{run['miners']} miners, percent {run['model']} across power_on", fontsize=10
        )
        axis.legend(loc="lower left", fontsize=8)
    axes[-1, 0].set_xlabel("seconds")
    figure.tight_layout()
    figure.savefig(results_dir / "power_tracking.png", dpi=90)


async def _start_fleets(count: int, **options: Any) -> list[SimFleet]:
    return [await start_fleet(count, **options), await start_fleet(count, **options)]


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


def run_site(
    broker: Mosquitto, miners: int, model: str, args: argparse.Namespace
) -> dict[str, Any]:
    print(f"bench.power: {miners} miners per fleet, percent {model} across power_on", flush=True)
    sim = LoopThread("simulators")
    options = {
        "time_scale": args.time_scale,
        "power_on_percent": model,
        "preheat_s": args.preheat_s,
    }
    fleets = sim.run(_start_fleets(miners, **options), timeout=300)
    sides = []
    for name, fleet, controlled in (("controller", fleets[0], True), ("naive", fleets[1], False)):
        settings = agent_settings(
            broker, fleet, f"{name}-{miners}-{model}", controlled=controlled, hold=args.hold
        )
        agent, thread, running = start_agent(settings)
        sides.append(Side(name, fleet, agent, thread, running))
    operator = Operator(broker, f"{miners}-{model}")
    try:
        wait_learned(sides[0])
        for side in sides:
            side.full_w = sim.call(
                lambda side=side: sum(d.model.power_w(d.model.now()) for d in side.fleet.devices)
            )
            side.writes_start, side.restarts_start = counters(sim, side)
        started = time.monotonic()
        run_schedule(sim, sides, operator, scenario())
        hours = (time.monotonic() - started) / 3600
        return {
            "miners": miners,
            "model": model,
            "time_scale": args.time_scale,
            "preheat_s": args.preheat_s,
            "hold": args.hold,
            "controller": figures(sides[0], sim, hours),
            "naive": figures(sides[1], sim, hours),
            "samples": [sides[0].samples, sides[1].samples],
        }
    finally:
        operator.close()
        for side in sides:
            _stop(side)
        sim.run(_close(fleets), timeout=60)
        sim.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.power", description=__doc__)
    parser.add_argument("--sizes", default="20,200", help="miners per fleet, comma-separated")
    parser.add_argument("--models", default="keep,reset", help="keep and/or reset")
    parser.add_argument("--quick", action="store_true", help="20 miners, keep only")
    parser.add_argument("--hold", type=float, default=30.0, help="power.hold (the default)")
    parser.add_argument(
        "--preheat-s",
        type=float,
        default=30.0,
        help="simulated seconds until pre_power_on reports complete (issue 17)",
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument(
        "--time-scale",
        type=float,
        default=10.0,
        help="the simulated miners' clock speed: preheating and power_on ramps pass this "
        "much faster, so the compressed schedule keeps a realistic ratio to miner physics",
    )
    args = parser.parse_args(argv)
    sizes = [20] if args.quick else [int(n) for n in args.sizes.split(",")]
    models = ["keep"] if args.quick else args.models.split(",")
    args.out.mkdir(parents=True, exist_ok=True)
    logs.configure("warning", "console")
    broker = Mosquitto(Path(tempfile.mkdtemp(prefix="bench-power-")))
    broker.start()
    command = "python -m bench.power" + (" " + " ".join(argv or sys.argv[1:])).rstrip()
    try:
        runs = [run_site(broker, n, model, args) for n in sizes for model in models]
    finally:
        broker.stop()
    saved = [{**r, "samples": [_compact(side) for side in r["samples"]]} for r in runs]
    (args.out / "power.json").write_text(json.dumps({"command": command, "runs": saved}, indent=2))
    table = markdown(runs, command)
    (args.out / "power.md").write_text(table)
    plot(args.out, runs)
    print(table)
    return 0


def _compact(samples: list[Sample]) -> list[tuple[float, str, float, float]]:
    return [(round(s.t, 2), s.phase, round(s.target_w), round(s.power_w)) for s in samples]


def _stop(side: Side) -> None:
    side.thread.loop.call_soon_threadsafe(side.agent.request_stop)
    side.running.result(30)
    side.thread.stop()


async def _close(fleets: list[SimFleet]) -> None:
    for fleet in fleets:
        await fleet.close()


if __name__ == "__main__":
    raise SystemExit(main())
