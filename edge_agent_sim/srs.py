"""Simulated SRS servers: real HTTP on loopback, answering like SRS 7.0.18's HTTP API.

Bodies follow the captures in fixtures/srs-real key for key (templates in sim_data/, with live
numbers); the rules follow SRS's srs_app_http_api.cpp: errors as `{"code": N}` inside HTTP
200, `count` read as max(10, count), lists ordered by id, a 302 for a collection without its
trailing slash, the navigation document for unknown paths, Basic auth, raw-API switches and
JSONP. One aiohttp application serves every server; each has its own listening socket.

Like a stock SRS (seed 003: `http_api.raw_api` `enabled off; allow_reload off;`), a server
starts with its raw API off: `rpc=raw` still describes it, everything else answers 1061.
`raw_api=True` (and `allow_reload=True`) are the configured variants; `reconfigure()` is an
operator's edit followed by a reload (SIGHUP), `restart()` takes the switches too.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import json
import random
import socket
import ssl
import string
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from aiohttp import web

from agent.tools.open_files import raise_open_file_limit
from edge_agent_sim.fleet import SimDevice, SimFleet

DEFAULT_VHOST = "__defaultVhost__"  # SRS's name for the vhost a stream url leaves out


def stream_key(stream: str) -> str:
    """How a test names a stream (`app/name`, `/app/name` or `vhost/app/name`) as SRS keys it:
    `vhost/app/name`, the default vhost filled in."""
    parts = stream.strip().strip("/").split("/")
    if len(parts) < 2 or not all(parts):
        raise ValueError(f"{stream!r} is not 'app/name' or 'vhost/app/name'")
    if len(parts) == 2:
        parts.insert(0, DEFAULT_VHOST)
    return "/".join(parts)


SERVER_HEADER = "SRS/7.0.18(Hang)"
TEMPLATES: dict[str, Any] = json.loads(
    resources.files("edge_agent_sim").joinpath("sim_data/srs/templates.json").read_text()
)
DATA_DOCS = ("authors", "features", "rusages", "self_proc_stats", "system_proc_stats", "meminfos")
COLLECTIONS = ("vhosts", "streams", "clients")
STREAM_NOT_FOUND, CLIENT_NOT_FOUND, VHOST_NOT_FOUND = 2048, 2049, 2014
RAW_NOT_ALLOWED, RAW_DISABLED = 1060, 1061
FAULTS = ("malformed", "truncated", "garbage", "wrong_types", "error500", "hang")
_ID_CHARS = string.ascii_lowercase + string.digits
ACTIVITY_STREAMS = ("live/cam1", "live/cam2", "live/studio")
ACTIVITY_MAX_PLAYERS = 4
ACTIVITY_CATCH_UP = 5  # changes at most per request, however long the server sat idle
DEMO_ACTIVITY_S = 8.0
REQUEST_LOG_MAX = 10_000


def _random_id(length: int) -> str:
    return "".join(random.choices(_ID_CHARS, k=length))


def _vid() -> str:
    return f"vid-{_random_id(7)}"


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class SimStream:
    id: str
    vhost: str
    app: str
    name: str
    kbps: int
    video: bool = True
    audio: bool = True
    publisher: str | None = None  # client id while publishing
    started: float = field(default_factory=time.monotonic)

    @property
    def key(self) -> str:
        return f"{self.vhost}/{self.app}/{self.name}"

    @property
    def url(self) -> str:
        path = f"/{self.app}/{self.name}"
        return path if self.vhost == DEFAULT_VHOST else f"{self.vhost}{path}"


@dataclass
class SimClient:
    id: str
    stream: str  # stream id
    ip: str
    type: str
    started: float = field(default_factory=time.monotonic)

    @property
    def publish(self) -> bool:
        return self.type.endswith("publish")


@dataclass
class SrsModel:
    """One SRS. Tests steer it through these methods, on the simulator's loop."""

    username: str | None = None  # http_api.auth on when set
    password: str | None = None
    raw_api: bool = False  # http_api.raw_api.enabled; off in a stock SRS
    allow_reload: bool = False  # http_api.raw_api.allow_reload; off in a stock SRS
    api_listen: str = "127.0.0.1:1985"  # http_api.listen, as rpc=raw reports it
    page_floor: int = 10  # SRS 7.0.18 reads count as max(10, count)
    kbps: int = 1000  # a new stream's publishing bitrate
    rtmp_port: int = 1935
    # Seconds between random publisher/player changes on ACTIVITY_STREAMS (demo); 0: none.
    activity: float = 0.0
    activity_seed: int | None = None
    fault: str | None = None  # one of FAULTS
    fault_on: str | None = None  # only paths containing this text; None: every API reply
    server_id: str = field(default_factory=_vid)
    service_id: str = field(default_factory=lambda: _random_id(8))
    pid: int = field(default_factory=lambda: random.randint(1000, 99999))
    started: float = field(default_factory=time.monotonic)
    vhosts: dict[str, str] = field(default_factory=dict)  # name → id
    streams: dict[str, SimStream] = field(default_factory=dict)
    clients: dict[str, SimClient] = field(default_factory=dict)
    reloads: int = 0
    kicks: list[str] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path?query)
    release: asyncio.Event = field(default_factory=asyncio.Event)  # ends "hang"
    rng: random.Random = field(init=False, repr=False)  # the activity's own, for seeding
    _next_change: float | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.activity_seed)

    # --- steering ------------------------------------------------------------------------
    def start_stream(
        self, stream: str, *, video: bool = True, audio: bool = True, kbps: int | None = None
    ) -> str:
        """A publisher starts `app/name` or `vhost/app/name`; returns its client id."""
        found = self.find_stream(stream) or self._new_stream(stream, kbps)
        if found.publisher is not None:
            raise ValueError(f"{stream} is already publishing")
        found.video, found.audio, found.started = video, audio, time.monotonic()
        found.kbps = kbps or found.kbps
        client = self._new_client(found, "fmle-publish", "127.0.0.1")
        found.publisher = client.id
        return client.id

    def stop_stream(self, stream: str) -> None:
        """The publisher leaves; players stay on the (now inactive) stream until they go."""
        found = self.find_stream(stream)
        if found is None or found.publisher is None:
            raise ValueError(f"{stream} is not publishing")
        self.remove_client(found.publisher)

    def add_player(
        self, stream: str, *, ip: str = "127.0.0.1", client_type: str = "rtmp-play"
    ) -> str:
        """A player joins (SRS tracks a stream with players but no publisher as inactive)."""
        found = self.find_stream(stream) or self._new_stream(stream, None)
        return self._new_client(found, client_type, ip).id

    def remove_client(self, client_id: str) -> bool:
        client = self.clients.pop(client_id, None)
        if client is None:
            return False
        stream = self.streams.get(client.stream)
        if stream is not None:
            if stream.publisher == client_id:
                stream.publisher = None
            if stream.publisher is None and not self._clients_of(stream):
                del self.streams[stream.id]  # SRS drops an idle stream's stats
        return True

    def reconfigure(self, *, raw_api: bool | None = None, allow_reload: bool | None = None) -> None:
        """The config file edited and reloaded (SIGHUP): same process, new raw-API switches."""
        if raw_api is not None:
            self.raw_api = raw_api
        if allow_reload is not None:
            self.allow_reload = allow_reload

    def restart(
        self,
        *,
        keep_server_id: bool = False,
        republish: bool = False,
        raw_api: bool | None = None,
        allow_reload: bool | None = None,
    ) -> None:
        """A new SRS process: new service id and pid, empty stats. SRS 5+ keeps its server id
        in a file beside the pid file (keep_server_id); older ones or a lost file do not.
        `raw_api` / `allow_reload`: the config it starts with changed them."""
        self.reconfigure(raw_api=raw_api, allow_reload=allow_reload)
        live = [s for s in self.streams.values() if s.publisher] if republish else []
        self.streams.clear()
        self.clients.clear()
        self.vhosts.clear()
        if not keep_server_id:
            self.server_id = _vid()
        self.service_id = _random_id(8)
        self.pid = random.randint(1000, 99999)
        self.started = time.monotonic()
        for stream in live:
            self.start_stream(stream.key, video=stream.video, audio=stream.audio, kbps=stream.kbps)

    def log_request(self, method: str, path_qs: str) -> None:
        """Kept for tests to inspect; bounded, so a long `simulate` or demo does not grow."""
        if len(self.requests) >= REQUEST_LOG_MAX:
            del self.requests[: REQUEST_LOG_MAX // 2]
        self.requests.append((method, path_qs))

    def tick(self, now: float | None = None) -> int:
        """Bring the optional activity up to `now` (the simulator calls it on every request, so
        an idle server costs nothing); returns how many changes were made."""
        if self.activity <= 0:
            return 0
        now = time.monotonic() if now is None else now
        if self._next_change is None:
            self._next_change = now + self.activity
        changes = 0
        while now >= self._next_change and changes < ACTIVITY_CATCH_UP:
            self._random_change()
            self._next_change += self.activity
            changes += 1
        self._next_change = max(self._next_change, now)  # after a long pause, no burst
        return changes

    def _random_change(self) -> None:
        """One publisher starts or stops, or one player joins or leaves."""
        rng = self.rng
        name = rng.choice(ACTIVITY_STREAMS)
        stream = self.find_stream(name)
        players = [c for c in self._clients_of(stream) if not c.publish] if stream else []
        live = stream is not None and stream.publisher is not None
        roll = rng.random()
        if not live and (not players or roll < 0.6):
            self.start_stream(name, kbps=rng.choice((800, 1500, 2500, 4000)))
        elif not live or (roll >= 0.8 and players):
            self.remove_client(rng.choice(players).id)  # a player gives up or leaves
        elif roll < 0.25:
            self.stop_stream(name)  # its players stay, waiting, until they leave
        elif len(players) < ACTIVITY_MAX_PLAYERS:
            kind = rng.choice(("rtmp-play", "flv-play"))
            self.add_player(name, ip=f"192.168.1.{rng.randint(20, 250)}", client_type=kind)

    def find_stream(self, stream: str) -> SimStream | None:
        key = stream_key(stream)
        return next((s for s in self.streams.values() if s.key == key), None)

    def _new_stream(self, stream: str, kbps: int | None) -> SimStream:
        vhost, rest = stream_key(stream).split("/", 1)
        app, name = rest.rsplit("/", 1)
        self.vhosts.setdefault(vhost, _vid())
        created = SimStream(_vid(), vhost, app, name, kbps or self.kbps)
        self.streams[created.id] = created
        return created

    def _new_client(self, stream: SimStream, type_: str, ip: str) -> SimClient:
        client = SimClient(_random_id(8), stream.id, ip, type_)
        self.clients[client.id] = client
        return client

    def _clients_of(self, stream: SimStream) -> list[SimClient]:
        return [c for c in self.clients.values() if c.stream == stream.id]

    # --- bodies --------------------------------------------------------------------------
    def envelope(self, **payload: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"code": 0, "server": self.server_id, "service": self.service_id}
        body["pid"] = str(self.pid)
        body.update(payload)
        return body

    def summaries(self) -> dict[str, Any]:
        data: dict[str, Any] = copy.deepcopy(TEMPLATES["summaries"]["data"])
        now, uptime = _now_ms(), int(time.monotonic() - self.started)
        recv = sum(self._bytes(c, inbound=True) for c in self.clients.values())
        sent = sum(self._bytes(c, inbound=False) for c in self.clients.values())
        data["now_ms"] = now
        data["self"].update(
            pid=self.pid,
            srs_uptime=uptime,
            mem_kbyte=17000 + 40 * len(self.clients),
            cpu_percent=round(0.01 + 0.002 * len(self.clients), 3),
        )
        data["system"].update(
            net_sample_time=now,
            srs_sample_time=now,
            srs_recv_bytes=recv,
            srs_send_bytes=sent,
            conn_srs=len(self.clients),
            uptime=round(10000.0 + uptime, 2),
        )
        return data

    def vhost_json(self, name: str, vhost_id: str) -> dict[str, Any]:
        streams = [s for s in self.streams.values() if s.vhost == name]
        clients = [c for s in streams for c in self._clients_of(s)]
        return {
            "id": vhost_id,
            "name": name,
            "enabled": True,
            "clients": len(clients),
            "streams": len(streams),
            "send_bytes": sum(self._bytes(c, inbound=False) for c in clients),
            "recv_bytes": sum(self._bytes(c, inbound=True) for c in clients),
            "kbps": {
                "recv_30s": sum(self._kbps(c, inbound=True) for c in clients),
                "send_30s": sum(self._kbps(c, inbound=False) for c in clients),
            },
            "hls": {"enabled": False},
        }

    def stream_json(self, stream: SimStream) -> dict[str, Any]:
        clients = self._clients_of(stream)
        publish: dict[str, Any] = {"active": stream.publisher is not None}
        if stream.publisher is not None:
            publish["cid"] = stream.publisher
        elapsed = time.monotonic() - stream.started
        return {
            "id": stream.id,
            "name": stream.name,
            "vhost": self.vhosts[stream.vhost],
            "app": stream.app,
            "tcUrl": self._tc_url(stream),
            "url": stream.url,
            "live_ms": _now_ms(),
            "clients": len(clients),
            "frames": int(elapsed * 15) if stream.publisher else 0,
            "send_bytes": sum(self._bytes(c, inbound=False) for c in clients),
            "recv_bytes": sum(self._bytes(c, inbound=True) for c in clients),
            "kbps": {
                "recv_30s": sum(self._kbps(c, inbound=True) for c in clients),
                "send_30s": sum(self._kbps(c, inbound=False) for c in clients),
            },
            "publish": publish,
            "video": _VIDEO if stream.video and stream.publisher else None,
            "audio": _AUDIO if stream.audio and stream.publisher else None,
        }

    def client_json(self, client: SimClient) -> dict[str, Any]:
        stream = self.streams[client.stream]
        return {
            "id": client.id,
            "vhost": self.vhosts[stream.vhost],
            "stream": stream.id,
            "ip": client.ip,
            "pageUrl": "",
            "swfUrl": "",
            "tcUrl": self._tc_url(stream),
            "url": stream.url,
            "name": stream.name,
            "type": client.type,
            "publish": client.publish,
            "alive": round(time.monotonic() - client.started, 2),
            "send_bytes": self._bytes(client, inbound=False),
            "recv_bytes": self._bytes(client, inbound=True),
            "kbps": {
                "recv_30s": self._kbps(client, inbound=True),
                "send_30s": self._kbps(client, inbound=False),
            },
        }

    def _tc_url(self, stream: SimStream) -> str:
        return f"rtmp://127.0.0.1:{self.rtmp_port}/{stream.app}"

    def _kbps(self, client: SimClient, *, inbound: bool) -> int:
        """A publisher sends the stream's bitrate in; each player gets it out."""
        stream = self.streams.get(client.stream)
        rate = stream.kbps if stream is not None and stream.publisher else 0
        return rate if client.publish == inbound else 0

    def _bytes(self, client: SimClient, *, inbound: bool) -> int:
        handshake = 3471 if inbound else 4384  # what a real RTMP session starts with
        elapsed = time.monotonic() - client.started
        return handshake + int(self._kbps(client, inbound=inbound) * 125 * elapsed)


_VIDEO = {"codec": "H264", "profile": "High", "level": "3.1", "width": 1280, "height": 720}
_AUDIO = {"codec": "AAC", "sample_rate": 44100, "channel": 2, "profile": "LC"}


class SrsSimulator:
    """Serves every model of a fleet; the listening port picks the model."""

    def __init__(self) -> None:
        self.by_port: dict[int, SrsModel] = {}
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self.handle)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.transport is None:  # the peer already left
            raise web.HTTPServiceUnavailable()
        model = self.by_port[request.transport.get_extra_info("sockname")[1]]
        model.log_request(request.method, request.path_qs)
        model.tick()
        if request.method == "OPTIONS":
            return _reply(b"", "")
        if model.username is not None and not _authorised(model, request):
            return _reply(b"", "", status=401, headers={"WWW-Authenticate": "Basic"})
        callback = request.query.get("callback")
        method = request.method
        if callback and request.query.get("method"):
            method = request.query["method"].upper()  # JSONP can only GET
        faulty = model.fault is not None and (model.fault_on or "") in request.path
        if faulty and model.fault == "hang":
            await model.release.wait()
        if faulty and model.fault == "error500":
            return _reply(b"Internal Server Error", "text/plain; charset=utf-8", status=500)
        answer = self.route(model, method, request.path, request.query)
        if isinstance(answer, web.StreamResponse):
            return answer
        return _json(answer, callback, model.fault if faulty else None)

    def route(
        self, model: SrsModel, method: str, path: str, query: Any
    ) -> dict[str, Any] | web.StreamResponse:
        if path in ("/api", "/api/v1") or path in (f"/api/v1/{c}" for c in COLLECTIONS):
            return _redirect(f"{path}/")
        if path == "/":
            return model.envelope(**TEMPLATES["root"])
        if path == "/api/":
            return model.envelope(**TEMPLATES["api"])
        if not path.startswith("/api/v1/"):
            return _reply(b"Not Found", "text/plain; charset=utf-8", status=404)
        name, _, item = path[len("/api/v1/") :].partition("/")
        if name in COLLECTIONS and (item or path.endswith("/")):
            return self._collection(model, method, name, item, query)
        if name == "versions" and not item:
            return model.envelope(
                data={"major": 7, "minor": 0, "revision": 18, "version": "7.0.18"}
            )
        if name == "summaries" and not item:
            return model.envelope(data=model.summaries())
        if name in DATA_DOCS and not item:
            return model.envelope(**TEMPLATES[name])
        if name == "raw" and not item:
            return _raw(model, query.get("rpc", ""))
        if path == "/api/v1/tests/errors":
            return {"code": 100}
        return model.envelope(**TEMPLATES["v1"])  # SRS's answer to any unknown API path

    def _collection(
        self, model: SrsModel, method: str, name: str, item: str, query: Any
    ) -> dict[str, Any] | web.StreamResponse:
        if name == "clients" and item and method == "DELETE":
            if not model.remove_client(item):
                return {"code": CLIENT_NOT_FOUND}
            model.kicks.append(item)
            return model.envelope()
        if method != "GET":
            return _reply(b"Method Not Allowed", "text/plain; charset=utf-8", status=405)
        if name == "vhosts":
            return _vhosts(model, item)
        if name == "streams":
            if item:
                stream = model.streams.get(item)
                if stream is None:
                    return {"code": STREAM_NOT_FOUND}
                return model.envelope(stream=model.stream_json(stream))
            page = _page(model, model.streams, query)
            return model.envelope(streams=[model.stream_json(model.streams[i]) for i in page])
        if item:
            client = model.clients.get(item)
            if client is None:
                return {"code": CLIENT_NOT_FOUND}
            return model.envelope(client=model.client_json(client))
        page = _page(model, model.clients, query)
        return model.envelope(clients=[model.client_json(model.clients[i]) for i in page])


