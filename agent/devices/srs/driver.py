"""SRS: summaries, vhosts, streams and clients → state and events; commands → API writes.

One poll is four requests when every list fits in a page (summaries, vhosts, streams,
clients): summaries carries the version, process and host figures, and the vhost list gives
SRS's own per-vhost counts and 30 s bitrates, whose sums are the server totals. A fifth,
`rpc=raw`, asks whether the raw API would take a reload: on the first poll, after SRS
restarted or reloaded, and every RAW_API_RECHECK_POLLS polls (an operator's config edit).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from agent.devices import coerce
from agent.devices.base import BlockingDriver, PollResult
from agent.devices.srs.catalog import CATALOG, stream_label
from agent.devices.srs.client import Identity, Listing, SrsClient
from agent.devices.srs.config import DEFAULT_VHOST, SrsConfig, stream_key
from agent.errors import DeviceError, ProtocolError, UnknownCommandError, UnsupportedError

_SLUG_JUNK = re.compile(r"[^a-z0-9]+")
Row = dict[str, Any]
RAW_API_RECHECK_POLLS = 12
RAW_API_REFUSED = 1061  # SRS: raw API off, or a reload with allow_reload off


class SrsDriver(BlockingDriver[SrsConfig]):
    catalog = CATALOG

    def __init__(self, config: SrsConfig) -> None:
        super().__init__(config)
        password = config.password.get_secret_value() if config.password else None
        self.client = SrsClient(
            str(config.url),
            username=config.username,
            password=password,
            timeout=config.timeout,
            verify=config.verify_tls,
            page_size=config.page_size,
        )
        self.watch = watch_slugs(config.watch_streams)
        self.tracker = StreamTracker()
        self.raw_api = RawApiSwitches()
        self._version: tuple[Identity | None, str | None] | None = None

    def poll_blocking(self) -> PollResult:
        summary = self.client.summaries()
        if self.raw_api.due(self.client.identity):
            self.raw_api.learn(self.client.identity, self._ask_raw_api())
        vhosts = self.client.vhosts()
        streams = self.client.streams(self.config.max_streams)
        clients = (
            self.client.clients(self.config.max_clients)
            if self.config.max_clients
            else Listing([], truncated=False, requests=0)
        )
        identity = self.client.identity
        try:
            state = normalise(summary, vhosts, streams, clients, self.watch, identity)
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            raise ProtocolError(f"SRS answered data of an unexpected shape: {exc}") from None
        if state["server"]["version"] is None:
            state["server"]["version"] = self._fallback_version(identity)
        events = self.tracker.update(identity, state["streams"], complete=not streams.truncated)
        state["server"]["restarts"] = self.tracker.restarts
        state["server"]["raw_api"] = self.raw_api.enabled
        state["server"]["reload_allowed"] = self.raw_api.reload_allowed
        raw = {
            "summaries": summary,
            "vhosts": vhosts,
            "streams": streams.items,
            "clients": clients.items,
        }
        return PollResult(state=state, raw=raw, events=events)

    def _fallback_version(self, identity: Identity | None) -> str | None:
        """A summaries reply without `self.version`: read /versions, once per SRS process."""
        if self._version is None or self._version[0] != identity:
            version = self.client.versions().get("version")
            self._version = (identity, version if isinstance(version, str) else None)
        return self._version[1]

    def execute_blocking(self, command: str, params: dict[str, Any]) -> Any:
        if command == "kick_client":
            return self._kick(params["client_id"])
        if command == "reload":
            return self._reload()
        raise UnknownCommandError(f"SRS has no command {command!r}")

    def _ask_raw_api(self) -> Mapping[str, Any] | None:
        """SRS's raw-API switches; None when its answer says nothing usable. Transport
        failures fail the poll like any other request."""
        try:
            return self.client.raw_api()
        except UnsupportedError:  # no rpc=raw at all: no raw API to reload through
            return {"enabled": False, "allow_reload": False}
        except (DeviceError, ProtocolError):
            return None

    def _reload(self) -> dict[str, Any]:
        refusal = self.raw_api.refusal()
        if refusal is not None:
            raise UnsupportedError(refusal)
        try:
            self.client.reload()
        except DeviceError as exc:
            if exc.device_code == RAW_API_REFUSED:
                self.raw_api.reload_refused()
            raise
        self.raw_api.reloaded()
        return {"reloaded": True}

    def _kick(self, client_id: str) -> dict[str, Any]:
        try:
            self.client.kick_client(client_id)
        except DeviceError as exc:
            if exc.device_code == 2049:
                raise DeviceError(
                    f"kick_client: no client {client_id!r} is connected to SRS (SRS code "
                    "2049); it may have just left",
                    device_code=2049,
                ) from None
            raise
        return {"client_id": client_id, "kicked": True}

    def close_blocking(self) -> None:
        self.client.close()


class RawApiSwitches:
    """SRS's raw-API switches as the server itself last reported them (`rpc=raw`, or a
    reload answered 1061), so that Reload is offered and sent only where it can work."""

    def __init__(self) -> None:
        self.enabled: bool | None = None  # http_api.raw_api.enabled
        self.allow_reload: bool | None = None  # http_api.raw_api.allow_reload
        self._asked: Identity | None = None  # the SRS process that answered
        self._polls = 0  # since it answered
        self._stale = True
        self.refused = False  # a reload answered 1061 since SRS last reported

    @property
    def reload_allowed(self) -> bool | None:
        if self.refused or self.enabled is False or self.allow_reload is False:
            return False
        return True if self.enabled and self.allow_reload else None

    def due(self, identity: Identity | None) -> bool:
        """Ask again after a restart (another process, maybe another config), after a
        reload, and now and then for an operator's edit reloaded by signal."""
        self._polls += 1
        return self._stale or identity != self._asked or self._polls >= RAW_API_RECHECK_POLLS

    def learn(self, identity: Identity | None, switches: Mapping[str, Any] | None) -> None:
        """`switches` None: SRS's answer was unreadable; the same process keeps what it
        said before, a new one is unknown."""
        same = identity == self._asked
        self._asked, self._polls, self._stale = identity, 0, False
        if switches is None and same:
            return
        self.enabled = coerce.flag((switches or {}).get("enabled"))
        self.allow_reload = coerce.flag((switches or {}).get("allow_reload"))
        self.refused = False

    def reload_refused(self) -> None:
        """1061 says a switch is off, not which: rpc=raw tells on the next poll."""
        self.refused = self._stale = True

    def reloaded(self) -> None:
        """SRS took the reload, so both switches were on; the new config may change them."""
        self.enabled = self.allow_reload = True
        self.refused, self._stale = False, True

    def refusal(self) -> str | None:
        """Why a reload cannot work, once the server said so; None: worth trying."""
        if self.reload_allowed is not False:
            return None
        if self.enabled is False:
            why = "its raw API is off (http_api.raw_api.enabled)"
        elif self.allow_reload is False:
            why = "its raw API does not allow reloads (http_api.raw_api.allow_reload)"
        else:
            why = "it refused the last reload (SRS code 1061: raw API or allow_reload off)"
        return (
            f"reload: this SRS cannot reload over its API: {why}; a stock SRS has both "
            "raw_api switches off. Nothing was sent. Turn on http_api.raw_api.enabled and "
            "allow_reload in its config, then reload (SIGHUP) or restart SRS"
        )


