"""Fleet-scale benchmark (issue 6): a real Mosquitto, simulated miners in processes of their own,
`python -m agent run -c FILE` in its own process, measured from outside.

    python -m bench.fleet                       # 2,000 Whatsminers + 500 XMRig, 120 s window
    python -m bench.fleet --quick               # smoke run: small fleet, short windows
    python -m bench.fleet --profile             # the same with py-spy on the agent

Phases, one after the other on the same simulated miners:
  1. fleet: the agent with the whole fleet; startup until every device has published its
     first state, one more poll interval to settle, then the measured window, with
     `--commands` commands spread over it.
  2. whatsminers-only: the agent with the Whatsminers alone, no commands: its CPU per device
     poll is compared with the references, which poll only Whatsminers.
  3. references: pyasic, the bare-socket floor and two more floors (bench/references.py).
Figures go to OUT/results.json and OUT/results.md, plots to OUT/*.png, logs to OUT/logs/.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import analysis, report
from bench.observer import Command, Observer
from bench.procs import REPO, AgentProcess, Mosquitto, Sampled, Sampler, SimProcess, wait_until
from bench.references import NAMES

BASE = "edge-agent"
PREFIX = "homeassistant"
REFERENCES = NAMES  # every poller bench/references.py offers, in its order
DEFAULTS = {
    "whatsminers": 2000,
    "xmrig": 500,
    "duration": 120.0,
    "ratio_duration": 60.0,
    "ref_duration": 20.0,
    "commands": 500,
}
QUICK = {
    "whatsminers": 200,
    "xmrig": 50,
    "duration": 20.0,
    "ratio_duration": 10.0,
    "ref_duration": 4.0,
    "commands": 40,
}


@dataclass
class Options:
    whatsminers: int
    xmrig: int
    duration: float
    interval: float
    commands: int
    ratio_duration: float
    ref_duration: float
    pyasic_concurrency: int
    sim_procs: int
    startup_timeout: float
    out: Path
    profile: bool
    trace_memory: bool
    references: bool
    seed: int
    argv: list[str]


@dataclass
class Tick:
    """One health request: its response, and the agent's CPU and RSS right after."""

    t: float
    latency_s: float | None
    health: dict[str, Any] | None
    cpu_s: float | None
    rss: int | None
    user_s: float | None = None
    system_s: float | None = None


@dataclass
class Target:
    kind: str  # "whatsminer" or "xmrig"
    device: str  # the agent's device id
    sim_key: str  # how the simulator names it
    config: dict[str, Any]


@dataclass
class PhaseRun:
    name: str
    devices: int
    started: float
    ticks: list[Tick] = field(default_factory=list)
    window: tuple[int, int] | None = None  # tick indices
    marks: tuple[int, int] | None = None  # observer message indices
    startup: dict[str, Any] = field(default_factory=dict)
    commands: list[Command] = field(default_factory=list)
    missing_results: int = 0
    peak_rss: int | None = None
    exit_code: int | None = None
    sims_cpu: tuple[float, float] | None = None
    observer: Observer | None = None
    whatsminer_requests: int | None = None  # served by the simulators during the phase
    only_whatsminers: bool = False
    memory_top: Any = None


