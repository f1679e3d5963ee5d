"""SRS as data: its state schema, its Home Assistant entities and its commands."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from agent.catalog.model import (
    Catalog,
    CommandSpec,
    DeviceInfoPaths,
    EntityDescription,
    Param,
    StateField,
)
from agent.devices.srs.config import DEFAULT_VHOST

KBPS = "kbit/s"

FIELDS = (
    StateField("server.id", "string", "SRS server id (`server`; SRS 5+ keeps it across restarts)"),
    StateField("server.service_id", "string", "SRS process id (`service`), new on every start"),
    StateField("server.pid", "integer", "SRS process id"),
    StateField("server.version", "string", "SRS version"),
    StateField("server.uptime_s", "integer", "time since SRS started", "s"),
    StateField("server.cpu_percent", "number", "SRS process CPU, % of one core", "%"),
    StateField("server.memory_bytes", "integer", "SRS process peak resident memory", "B"),
    StateField("server.memory_percent", "number", "SRS memory as a share of host RAM", "%"),
    StateField("server.system_cpu_percent", "number", "host CPU busy, all cores", "%"),
    StateField("server.system_memory_percent", "number", "host RAM in use", "%"),
    StateField("server.cpus", "integer", "host CPUs online"),
    StateField("server.load_average", "array", "host load average 1/5/15 min"),
    StateField("server.kbps_in", "number", "traffic received by SRS, 30 s average", KBPS),
    StateField("server.kbps_out", "number", "traffic sent by SRS, 30 s average", KBPS),
    StateField("server.connections", "integer", "connections open to SRS (`conn_srs`)"),
    StateField("server.streams", "integer", "streams SRS tracks (per-vhost counts summed)"),
    StateField("server.live_streams", "integer", "streams with an active publisher"),
    StateField("server.clients", "integer", "clients (players and publishers), per-vhost sum"),
    StateField("server.restarts", "integer", "SRS restarts this agent noticed (new service id)"),
    StateField(
        "server.raw_api",
        "boolean",
        "SRS's raw API is on (`http_api.raw_api.enabled`, as `rpc=raw` reports it); null until "
        "known",
    ),
    StateField(
        "server.reload_allowed",
        "boolean",
        "`reload` can work: raw API and `allow_reload` on; the Reload button exists only while "
        "true",
    ),
    StateField("vhosts[].id", "string", "SRS vhost id"),
    StateField("vhosts[].name", "string", "vhost name (`__defaultVhost__` for the default)"),
    StateField("vhosts[].enabled", "boolean", "vhost enabled"),
    StateField("vhosts[].streams", "integer", "streams on the vhost"),
    StateField("vhosts[].clients", "integer", "clients on the vhost"),
    StateField("vhosts[].kbps_in", "number", "received, 30 s average", KBPS),
    StateField("vhosts[].kbps_out", "number", "sent, 30 s average", KBPS),
    StateField("vhosts[].bytes_in", "integer", "received since the vhost was first used", "B"),
    StateField("vhosts[].bytes_out", "integer", "sent since the vhost was first used", "B"),
    StateField("vhosts[].hls", "boolean", "HLS enabled on the vhost"),
    StateField("streams[].id", "string", "SRS stream id"),
    StateField("streams[].stream", "string", "`vhost/app/name`, the key watch_streams uses"),
    StateField("streams[].vhost", "string", "vhost name"),
    StateField("streams[].app", "string", "application (`live`)"),
    StateField("streams[].name", "string", "stream name"),
    StateField("streams[].publishing", "boolean", "a publisher is sending the stream"),
    StateField("streams[].publisher_client", "string", "the publisher's client id, or null"),
    StateField("streams[].clients", "integer", "clients on the stream, publisher included"),
    StateField("streams[].frames", "integer", "frames received"),
    StateField("streams[].kbps_in", "number", "received (publisher), 30 s average", KBPS),
    StateField("streams[].kbps_out", "number", "sent (players), 30 s average", KBPS),
    StateField("streams[].bytes_in", "integer", "received since the stream appeared", "B"),
    StateField("streams[].bytes_out", "integer", "sent since the stream appeared", "B"),
    StateField("streams[].video", "object", "codec, profile, level, width, height; or null"),
    StateField("streams[].audio", "object", "codec, sample_rate_hz, channels, profile; or null"),
    StateField("streams[].resolution", "string", "`WIDTHxHEIGHT` of the video, or null"),
    StateField("clients[].id", "string", "SRS client id (the kick_client parameter)"),
    StateField("clients[].type", "string", "`rtmp-play`, `fmle-publish`, `flv-play`, …"),
    StateField("clients[].ip", "string", "client address"),
    StateField("clients[].stream", "string", "`vhost/app/name` of its stream"),
    StateField("clients[].url", "string", "the stream url as SRS reports it"),
    StateField("clients[].publish", "boolean", "the client publishes (else it plays)"),
    StateField("clients[].alive_s", "number", "connected for", "s"),
    StateField("clients[].kbps_in", "number", "received from the client, 30 s average", KBPS),
    StateField("clients[].kbps_out", "number", "sent to the client, 30 s average", KBPS),
    StateField("truncated.streams", "boolean", "more streams exist than max_streams listed"),
    StateField("truncated.clients", "boolean", "more clients exist than max_clients listed"),
    StateField("watched{}", "object", "per watch_streams entry, keyed by a slug of it"),
    StateField("watched{}.stream", "string", "`vhost/app/name` as configured"),
    StateField("watched{}.live", "boolean", "the stream has an active publisher"),
    StateField("watched{}.clients", "integer", "clients on the stream (0 when absent)"),
    StateField("watched{}.kbps_in", "number", "received, 30 s average (0 when absent)", KBPS),
    StateField("watched{}.kbps_out", "number", "sent, 30 s average (0 when absent)", KBPS),
    StateField("errors", "array", "problems seen in the last poll (text)"),
)


def _measure(key: str, name: str, value: str, **kw: Any) -> EntityDescription:
    return EntityDescription(key, "sensor", name, value=value, state_class="measurement", **kw)


ENTITIES = (
    _measure("cpu", "CPU", "server.cpu_percent", unit="%", precision=1, icon="mdi:cpu-64-bit"),
    _measure(
        "memory",
        "Memory",
        "server.memory_bytes",
        unit="MiB",
        device_class="data_size",
        scale=1 / 1048576,
        precision=1,
        icon="mdi:memory",
    ),
    _measure("connections", "Connections", "server.connections", icon="mdi:lan-connect"),
    _measure("streams", "Streams", "server.streams", icon="mdi:video-outline"),
    _measure("live_streams", "Live streams", "server.live_streams", icon="mdi:broadcast"),
    _measure("clients", "Clients", "server.clients", icon="mdi:account-multiple"),
    _measure(
        "kbps_in",
        "Traffic in",
        "server.kbps_in",
        unit=KBPS,
        device_class="data_rate",
        precision=0,
    ),
    _measure(
        "kbps_out",
        "Traffic out",
        "server.kbps_out",
        unit=KBPS,
        device_class="data_rate",
        precision=0,
    ),
    _measure(
        "system_cpu",
        "System CPU",
        "server.system_cpu_percent",
        unit="%",
        precision=1,
        entity_category="diagnostic",
        icon="mdi:cpu-64-bit",
    ),
    _measure(
        "uptime",
        "Uptime",
        "server.uptime_s",
        unit="s",
        device_class="duration",
        entity_category="diagnostic",
    ),
    EntityDescription(
        "version",
        "sensor",
        "Version",
        value="server.version",
        entity_category="diagnostic",
        icon="mdi:tag",
    ),
)

# A stock SRS has its raw API off and answers every reload with code 1061: the button is
# announced only while the server itself says a reload would be accepted.
RELOAD_BUTTON = EntityDescription(
    "reload",
    "button",
    "Reload config",
    command="reload",
    entity_category="config",
    icon="mdi:reload",
)

# Neither command is disruptive in the sense of design §5. `reload` is SRS's own SIGHUP: it
# re-reads the config file without dropping connections (SRS keeps the old config when the
# new one fails to parse) and SRS's console offers it as an everyday button. `kick_client`
# closes one connection, which the player or encoder may simply reopen; it is routine
# moderation, offered next to every client in SRS's console. Both stay open to automation.
COMMANDS = (
    CommandSpec(
        "kick_client",
        "Disconnect one client, player or publisher (`DELETE /api/v1/clients/{id}`).",
        params=(
            Param(
                "client_id",
                "str",
                "the client's id (`clients[].id`, or a stream's `publisher_client`)",
                max_length=64,
                pattern=r"[A-Za-z0-9_.-]{1,64}",
            ),
        ),
        plain="client_id",
    ),
    CommandSpec(
        "reload",
        "Reload SRS's config file (raw API `rpc=reload`; needs http_api.raw_api.enabled and "
        "allow_reload on, which a stock SRS has off: refused as `unsupported` where the server "
        "said so).",
    ),
)


def _state_entities(state: Mapping[str, Any]) -> Sequence[EntityDescription]:
    server = state.get("server")
    reload = isinstance(server, Mapping) and server.get("reload_allowed") is True
    return [*([RELOAD_BUTTON] if reload else []), *_watched_entities(state)]


def _watched_entities(state: Mapping[str, Any]) -> list[EntityDescription]:
    watched = state.get("watched")
    if not isinstance(watched, Mapping):
        return []
    entities: list[EntityDescription] = []
    for slug, entry in watched.items():
        if isinstance(entry, Mapping):
            entities.extend(_stream_entities(slug, stream_label(str(entry.get("stream", slug)))))
    return entities


def _stream_entities(slug: str, label: str) -> list[EntityDescription]:
    path = f"watched.{slug}"
    return [
        EntityDescription(
            f"stream_{slug}_live",
            "binary_sensor",
            f"{label} live",
            value=f"{path}.live",
            device_class="running",
            icon="mdi:broadcast",
            attributes=path,
        ),
        _measure(
            f"stream_{slug}_kbps_in",
            f"{label} bitrate in",
            f"{path}.kbps_in",
            unit=KBPS,
            device_class="data_rate",
            precision=0,
        ),
        _measure(
            f"stream_{slug}_kbps_out",
            f"{label} bitrate out",
            f"{path}.kbps_out",
            unit=KBPS,
            device_class="data_rate",
            precision=0,
        ),
        _measure(
            f"stream_{slug}_clients",
            f"{label} clients",
            f"{path}.clients",
            icon="mdi:account-multiple",
        ),
    ]


def stream_label(key: str) -> str:
    """`__defaultVhost__/live/cam1` reads better as `live/cam1`."""
    prefix = f"{DEFAULT_VHOST}/"
    return key[len(prefix) :] if key.startswith(prefix) else key


CATALOG = Catalog(
    kind="srs",
    title="SRS",
    manufacturer="SRS (Simple Realtime Server)",
    default_model="SRS media server",
    fields=FIELDS,
    entities=ENTITIES,
    commands=COMMANDS,
    dynamic_entities=_state_entities,
    device_info=DeviceInfoPaths(sw_version="server.version", serial_number="server.id"),
)
