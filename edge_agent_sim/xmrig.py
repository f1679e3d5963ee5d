"""Simulated XMRig miners: real HTTP on loopback, answering like XMRig 6's Httpd.

The rules (auth, restricted mode, status codes, JSON-RPC errors) follow XMRig's source as
summarised in research/http-apis.md; the bodies are the official examples with live numbers.
One aiohttp application serves every miner; each miner has its own listening socket.
"""

from __future__ import annotations

import asyncio
import copy
import json
import random
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from aiohttp import web

from agent.tools.open_files import raise_open_file_limit
from edge_agent_sim.fleet import SimDevice, SimFleet

# `simulate --spread` listens here: XMRig has no usual port, this is the doc's example.
SPREAD_PORT = 44444

CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, PUT, POST, DELETE",
    "Access-Control-Allow-Headers": "Authorization, Content-Type",
}
RPC_METHODS = ("pause", "resume", "stop")


def _template(name: str) -> Any:
    text = resources.files("edge_agent_sim").joinpath(f"sim_data/xmrig/{name}.json").read_text()
    return json.loads(text)


SUMMARY = _template("summary")
BACKENDS = _template("backends")
CONFIG = _template("config")


@dataclass
class XmrigModel:
    """One miner. Tests steer it through these attributes (on the simulator's loop)."""

    token: str | None = "SECRET"  # noqa: S105 - the official example's token
    restricted: bool = False
    api_level: int = 2  # 2: /2/*; 1: /1/summary only; 0: /api.json only
    gpu: bool = False  # also report a CUDA backend with GPU health
    hashrate_hs: float = 1200.0
    paused: bool = False
    stopped: bool = False
    fault: str | None = None  # None, "hang", "garbage", "truncated", "error500"
    worker_id: str = "sim"
    started: float = field(default_factory=time.monotonic)
    config: dict[str, Any] = field(default_factory=lambda: copy.deepcopy(CONFIG))
    requests: list[tuple[str, str, float]] = field(default_factory=list)
    writes: list[tuple[str, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.config["http"]["access-token"] = self.token
        self.config["http"]["restricted"] = self.restricted

    @property
    def mining(self) -> bool:
        return not (self.paused or self.stopped)

    def summary(self) -> dict[str, Any]:
        uptime = int(time.monotonic() - self.started)
        rate = self._rate()
        body: dict[str, Any] = copy.copy(SUMMARY)
        body.update(
            worker_id=self.worker_id,
            uptime=uptime,
            paused=self.paused,
            restricted=self.restricted,
            hashrate={
                "total": [rate, rate, rate if uptime >= 900 else None],
                "highest": self.hashrate_hs * 1.05,
            },
        )
        return body

    def backends(self) -> list[dict[str, Any]]:
        rate = self._rate()
        cpu = copy.deepcopy(BACKENDS[0])
        cpu["enabled"] = not self.stopped
        cpu["hashrate"] = [rate, rate, None]
        third = round(rate / 3, 2) if rate is not None else None
        for thread in cpu["threads"]:
            thread["hashrate"] = [third, third, None]
        return [cpu, copy.deepcopy(BACKENDS[1])] if self.gpu else [cpu]

    def _rate(self) -> float | None:
        if not self.mining:
            return 0.0
        return round(self.hashrate_hs * random.uniform(0.97, 1.03), 2)


class XmrigSimulator:
    """Serves every model of a fleet; the listening port picks the model."""

    def __init__(self) -> None:
        self.by_port: dict[int, XmrigModel] = {}
        self.app = web.Application(client_max_size=4 * 1024 * 1024)
        self.app.router.add_route("*", "/{tail:.*}", self.handle)
        # Hung requests end when the fleet closes; else aiohttp's shutdown waits 60 s for them.
        self.released = asyncio.Event()

    async def release(self) -> None:
        self.released.set()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        transport = request.transport
        sockname: tuple[Any, ...] = transport.get_extra_info("sockname") if transport else ()
        model = self.by_port[sockname[1]]
        model.requests.append((request.method, request.path, time.monotonic()))
        if model.fault == "hang":
            await self.released.wait()
            return web.Response(status=503)
        if model.fault == "error500":
            return _error(500, "Internal Server Error")
        refusal = _gate(model, request)
        if refusal is not None:
            return refusal
        return await self._route(model, request)

    async def _route(self, model: XmrigModel, request: web.Request) -> web.StreamResponse:
        path, method = request.path, request.method
        if method == "GET" and _summary_path(path, model.api_level):
            return _json(model, model.summary())
        if method == "GET" and path == "/2/backends" and model.api_level >= 2:
            return _json(model, model.backends())
        if _config_path(path, model.api_level):
            return await self._config(model, request)
        if path == "/json_rpc" and method == "POST":
            return await self._rpc(model, request)
        return _error(404, "Not Found")

    async def _config(self, model: XmrigModel, request: web.Request) -> web.StreamResponse:
        if model.restricted:
            return _error(403, "Forbidden")
        if request.method == "GET":
            return _json(model, model.config)
        try:
            body = json.loads(await request.read())
        except ValueError:
            return _error(400, "Bad Request")
        if not isinstance(body, dict) or not isinstance(body.get("pools"), list):
            return _error(400, "Bad Request")
        model.config = body
        http = body.get("http")
        if isinstance(http, dict):  # XMRig reloads its API settings from the new config
            model.token = http.get("access-token") or None
            model.restricted = bool(http.get("restricted", False))
        model.writes.append(("config", time.monotonic()))
        return web.Response(status=204)

    async def _rpc(self, model: XmrigModel, request: web.Request) -> web.StreamResponse:
        try:
            body = json.loads(await request.read())
        except ValueError:
            return _rpc_error(None, -32700, "Parse error")
        if not isinstance(body, dict) or not isinstance(body.get("method"), str):
            return _rpc_error(None, -32600, "Invalid Request")
        method, rpc_id = body["method"], body.get("id")
        if method not in RPC_METHODS:
            return _rpc_error(rpc_id, -32601, "Method not found")
        model.writes.append((method, time.monotonic()))
        if method == "pause":
            model.paused = True
        elif method == "resume":
            model.paused = False
        else:
            model.stopped = True
        return web.json_response({"id": rpc_id, "jsonrpc": "2.0", "result": {"status": "OK"}})


def _gate(model: XmrigModel, request: web.Request) -> web.StreamResponse | None:
    """XMRig's Httpd checks, in its order: preflight, method, auth, restricted, content type."""
    if request.method == "OPTIONS":
        return web.Response(status=200, headers=CORS)
    if request.method not in ("GET", "POST", "PUT", "DELETE", "HEAD"):
        return _error(405, "Method Not Allowed")
    header = request.headers.get("Authorization")
    auth_required = not (model.restricted and not model.token)
    if header is None:
        if auth_required:
            return _error(401, "Unauthorized")
    elif not model.token:
        return _error(401, "Unauthorized")
    elif header != f"Bearer {model.token}":
        return _error(403, "Forbidden")
    if request.method != "GET" and model.restricted:
        return _error(403, "Forbidden")
    # XMRig compares the header as a whole: "application/json; charset=utf-8" is refused too.
    if request.method != "GET" and request.headers.get("Content-Type") != "application/json":
        return _error(415, "Unsupported Media Type")
    return None


def _summary_path(path: str, level: int) -> bool:
    return {"/2/summary": level >= 2, "/1/summary": level >= 1, "/api.json": True}.get(path, False)


def _config_path(path: str, level: int) -> bool:
    return {"/2/config": level >= 2, "/1/config": level >= 1}.get(path, False)


def _json(model: XmrigModel, body: Any) -> web.Response:
    text = json.dumps(body)
    if model.fault == "garbage":
        text = "<html>not json"
    elif model.fault == "truncated":
        text = text[: len(text) // 2]
    return web.Response(text=text, content_type="application/json")


def _error(status: int, reason: str) -> web.Response:
    return web.json_response({"status": status, "error": reason}, status=status)


def _rpc_error(rpc_id: Any, code: int, message: str) -> web.Response:
    return web.json_response(
        {"id": rpc_id, "jsonrpc": "2.0", "error": {"code": code, "message": message}}
    )


async def start_fleet(
    count: int, host: str = "127.0.0.1", port: int = 0, **options: Any
) -> SimFleet:
    """`count` miners on consecutive ports from `port` (0: free ports). Options go to XmrigModel."""
    raise_open_file_limit()
    simulator = XmrigSimulator()
    runner = web.AppRunner(
        simulator.app, access_log=None, handle_signals=False, shutdown_timeout=0.5
    )
    await runner.setup()
    devices = []
    for index in range(count):
        site = web.TCPSite(runner, host, port + index if port else 0, reuse_address=True)
        await site.start()
        bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        model = XmrigModel(worker_id=f"sim{index}", **options)
        simulator.by_port[bound] = model
        devices.append(SimDevice(host=host, port=bound, model=model))
    return SimFleet(kind="xmrig", devices=devices, closers=[runner.cleanup, simulator.release])


def demo_config(device: SimDevice, index: int) -> dict[str, Any]:
    """The `[[devices]]` entry the demo uses for this simulated miner."""
    return {
        "id": f"xmrig-{index + 1}",
        "kind": "xmrig",
        "name": f"XMRig rig {index + 1}",
        "url": device.url,
        "token": device.model.token,
        "poll_interval": "5s",
        "nominal_w": 150,
    }