class Bench:
    def __init__(self, options: Options) -> None:
        self.o = options
        self.out = options.out
        self.logs = self.out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.sampler = Sampler()
        self.mosquitto = Mosquitto(self.logs)
        self.sims: list[SimProcess] = []
        self.targets: list[Target] = []
        self.rng = random.Random(options.seed)

    # ----------------------------------------------------------- the run

    def run(self) -> dict[str, Any]:
        started = datetime.now(UTC).isoformat(timespec="seconds")
        self.mosquitto.start()
        try:
            self._start_sims()
            self.sampler.start()
            fleet = self._agent_phase("fleet", self.targets, self.o.duration, self.o.commands)
            only = only_xmrig = None
            whatsminers = [t for t in self.targets if t.kind == "whatsminer"]
            if self.o.ratio_duration > 0 and whatsminers and self.o.xmrig:
                only = self._agent_phase("whatsminers-only", whatsminers, self.o.ratio_duration, 0)
            xmrigs = [t for t in self.targets if t.kind == "xmrig"]
            if self.o.ratio_duration > 0 and xmrigs and whatsminers:
                only_xmrig = self._agent_phase("xmrig-only", xmrigs, self.o.ratio_duration, 0)
            references = self._references() if self.o.references and whatsminers else {}
            writes = self._sim_writes()
        finally:
            self._stop_all()
        return analysis.figures(self, fleet, only, references, writes, started, only_xmrig)

    def _stop_all(self) -> None:
        self.sampler.stop()
        for sim in self.sims:
            try:
                sim.stop()
            except Exception as exc:  # stop the rest whatever happened to one
                print(f"stopping a simulator: {exc!r}", file=sys.stderr)
        self.mosquitto.stop()

    # ------------------------------------------------------------ simulators

    def _start_sims(self) -> None:
        per_proc = max(1, math.ceil(self.o.whatsminers / max(1, self.o.sim_procs)))
        for first in range(0, self.o.whatsminers, per_proc):
            count = min(per_proc, self.o.whatsminers - first)
            log = self.logs / f"sim-whatsminer-{first}.log"
            self.sims.append(SimProcess("whatsminer", first, count, log))
        if self.o.xmrig:
            self.sims.append(SimProcess("xmrig", 0, self.o.xmrig, self.logs / "sim-xmrig.log"))
        for sim in self.sims:
            for device in sim.wait_ready():
                self.targets.append(_target(sim.kind, device, self.o.interval))
            self.sampler.watch(f"sim:{sim.kind}:{sim.process.pid}", sim.process.pid)
        self.sampler.watch("mosquitto", self.mosquitto.process.pid)  # type: ignore[union-attr]

    def _sim_cpu(self) -> float:
        total = 0.0
        for name, sampled in self.sampler.watched.items():
            if name.startswith("sim:"):
                sample = sampled.sample()
                total += sample.cpu_s if sample else 0.0
        return total

    def sim_stats(self, kind: str) -> dict[str, int]:
        totals: dict[str, int] = {}
        for sim in self.sims:
            if sim.kind == kind:
                for key, value in sim.ask("stats").items():
                    totals[key] = totals.get(key, 0) + int(value)
        return totals

    def _sim_writes(self) -> dict[str, list[tuple[float, str]]]:
        found: dict[str, list[tuple[float, str]]] = {}
        for sim in self.sims:
            for write in sim.ask("writes")["writes"]:
                found.setdefault(write["device"], []).append((write["at"], write["command"]))
        for writes in found.values():
            writes.sort()
        return found

    # ------------------------------------------------------------ agent phases

    def _agent_phase(
        self, name: str, targets: list[Target], duration: float, commands: int
    ) -> PhaseRun:
        agent_id = "bench" if name == "fleet" else "bench-" + name.split("-")[0]
        base = BASE if name == "fleet" else f"{BASE}-{name}"
        prefix = PREFIX if name == "fleet" else f"{PREFIX}-{name}"
        config = self.out / f"agent-{name}.toml"
        write_config(config, agent_id, self.mosquitto.url, base, prefix, targets)
        observer = Observer(self.mosquitto.port, base, prefix, agent_id)
        print(f"[{name}] agent with {len(targets)} devices", file=sys.stderr, flush=True)
        sims_cpu0, served0 = self._sim_cpu(), self.sim_stats("whatsminer").get("requests", 0)
        log = self.logs / f"agent-{name}.log"
        dump = self.out / f"memory-{name}.json" if self.o.trace_memory else None
        agent = AgentProcess(config, log, memory_dump=dump)
        phase = PhaseRun(name, len(targets), agent.started)
        sampled = self.sampler.watch(f"agent:{name}", agent.pid)
        try:
            self._drive(phase, agent, sampled, observer, targets, duration, commands)
            phase.peak_rss = sampled.peak_rss()
            phase.memory_top = agent.memory_top()
        finally:
            phase.exit_code = agent.stop()
            self.sampler.forget(f"agent:{name}")
            observer.close()
        phase.sims_cpu = (sims_cpu0, self._sim_cpu())
        phase.whatsminer_requests = self.sim_stats("whatsminer").get("requests", 0) - served0
        phase.only_whatsminers = all(t.kind == "whatsminer" for t in targets)
        phase.observer = observer
        phase.startup.update(analysis.startup(phase, targets, agent_id, base, prefix))
        return phase

    def _drive(
        self,
        phase: PhaseRun,
        agent: AgentProcess,
        sampled: Sampled,
        observer: Observer,
        targets: list[Target],
        duration: float,
        commands: int,
    ) -> None:
        interval = self.o.interval
        wait_until(
            lambda: observer.bridge_online or not agent.alive(),
            self.o.startup_timeout,
            "the agent's bridge online",
        )
        if not agent.alive():
            raise RuntimeError(f"the agent exited with {agent.process.returncode}; see logs/")
        startup_profiler = self._profiler(agent.pid, f"{phase.name}-startup", 3600)
        clock = Ticker(interval)
        deadline = phase.started + self.o.startup_timeout
        while len(observer.first_state) < len(targets) and time.monotonic() < deadline:
            clock.wait()
            self._tick(phase, observer, sampled)
        phase.startup["first_states_complete"] = len(observer.first_state) == len(targets)
        clock.wait()  # one more interval: discovery of the last devices, the schedule settles
        self._tick(phase, observer, sampled)
        if startup_profiler is not None:
            startup_profiler.send_signal(signal.SIGINT)  # py-spy writes what it has on ^C
            startup_profiler.wait(60)
        first, mark = len(phase.ticks) - 1, observer.mark()
        window_end = time.monotonic() + max(1, round(duration / interval)) * interval
        commander = Commander(observer, targets, commands, window_end, self.rng)
        commander.start()
        profiler = self._profiler(agent.pid, phase.name, window_end - time.monotonic())
        print(
            f"[{phase.name}] measuring for {window_end - time.monotonic():.0f} s", file=sys.stderr
        )
        while time.monotonic() < window_end - 0.5:
            clock.wait()
            self._tick(phase, observer, sampled)
        phase.window, phase.marks = (first, len(phase.ticks) - 1), (mark, observer.mark())
        commander.join()
        phase.commands = commander.sent
        phase.missing_results = observer.wait_results(commander.sent, 45)
        if profiler is not None:
            profiler.wait(60)

    def _tick(self, phase: PhaseRun, observer: Observer, sampled: Sampled) -> None:
        try:
            latency, health = observer.request("health", timeout=3 * self.o.interval)
        except (TimeoutError, RuntimeError) as exc:
            print(f"[{phase.name}] health: {exc}", file=sys.stderr)
            latency, health = None, None
        sample = sampled.sample()
        phase.ticks.append(
            Tick(
                time.monotonic(),
                latency,
                health,
                sample.cpu_s if sample else None,
                sample.rss if sample else None,
                sample.user_s if sample else None,
                sample.system_s if sample else None,
            )
        )

    def _profiler(self, pid: int, name: str, seconds: float) -> subprocess.Popen[bytes] | None:
        """py-spy on the agent: samples of the thread holding the GIL, as collapsed stacks."""
        if not self.o.profile:
            return None
        command = ["py-spy", "record", "--pid", str(pid), "--duration", str(int(seconds))]
        command += ["--rate", "250", "--nonblocking", "--gil", "--format", "raw"]
        command += ["--output", str(self.out / f"profile-{name}.txt")]
        log = (self.logs / "py-spy.log").open("ab")
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

    # ------------------------------------------------------------ references

    def _references(self) -> dict[str, Any]:
        hosts = self.out / "whatsminer-hosts.txt"
        hosts.write_text(
            "\n".join(t.config["host"] for t in self.targets if t.kind == "whatsminer")
        )
        xmrig_hosts = self.out / "xmrig-hosts.txt"
        xmrig_hosts.write_text(
            "\n".join(
                f"{t.config['url']} {t.config['token']}" for t in self.targets if t.kind == "xmrig"
            )
        )
        found: dict[str, Any] = {}
        for name in REFERENCES:
            sim_kind = "xmrig" if name.startswith("xmrig-asyncio") else "whatsminer"
            if sim_kind == "xmrig" and not self.o.xmrig:
                continue
            print(f"[reference] {name}", file=sys.stderr, flush=True)
            before, sims0 = self.sim_stats(sim_kind), self._sim_cpu()
            listed = xmrig_hosts if sim_kind == "xmrig" else hosts
            command = [sys.executable, "-m", "bench.references", name, "--hosts-file", str(listed)]
            command += ["--duration", str(self.o.ref_duration)]
            command += ["--concurrency", str(self.o.pyasic_concurrency)]
            command += ["--interval", str(self.o.interval)]
            done = subprocess.run(command, capture_output=True, cwd=REPO, check=False, timeout=900)
            (self.logs / f"reference-{name}.log").write_bytes(done.stderr)
            try:
                result = json.loads(done.stdout.decode().strip().splitlines()[-1])
            except (IndexError, ValueError):
                result = {"error": f"exit {done.returncode}; see logs/reference-{name}.log"}
            after, sims1 = self.sim_stats(sim_kind), self._sim_cpu()
            served = after.get("requests", 0) - before.get("requests", 0)
            result["sim_requests"] = served
            result["sim_cpu_s"] = round(sims1 - sims0, 3)
            if result.get("polls"):
                result["sim_requests_per_poll"] = round(served / result["polls"], 2)
            found[name] = result
        return found


