"""Reference pollers on the same simulated Whatsminers, each run in a process of its own.

  pyasic          `get_miner(ip)` once per miner, then `miner.get_data()` (pyasic's standard
                  data) in a loop with `--concurrency` polls in flight
  bare            a blocking socket per poll: connect, send `{"cmd":"summary"}`, read to EOF,
                  `json.loads`: the floor for any Python poller
  bare-agent      the same bare loop with the agent's two reads per poll
                  (`summary+pools+edevs`, then `status`): the floor for the agent's protocol
  bare-asyncio    the bare `summary` poll over asyncio streams: the floor for an asyncio poller

Each prints one JSON line: polls, failures, CPU seconds (getrusage of this process, all
threads) and wall seconds of the polling loop only (imports and pyasic's miner identification
are reported apart).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import resource
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

PORT = 4028
SUMMARY = (b'{"cmd":"summary"}',)
AGENT_READS = (b'{"cmd":"summary+pools+edevs"}', b'{"cmd":"status"}')


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Meter:
    """CPU and wall time of one stretch of work, and how many polls it made."""

    def __init__(self) -> None:
        self.cpu0 = cpu_seconds()
        self.wall0 = time.monotonic()
        self.polls = 0
        self.failed = 0
        self.errors: dict[str, int] = {}

    def fail(self, exc: BaseException) -> None:
        self.failed += 1
        name = type(exc).__name__
        self.errors[name] = self.errors.get(name, 0) + 1

    def result(self) -> dict[str, Any]:
        cpu = cpu_seconds() - self.cpu0
        return {
            "polls": self.polls,
            "failed": self.failed,
            "errors": self.errors,
            "cpu_s": round(cpu, 4),
            "wall_s": round(time.monotonic() - self.wall0, 3),
            "cpu_per_poll_ms": round(1000 * cpu / self.polls, 4) if self.polls else None,
        }


# ---------------------------------------------------------------- bare sockets


def bare_poll(host: str, requests: tuple[bytes, ...]) -> None:
    for request in requests:
        with socket.create_connection((host, PORT), timeout=5) as sock:
            sock.sendall(request)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        json.loads(b"".join(chunks))


def run_bare(hosts: list[str], duration: float, requests: tuple[bytes, ...]) -> dict[str, Any]:
    meter = Meter()
    deadline = time.monotonic() + duration
    for host in itertools.cycle(hosts):
        if time.monotonic() >= deadline:
            break
        try:
            bare_poll(host, requests)
            meter.polls += 1
        except (OSError, ValueError) as exc:
            meter.fail(exc)
    return {"requests_per_poll": len(requests), **meter.result()}


# ---------------------------------------------------------------- asyncio pollers


async def _loop_polls(
    targets: list[Any], poll: Callable[[Any], Awaitable[Any]], duration: float, concurrency: int
) -> Meter:
    """`concurrency` tasks, each polling the next target round the fleet until the deadline."""
    meter = Meter()
    deadline = time.monotonic() + duration
    cycle = itertools.cycle(targets)

    async def worker() -> None:
        while time.monotonic() < deadline:
            try:
                await poll(next(cycle))
                meter.polls += 1
            except Exception as exc:  # a reference's failures are counted, not fatal
                meter.fail(exc)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return meter


async def _bare_asyncio_poll(host: str) -> None:
    reader, writer = await asyncio.open_connection(host, PORT)
    try:
        writer.write(SUMMARY[0])
        await writer.drain()
        json.loads(await reader.read())
    finally:
        writer.close()


async def run_bare_asyncio(hosts: list[str], duration: float, concurrency: int) -> dict[str, Any]:
    meter = await _loop_polls(hosts, _bare_asyncio_poll, duration, concurrency)
    return {"requests_per_poll": 1, "concurrency": concurrency, **meter.result()}


async def run_pyasic(hosts: list[str], duration: float, concurrency: int) -> dict[str, Any]:
    import pyasic  # imported here: its import alone costs a second of CPU

    gate = asyncio.Semaphore(concurrency)

    async def identify(host: str) -> Any:
        async with gate:
            return await pyasic.get_miner(host)

    found = Meter()
    miners = [m for m in await asyncio.gather(*(identify(h) for h in hosts)) if m is not None]
    found.polls = len(miners)
    identified = found.result()
    if not miners:
        return {"error": "pyasic identified none of the simulated miners", "identify": identified}

    async def get_data(miner: Any) -> None:
        data = await miner.get_data()
        if data.hashrate is None:
            raise ValueError("no hash rate")

    meter = await _loop_polls(miners, get_data, duration, concurrency)
    return {
        "version": _version("pyasic"),
        "model": str(getattr(miners[0], "model", None)),
        "concurrency": concurrency,
        "identify": {
            "miners": identified["polls"],
            "of": len(hosts),
            "cpu_s": identified["cpu_s"],
            "wall_s": identified["wall_s"],
        },
        **meter.result(),
    }


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=("pyasic", "bare", "bare-agent", "bare-asyncio"))
    parser.add_argument("--hosts-file", type=Path, required=True, help="one address per line")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of polling")
    parser.add_argument("--concurrency", type=int, default=100, help="asyncio polls in flight")
    args = parser.parse_args()
    hosts = args.hosts_file.read_text().split()
    logging.getLogger().setLevel(logging.ERROR)  # failures are counted, not printed
    if args.name == "pyasic":
        result = asyncio.run(run_pyasic(hosts, args.duration, args.concurrency))
    elif args.name == "bare-asyncio":
        result = asyncio.run(run_bare_asyncio(hosts, args.duration, args.concurrency))
    else:
        requests = SUMMARY if args.name == "bare" else AGENT_READS
        result = run_bare(hosts, args.duration, requests)
    result["name"] = args.name
    result["hosts"] = len(hosts)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
