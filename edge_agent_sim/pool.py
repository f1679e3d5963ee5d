"""Simulated BitMinter-shaped pools on loopback, one aiohttp server per pool.

Each pool serves the documented shapes (the same values as the fixtures in
shared/fixtures/bitminter), checks API keys the three documented ways, answers ETag and
Last-Modified revalidation with 304, and can be steered by tests through its `PoolModel`:
blocks found and moved through their statuses, shifts completed, workers added and removed,
429 or 5xx bursts with Retry-After, and malformed answers. Every request is logged with its
headers and query, so tests can check where the key travelled and how often the client asked.

Missing key → 401, wrong key or another user's data → 403 (the doc names no status; these are
the usual ones), both with a short JSON `error`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate, parsedate_to_datetime
from typing import Any

from aiohttp import web

from edge_agent_sim.fleet import SimDevice, SimFleet

# `simulate --spread` listens here: a pool API has no usual port of its own.
SPREAD_PORT = 8080

START_TIME = 1593561600  # 2020-07-01, as in the fixtures
MALFORMED_MODES = ("garbage", "truncated", "empty", "wrong_types", "wrong_shape", "close", "nan")
FINAL_CONFIRMATIONS = 100
_FIXTURE_STATUSES = (
    "processing",
    "unconfirmed",
    "unconfirmed",
    "confirmed",
    "stale",
    "confirmed",
    "orphan",
    "confirmed",
    "confirmed",
    "confirmed",
)

Reply = tuple[int, Any]  # HTTP status, JSON-able body


@dataclass(slots=True)
class RequestRecord:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    status: int = 0


@dataclass(slots=True)
class Throttle:
    remaining: int | None  # None: until PoolModel.unthrottle()
    status: int
    retry_after: str | None


@dataclass
class PoolModel:
    """One simulated pool's data and switches; tests change it on the server's loop."""

    api_key: str = "sim-key"
    owner: str = "alice"
    etag: bool = True
    last_modified: bool = True
    latency: float = 0.0
    live: float | None = None  # seconds of wall time per step(), caught up on each request
    seed: int = 0
    now: int = START_TIME
    hash_rate_ghs: float = 20513.37
    active_workers: int = 412
    active_users: int = 187
    shift: dict[str, Any] = field(default_factory=dict)
    chains: dict[str, dict[str, Any]] = field(default_factory=dict)
    blocks: list[dict[str, Any]] = field(default_factory=list)  # newest first
    shifts: list[dict[str, Any]] = field(default_factory=list)  # newest first
    top50: dict[str, float] = field(default_factory=dict)
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[RequestRecord] = field(default_factory=list)
    malformed: dict[str, str] = field(default_factory=dict)  # path → mode
    throttling: Throttle | None = None
    in_flight: int = 0
    max_in_flight: int = 0
    _stamps: dict[str, tuple[str, int]] = field(default_factory=dict)
    _revision: int = 0
    _last_step: float | None = None

    def __post_init__(self) -> None:
        """Whatever the caller left empty starts as in the fixtures."""
        self.shift = self.shift or {
            "accepted": 1834522,
            "rejected": 1203,
            "duration": 1411,
            "score": 1712.3384,
        }
        self.chains = self.chains or {
            "BTC": _chain(15138043247082.88),
            "NMC": _chain(13978345123541.27),
        }
        self.blocks = self.blocks or [_block(i) for i in range(10)]
        self.shifts = self.shifts or [_shift(i) for i in range(10)]
        self.top50 = self.top50 or {
            f"user{i:02d}": round(2_500_000 / (i + 1), 2) for i in range(50)
        }
        self._rng = random.Random(self.seed)
        self.users = self.users or {
            self.owner: _user(self.owner, self.now),
            "bob": _user("bob", self.now),
        }

    # -- steering -------------------------------------------------------------------------

    def find_block(self, chain: str = "BTC", generator: str | None = None) -> dict[str, Any]:
        """A new block, `processing`, on top of the list; the chain's round starts over."""
        newest = max((b for b in self.blocks if b["chain"] == chain), key=_id, default=None)
        block = {
            "id": max((b["id"] for b in self.blocks), default=0) + 1,
            "chain": chain,
            "hash": hashlib.sha256(f"{chain}{len(self.blocks)}".encode()).hexdigest(),
            "height": (newest["height"] + 137) if newest else 1,
            "difficulty": self.chains.get(chain, _chain(1.0))["difficulty"],
            "income": 6.25,
            "accepted": self.chains.get(chain, {}).get("accepted", 0),
            "rejected": self.chains.get(chain, {}).get("rejected", 0),
            "status": "processing",
            "confirmations_left": FINAL_CONFIRMATIONS,
            "generator": generator or self.owner,
            "generated": self.now,
            "duration": self.chains.get(chain, {}).get("duration", 0),
        }
        self.blocks.insert(0, block)
        self.chains[chain] = _chain(block["difficulty"], accepted=0, duration=0)
        return block

    def advance_blocks(self, confirmations: int = 50) -> None:
        """processing → unconfirmed; unconfirmed blocks gain confirmations, then confirm."""
        for block in self.blocks:
            if block["status"] == "processing":
                block["status"] = "unconfirmed"
            elif block["status"] == "unconfirmed":
                left = block["confirmations_left"] - confirmations
                block["confirmations_left"] = max(0, left)
                if left <= 0:
                    block["status"] = "confirmed"

    def set_block_status(self, block_id: int, status: str) -> None:
        block = next(b for b in self.blocks if b["id"] == block_id)
        block["status"] = status
        if status in ("stale", "orphan"):
            block["confirmations_left"] = -1
        elif status == "confirmed":
            block["confirmations_left"] = 0

    def complete_shift(self) -> dict[str, Any]:
        """The current shift joins the list of shifts and a new one starts."""
        self.now += max(1, int(self.shift["duration"]))
        row = {
            "id": max((s["id"] for s in self.shifts), default=0) + 1,
            "difficulty": self.chains["BTC"]["difficulty"] if "BTC" in self.chains else 1.0,
            "accepted": self.shift["accepted"],
            "rejected": self.shift["rejected"],
            "score": self.shift["score"],
            "completed": self.now,
            "duration": self.shift["duration"],
        }
        self.shifts.insert(0, row)
        self.shift = {"accepted": 0, "rejected": 0, "duration": 0, "score": 0.0}
        return row

    def add_worker(self, name: str, hash_rate_mhs: float = 1000.0, user: str | None = None) -> None:
        data = self.users[user or self.owner]
        data["workers"].append(_worker(name, hash_rate_mhs, self.now, alive=hash_rate_mhs > 0))
        _sum_workers(data)

    def remove_worker(self, name: str, user: str | None = None) -> None:
        data = self.users[user or self.owner]
        data["workers"] = [w for w in data["workers"] if w["name"] != name]
        _sum_workers(data)

    def throttle(
        self, count: int | None = None, *, status: int = 429, retry_after: str | None = "60"
    ) -> None:
        """Answer the next `count` requests (all, when None) with `status` and Retry-After."""
        self.throttling = Throttle(count, status, retry_after)

    def unthrottle(self) -> None:
        self.throttling = None

    def malform(self, path: str, mode: str) -> None:
        """Answer `path` badly until clear_malformed(); modes: MALFORMED_MODES."""
        if mode not in MALFORMED_MODES:
            raise ValueError(f"mode must be one of {', '.join(MALFORMED_MODES)}")
        self.malformed[path] = mode

    def clear_malformed(self) -> None:
        self.malformed.clear()

    def requests_to(self, path: str) -> list[RequestRecord]:
        return [r for r in self.requests if r.path == path]

    def catch_up(self) -> None:
        """With `live` set, run the steps the wall clock says are due (at most 100)."""
        if self.live is None:
            return
        now = time.monotonic()
        if self._last_step is None or now - self._last_step > 100 * self.live:
            self._last_step = now
            return
        while now - self._last_step >= self.live:
            self._last_step += self.live
            self.step(seconds=max(1, round(self.live)))

    def step(self, seconds: int = 10) -> None:
        """Time passes: hash rates wander, shares arrive, blocks and workers come and go."""
        rng = self._rng
        self.now += seconds
        self.hash_rate_ghs = round(self.hash_rate_ghs * rng.uniform(0.97, 1.03), 2)
        self.shift["accepted"] += rng.randint(1000, 5000)
        self.shift["rejected"] += rng.randint(0, 5)
        self.shift["duration"] += seconds
        self.shift["score"] = round(self.shift["score"] + rng.uniform(5, 20), 4)
        for chain in self.chains.values():
            chain["accepted"] += rng.randint(1000, 5000)
            chain["duration"] += seconds
        if self.shift["duration"] >= 1400:
            self.complete_shift()
        self.advance_blocks(confirmations=rng.randint(0, 20))
        if rng.random() < 0.05:
            self.find_block(rng.choice(sorted(self.chains)))
        self._step_workers()

    def _step_workers(self) -> None:
        rng = self._rng
        data = self.users[self.owner]
        for worker in data["workers"]:
            if worker["alive"]:
                worker["hash_rate"] = round(worker["hash_rate"] * rng.uniform(0.95, 1.05), 1)
                worker["last_work"] = self.now
        if rng.random() < 0.03:
            self.add_worker(f"rig{len(data['workers']) + rng.randint(3, 99)}", 900.0)
        elif rng.random() < 0.03 and len(data["workers"]) > 1:
            self.remove_worker(rng.choice(data["workers"])["name"])
        _sum_workers(data)

    # -- serving --------------------------------------------------------------------------

    def answer(self, request: web.Request) -> Reply:
        """The documented answer to one GET, before throttling and malforming."""
        path = request.path.rstrip("/")
        if path == "/api/users" or path.startswith("/api/users/"):
            return self._user_answer(request, path)
        route = self._routes().get(path)
        if route is None:
            return 404, {"error": "not found"}
        return route(request)

    def _routes(self) -> dict[str, Callable[[web.Request], Reply]]:
        return {
            "/api/pool/stats": lambda _: (200, self._stats()),
            "/api/pool/hashrate": lambda _: (200, self.hash_rate_ghs),
            "/api/pool/workers": lambda _: (200, self.active_workers),
            "/api/pool/users": lambda _: (200, self.active_users),
            "/api/pool/round": lambda _: (200, self._round()),
            "/api/pool/blocks": self._blocks_answer,
            "/api/pool/shifts": self._shifts_answer,
            "/api/pool/top50": lambda _: (200, self.top50),
        }

    def _stats(self) -> dict[str, Any]:
        return {
            "hash_rate": self.hash_rate_ghs,
            "active_workers": self.active_workers,
            "active_users": self.active_users,
        }

    def _round(self) -> dict[str, Any]:
        shift = {f"shift_{key}": value for key, value in self.shift.items()}
        return {**self._stats(), **shift, "chains": self.chains}

    def _blocks_answer(self, request: web.Request) -> Reply:
        page = _page(request)
        if page is None:
            return 400, {"error": "max must be 1 to 50 and offset at least 0"}
        commodity = request.query.get("commodity")
        rows = [b for b in self.blocks if commodity in (None, b["chain"])]
        return 200, rows[page[1] : page[1] + page[0]]

    def _shifts_answer(self, request: web.Request) -> Reply:
        page = _page(request)
        if page is None:
            return 400, {"error": "max must be 1 to 50 and offset at least 0"}
        return 200, self.shifts[page[1] : page[1] + page[0]]

    def _user_answer(self, request: web.Request, path: str) -> Reply:
        key = presented_key(request)
        if key is None:
            return 401, {"error": "API key required"}
        if key != self.api_key:
            return 403, {"error": "invalid API key"}
        name = path[len("/api/users/") :] if path.startswith("/api/users/") else self.owner
        if name != self.owner or name not in self.users:
            return 403, {"error": f"no access to user {name}"}
        data = self.users[name]
        data["now"] = self.now
        return 200, data

    def conditional(self, request: web.Request, body: bytes) -> tuple[dict[str, str], bool]:
        """Validators for `body`, and whether the request's own ones match (→ 304)."""
        digest = hashlib.sha1(body, usedforsecurity=False).hexdigest()[:20]
        resource = f"{request.path}?{_query_without_key(request)}"
        stamp = self._stamps.get(resource)
        if stamp is None or stamp[0] != digest:
            self._revision += 1
            stamp = self._stamps[resource] = (digest, START_TIME + self._revision)
        headers: dict[str, str] = {}
        if self.etag:
            headers["ETag"] = f'"{digest}"'
        if self.last_modified:
            headers["Last-Modified"] = formatdate(stamp[1], usegmt=True)
        match = request.headers.get("If-None-Match")
        if self.etag and match is not None:
            tags = {tag.strip().removeprefix("W/") for tag in match.split(",")}
            return headers, headers["ETag"] in tags or "*" in tags
        since = _http_time(request.headers.get("If-Modified-Since"))
        fresh = self.last_modified and since is not None and stamp[1] <= since
        return headers, fresh


