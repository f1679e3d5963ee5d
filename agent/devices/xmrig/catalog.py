"""XMRig as data: its state schema, its Home Assistant entities and its commands."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from agent.catalog.model import (
    Catalog,
    CommandSpec,
    DeviceInfoPaths,
    EntityDescription,
    Param,
    PublishDefaults,
    SensitiveFields,
    StateField,
)
from agent.runtime.energy import ENERGY_ENTITY, ENERGY_STATE_FIELD

H = "H/s"

FIELDS = (
    StateField("miner_id", "string", "XMRig's own id (`id` in the summary)"),
    StateField("worker_id", "string", "worker name"),
    StateField("version", "string", "XMRig version"),
    StateField("user_agent", "string", "XMRig's user agent (version, OS, libuv, compiler)"),
    StateField("api", "string", "the summary endpoint this miner answered (/2/summary, …)"),
    StateField("algo", "string", "current algorithm"),
    StateField("hashrate_hs.10s", "number", "hash rate over 10 s (null: too few samples)", H),
    StateField("hashrate_hs.1m", "number", "hash rate over 60 s", H),
    StateField("hashrate_hs.15m", "number", "hash rate over 15 min", H),
    StateField("hashrate_hs.highest", "number", "highest 10 s hash rate seen", H),
    StateField("shares.accepted", "integer", "good shares (`results.shares_good`)"),
    StateField("shares.rejected", "integer", "total minus good shares"),
    StateField("shares.total", "integer", "all shares submitted"),
    StateField("shares.avg_time_s", "integer", "average time between shares", "s"),
    StateField("shares.difficulty", "integer", "current share difficulty"),
    StateField("pool.url", "string", "current pool host:port"),
    StateField("pool.ip", "string", "current pool address"),
    StateField("pool.ping_ms", "integer", "round trip to the pool", "ms"),
    StateField("pool.uptime_s", "integer", "time connected to this pool", "s"),
    StateField("pool.failures", "integer", "pool connection failures"),
    StateField("pool.tls", "string", "TLS version to the pool, or null"),
    StateField("uptime_s", "integer", "miner uptime", "s"),
    StateField("paused", "boolean", "mining paused (pause command or pause-on-active)"),
    StateField("mining", "boolean", "not paused and at least one backend enabled"),
    StateField("restricted", "boolean", "the API is read-only (http.restricted)"),
    StateField("donate_level", "integer", "donation level", "%"),
    StateField("cpu.brand", "string", "CPU model"),
    StateField("cpu.cores", "integer", "physical cores"),
    StateField("cpu.threads", "integer", "hardware threads"),
    StateField("memory.free_bytes", "integer", "host free memory", "B"),
    StateField("memory.total_bytes", "integer", "host total memory", "B"),
    StateField("memory.rss_bytes", "integer", "miner resident memory", "B"),
    StateField("load_average", "array", "host load average 1/5/15 min"),
    StateField("hugepages", "array", "huge pages [allocated, wanted]"),
    StateField("power_w", "number", "sum of GPU power readings; null on CPU-only rigs", "W"),
    ENERGY_STATE_FIELD,
    StateField("temperature_c", "number", "hottest GPU; null on CPU-only rigs", "°C"),
    StateField("errors", "array", "problems seen in the last poll (text)"),
    StateField("backends{}", "object", "per backend type (`cpu`, `opencl`, `cuda`)"),
    StateField("backends{}.enabled", "boolean", "backend enabled"),
    StateField("backends{}.algo", "string", "backend algorithm"),
    StateField("backends{}.hashrate_hs", "object", "10s / 1m / 15m for the backend", H),
    StateField("backends{}.threads[].hashrate_hs", "object", "10s / 1m / 15m per thread", H),
    StateField("backends{}.gpus[].name", "string", "GPU name (CUDA/OpenCL)"),
    StateField("backends{}.gpus[].temperature_c", "number", "GPU temperature", "°C"),
    StateField("backends{}.gpus[].power_w", "number", "GPU power", "W"),
    StateField("backends{}.gpus[].clock_mhz", "number", "GPU core clock", "MHz"),
    StateField("backends{}.gpus[].memory_clock_mhz", "number", "GPU memory clock", "MHz"),
    StateField("backends{}.gpus[].fan_percent", "array", "GPU fan speeds", "%"),
    StateField("configured_pools", "array", "pool URLs from /2/config (unrestricted API only)"),
)


def _hashrate(key: str, name: str, window: str, **kw: Any) -> EntityDescription:
    return EntityDescription(
        key,
        "sensor",
        name,
        value=f"hashrate_hs.{window}",
        unit=H,
        state_class="measurement",
        precision=1,
        icon="mdi:pickaxe",
        **kw,
    )


ENTITIES = (
    _hashrate("hashrate_10s", "Hashrate", "10s"),
    _hashrate("hashrate_1m", "Hashrate 1m", "1m"),
    _hashrate("hashrate_15m", "Hashrate 15m", "15m"),
    _hashrate("hashrate_highest", "Highest hashrate", "highest", entity_category="diagnostic"),
    EntityDescription(
        "shares_good",
        "sensor",
        "Shares good",
        value="shares.accepted",
        state_class="total_increasing",
        icon="mdi:check-circle-outline",
    ),
    EntityDescription(
        "shares_total",
        "sensor",
        "Shares total",
        value="shares.total",
        state_class="total_increasing",
        icon="mdi:counter",
    ),
    ENERGY_ENTITY,
    EntityDescription("pool", "sensor", "Pool", value="pool.url", icon="mdi:server-network"),
    EntityDescription(
        "ping",
        "sensor",
        "Pool ping",
        value="pool.ping_ms",
        unit="ms",
        device_class="duration",
        state_class="measurement",
        entity_category="diagnostic",
    ),
    EntityDescription(
        "uptime",
        "sensor",
        "Uptime",
        value="uptime_s",
        unit="s",
        device_class="duration",
        state_class="measurement",
        entity_category="diagnostic",
    ),
    EntityDescription(
        "paused",
        "binary_sensor",
        "Paused",
        value="paused",
        icon="mdi:pause-circle-outline",
    ),
    EntityDescription(
        "mining", "switch", "Mining", value="mining", command="mining", icon="mdi:pickaxe"
    ),
    EntityDescription(
        "version",
        "sensor",
        "Version",
        value="version",
        entity_category="diagnostic",
        icon="mdi:tag",
    ),
    EntityDescription(
        "algo",
        "sensor",
        "Algorithm",
        value="algo",
        entity_category="diagnostic",
        icon="mdi:function",
    ),
)

SECRET_CONFIG_KEYS = frozenset({"access-token", "pass", "password", "rig-id-password"})

# What a config patch may change on any rig: how the miner hashes and what it prints. The
# rest is sensitive: pools (url, user = wallet, pass), donate-level and donate-over-proxy
# (where part of the hashrate goes), http (API token, listen address), api ids, log-file and
# syslog, dns, tls, user-agent, the GPU loaders (a library the miner loads), and any key
# this list does not know.
CONFIG_PATCH_FIELDS = SensitiveFields(
    param="patch",
    routine=(
        "cpu",
        "randomx",
        "opencl",
        "cuda",
        "autosave",
        "background",
        "colors",
        "title",
        "print-time",
        "health-print-time",
        "verbose",
        "retries",
        "retry-pause",
        "watch",
        "pause-on-battery",
        "pause-on-active",
    ),
    exceptions=("opencl.loader", "cuda.loader", "cuda.nvml"),
    summary="sensitive when the patch touches anything but cpu, randomx, opencl and cuda "
    "(not their loader or nvml), autosave, background, colors, title, print-time, "
    "health-print-time, verbose, retries, retry-pause, watch, pause-on-battery, pause-on-active",
)

COMMANDS = (
    CommandSpec("pause", "Pause mining (JSON-RPC `pause`)."),
    CommandSpec("resume", "Resume mining (JSON-RPC `resume`)."),
    CommandSpec(
        "mining",
        "Switch: ON resumes, OFF pauses.",
        params=(Param("state", "bool", "ON to mine, OFF to pause"),),
        plain="state",
    ),
    CommandSpec(
        "stop",
        "Stop the miner's backends (JSON-RPC `stop`); nothing resumes them over the API.",
        security="disruptive",
    ),
    CommandSpec(
        "start",
        "JSON-RPC `start`. XMRig 6 has no handler for it and answers 'method not found'; "
        "the result says so.",
    ),
    CommandSpec("config_get", "Read the miner's config (`GET /2/config`); secrets masked."),
    CommandSpec(
        "config_set",
        "Replace the whole config (`PUT /2/config`); the miner reloads from it.",
        params=(
            Param("config", "json", "the complete config object", secret_keys=SECRET_CONFIG_KEYS),
        ),
        security="sensitive",
        why="a whole config sets the pools, wallet, API token and log destinations",
    ),
    CommandSpec(
        "config_patch",
        "Change part of the config: GET, merge (RFC 7386: null deletes a key), PUT.",
        params=(
            Param(
                "patch",
                "json",
                "an object merged into the current config",
                secret_keys=SECRET_CONFIG_KEYS,
            ),
        ),
        sensitive_when=CONFIG_PATCH_FIELDS,
    ),
)


def _backend_entities(state: Mapping[str, Any]) -> Sequence[EntityDescription]:
    backends = state.get("backends")
    if not isinstance(backends, dict):
        return ()
    # Asked after every poll (the discovery check): the entities depend only on which backends
    # and GPU readings there are, so they are built once per such shape.
    shape = tuple(
        (kind, tuple(_gpu_shape(gpu) for gpu in backend.get("gpus") or ()))
        for kind, backend in backends.items()
    )
    return _entities_for_shape(shape)


def _gpu_shape(gpu: Mapping[str, Any]) -> tuple[bool, bool, bool]:
    return (
        gpu.get("temperature_c") is not None,
        gpu.get("power_w") is not None,
        bool(gpu.get("fan_percent")),
    )


@functools.lru_cache(maxsize=64)
def _entities_for_shape(
    shape: tuple[tuple[str, tuple[tuple[bool, bool, bool], ...]], ...],
) -> tuple[EntityDescription, ...]:
    entities = []
    for kind, gpus in shape:
        entities.append(
            EntityDescription(
                f"backend_{kind}_hashrate",
                "sensor",
                f"{kind.upper()} hashrate",
                value=f"backends.{kind}.hashrate_hs.10s",
                unit=H,
                state_class="measurement",
                precision=1,
                icon="mdi:pickaxe",
            )
        )
        for index, readings in enumerate(gpus):
            entities.extend(_gpu_entities(kind, index, *readings))
    return tuple(entities)


def _gpu_entities(
    kind: str, index: int, temperature: bool, power: bool, fan: bool
) -> list[EntityDescription]:
    path = f"backends.{kind}.gpus.{index}"
    label = f"{kind.upper()} GPU{index}"
    found = []
    if temperature:
        found.append(
            EntityDescription(
                f"{kind}_gpu{index}_temperature",
                "sensor",
                f"{label} temperature",
                value=f"{path}.temperature_c",
                unit="°C",
                device_class="temperature",
                state_class="measurement",
                entity_category="diagnostic",
            )
        )
    if power:
        found.append(
            EntityDescription(
                f"{kind}_gpu{index}_power",
                "sensor",
                f"{label} power",
                value=f"{path}.power_w",
                unit="W",
                device_class="power",
                state_class="measurement",
                entity_category="diagnostic",
            )
        )
    if fan:
        found.append(
            EntityDescription(
                f"{kind}_gpu{index}_fan",
                "sensor",
                f"{label} fan",
                value=f"{path}.fan_percent.0",
                unit="%",
                state_class="measurement",
                entity_category="diagnostic",
                icon="mdi:fan",
            )
        )
    return found


# Hash rates wobble by several percent and counters tick on every poll: held or riding along.
# Pausing, the pool, the algorithm and errors go out at once.
PUBLISH = PublishDefaults(
    immediate=(
        "mining",
        "paused",
        "errors*",
        "algo",
        "pool.url",
        "pool.ip",
        "pool.tls",
        "pool.failures",
        "backends.*.enabled",
        "backends.*.algo",
        "configured_pools*",
        "donate_level",
    ),
    deadband={
        # A CPU miner's 10 s rate swings by several percent from one poll to the next.
        "*hashrate_hs*": "10%",
        "*temperature_c": 2,
        "*power_w": "5%",
        "*clock_mhz": "5%",
        "*fan_percent*": 5,
        "memory.free_bytes": "10%",
        "memory.rss_bytes": "10%",
        "load_average.*": "20%",
        "pool.ping_ms": "50%",
    },
    quiet=("uptime_s", "pool.uptime_s", "shares.*", "energy_kwh"),
)

CATALOG = Catalog(
    kind="xmrig",
    title="XMRig",
    manufacturer="XMRig",
    default_model="XMRig miner",
    fields=FIELDS,
    entities=ENTITIES,
    commands=COMMANDS,
    dynamic_entities=_backend_entities,
    device_info=DeviceInfoPaths(model="cpu.brand", sw_version="version", serial_number="miner_id"),
    publish=PUBLISH,
)