class StreamTracker:
    """Remembers who answered and which streams were live, to report what changed."""

    def __init__(self) -> None:
        self.identity: Identity | None = None
        self.restarts = 0
        self.live: dict[str, Row] | None = None  # None until the first poll

    def update(self, identity: Identity | None, streams: list[Row], *, complete: bool) -> list[Row]:
        events: list[Row] = []
        restarted = None not in (self.identity, identity) and identity != self.identity
        if restarted:
            self.restarts += 1
            events.append(_restart_event(self.identity, identity))
        live = {row["stream"]: row for row in streams if row["publishing"]}
        if self.live is not None:
            events.extend(self._changes(self.live, live, streams, restarted, complete))
        self.live = live
        self.identity = identity or self.identity
        return events

    @staticmethod
    def _changes(
        before: dict[str, Row],
        live: dict[str, Row],
        streams: list[Row],
        restarted: bool,
        complete: bool,
    ) -> list[Row]:
        listed = {row["stream"] for row in streams}
        # A publisher that reconnected between two polls (an encoder hiccup, a kick) started
        # a new publishing session: the stream stayed live but its publisher changed.
        renewed = {
            key
            for key, row in live.items()
            if key in before and row["publisher_client"] != before[key]["publisher_client"]
        }
        events: list[Row] = []
        for key, row in before.items():
            # A stream missing from a capped listing may still be live: only a complete
            # listing, a restart or the stream's own publish flag says it stopped.
            if restarted:
                reason = "server_restarted"
            elif key in renewed:
                reason = "republished"
            elif key not in live and (complete or key in listed):
                reason = "unpublished"
            else:
                continue
            events.append(_stream_event("stream_stopped", row, reason=reason))
        events.extend(
            _stream_event("stream_live", row)
            for key, row in live.items()
            if restarted or key not in before or key in renewed
        )
        return events


