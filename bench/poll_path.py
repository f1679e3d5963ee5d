"""CPU per XMRig poll of the agent's own path, split by part, against the `xmrig-asyncio` floor.

One process polls `--devices` simulated XMRig miners (`bench.simproc xmrig`, a process of its
own) back to back, `--concurrency` polls in flight, as `bench.references` polls them, in four
phases that each add one layer of the agent's poll:

  reference  bench.references.KeepAliveXmrig: /2/summary + /2/backends (+ /2/config every
             30th poll) over asyncio streams, json.loads only (the issue 14 floor)
  client     the agent's XmrigClient over KeepAliveClient: the same GETs, nothing else
  driver     XmrigDriver.poll(): the GETs, normalise and the poll result
  worker     DeviceWorker.poll(): the driver inside the lock and the poll deadline, then the
             energy counter, the publish filter, the MQTT link (a real Mosquitto) and the
             announcer's discovery check, as the agent does after every poll

The phases run `--rounds` times in turn and each figure is the median over the rounds (the
machine is shared). CPU is getrusage of the whole process (paho's network thread included).
Parts: exchange = client; normalise = driver - client; filter+publish = the event loop
thread's CPU inside Publisher.publish_state plus the CPU of every other thread (paho); rest =
worker - driver - filter+publish (lock, deadline, bookkeeping, energy). `--devices` is at
least twice `--concurrency`, so that no miner is polled twice at once (the reference and the
bare client have no lock).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from agent.config.settings import LoadedConfig, build_settings
from agent.kinds import KINDS
from agent.runtime.publisher import Publisher
from agent.runtime.service import AgentService
from agent.runtime.worker import DeviceWorker
from bench.procs import Mosquitto, SimProcess, wait_until
from bench.references import XMRIG_CONFIG_EVERY, KeepAliveXmrig, _loop_polls, cpu_seconds

PHASES = ("reference", "client", "driver", "worker")


class PublishTimer:
    """CPU time of the event loop's thread inside Publisher.publish_state."""

    def __init__(self) -> None:
        self.ns = 0
        self._original = Publisher.publish_state

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        original = self._original
        timer = self

        def timed(self: Publisher, *args: Any, **kwargs: Any) -> None:
            started = time.thread_time_ns()
            try:
                original(self, *args, **kwargs)
            finally:
                timer.ns += time.thread_time_ns() - started

        Publisher.publish_state = timed  # type: ignore[method-assign]
        try:
            yield
        finally:
            Publisher.publish_state = original  # type: ignore[method-assign]


def make_service(broker: Mosquitto, devices: list[dict[str, Any]], state_dir: Path) -> AgentService:
    configs = [
        KINDS["xmrig"].config.model_validate(
            {"id": f"xmr-{d['index']:05d}", "kind": "xmrig", "url": d["url"], "token": d["token"]}
        )
        for d in devices
    ]
    settings = build_settings(
        KINDS,
        agent={"id": "poll-path", "jitter": 0.0, "state_directory": str(state_dir)},
        mqtt={"url": broker.url, "base_topic": "poll-path"},
        homeassistant={"discovery_prefix": "poll-path-ha"},
        devices=configs,
    )
    return AgentService(LoadedConfig(settings, None, []), kinds=KINDS)


def add_workers(service: AgentService) -> list[DeviceWorker]:
    """The service's workers, made as it makes them, without their own poll schedules."""
    for device in service.settings.devices:
        service.workers[device.id] = service.new_worker(device)
    return list(service.workers.values())


class ClientPoll:
    """The agent's client alone: the driver's GETs with nothing done to the replies."""

    def __init__(self, worker: DeviceWorker) -> None:
        self.client = worker.driver.client  # type: ignore[attr-defined]
        self.polls = 0

    async def poll(self) -> None:
        await self.client.summary_async()
        await self.client.backends_async()
        if self.polls % XMRIG_CONFIG_EVERY == 0:
            await self.client.get_config_async()
        self.polls += 1


