"""`edge-agent scan`: find devices on the addresses the user names, with their read-only calls.

Each (address, port) gets a TCP connect first; only open ports are asked who they are, with
the kind's own client and only calls that change nothing: Whatsminer `get_version` and
`devdetails` (never `get_token`, which spends one of the host's 32 tokens), XMRig's summary,
SRS's `/api/v1/versions`, the pool's public `/api/pool/stats`. Concurrency is bounded and every
probe has a deadline, so silent ports (accept, never answer) cost one timeout each.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from agent.devices.whatsminer.client import DEFAULT_PORT as WHATSMINER_PORT
from agent.devices.whatsminer.client import WhatsminerClient
from agent.errors import AgentError, AuthError, DeviceError

if TYPE_CHECKING:
    from agent.devices.xmrig.client import XmrigClient

# The HTTP clients (requests, urllib3) are imported by the probes that use them: this module is
# imported with the command line's parser, for every command, `run` included.

SRS_PORT = 1985
# XMRig has no default HTTP port: 44444 is the doc's example, 8080 and 3333 are common choices,
# and pool APIs answer plain HTTP on 80 / 8080.
DEFAULT_HTTP_PORTS = (80, 8080, 44444)
MAX_ADDRESSES = 4096  # a /20; larger needs --allow-large (a typo like /8 would take hours)

Progress = Callable[[int, int], None]


class TargetError(ValueError):
    """A target the user typed that is no address, range or network."""


@dataclass(frozen=True, slots=True)
class Found:
    kind: str
    host: str
    port: int
    model: str | None
    version: str | None
    auth: str  # what the device needs for full access: "none", "token", "password", …

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "address": self.address}


# targets ------------------------------------------------------------------------------


def expand_targets(specs: Iterable[str], *, limit: int | None = MAX_ADDRESSES) -> list[str]:
    """`10.0.0.0/24`, `10.0.0.10-10.0.0.50`, `10.0.0.10-50` or one address → addresses, in
    order and without repeats. More than `limit` addresses is refused (None: no limit)."""
    seen: dict[str, None] = {}
    for spec in specs:
        for address in _expand(spec.strip()):
            seen[address] = None
            if limit is not None and len(seen) > limit:
                raise TargetError(
                    f"more than {limit} addresses to scan; name smaller ranges, or pass "
                    "--allow-large if you really mean it"
                )
    return list(seen)


def _expand(spec: str) -> Iterable[str]:
    if "/" in spec:
        try:
            network = ipaddress.ip_network(spec, strict=False)
        except ValueError:
            raise TargetError(f"{spec!r} is not a network (like 192.168.1.0/24)") from None
        hosts = network.hosts() if network.num_addresses > 2 else iter(network)
        return (str(a) for a in hosts)
    if "-" in spec:
        return _range(spec)
    try:
        return [str(ipaddress.ip_address(spec))]
    except ValueError:
        raise TargetError(
            f"{spec!r} is not an address, a range (10.0.0.10-10.0.0.50 or 10.0.0.10-50) or a "
            "network (10.0.0.0/24)"
        ) from None


def _range(spec: str) -> Iterable[str]:
    first_text, _, last_text = spec.partition("-")
    try:
        first = ipaddress.ip_address(first_text)
        if "." in last_text or ":" in last_text:
            last = ipaddress.ip_address(last_text)
        else:  # 10.0.0.10-50: the last part of the first address
            last = ipaddress.ip_address(first_text.rsplit(".", 1)[0] + "." + last_text)
    except ValueError:
        raise TargetError(
            f"{spec!r} is not a range like 10.0.0.10-10.0.0.50 or 10.0.0.10-50"
        ) from None
    if type(first) is not type(last) or int(last) < int(first):
        raise TargetError(f"{spec!r}: the range ends before it starts")
    return (str(ipaddress.ip_address(n)) for n in range(int(first), int(last) + 1))


# probes -------------------------------------------------------------------------------


@dataclass(slots=True)
class ScanStats:
    probes: int = 0
    open_ports: int = 0
    unknown: int = 0  # open ports that answered nothing we know (or nothing at all)


class Scanner:
    def __init__(
        self,
        *,
        http_ports: Iterable[int] = DEFAULT_HTTP_PORTS,
        timeout: float = 1.5,
        concurrency: int = 256,
        progress: Progress | None = None,
    ) -> None:
        self.http_ports = tuple(dict.fromkeys(http_ports))
        self.timeout = timeout
        self.concurrency = max(1, concurrency)
        self.progress = progress
        self.stats = ScanStats()
        self._done = 0

    def probes(
        self, hosts: Iterable[str]
    ) -> list[tuple[str, int, Callable[[str, int], Awaitable[Found | None]]]]:
        kinds: list[tuple[int, Callable[[str, int], Awaitable[Found | None]]]] = [
            (WHATSMINER_PORT, self.whatsminer),
            (SRS_PORT, self.srs),
            *((port, self.http) for port in self.http_ports),
        ]
        return [(host, port, probe) for host in hosts for port, probe in kinds]

    async def scan(self, hosts: Iterable[str]) -> list[Found]:
        probes = self.probes(hosts)
        self.stats.probes = len(probes)
        gate = asyncio.Semaphore(self.concurrency)
        # Blocking HTTP clients get threads of their own; sockets stay on the event loop.
        self._executor = ThreadPoolExecutor(min(self.concurrency, 64), thread_name_prefix="scan")
        try:
            found = await asyncio.gather(
                *(self._one(gate, *probe, len(probes)) for probe in probes)
            )
        finally:
            self._executor.shutdown(wait=False, cancel_futures=True)
        return sorted(
            (f for f in found if f is not None),
            key=lambda f: (_sort_key(f.host), f.port),
        )

    async def _one(
        self,
        gate: asyncio.Semaphore,
        host: str,
        port: int,
        probe: Callable[[str, int], Awaitable[Found | None]],
        total: int,
    ) -> Found | None:
        async with gate:
            try:
                if not await self._port_open(host, port):
                    return None
                self.stats.open_ports += 1
                try:
                    async with asyncio.timeout(self.timeout * 4):
                        found = await probe(host, port)
                except (AgentError, TimeoutError):
                    found = None
                if found is None:
                    self.stats.unknown += 1
                return found
            finally:
                self._done += 1
                if self.progress is not None:
                    self.progress(self._done, total)

    async def _port_open(self, host: str, port: int) -> bool:
        try:
            async with asyncio.timeout(self.timeout):
                _reader, writer = await asyncio.open_connection(host, port)
        except (OSError, TimeoutError):
            return False
        writer.close()
        return True

    async def _blocking(self, call: Callable[[], Found | None]) -> Found | None:
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    # one per kind -------------------------------------------------------------------

    async def whatsminer(self, host: str, port: int) -> Found | None:
        client = WhatsminerClient(
            host, port, connect_timeout=self.timeout, read_timeout=self.timeout
        )
        try:
            version: str | None = _text((await client.get_version()).get("fw_ver"))
        except DeviceError:  # older firmware without get_version still speaks the API
            version = None
        try:
            details = await client.devdetails()
        except AgentError:
            if version is None:
                raise
            details = {}
        rows = details.get("DEVDETAILS")
        model = _text(rows[0].get("Model")) if isinstance(rows, list) and rows else None
        return Found("whatsminer", host, port, model, version, "admin password (writes)")

    async def srs(self, host: str, port: int) -> Found | None:
        def call() -> Found | None:
            from agent.devices.srs.client import SrsClient

            client = SrsClient(f"http://{host}:{port}", timeout=self.timeout)
            try:
                version = _text(client.versions().get("version"))
            except AuthError:
                return Found("srs", host, port, "SRS", None, "password")
            finally:
                client.close()
            return Found("srs", host, port, "SRS", version, "none")

        return await self._blocking(call)

    async def http(self, host: str, port: int) -> Found | None:
        """XMRig first (its summary), then a pool's public stats."""

        def call() -> Found | None:
            return self._xmrig(host, port) or self._pool(host, port)

        return await self._blocking(call)

    def _xmrig(self, host: str, port: int) -> Found | None:
        from agent.devices.xmrig.client import XmrigClient

        client = XmrigClient(f"http://{host}:{port}", token=None, timeout=self.timeout)
        try:
            summary = client.summary()
        except AuthError as exc:
            if exc.device_code == 401 and _xmrig_refusal(client, self.timeout):
                return Found("xmrig", host, port, None, None, "token")
            return None
        except AgentError:
            return None
        finally:
            client.close()
        if not {"version", "hashrate"} <= summary.keys():
            return None
        worker = _text(summary.get("worker_id"))
        model = f"XMRig ({worker})" if worker else "XMRig"
        auth = "none (restricted: read-only)" if summary.get("restricted") else "none"
        return Found("xmrig", host, port, model, _text(summary.get("version")), auth)

    def _pool(self, host: str, port: int) -> Found | None:
        from agent.devices.pool.client import PoolClient

        client = PoolClient(f"http://{host}:{port}", timeout=self.timeout)
        try:
            stats = client.stats()
        except AgentError:
            return None
        finally:
            client.close()
        if "hash_rate" not in stats:
            return None
        workers = stats.get("active_workers")
        model = f"pool ({workers} workers)" if isinstance(workers, int) else "pool"
        return Found("pool", host, port, model, None, "api key (user data only)")


def _xmrig_refusal(client: XmrigClient, timeout: float) -> bool:
    """A 401 is not enough (any web UI can say it): XMRig's own refusal is the JSON
    `{"status": 401, "error": …}` of research/http-apis.md."""
    from agent.devices.http import make_session, send

    session = make_session()
    try:
        response = send(session, "GET", client.base + "/2/summary", timeout=timeout)
        body = response.json()
    except (AgentError, ValueError):
        return False
    finally:
        session.close()
    return isinstance(body, dict) and body.get("status") == 401 and "error" in body


def _text(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def _sort_key(host: str) -> tuple[int, int | str]:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return (2, host)
    return (address.version, int(address))