def _restart_event(before: Identity | None, after: Identity | None) -> Row:
    return {
        "event": "server_restarted",
        "server_id": after.server if after else None,
        "service_id": after.service if after else None,
        "pid": _int_text(after.pid) if after else None,
        "previous": {
            "server_id": before.server if before else None,
            "service_id": before.service if before else None,
            "pid": _int_text(before.pid) if before else None,
        },
    }


def _stream_event(name: str, row: Row, **extra: Any) -> Row:
    event: Row = {"event": name, "stream": row["stream"], "stream_id": row["id"]}
    if name == "stream_live":
        video = row["video"] or {}
        audio = row["audio"] or {}
        event.update(
            publisher_client=row["publisher_client"],
            video_codec=video.get("codec"),
            audio_codec=audio.get("codec"),
            resolution=row["resolution"],
        )
    event.update(extra)
    return event


def watch_slugs(keys: Iterable[str]) -> dict[str, str]:
    """watch_streams entries → unique slugs usable in state paths and entity ids."""
    slugs: dict[str, str] = {}
    for key in map(stream_key, keys):
        base = _SLUG_JUNK.sub("_", stream_label(key).lower()).strip("_") or "stream"
        slug, n = base, 2
        while slug in slugs:
            slug, n = f"{base}_{n}", n + 1
        slugs[slug] = key
    return slugs


# --- normalisation -------------------------------------------------------------------------
def normalise(
    summary: Mapping[str, Any],
    vhosts: list[Row],
    streams: Listing,
    clients: Listing,
    watch: Mapping[str, str],
    identity: Identity | None = None,
) -> Row:
    names = {v.get("id"): v.get("name") for v in vhosts}
    vhost_rows = [_vhost(v) for v in vhosts]
    stream_rows = [_stream(s, names) for s in streams.items]
    keys = {row["id"]: row["stream"] for row in stream_rows}
    by_key = {row["stream"]: row for row in stream_rows}
    return {
        "server": _server(summary, vhost_rows, stream_rows, identity),
        "vhosts": vhost_rows,
        "streams": stream_rows,
        "clients": [_client(c, keys) for c in clients.items],
        "truncated": {"streams": streams.truncated, "clients": clients.truncated},
        "watched": {
            slug: _watched(key, by_key.get(key), streams.truncated) for slug, key in watch.items()
        },
        "errors": _errors(streams, clients),
    }


def _server(
    summary: Mapping[str, Any], vhosts: list[Row], streams: list[Row], identity: Identity | None
) -> Row:
    process = coerce.mapping(summary.get("self"))
    system = coerce.mapping(summary.get("system"))
    memory_kb = coerce.truncated(process.get("mem_kbyte"))
    loads = (system.get("load_1m"), system.get("load_5m"), system.get("load_15m"))
    return {
        "id": identity.server if identity else None,
        "service_id": identity.service if identity else None,
        "pid": coerce.truncated(process.get("pid")),
        "version": coerce.text(process.get("version")),
        "uptime_s": coerce.truncated(process.get("srs_uptime")),
        # SRS names them *_percent but reports fractions (0.01 = 1 %).
        "cpu_percent": _percent(process.get("cpu_percent")),
        "memory_bytes": None if memory_kb is None else memory_kb * 1024,
        "memory_percent": _percent(process.get("mem_percent")),
        "system_cpu_percent": _percent(system.get("cpu_percent")),
        "system_memory_percent": _percent(system.get("mem_ram_percent")),
        "cpus": coerce.truncated(system.get("cpus_online")),
        "load_average": [coerce.number(x) for x in loads]
        if any(coerce.number(x) is not None for x in loads)
        else None,
        "kbps_in": sum(v["kbps_in"] or 0 for v in vhosts),
        "kbps_out": sum(v["kbps_out"] or 0 for v in vhosts),
        "connections": coerce.truncated(system.get("conn_srs")),
        "streams": sum(v["streams"] or 0 for v in vhosts),
        "live_streams": sum(1 for s in streams if s["publishing"]),
        "clients": sum(v["clients"] or 0 for v in vhosts),
        "restarts": 0,
        "raw_api": None,
        "reload_allowed": None,
    }


def _vhost(vhost: Mapping[str, Any]) -> Row:
    kbps = coerce.mapping(vhost.get("kbps"))
    return {
        "id": coerce.text(vhost.get("id")),
        "name": coerce.text(vhost.get("name")),
        "enabled": vhost.get("enabled") is True,
        "streams": coerce.truncated(vhost.get("streams")),
        "clients": coerce.truncated(vhost.get("clients")),
        "kbps_in": coerce.number(kbps.get("recv_30s")),
        "kbps_out": coerce.number(kbps.get("send_30s")),
        "bytes_in": coerce.truncated(vhost.get("recv_bytes")),
        "bytes_out": coerce.truncated(vhost.get("send_bytes")),
        "hls": coerce.mapping(vhost.get("hls")).get("enabled") is True,
    }