def _vhosts(model: SrsModel, item: str) -> dict[str, Any]:
    by_id = {vid: name for name, vid in model.vhosts.items()}
    if item:
        if item not in by_id:
            return {"code": VHOST_NOT_FOUND}
        return model.envelope(vhost=model.vhost_json(by_id[item], item))
    return model.envelope(vhosts=[model.vhost_json(by_id[vid], vid) for vid in sorted(by_id)])


def _page(model: SrsModel, items: dict[str, Any], query: Any) -> list[str]:
    """SRS walks a std::map (ordered by id) from `start`, `count` items, count at least 10."""
    start = max(0, _atoi(query.get("start", "")))
    count = max(model.page_floor, _atoi(query.get("count", "")))
    return sorted(items)[start : start + count]


def _atoi(text: str) -> int:
    digits = ""
    for char in text.strip():
        if not (char.isdigit() or (char == "-" and not digits)):
            break
        digits += char
    try:
        return int(digits)
    except ValueError:
        return 0


def _raw(model: SrsModel, rpc: str) -> dict[str, Any]:
    """SRS's order: `rpc=raw` answers whatever the switches; then the raw API must be on
    (1061), the rpc known (1060), and for a reload allow_reload on (1061 again)."""
    if rpc == "raw":
        raw = copy.deepcopy(TEMPLATES["raw"])
        raw["http_api"]["listen"] = model.api_listen
        raw["http_api"]["raw_api"].update(enabled=model.raw_api, allow_reload=model.allow_reload)
        return {"code": 0, **raw}
    if not model.raw_api:
        return {"code": RAW_DISABLED}
    if rpc not in ("reload", "reload-fetch"):
        return {"code": RAW_NOT_ALLOWED}
    if rpc == "reload-fetch":
        return {"code": 0, "data": {"err": 0, "msg": "Success", "state": 0, "rid": "sim"}}
    if not model.allow_reload:
        return {"code": RAW_DISABLED}
    model.reloads += 1
    return {"code": 0}