def presented_key(request: web.Request) -> str | None:
    """The API key the three documented ways: `key=…`, Basic `key:…`, `?key=…`."""
    auth = request.headers.get("Authorization", "")
    if auth.startswith("key="):
        return auth[len("key=") :]
    if auth.lower().startswith("basic "):
        try:
            user, _, secret = base64.b64decode(auth[6:], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return ""
        return secret if user == "key" else ""
    return request.query.get("key")


async def start_fleet(
    count: int, host: str = "127.0.0.1", port: int = 0, **options: Any
) -> SimFleet:
    """`count` pools on `host`, from `port` upwards (0: free ports).

    Options go to PoolModel: api_key, owner, etag, last_modified, latency, and `live` (seconds
    per PoolModel.step(), for demos; off by default) with `seed` (+ the pool's index).
    """
    fleet = SimFleet(kind="pool", devices=[])
    for index in range(count):
        model = PoolModel(**{**options, "seed": int(options.get("seed", 0)) + index})
        runner = web.AppRunner(_app(model), access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, host, port + index if port else 0)
        await site.start()
        fleet.closers.append(runner.cleanup)
        fleet.devices.append(SimDevice(host=host, port=_bound_port(runner), model=model))
    return fleet


def demo_config(device: SimDevice, index: int) -> dict[str, Any]:
    """The `[[devices]]` entry the demo uses; it also sets the pool moving (`live`), so that
    blocks get found and confirmed and workers come and go while the demo runs."""
    model: PoolModel = device.model
    if model.live is None:
        model.live = 10.0
    return {
        "id": f"pool-{index + 1}",
        "kind": "pool",
        "name": f"Mining pool {index + 1}",
        "url": device.url,
        "api_key": model.api_key,
        "poll_interval": "10s",
        "min_poll_interval": "10s",  # a simulated pool minds no load
    }


def _app(model: PoolModel) -> web.Application:
    async def handle(request: web.Request) -> web.StreamResponse:
        record = RequestRecord(
            request.method, request.path, dict(request.query), dict(request.headers)
        )
        model.requests.append(record)
        model.in_flight += 1
        model.max_in_flight = max(model.max_in_flight, model.in_flight)
        model.catch_up()
        try:
            if model.latency:
                await asyncio.sleep(model.latency)
            response = await _respond(model, request)
        finally:
            model.in_flight -= 1
        record.status = response.status
        return response

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    return app


async def _respond(model: PoolModel, request: web.Request) -> web.StreamResponse:
    throttle = model.throttling
    if throttle is not None:
        if throttle.remaining is not None:
            throttle.remaining -= 1
            if throttle.remaining <= 0:
                model.throttling = None
        headers = {"Retry-After": throttle.retry_after} if throttle.retry_after else {}
        return _json(throttle.status, {"error": "slow down"}, headers)
    status, body = model.answer(request)
    mode = model.malformed.get(request.path.rstrip("/"))
    if mode is not None and status == 200:
        return await _malformed(request, body, mode)
    if status != 200:
        extra = {"WWW-Authenticate": 'Basic realm="API"'} if status == 401 else {}
        return _json(status, body, extra)
    payload = _encode(body)
    headers, fresh = model.conditional(request, payload)
    if fresh:
        return web.Response(status=304, headers=headers)
    return web.Response(body=payload, headers={**headers, "Content-Type": _type(body)})


async def _malformed(request: web.Request, body: Any, mode: str) -> web.StreamResponse:
    payload = _encode(body)
    if mode == "close":  # promise a body, send half of it, hang up
        response = web.StreamResponse(headers={"Content-Length": str(len(payload))})
        await response.prepare(request)
        await response.write(payload[: len(payload) // 2])
        if request.transport is not None:
            request.transport.close()
        return response
    bad = {
        "garbage": b"<html><body>Service temporarily overloaded</body></html>",
        "truncated": payload[: len(payload) // 2],
        "empty": b"",
        "wrong_types": _encode(_stringify(body)),
        "wrong_shape": _encode(_reshape(body)),
        "nan": _encode(_first_number_nan(body)),
    }[mode]
    return web.Response(body=bad, content_type="application/json")


def _json(status: int, body: Any, headers: dict[str, str]) -> web.Response:
    return web.Response(
        status=status, body=_encode(body), headers={**headers, "Content-Type": "application/json"}
    )


def _encode(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def _type(body: Any) -> str:
    return "application/json" if isinstance(body, dict | list) else "text/plain"


def _stringify(body: Any) -> Any:
    """Every number becomes text: the shape stays, the types are wrong."""
    if isinstance(body, dict):
        return {key: _stringify(value) for key, value in body.items()}
    if isinstance(body, list):
        return [_stringify(value) for value in body]
    if isinstance(body, int | float) and not isinstance(body, bool):
        return str(body)
    return body


def _reshape(body: Any) -> Any:
    """An object where a list belongs and the other way round."""
    if isinstance(body, list):
        return {str(index): row for index, row in enumerate(body)}
    if isinstance(body, dict):
        return list(body.values())
    return {"value": body}


def _first_number_nan(body: Any) -> Any:
    """json.dumps writes NaN for float('nan'): a token JSON does not have."""
    if isinstance(body, dict):
        key = next((k for k, v in body.items() if isinstance(v, float)), None)
        return {**body, key: float("nan")} if key is not None else body
    if isinstance(body, list) and body:
        return [_first_number_nan(body[0]), *body[1:]]
    return float("nan")


def _page(request: web.Request) -> tuple[int, int] | None:
    try:
        size = int(request.query.get("max", "10"))
        offset = int(request.query.get("offset", "0"))
    except ValueError:
        return None
    return (size, offset) if 1 <= size <= 50 and offset >= 0 else None


def _query_without_key(request: web.Request) -> str:
    return "&".join(f"{k}={v}" for k, v in sorted(request.query.items()) if k != "key")


def _http_time(text: str | None) -> int | None:
    if not text:
        return None
    try:
        return int(parsedate_to_datetime(text).timestamp())
    except (TypeError, ValueError, IndexError):
        return None


def _bound_port(runner: web.AppRunner) -> int:
    server = runner.addresses[0]
    return int(server[1])


def _chain(difficulty: float, accepted: int = 884126311, duration: int = 389221) -> dict[str, Any]:
    return {
        "accepted": accepted,
        "rejected": 610522 if accepted else 0,
        "duration": duration,
        "difficulty": difficulty,
    }


def _block(index: int) -> dict[str, Any]:
    chain = "NMC" if index % 3 == 0 else "BTC"
    status = _FIXTURE_STATUSES[index]
    left = {"processing": 100, "unconfirmed": 100 - 7 * index, "confirmed": 0}.get(status, -1)
    return {
        "id": 31876 - index,
        "chain": chain,
        "hash": f"{0xABCDEF1234567 + index * 0x1EEF:064x}",
        "height": 637000 - 137 * index,
        "difficulty": 15138043247082.88,
        "income": 6.25 if chain == "NMC" else round(6.25 + 0.1 * index, 2),
        "accepted": 120000000 + 1000 * index,
        "rejected": 80000 + index,
        "status": status,
        "confirmations_left": left,
        "generator": f"miner{index}",
        "generated": START_TIME - 86400 * index,
        "duration": 86400 + 600 * index,
    }


def _shift(index: int) -> dict[str, Any]:
    return {
        "id": 986512 - index,
        "difficulty": 15138043247082.88,
        "accepted": 1834522 + 1000 * index,
        "rejected": 1203 + index,
        "score": round(1712.3384 - index, 4),
        "completed": START_TIME - 1411 * index,
        "duration": 1411 + index,
    }


def _user(name: str, now: int) -> dict[str, Any]:
    data = {
        "name": name,
        "active_workers": 0,
        "hash_rate": 0.0,
        "now": now,
        "round_start": {"BTC": 1593172379, "NMC": 1593172379},
        "shift": {
            "start": 1593560189,
            "accepted": 11230,
            "rejected": 7,
            "user_score": 10.4412,
            "total_score": 1712.3384,
        },
        "balances": {"BTC": 0.01942117, "NMC": 1.29331},
        "workers": [
            _worker("rig1", 14200.5, now - 4, alive=True),
            _worker("rig2", 0.0, now - 3600, alive=False, coins=("BTC",)),
        ],
    }
    _sum_workers(data)
    return data


def _worker(
    name: str,
    hash_rate: float,
    last_work: int,
    *,
    alive: bool,
    coins: tuple[str, ...] = ("BTC", "NMC"),
) -> dict[str, Any]:
    work = {
        "total_accepted": 99812341,
        "total_rejected": 51234,
        "round_accepted": 0,
        "round_rejected": 0,
        "checkpoint_accepted": 99000000,
        "checkpoint_rejected": 51000,
    }
    return {
        "name": name,
        "hash_rate": hash_rate,
        "last_work": last_work,
        "alive": alive,
        "work": {coin: dict(work) for coin in coins},
    }


def _sum_workers(data: dict[str, Any]) -> None:
    data["hash_rate"] = round(sum(w["hash_rate"] for w in data["workers"]), 2)
    data["active_workers"] = sum(1 for w in data["workers"] if w["alive"])


def _id(row: dict[str, Any]) -> int:
    return int(row["id"])