async def measure(
    targets: list[Any], poll: Callable[[Any], Awaitable[Any]], duration: float, concurrency: int
) -> dict[str, float]:
    main_cpu0, cpu0 = time.thread_time(), cpu_seconds()
    meter = await _loop_polls(targets, poll, duration, concurrency)
    main_cpu, cpu = time.thread_time() - main_cpu0, cpu_seconds() - cpu0
    if meter.failed or not meter.polls:
        raise RuntimeError(f"polls failed: {meter.result()}")
    return {
        "polls": meter.polls,
        "us": 1e6 * cpu / meter.polls,
        "other_threads_us": 1e6 * (cpu - main_cpu) / meter.polls,
    }


async def run(args: argparse.Namespace, broker: Mosquitto, devices: list[dict[str, Any]]) -> Any:
    state_dir = Path(tempfile.mkdtemp(prefix="poll-path-"))
    service = make_service(broker, devices, state_dir)
    service.loop = asyncio.get_running_loop()
    service.link.start()
    await asyncio.to_thread(wait_until, service.link.connected.is_set, 10, "the MQTT link")
    workers = add_workers(service)
    references = [KeepAliveXmrig(d["url"], d["token"]) for d in devices]
    clients = [ClientPoll(w) for w in workers]
    for worker in workers:  # first polls: connections, discovery, the filter's first state
        assert await worker.poll() is not None, worker.stats.last_error
    await asyncio.to_thread(
        wait_until, lambda: service.link.retained_backlog() == 0, 60, "discovery to drain"
    )
    timer = PublishTimer()
    runs: dict[str, list[dict[str, float]]] = {phase: [] for phase in PHASES}
    for _ in range(args.rounds):
        go = (args.duration, args.concurrency)
        runs["reference"].append(await measure(references, KeepAliveXmrig.poll, *go))
        runs["client"].append(await measure(clients, ClientPoll.poll, *go))
        runs["driver"].append(await measure(workers, lambda w: w.driver.poll(), *go))
        timer.ns = 0
        with timer.installed():
            worker_run = await measure(workers, DeviceWorker.poll, *go)
        worker_run["publish_us"] = timer.ns / 1000 / worker_run["polls"]
        runs["worker"].append(worker_run)
    for worker in workers:
        await worker.stop()
    await asyncio.to_thread(service.link.stop, {})
    return runs


def figures(runs: dict[str, list[dict[str, float]]]) -> dict[str, float]:
    def median(phase: str, key: str = "us") -> float:
        return statistics.median(r[key] for r in runs[phase])

    reference, client, driver, worker = (median(p) for p in PHASES)
    publish = median("worker", "publish_us") + median("worker", "other_threads_us")
    return {
        "reference_us": reference,
        "agent_us": worker,
        "ratio": worker / reference,
        "exchange_us": client,
        "normalise_us": driver - client,
        "filter_publish_us": publish,
        "rest_us": worker - driver - publish,
        "exchange_ratio": client / reference,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per phase")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--label", default="", help="printed with the figures")
    args = parser.parse_args()
    if args.concurrency * 2 > args.devices:
        parser.error(
            "--devices must be at least twice --concurrency: two polls of one miner at once"
        )
    workdir = Path(tempfile.mkdtemp(prefix="poll-path-"))
    broker = Mosquitto(workdir)
    broker.start()
    sims = SimProcess("xmrig", 0, args.devices, workdir / "sim-xmrig.log")
    try:
        devices = sims.wait_ready()
        runs = asyncio.run(run(args, broker, devices))
    finally:
        sims.stop()
        broker.stop()
    result = figures(runs)
    print(f"{args.label or 'poll path'}: CPU µs per XMRig poll (median of {args.rounds} rounds)")
    for name, value in result.items():
        print(f"  {name:<18} {value:8.2f}")
    print(json.dumps({"label": args.label, **result, "runs": runs}, separators=(",", ":")))


if __name__ == "__main__":
    main()