def _authorised(model: SrsModel, request: web.Request) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    return user == model.username and password == (model.password or "")


def _json(body: dict[str, Any], callback: str | None, fault: str | None) -> web.Response:
    if fault == "wrong_types":
        body = {k: ("n/a" if k in ("data", *COLLECTIONS) else v) for k, v in body.items()}
    text = json.dumps(body, separators=(",", ":"))
    if fault == "malformed":
        text = text.replace(":", ";", 2)
    elif fault == "truncated":
        text = text[: len(text) // 2]
    elif fault == "garbage":
        text = "<html><body>502 Bad Gateway</body></html>"
    if callback:
        return _reply(f"{callback}({text})".encode(), "text/javascript")
    return _reply(text.encode(), "application/json")


def _redirect(location: str) -> web.Response:
    body = f"Redirect to {location}".encode()
    return _reply(body, "text/plain; charset=utf-8", status=302, headers={"Location": location})


def _reply(
    body: bytes, content_type: str, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    all_headers = {"Server": SERVER_HEADER, **(headers or {})}
    if content_type:
        all_headers["Content-Type"] = content_type
    return web.Response(body=body, status=status, headers=all_headers)


async def start_fleet(
    count: int, host: str = "127.0.0.1", port: int = 0, **options: Any
) -> SimFleet:
    """`count` SRS servers on consecutive ports from `port` (0: free ports).

    Options: `streams` (live streams per server at start, `live/streamN`), `players` (per
    such stream), `ssl_context` (serve HTTPS), the rest go to SrsModel (`username`/`password`,
    `raw_api`, `allow_reload` (both off by default, as in a stock SRS), `kbps`, `activity`
    seconds between random publisher and player changes with `activity_seed`,
    `fault`/`fault_on` …).
    """
    raise_open_file_limit()
    streams, players = int(options.pop("streams", 2)), int(options.pop("players", 1))
    ssl_context: ssl.SSLContext | None = options.pop("ssl_context", None)
    simulator = SrsSimulator()
    runner = web.AppRunner(simulator.app, access_log=None, handle_signals=False)
    await runner.setup()
    devices = []
    for index in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port + index if port else 0))
        await web.SockSite(runner, sock, ssl_context=ssl_context).start()
        model = SrsModel(**options)
        model.api_listen = f"{host}:{sock.getsockname()[1]}"
        for n in range(streams):
            model.start_stream(f"live/stream{n}")
            for _ in range(players):
                model.add_player(f"live/stream{n}")
        simulator.by_port[sock.getsockname()[1]] = model
        devices.append(SimDevice(host=host, port=sock.getsockname()[1], model=model))

    async def close() -> None:
        for model in simulator.by_port.values():
            model.release.set()
        await runner.cleanup()

    return SimFleet(kind="srs", devices=devices, closers=[close])


def demo_config(device: SimDevice, index: int) -> dict[str, Any]:
    """The `[[devices]]` entry the demo uses for this simulated server.

    The demo is meant to show streams going live and stopping, so a server started without
    `activity` gets the demo's pace here (the demo starts every fleet with default options).
    """
    model: SrsModel = device.model
    if model.activity <= 0:
        model.activity = DEMO_ACTIVITY_S
    entry: dict[str, Any] = {
        "id": f"srs-{index + 1}",
        "kind": "srs",
        "name": f"SRS {index + 1}",
        "url": device.url,
        "poll_interval": "5s",
        "watch_streams": ["live/stream0", ACTIVITY_STREAMS[0]],
    }
    if model.username is not None:
        entry.update(username=model.username, password=model.password or "")
    return entry
