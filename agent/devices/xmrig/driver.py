"""XMRig: summary/backends/config → state, commands → JSON-RPC and config writes."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from typing import Any

from agent.catalog.validate import mask_keys
from agent.devices import coerce
from agent.devices.base import BlockingDriver, PollResult
from agent.devices.xmrig.catalog import CATALOG, SECRET_CONFIG_KEYS
from agent.devices.xmrig.client import XmrigClient
from agent.devices.xmrig.config import XmrigConfig
from agent.errors import AgentError, AuthError, DeviceError, UnsupportedError, ValidationError

WINDOWS = ("10s", "1m", "15m")
MASK = "***"


class XmrigDriver(BlockingDriver[XmrigConfig]):
    catalog = CATALOG

    def __init__(self, config: XmrigConfig) -> None:
        super().__init__(config)
        token = config.token.get_secret_value() if config.token else None
        self.client = XmrigClient(
            str(config.url), token=token, timeout=config.timeout, verify=config.verify_tls
        )
        self.restricted = False
        self._config_read_at = float("-inf")
        self._configured_pools: list[Any] | None = None

    async def poll(self) -> PollResult:
        """The agent's poll: on the event loop over a keep-alive connection (no thread)."""
        summary = await self.client.summary_async()
        backends = await self.client.backends_async() if self._reads_backends(summary) else None
        config = None
        if self._config_due():
            # XMRig before 2.15 (`/api.json` only) has no config API
            with contextlib.suppress(UnsupportedError):
                config = await self.client.get_config_async()
        return self._result(summary, backends, config)

    def poll_blocking(self) -> PollResult:
        """The same poll through requests, for one-shot CLI use."""
        summary = self.client.summary()
        backends = self.client.backends() if self._reads_backends(summary) else None
        config = None
        if self._config_due():
            with contextlib.suppress(UnsupportedError):
                config = self.client.get_config()
        return self._result(summary, backends, config)

    def _reads_backends(self, summary: Mapping[str, Any]) -> bool:
        self.restricted = bool(summary.get("restricted", False))
        return self.client.summary_path == "/2/summary"

    def _config_due(self) -> bool:
        due = time.monotonic() - self._config_read_at >= self.config.config_interval
        if self.restricted or not due:
            return False
        self._config_read_at = time.monotonic()
        return True

    def _result(
        self,
        summary: dict[str, Any],
        backends: list[dict[str, Any]] | None,
        config: dict[str, Any] | None,
    ) -> PollResult:
        raw: dict[str, Any] = {"summary": summary}
        if backends is not None:
            raw["backends"] = backends
        if config is not None:
            raw["config"] = mask_secrets(config)
            pools = config.get("pools")
            if isinstance(pools, list):
                self._configured_pools = [p.get("url") for p in pools if isinstance(p, dict)]
        state = normalise(summary, backends)
        state["api"] = self.client.summary_path
        state["configured_pools"] = self._configured_pools
        return PollResult(state=state, raw=raw)

    def execute_blocking(self, command: str, params: dict[str, Any]) -> Any:
        try:
            return self._execute(command, params)
        except AuthError as exc:
            if exc.device_code == 403 and self._refuses_writes():
                raise DeviceError(
                    f"{command}: the miner's API is restricted (http.restricted = true) and "
                    "accepts no writes; set it to false in the miner's config",
                    device_code=403,
                    code=exc.code,
                ) from None
            raise

    def _refuses_writes(self) -> bool:
        """After a 403: is the API restricted (rather than the token wrong)? Ask if unknown."""
        if not self.restricted:
            try:
                self.restricted = bool(self.client.summary().get("restricted", False))
            except AgentError:
                return False
        return self.restricted

    def _execute(self, command: str, params: dict[str, Any]) -> Any:
        if command == "mining":
            command = "resume" if params["state"] else "pause"
        if command in ("pause", "resume", "stop", "start"):
            return self.client.rpc(command)
        if command == "config_get":
            return mask_secrets(self.client.get_config())
        if command == "config_set":
            config = _require_object(params["config"], "config_set.config")
            if _holds_mask(config):  # written back from config_get: keep the miner's secrets
                config = restore_masked(config, self.client.get_config())
            self._put_config(config)
            return {"replaced": True}
        if command == "config_patch":
            patch = _require_object(params["patch"], "config_patch.patch")
            current = self.client.get_config()
            self._put_config(merge_patch(current, restore_masked(patch, current)))
            return {"changed": sorted(patch)}
        raise ValidationError(f"xmrig has no command {command!r}")

    def _put_config(self, config: dict[str, Any]) -> None:
        self.client.put_config(config)
        self._config_read_at = float("-inf")  # read it back on the next poll

    async def close(self) -> None:
        await self.client.aclose()
        await super().close()

    def close_blocking(self) -> None:
        self.client.close()


