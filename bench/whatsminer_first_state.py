"""How long a Whatsminer takes from agent start to its first full state on MQTT (issue 11).

    python -m bench.whatsminer_first_state              # 20 miners per join variant
    python -m bench.whatsminer_first_state --count 100  # more miners, the same figures

For every join variant of the simulator (the doc-strict two-join default first), a fresh agent
starts with `count` miners of that firmware at a 10 s poll interval, and one MQTT client notes
when each miner's first state with everything in it (boards, pools, PSU, model, mining)
arrives. Two runs per variant: `jitter = 0` (every first poll at once: the protocol's own
latency, learning included) and the agent's default jitter (first polls spread over one poll
interval, as a fleet starts in the field). Figures go to bench/results/whatsminer_first_state.*.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent import logs
from agent.config.settings import AgentSection, Settings
from agent.devices.whatsminer.config import WhatsminerConfig
from bench.power import start_agent
from bench.procs import Mosquitto
from edge_agent_sim.fleet import LoopThread, SimFleet
from edge_agent_sim.whatsminer import JOIN_VARIANTS, start_fleet

RESULTS = Path(__file__).parent / "results"
POLL_INTERVAL_S = 10.0
BASE = "bench-first-state"
DEFAULT_JITTER = AgentSection().jitter


def is_full(state: dict[str, Any]) -> bool:
    return (
        len(state.get("boards") or []) == 3
        and bool(state.get("pools"))
        and state.get("psu") is not None
        and state.get("model") is not None
        and state.get("mining") is not None
    )


class FirstStates:
    """Subscribes to every device state; keeps when each one first arrived full."""

    def __init__(self, broker: Mosquitto, run_id: str) -> None:
        self.prefix = f"{BASE}/{run_id}/"
        self.full_at: dict[str, float] = {}
        self.partial: dict[str, int] = {}
        self.done = threading.Event()
        self.expected = 0
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{run_id}")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", broker.port)
        self.client.subscribe(f"{BASE}/{run_id}/+", qos=1)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        device = message.topic.removeprefix(self.prefix)
        if not message.payload or device in self.full_at or device == "bridge":
            return
        if is_full(json.loads(message.payload)):
            self.full_at[device] = time.monotonic()
            if len(self.full_at) >= self.expected:
                self.done.set()
        else:
            self.partial[device] = self.partial.get(device, 0) + 1

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def settings_for(broker: Mosquitto, fleet: SimFleet, run_id: str, jitter: float) -> Settings:
    devices = [
        WhatsminerConfig(
            id=f"wm{i}",
            kind="whatsminer",
            host=d.host,
            port=d.port,
            password=d.model.password,
            poll_interval=POLL_INTERVAL_S,
        )
        for i, d in enumerate(fleet.devices)
    ]
    return Settings(
        agent={"id": run_id, "log_level": "warning", "jitter": jitter},
        mqtt={"url": broker.url, "base_topic": f"{BASE}/{run_id}", "client_id": f"a-{run_id}"},
        homeassistant={"enabled": False},
        devices=devices,
    )


def measure(
    broker: Mosquitto, sims: LoopThread, variant: str, count: int, jitter: float
) -> dict[str, Any]:
    run_id = f"{variant}-{'spread' if jitter else 'at-once'}".replace("_", "-")
    fleet = sims.run(start_fleet(count, **JOIN_VARIANTS[variant]))
    watcher = FirstStates(broker, run_id)
    watcher.expected = count
    settings = settings_for(broker, fleet, run_id, jitter)
    started = time.monotonic()
    agent, thread, running = start_agent(settings)
    try:
        complete = watcher.done.wait(POLL_INTERVAL_S * 3)
        failed = thread.call(lambda: sum(w.stats.failed for w in agent.workers.values()))
    finally:
        thread.loop.call_soon_threadsafe(agent.request_stop)
        running.result(30)
        thread.stop()
        watcher.close()
        sims.run(fleet.close())
    times = sorted(t - started for t in watcher.full_at.values())
    return {
        "variant": variant,
        "first_polls": "spread over one interval" if jitter else "at once",
        "miners": count,
        "full": len(times),
        "all_full": complete,
        "median_s": round(statistics.median(times), 3) if times else None,
        "max_s": round(max(times), 3) if times else None,
        "partial_states": sum(watcher.partial.values()),
        "failed_polls": failed,
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"Poll interval {POLL_INTERVAL_S:g} s; time from agent start to each miner's first full "
        "state on MQTT.",
        "",
        "| join variant | first polls | miners full | median | max | partial states | failed |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['first_polls']} | {r['full']} of {r['miners']} | "
            f"{r['median_s']} s | {r['max_s']} s | {r['partial_states']} | {r['failed_polls']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20, help="miners per run (20)")
    args = parser.parse_args(argv)
    logs.configure("warning", "console")
    variants = ["two", *sorted(v for v in JOIN_VARIANTS if v != "two")]
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        broker = Mosquitto(Path(workdir))
        broker.start()
        sims = LoopThread("sims")
        try:
            for variant in variants:
                for jitter in (0.0, DEFAULT_JITTER):
                    rows.append(measure(broker, sims, variant, args.count, jitter))
                    print(json.dumps(rows[-1]), flush=True)
        finally:
            sims.stop()
            broker.stop()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "whatsminer_first_state.json").write_text(json.dumps(rows, indent=2))
    table = markdown(rows)
    (RESULTS / "whatsminer_first_state.md").write_text(table)
    print(table)
    return 0 if all(r["all_full"] and r["failed_polls"] == 0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
