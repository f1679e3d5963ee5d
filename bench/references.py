"""Reference pollers on the same simulated Whatsminers, each run in a process of its own.

  pyasic          `get_miner(ip)` once per miner, then `miner.get_data()` (pyasic's standard
                  data) in a loop with `--concurrency` polls in flight
  bare            a blocking socket per poll: connect, send `{"cmd":"summary"}`, read to EOF,
                  `json.loads`: the floor for any Python poller
  bare-agent      the same bare loop with the agent's two reads per poll
                  (`summary+pools+edevs`, then `status`): the floor for the agent's protocol
  bare-asyncio    the bare `summary` poll over asyncio streams: the floor for an asyncio poller
  bare-asyncio-agent
                  the agent's Whatsminer reads over asyncio streams, in the same connections:
                  the join size is learnt first as the driver's `JoinedReads` does (the fewest
                  connections the firmware allows for summary, pools and edevs), then every poll
                  makes those joins, plus `status`, `get_psu`+`get_error_code` and the slow
                  reads on the driver's default intervals counted in polls
  xmrig-asyncio   the agent's XMRig GETs (`/2/summary`, `/2/backends`, `/2/config` every 30th
                  poll) over one persistent HTTP/1.1 keep-alive connection per miner, asyncio
                  streams, Bearer token: the floor for the XMRig poll (`--hosts-file` holds
                  `url token` lines)

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
from urllib.parse import urlsplit

from agent.config.settings import AgentSection
from agent.runtime.worker import on_grid, poll_grid

PORT = 4028
SUMMARY = (b'{"cmd":"summary"}',)
AGENT_READS = (b'{"cmd":"summary+pools+edevs"}', b'{"cmd":"status"}')
FAST_READS = ("summary", "pools", "edevs")  # agent/devices/whatsminer/driver.py FAST_READS
SECTIONS = {"summary": "SUMMARY", "pools": "POOLS", "edevs": "DEVS"}
# The driver's default intervals over the bench's 10 s poll: (every n-th poll, its reads).
PERIODIC_READS = (
    (3, ("status",)),  # status_interval 30 s
    (6, ("get_psu", "get_error_code")),  # detail_interval 60 s
    (60, ("get_version", "devdetails", "get_miner_info")),  # slow_interval 600 s
)
XMRIG_CONFIG_EVERY = 30  # config_interval 300 s over a 10 s poll


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


async def _counted(meter: Meter, poll: Callable[[Any], Awaitable[Any]], target: Any) -> None:
    try:
        await poll(target)
        meter.polls += 1
    except Exception as exc:  # a reference's failures are counted, not fatal
        meter.fail(exc)


async def _loop_polls(
    targets: list[Any], poll: Callable[[Any], Awaitable[Any]], duration: float, concurrency: int
) -> Meter:
    """`concurrency` tasks, each polling the next target round the fleet until the deadline."""
    meter = Meter()
    deadline = time.monotonic() + duration
    cycle = itertools.cycle(targets)

    async def worker() -> None:
        while time.monotonic() < deadline:
            await _counted(meter, poll, next(cycle))

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


async def _stream_read(host: str, command: str) -> dict[str, Any]:
    reader, writer = await asyncio.open_connection(host, PORT)
    try:
        writer.write(json.dumps({"cmd": command}).encode())
        await writer.drain()
        reply: dict[str, Any] = json.loads(await reader.read())
    finally:
        writer.close()
    return reply


async def learn_groups(host: str) -> list[tuple[str, ...]]:
    """The joins this miner answers, found as `JoinedReads` finds them: the full join, then
    smaller ones for what it left out or refused."""
    groups: list[tuple[str, ...]] = []
    pending, limit = list(FAST_READS), len(FAST_READS)
    while pending:
        group = tuple(pending[:limit])
        reply = await _stream_read(host, "+".join(group))
        answered = [c for c in group if c in reply] if len(group) > 1 else list(group)
        if not answered and SECTIONS[group[0]] in reply:
            answered = [group[0]]
        if not answered:
            limit = max(1, len(group) - 1)
            continue
        limit = len(answered)
        groups.append(tuple(answered))
        pending = [c for c in pending if c not in answered]
    return groups


class AgentReads:
    """Per miner: the learnt joins and how many polls it has had (for the periodic reads)."""

    def __init__(self, host: str, groups: list[tuple[str, ...]]) -> None:
        self.host = host
        self.commands = ["+".join(g) for g in groups]
        self.polls = 0

    async def poll(self) -> None:
        for command in self.commands:
            await _stream_read(self.host, command)
        for every, reads in PERIODIC_READS:
            if self.polls % every == 0:
                for command in reads:
                    await _stream_read(self.host, command)
        self.polls += 1


async def _paced_polls(
    targets: list[Any], poll: Callable[[Any], Awaitable[Any]], duration: float, interval: float
) -> Meter:
    """Every target once per `interval`, first polls spread over one interval, each start on
    the agent's default poll grid: the agent's schedule, so the event loop wakes as often as
    it does in the agent, where `_loop_polls` keeps it always busy and shares each wake-up
    among many polls. The first round (connections, first reads) is not measured: `duration`
    starts after it."""
    meter = Meter()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + interval + duration
    grid = poll_grid(AgentSection().poll_alignment, interval)  # the agent's default grid

    async def schedule(target: Any, offset: float) -> None:
        due = loop.time() + offset
        while due < deadline:
            start = on_grid(due, grid)
            woken = loop.create_future()  # at `start` itself, as the agent's timers are
            loop.call_at(start, woken.set_result, None)
            await woken
            await _counted(meter, poll, target)
            due += interval

    async def measure_from_second_round() -> None:
        await asyncio.sleep(interval)
        meter.__init__()  # type: ignore[misc]

    spread = interval / max(len(targets), 1)
    await asyncio.gather(
        measure_from_second_round(), *(schedule(t, i * spread) for i, t in enumerate(targets))
    )
    return meter


async def run_bare_asyncio_agent(
    hosts: list[str], duration: float, concurrency: int, paced: float | None = None
) -> dict[str, Any]:
    groups = await learn_groups(hosts[0])  # the simulated fleet runs one firmware
    miners = [AgentReads(host, groups) for host in hosts]

    async def poll(miner: AgentReads) -> None:
        await miner.poll()

    if paced:
        meter = await _paced_polls(miners, poll, duration, paced)
    else:
        meter = await _loop_polls(miners, poll, duration, concurrency)
    return {
        "joins": [list(g) for g in groups],
        "requests_per_poll": len(groups)
        + sum(len(reads) / every for every, reads in PERIODIC_READS),
        "concurrency": concurrency,
        **meter.result(),
    }


class KeepAliveXmrig:
    """One persistent HTTP/1.1 connection to one XMRig miner, opened on first use."""

    def __init__(self, url: str, token: str | None) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        self.head = f"Host: {parts.netloc}\r\n{auth}Accept: application/json\r\n\r\n"
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self.polls = 0

    async def get(self, path: str) -> Any:
        if self.streams is None:
            self.streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.streams
        writer.write(f"GET {path} HTTP/1.1\r\n{self.head}".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if not head.startswith(b"HTTP/1.1 200"):
            raise ValueError(head.split(b"\r\n", 1)[0].decode())
        return json.loads(await reader.readexactly(length))

    async def poll(self) -> None:
        await self.get("/2/summary")
        await self.get("/2/backends")
        if self.polls % XMRIG_CONFIG_EVERY == 0:
            await self.get("/2/config")
        self.polls += 1


async def run_xmrig_asyncio(
    lines: list[str], duration: float, concurrency: int, paced: float | None = None
) -> dict[str, Any]:
    miners = [KeepAliveXmrig(*[*line.split(), ""][:2]) for line in lines]

    async def poll(miner: KeepAliveXmrig) -> None:
        await miner.poll()

    if paced:
        meter = await _paced_polls(miners, poll, duration, paced)
    else:
        meter = await _loop_polls(miners, poll, duration, min(concurrency, len(miners)))
    return {
        "requests_per_poll": 2 + 1 / XMRIG_CONFIG_EVERY,
        "connections": len(miners),
        "concurrency": min(concurrency, len(miners)),
        **meter.result(),
    }


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


NAMES = (
    "pyasic",
    "bare",
    "bare-agent",
    "bare-asyncio",
    "bare-asyncio-agent",
    "xmrig-asyncio",
    # the same two floors on the agent's schedule: every miner once per poll interval
    "bare-asyncio-agent-paced",
    "xmrig-asyncio-paced",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=NAMES)
    parser.add_argument("--hosts-file", type=Path, required=True, help="one address per line")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of polling")
    parser.add_argument("--concurrency", type=int, default=100, help="asyncio polls in flight")
    parser.add_argument("--interval", type=float, default=10.0, help="poll interval (-paced)")
    args = parser.parse_args()
    xmrig = args.name.startswith("xmrig-asyncio")
    hosts = args.hosts_file.read_text().split("\n" if xmrig else None)
    hosts = [h for h in hosts if h.strip()]
    logging.getLogger().setLevel(logging.ERROR)  # failures are counted, not printed
    if args.name == "pyasic":
        result = asyncio.run(run_pyasic(hosts, args.duration, args.concurrency))
    elif args.name.startswith("bare-asyncio-agent"):
        paced = args.interval if args.name.endswith("-paced") else None
        result = asyncio.run(run_bare_asyncio_agent(hosts, args.duration, args.concurrency, paced))
    elif xmrig:
        paced = args.interval if args.name.endswith("-paced") else None
        result = asyncio.run(run_xmrig_asyncio(hosts, args.duration, args.concurrency, paced))
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