def normalise(summary: Mapping[str, Any], backends: list[Any] | None) -> dict[str, Any]:
    get = summary.get
    results = coerce.mapping(get("results"))
    connection = coerce.mapping(get("connection"))
    hashrate = coerce.mapping(get("hashrate"))
    good = coerce.integer(results.get("shares_good"))
    total = coerce.integer(results.get("shares_total"))
    per_backend = normalise_backends(backends) if backends else {}
    paused = bool(get("paused", False))
    enabled = any(b["enabled"] for b in per_backend.values()) if per_backend else True
    resources = coerce.mapping(get("resources"))
    memory = coerce.mapping(resources.get("memory"))
    cpu = coerce.mapping(get("cpu"))
    power, temperature = _gpu_totals(per_backend)
    rates = _windows(hashrate.get("total"))
    rates["highest"] = hashrate.get("highest")
    return {
        "miner_id": coerce.shared(get("id")),
        "worker_id": coerce.shared(get("worker_id")),
        "version": coerce.shared(get("version")),
        "user_agent": coerce.shared(get("ua")),
        "algo": coerce.shared(get("algo")),
        "hashrate_hs": rates,
        "shares": {
            "accepted": good,
            "rejected": None if good is None or total is None else total - good,
            "total": total,
            "avg_time_s": coerce.integer(results.get("avg_time")),
            "difficulty": coerce.integer(results.get("diff_current")),
        },
        "pool": {
            "url": coerce.shared(connection.get("pool")),
            "ip": coerce.shared(connection.get("ip")),
            "ping_ms": coerce.integer(connection.get("ping")),
            "uptime_s": coerce.integer(connection.get("uptime")),
            "failures": coerce.integer(connection.get("failures")),
            "tls": connection.get("tls"),
        },
        "uptime_s": coerce.integer(get("uptime")),
        "paused": paused,
        "mining": enabled and not paused,
        "restricted": bool(get("restricted", False)),
        "donate_level": coerce.integer(get("donate_level")),
        "cpu": {
            "brand": coerce.shared(cpu.get("brand")),
            "cores": cpu.get("cores"),
            "threads": cpu.get("threads"),
        },
        "memory": {
            "free_bytes": memory.get("free"),
            "total_bytes": memory.get("total"),
            "rss_bytes": memory.get("resident_set_memory"),
        },
        "load_average": resources.get("load_average"),
        # XMRig 2.x said just `true`
        "hugepages": coerce.items(get("hugepages")) or None,
        "power_w": power,
        "temperature_c": temperature,
        "errors": [],
        "backends": per_backend,
    }


def normalise_backends(backends: list[Any] | None) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for backend in backends or ():
        if not isinstance(backend, dict) or not isinstance(backend.get("type"), str):
            continue
        threads = [t for t in coerce.items(backend.get("threads")) if isinstance(t, dict)]
        entry: dict[str, Any] = {
            "enabled": bool(backend.get("enabled", False)),
            "algo": coerce.shared(backend.get("algo")),
            "hashrate_hs": _windows(backend.get("hashrate")),
            "threads": [{"hashrate_hs": _windows(t.get("hashrate"))} for t in threads],
        }
        if backend["type"] != "cpu":
            entry["gpus"] = [_gpu(i, t) for i, t in enumerate(threads)]
        found[backend["type"]] = entry
    return found


def _gpu_totals(per_backend: dict[str, dict[str, Any]]) -> tuple[Any, Any]:
    """Summed power and the hottest temperature over every GPU (None on CPU-only rigs)."""
    gpus = [gpu for b in per_backend.values() for gpu in b.get("gpus", ())]
    if not gpus:
        return None, None
    return _sum(g.get("power_w") for g in gpus), _max(g.get("temperature_c") for g in gpus)


def _gpu(position: int, thread: Mapping[str, Any]) -> dict[str, Any]:
    health = coerce.mapping(thread.get("health"))
    fans = health.get("fan_speed")
    return {
        "index": thread.get("index", position),
        "name": thread.get("name"),
        "bus_id": thread.get("bus_id"),
        "temperature_c": health.get("temperature"),
        "power_w": health.get("power"),
        "clock_mhz": health.get("clock"),
        "memory_clock_mhz": health.get("mem_clock"),
        "fan_percent": fans if isinstance(fans, list) else [],
    }


def mask_secrets(config: Any) -> Any:
    """The miner's config as it may be shown: tokens and pool passwords masked."""
    return mask_keys(config, SECRET_CONFIG_KEYS)


def restore_masked(config: Any, current: Any) -> Any:
    """`config` with each masked secret put back from the miner's `current` config.

    A config read with config_get, edited and written back would otherwise set the access
    token to "***" and lock the agent out.
    """
    if isinstance(config, dict):
        old = current if isinstance(current, dict) else {}
        return {
            k: (
                old.get(k, v)
                if k in SECRET_CONFIG_KEYS and v == MASK
                else restore_masked(v, old.get(k))
            )
            for k, v in config.items()
        }
    if isinstance(config, list):
        old_items = current if isinstance(current, list) else []
        return [
            restore_masked(v, old_items[i] if i < len(old_items) else None)
            for i, v in enumerate(config)
        ]
    return config


def _holds_mask(config: Any) -> bool:
    if isinstance(config, dict):
        return any(
            (k in SECRET_CONFIG_KEYS and v == MASK) or _holds_mask(v) for k, v in config.items()
        )
    return isinstance(config, list) and any(_holds_mask(v) for v in config)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def _require_object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not value:
        raise ValidationError(f"{where} must be a non-empty JSON object")
    return value


def _windows(values: Any) -> dict[str, Any]:
    if isinstance(values, list) and len(values) >= 3:
        return {"10s": values[0], "1m": values[1], "15m": values[2]}  # WINDOWS, unrolled
    values = values if isinstance(values, list) else []
    return {w: (values[i] if i < len(values) else None) for i, w in enumerate(WINDOWS)}


def _sum(values: Any) -> float | None:
    numbers = [v for v in values if isinstance(v, int | float)]
    return sum(numbers) if numbers else None


def _max(values: Any) -> float | None:
    numbers = [v for v in values if isinstance(v, int | float)]
    return max(numbers) if numbers else None