class Ticker:
    """Ticks every `interval` seconds on a fixed schedule (a late tick does not shift the rest)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.next = time.monotonic()

    def wait(self) -> None:
        self.next = max(self.next + self.interval, time.monotonic())
        time.sleep(max(0.0, self.next - time.monotonic()))


class Commander(threading.Thread):
    """Sends `count` commands spread evenly until shortly before `end`: Whatsminers get
    set_power_pct 90…100 (fast mode, lands within a second, no restart), XMRig miners pause or
    resume, each on a device drawn at random."""

    def __init__(
        self,
        observer: Observer,
        targets: list[Target],
        count: int,
        end: float,
        rng: random.Random,
    ) -> None:
        super().__init__(name="commander", daemon=True)
        self.observer = observer
        self.targets = targets
        self.count = count
        self.start_at = time.monotonic() + 0.5
        self.end = end - 5.0
        self.rng = rng
        self.sent: list[Command] = []
        self._paused: set[str] = set()
        self._touched: set[str] = set()

    def run(self) -> None:
        spacing = max(0.0, self.end - self.start_at) / max(1, self.count)
        for index in range(self.count):
            time.sleep(max(0.0, self.start_at + index * spacing - time.monotonic()))
            target = self.rng.choice(self.targets)
            name, params = self._command(target)
            command = self.observer.send_command(
                target.device, target.kind, target.sim_key, name, params
            )
            command.first_for_device = target.device not in self._touched
            self._touched.add(target.device)
            self.sent.append(command)

    def _command(self, target: Target) -> tuple[str, dict[str, Any]]:
        if target.kind == "whatsminer":
            return "set_power_pct", {"percent": self.rng.randint(90, 100)}
        if target.device in self._paused:
            self._paused.discard(target.device)
            return "resume", {}
        self._paused.add(target.device)
        return "pause", {}


def _target(kind: str, device: dict[str, Any], interval: float) -> Target:
    index = device["index"]
    if kind == "whatsminer":
        config = {
            "id": f"wm-{index:05d}",
            "kind": "whatsminer",
            "host": device["host"],
            "port": device["port"],
            "password": device["password"],
        }
    else:
        config = {
            "id": f"xmr-{index:05d}",
            "kind": "xmrig",
            "url": device["url"],
            "token": device["token"],
        }
    config["poll_interval"] = f"{interval:g}s"
    return Target(kind, config["id"], device["key"], config)


def write_config(
    path: Path, agent_id: str, broker: str, base: str, prefix: str, targets: list[Target]
) -> None:
    lines = [
        "# written by bench/fleet.py",
        "[agent]",
        f"id = {json.dumps(agent_id)}",
        'log_format = "json"',
        "[mqtt]",
        f"url = {json.dumps(broker)}",
        f"base_topic = {json.dumps(base)}",
        "[homeassistant]",
        "enabled = true",
        f"discovery_prefix = {json.dumps(prefix)}",
        f"status_topic = {json.dumps(prefix + '/status')}",
    ]
    for target in targets:
        lines.append("[[devices]]")
        lines.extend(f"{key} = {json.dumps(value)}" for key, value in target.config.items())
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fleet",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: small fleet, short")
    parser.add_argument("--whatsminers", type=int, help="simulated Whatsminers (2000)")
    parser.add_argument("--xmrig", type=int, help="simulated XMRig miners (500)")
    parser.add_argument("--duration", type=float, help="measured window, seconds (120)")
    parser.add_argument("--interval", type=float, default=10.0, help="poll interval, s (10)")
    parser.add_argument("--commands", type=int, help="commands sent during the window (500)")
    parser.add_argument(
        "--ratio-duration", type=float, help="window of the Whatsminer-only phase, s (60; 0: skip)"
    )
    parser.add_argument("--ref-duration", type=float, help="seconds per reference poller (20)")
    parser.add_argument("--no-references", action="store_true", help="skip pyasic and floors")
    parser.add_argument("--pyasic-concurrency", type=int, default=100)
    parser.add_argument("--sim-procs", type=int, default=2, help="Whatsminer simulator processes")
    parser.add_argument("--startup-timeout", type=float, default=180.0)
    parser.add_argument("--profile", action="store_true", help="py-spy the agent's window")
    parser.add_argument(
        "--trace-memory",
        action="store_true",
        help="tracemalloc in the agent: where its memory goes (slows it: CPU figures void)",
    )
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else DEFAULTS
    value = {k: preset[k] if getattr(args, k) is None else getattr(args, k) for k in preset}
    return Options(
        whatsminers=int(value["whatsminers"]),
        xmrig=int(value["xmrig"]),
        duration=float(value["duration"]),
        interval=args.interval,
        commands=int(value["commands"]),
        ratio_duration=float(value["ratio_duration"]),
        ref_duration=float(value["ref_duration"]),
        pyasic_concurrency=args.pyasic_concurrency,
        sim_procs=args.sim_procs,
        startup_timeout=args.startup_timeout,
        out=args.out,
        profile=args.profile,
        trace_memory=args.trace_memory,
        references=not args.no_references,
        seed=args.seed,
        argv=list(sys.argv[1:] if argv is None else argv),
    )


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    tree = _tree()  # before the run: others may commit while it goes
    bench = Bench(options)
    figures = bench.run()
    figures["command"] = shlex.join(["python", "-m", "bench.fleet", *options.argv])
    figures["tree"] = tree
    figures["machine"] = {
        "cpus": _cpu_count(),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }
    report.write(options.out, figures)
    print((options.out / "results.md").read_text())
    return 0


def _tree() -> dict[str, Any]:
    """Which code was measured: the commit, and the files changed on top of it."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], capture_output=True, cwd=REPO, check=False)
        return done.stdout.decode().strip()

    changed = [line[3:] for line in git("status", "--porcelain", "agent").splitlines()]
    return {"commit": git("rev-parse", "--short", "HEAD"), "agent_files_changed": changed}


def _cpu_count() -> int | None:
    import os

    return len(os.sched_getaffinity(0))


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


if __name__ == "__main__":
    raise SystemExit(main())