def _stream(stream: Mapping[str, Any], vhost_names: Mapping[Any, Any]) -> Row:
    url = coerce.text(stream.get("url"))
    vhost = coerce.text(vhost_names.get(stream.get("vhost"))) or _vhost_of(url)
    app, name = coerce.text(stream.get("app")), coerce.text(stream.get("name"))
    publish = coerce.mapping(stream.get("publish"))
    active = publish.get("active") is True
    kbps = coerce.mapping(stream.get("kbps"))
    video, audio = _video(stream.get("video")), _audio(stream.get("audio"))
    width, height = (video["width"], video["height"]) if video else (None, None)
    return {
        "id": coerce.text(stream.get("id")),
        "stream": f"{vhost}/{app}/{name}" if app and name else _key_of(url),
        "vhost": vhost,
        "app": app,
        "name": name,
        "publishing": active,
        "publisher_client": coerce.text(publish.get("cid")) if active else None,
        "clients": coerce.truncated(stream.get("clients")),
        "frames": coerce.truncated(stream.get("frames")),
        "kbps_in": coerce.number(kbps.get("recv_30s")),
        "kbps_out": coerce.number(kbps.get("send_30s")),
        "bytes_in": coerce.truncated(stream.get("recv_bytes")),
        "bytes_out": coerce.truncated(stream.get("send_bytes")),
        "video": video,
        "audio": audio,
        "resolution": f"{width}x{height}" if width and height else None,
    }


def _video(value: Any) -> Row | None:
    if not isinstance(value, dict):
        return None
    return {
        "codec": coerce.text(value.get("codec")),
        "profile": coerce.text(value.get("profile")),
        "level": coerce.text(value.get("level")),
        "width": coerce.truncated(value.get("width")),
        "height": coerce.truncated(value.get("height")),
    }


def _audio(value: Any) -> Row | None:
    if not isinstance(value, dict):
        return None
    return {
        "codec": coerce.text(value.get("codec")),
        "sample_rate_hz": coerce.truncated(value.get("sample_rate")),
        "channels": coerce.truncated(value.get("channel")),
        "profile": coerce.text(value.get("profile")),
    }


def _client(client: Mapping[str, Any], stream_keys: Mapping[Any, str]) -> Row:
    url = coerce.text(client.get("url"))
    kbps = coerce.mapping(client.get("kbps"))
    return {
        "id": coerce.text(client.get("id")),
        "type": coerce.text(client.get("type")),
        "ip": coerce.text(client.get("ip")),
        "stream": stream_keys.get(client.get("stream")) or _key_of(url),
        "url": url,
        "publish": client.get("publish") is True,
        "alive_s": coerce.number(client.get("alive")),
        "kbps_in": coerce.number(kbps.get("recv_30s")),
        "kbps_out": coerce.number(kbps.get("send_30s")),
    }


def _watched(key: str, row: Row | None, truncated: bool) -> Row:
    if row is None:
        # Absent from a complete listing: not on the server. From a capped one: unknown.
        zero = None if truncated else 0
        return {
            "stream": key,
            "live": None if truncated else False,
            "clients": zero,
            "kbps_in": zero,
            "kbps_out": zero,
        }
    return {
        "stream": key,
        "live": row["publishing"],
        "clients": row["clients"],
        "kbps_in": row["kbps_in"],
        "kbps_out": row["kbps_out"],
    }


def _errors(streams: Listing, clients: Listing) -> list[str]:
    errors = []
    if streams.truncated:
        errors.append(f"more streams than max_streams; listed the first {len(streams.items)}")
    if clients.truncated:
        errors.append(f"more clients than max_clients; listed the first {len(clients.items)}")
    return errors


def _vhost_of(url: str | None) -> str:
    """SRS's stream url is `/app/name` on the default vhost and `vhost/app/name` elsewhere."""
    if not url or url.startswith("/"):
        return DEFAULT_VHOST
    return url.split("/", 1)[0]


def _key_of(url: str | None) -> str:
    if not url:
        return f"{DEFAULT_VHOST}/?"
    return f"{DEFAULT_VHOST}{url}" if url.startswith("/") else url


def _int_text(value: str | None) -> int | str | None:
    return int(value) if value is not None and value.isdigit() else value


def _percent(fraction: Any) -> float | None:
    number = coerce.number(fraction)
    return None if number is None else round(number * 100, 2)
