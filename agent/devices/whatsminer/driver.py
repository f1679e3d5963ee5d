"""Whatsminer: API replies → state, commands → encrypted writes.

A poll reads `summary`, `pools` and `edevs` in as few connections as the firmware allows
(`JoinedReads`: one where it joins all three, two where it joins two as the doc promises, three
where it joins none); `status`, which does not join, is read every `status_interval` and right
after a write; PSU and error codes every `detail_interval`, version, board models and miner info
every `slow_interval`, each with ±10 % jitter so a fleet does not read them in step.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from agent.devices import coerce
from agent.devices.base import Driver, PollResult
from agent.devices.whatsminer.catalog import CATALOG, WINDOWS
from agent.devices.whatsminer.client import (
    JoinNotAnsweredError,
    NoReplyError,
    Progress,
    WhatsminerClient,
)
from agent.devices.whatsminer.config import WhatsminerConfig
from agent.errors import DeviceError, ProtocolError, ValidationError
from agent.logs import get_logger

log = get_logger("whatsminer")

FAST_READS = ("summary", "pools", "edevs")
# Physically possible PSU input: mains from 100 V single phase to 480 V three phase, and an
# apparent power (vin times iin) within a factor of two of the input power summary reports (a
# wrong scale is off by ten). Below MIN_CHECKED_W (standby) the ratio says nothing.
PSU_VOLTS = (90.0, 480.0)
PSU_MAX_AMPS = 80.0
PSU_VA_PER_W = (0.5, 2.0)
MIN_CHECKED_W = 500.0
# The catalog's hash rate windows → the API's keys ("MHS av" is the average since start).
_MHS_KEYS = dict(zip(WINDOWS, ("MHS 5s", "MHS 1m", "MHS 5m", "MHS 15m", "MHS av"), strict=True))
_NETWORK_KEYS = ("ip", "proto", "netmask", "gateway", "dns", "hostname", "mac")
# Commands after which the miner may drop the connection instead of answering.
_RESTARTING = frozenset({"reboot", "factory_reset", "net_config"})
# Writes that change what the slow reads show: read those again on the next poll.
_CHANGES_SLOW = frozenset({"set_led", "set_hostname", "net_config", "factory_reset"})
_FRIENDLY_MODES = {"low": "set_low_power", "normal": "set_normal_power", "high": "set_high_power"}


class WhatsminerDriver(Driver[WhatsminerConfig]):
    catalog = CATALOG

    def __init__(self, config: WhatsminerConfig) -> None:
        super().__init__(config)
        password = config.password.get_secret_value() if config.password else None
        self.client = WhatsminerClient(
            config.host,
            config.port,
            password,
            connect_timeout=config.timeout,
            read_timeout=config.timeout,
            firmware_command=config.firmware_command,
        )
        self._slow: dict[str, Any] = dict.fromkeys(
            ("model", "api_version", "platform", "chip", "serial", "led", "network", "version")
        )
        self._board_models: dict[int, str] = {}
        self._detail: dict[str, Any] = {"psu": None, "error_codes": {}}
        self._settings: dict[str, Any] = dict.fromkeys(
            (
                "power_percent",
                "power_percent_ramp",
                "target_freq_percent",
                "temp_offset_c",
                "upfreq_speed",
            )
        )
        self._slow_due = 0.0
        self._detail_due = 0.0
        self._status_due = 0.0
        self._status: dict[str, Any] | None = None
        self._reads = JoinedReads(self.client, FAST_READS, config.id)
        self._uptime: int | None = None
        self._psu_implausible = False

    # ------------------------------------------------------------------ poll

    async def poll(self) -> PollResult:
        now = time.monotonic()
        if now >= self._slow_due:
            self._reads.probe()  # a firmware upgrade may join more than the one before
        sections = await self._reads.read()
        # the replies as received only go out with publish_raw: otherwise none are kept
        raw: dict[str, Any] | None = dict(sections) if self.config.publish_raw else None
        if now >= self._status_due:
            # `status` cannot join the summary read; mining on/off and the power mode change
            # only when written (then it is read at once), so it costs one connection per
            # status_interval instead of one per poll.
            status = await _optional(self.client.status)
            if status is not None:
                _keep(raw, "status", status)
                self._status = status
                self._status_due = now + _jitter(self.config.status_interval)
        status = self._status
        if now >= self._detail_due:
            await self._read_detail(raw, coerce.number_or_text(_summary_of(sections).get("Power")))
            self._detail_due = now + _jitter(self.config.detail_interval)
        if now >= self._slow_due:
            await self._read_slow(raw)
            self._slow_due = now + _jitter(self.config.slow_interval)
        state = normalise(sections, status, self._slow, self._board_models, self._detail)
        state["settings"] = dict(self._settings)
        state["api_join_limit"] = self._reads.limit
        self._notice_restart(state["uptime_s"])
        return PollResult(state=state, raw=raw or {})

    def _notice_restart(self, uptime: int | None) -> None:
        """A control board that rebooted may run other firmware: learn it again next poll."""
        if uptime is not None and self._uptime is not None and uptime < self._uptime:
            self._slow_due = 0.0
        self._uptime = uptime

    async def _read_detail(self, raw: dict[str, Any] | None, power_w: float | None) -> None:
        psu = await _optional(self.client.get_psu)
        if psu is not None:
            _keep(raw, "get_psu", psu)
            self._detail["psu"] = normalise_psu(psu, power_w)
            self._warn_psu(self._detail["psu"]["warnings"])
        codes = await _optional(self.client.get_error_code)
        if codes is not None:
            _keep(raw, "get_error_code", codes)
            self._detail["error_codes"] = codes

    async def _read_slow(self, raw: dict[str, Any] | None) -> None:
        version = await _optional(self.client.get_version)
        if version is not None:
            _keep(raw, "get_version", version)
            self._slow.update(
                version=coerce.stripped_text(version.get("fw_ver")),
                api_version=coerce.stripped_text(version.get("api_ver")),
                platform=coerce.stripped_text(version.get("platform")),
                chip=coerce.stripped_text(version.get("chip")),
            )
        details = await _optional(self.client.devdetails)
        if details is not None:
            _keep(raw, "devdetails", details)
            self._board_models = board_models(details)
            self._slow["model"] = next(iter(self._board_models.values()), None)
        info = await _optional(self.client.get_miner_info)
        if info is not None:
            _keep(raw, "get_miner_info", info)
            self._slow["serial"] = coerce.stripped_text(info.get("minersn"))
            self._slow["led"] = coerce.stripped_text(info.get("ledstat"))
            self._slow["network"] = {k: coerce.stripped_text(info.get(k)) for k in _NETWORK_KEYS}

    def _warn_psu(self, warnings: list[str]) -> None:
        """Log implausible PSU readings when they start, not on every read (the state keeps
        the current ones)."""
        if warnings and not self._psu_implausible:
            log.warning("implausible PSU reading", device=self.config.id, warnings=warnings)
        self._psu_implausible = bool(warnings)

    # --------------------------------------------------------------- commands

    async def execute(self, command: str, params: dict[str, Any]) -> Any:
        if command == "update_firmware":
            return await self.upgrade_firmware(params["path"])
        if command == "download_logs":
            return await self.download_logs(params["path"])
        wire_command, wire = to_wire(command, params)
        try:
            msg = await self.client.write(wire_command, wire)
        except NoReplyError:
            if wire_command not in _RESTARTING:
                raise
            msg = {"sent": True, "confirmed": False, "note": "the miner closed without answering"}
        self._remember(command, wire_command, params)
        return msg

    def _remember(self, command: str, wire_command: str, params: Mapping[str, Any]) -> None:
        """Keep what the API cannot read back, and re-read what the write changed."""
        if wire_command in ("set_power_pct", "set_power_pct_v2"):
            self._settings["power_percent"] = params["percent"]
            self._settings["power_percent_ramp"] = (
                "fast" if command == "set_power_pct" else "normal"
            )
        elif wire_command == "set_target_freq":
            self._settings["target_freq_percent"] = params["percent"]
        elif wire_command == "set_temp_offset":
            self._settings["temp_offset_c"] = params["temp_offset"]
        elif wire_command == "adjust_upfreq_speed":
            self._settings["upfreq_speed"] = params["upfreq_speed"]
        if wire_command == "set_led":
            self._slow["led"] = params["color"]
        if wire_command in _CHANGES_SLOW:
            self._slow_due = 0.0
        self._status_due = 0.0  # any write may switch mining or the power mode

    async def upgrade_firmware(self, path: str | Path, progress: Progress | None = None) -> Any:
        """The firmware upload flow, for `edge-agent whatsminer upgrade` and `send`."""
        result = await self.client.upload_firmware(path, progress)
        self._slow_due = 0.0
        return result

    async def download_logs(self, path: str | Path, progress: Progress | None = None) -> Any:
        """The log download flow into `path` (written whole or not at all)."""
        target = Path(path)
        partial = target.with_name(target.name + ".part")
        try:
            with partial.open("wb") as sink:
                received = await self.client.download_logs(sink.write, progress)
            partial.replace(target)
        except OSError as exc:
            raise ValidationError(f"cannot write {target}: {exc.strerror}") from None
        finally:
            partial.unlink(missing_ok=True)
        return {"path": str(target), "bytes": received}


class JoinedReads:
    """The poll's reads in the fewest connections this miner's firmware allows.

    The doc promises joins of two commands; firmware joins any number, or two (answering the
    first two parts of a longer join, or refusing it with code 14), or none (refusing, or
    answering the first part alone). Every read starts as one join of all of them; a part the
    miner leaves out is read in the same poll by the next smaller join, and a refused join is
    tried smaller, down to single reads, so no poll fails because of a join. The size that
    worked is kept for later polls (`limit`), and `probe()` tries the full join again (after a
    reboot, a firmware upload, each slow interval): on a miner that answers part of a join a
    probe costs nothing extra, since those parts come back all the same.
    """

    def __init__(self, client: WhatsminerClient, commands: tuple[str, ...], device: str) -> None:
        self.client = client
        self.commands = commands
        self.device = device
        self.limit = len(commands)
        self._known: int | None = None  # the limit last logged

    def probe(self) -> None:
        self.limit = len(self.commands)

    async def read(self) -> dict[str, dict[str, Any]]:
        sections: dict[str, dict[str, Any]] = {}
        pending = list(self.commands)
        while pending:
            group = pending[: self.limit]
            try:
                answered = await self._read(group)
            except (DeviceError, JoinNotAnsweredError):
                if len(group) == 1:
                    raise
                self.limit = len(group) - 1
                continue
            if len(answered) < len(group):
                self.limit = len(answered)
            sections.update(answered)
            pending = [c for c in pending if c not in answered]
        self._log_change()
        return sections

    async def _read(self, group: list[str]) -> dict[str, dict[str, Any]]:
        if len(group) == 1:
            return {group[0]: await self.client.read(group[0])}
        return await self.client.joined(*group)

    def _log_change(self) -> None:
        """What the first poll learns is debug (state shows it); a change later is news."""
        if self.limit != self._known:
            (log.debug if self._known is None else log.info)(
                "joined reads", device=self.device, commands_per_join=self.limit
            )
            self._known = self.limit


def to_wire(command: str, params: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """A catalog command and its validated params → the API command and its fields."""
    if command == "mining":
        return ("power_on", {}) if params["state"] else ("power_off", {"respbefore": True})
    if command == "power_mode":
        return _FRIENDLY_MODES[params["mode"]], {}
    if command == "power_limit":
        return "adjust_power_limit", {"power_limit": params["power_limit"]}
    if command == "power_percent":
        return "set_power_pct_v2", {"percent": params["percent"]}
    build = _BUILDERS.get(command)
    return command, build(params) if build else dict(params)


def _led(params: Mapping[str, Any]) -> dict[str, Any]:
    if params["color"] == "auto":
        return {"param": "auto"}
    period, duration = params.get("period", 1000), params.get("duration", 500)
    if duration > period:
        raise ValidationError(f"set_led.duration ({duration}) must not exceed period ({period})")
    return {
        "color": params["color"],
        "period": period,
        "duration": duration,
        "start": params.get("start", 0),
    }


def _net(params: Mapping[str, Any]) -> dict[str, Any]:
    if params["mode"] == "dhcp":
        return {"param": "dhcp"}
    fields = ("ip", "mask", "gate", "dns", "host")
    missing = [f for f in fields if not params.get(f)]
    if missing:
        raise ValidationError(f"net_config static needs {', '.join(missing)}")
    return {f: params[f] for f in fields}


def _pools(params: Mapping[str, Any]) -> dict[str, Any]:
    keys = (f"{k}{n}" for n in (1, 2, 3) for k in ("pool", "worker", "passwd"))
    return {key: params.get(key) or "" for key in keys}


def _flag(name: str) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
    return lambda params: {name: "1" if params[name] else "0"}


_BUILDERS: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "set_led": _led,
    "net_config": _net,
    "update_pools": _pools,
    "set_poweroff_cool": _flag("poweroff_cool"),
    "set_fan_zero_speed": _flag("fan_zero_speed"),
}


# --------------------------------------------------------------- normalise


def normalise(
    sections: Mapping[str, Mapping[str, Any]],
    status: Mapping[str, Any] | None,
    slow: Mapping[str, Any],
    board_models: Mapping[int, str],
    detail: Mapping[str, Any],
) -> dict[str, Any]:
    """The replies of one poll (plus the cached slow reads) → the state documented in CATALOG."""
    summary = _summary_of(sections)
    status = status or {}
    pools = [normalise_pool(p) for p in _list(sections.get("pools"), "POOLS")]
    boards = [normalise_board(d, board_models) for d in _list(sections.get("edevs"), "DEVS")]
    boards.sort(key=lambda b: b["slot"] if b["slot"] is not None else 99)
    error_codes = detail["error_codes"]
    power = coerce.number_or_text(summary.get("Power"))
    hashrate = {w: _scaled(summary.get(k), 1e6) for w, k in _MHS_KEYS.items()}
    mode = summary.get("Power Mode") or status.get("power_mode")
    off = coerce.flag_or_word(status.get("btmineroff"))
    return {
        "model": slow["model"],
        "firmware": _firmware(status.get("Firmware Version")) or slow["version"],
        "api_version": slow["api_version"],
        "platform": slow["platform"],
        "chip": slow["chip"],
        "serial": slow["serial"],
        "mining": None if off is None else not off,
        "power_mode": mode.lower() if isinstance(mode, str) and mode else None,
        "hash_percent": coerce.number_or_text(status.get("hash_percent")),
        "hashrate_hs": hashrate,
        "target_hashrate_hs": _scaled(summary.get("Target MHS"), 1e6),
        "factory_hashrate_hs": _scaled(summary.get("Factory GHS"), 1e9),
        "hash_stable": coerce.flag_or_word(summary.get("Hash Stable")),
        "shares": {
            "accepted": coerce.truncated_or_text(summary.get("Accepted")),
            "rejected": coerce.truncated_or_text(summary.get("Rejected")),
        },
        "power_w": power,
        "power_limit_w": coerce.number_or_text(summary.get("Power Limit")),
        "efficiency_j_th": _efficiency(summary.get("Power Rate"), power, hashrate["1m"]),
        "temperature_c": coerce.number_or_text(summary.get("Temperature")),
        "env_temperature_c": coerce.number_or_text(summary.get("Env Temp")),
        "chip_temperature_c": _chip_temps(summary),
        "fans_rpm": {
            "in": coerce.number_or_text(summary.get("Fan Speed In")),
            "out": coerce.number_or_text(summary.get("Fan Speed Out")),
        },
        "frequency_mhz": {
            "avg": coerce.number_or_text(summary.get("freq_avg")),
            "target": coerce.number_or_text(summary.get("Target Freq")),
        },
        "uptime_s": coerce.truncated_or_text(summary.get("Uptime")),
        "elapsed_s": coerce.truncated_or_text(summary.get("Elapsed")),
        "fast_boot": _enabled(summary.get("Btminer Fast Boot")),
        "pool": active_pool(pools),
        "pools": pools,
        "boards": boards,
        "psu": detail["psu"],
        "errors": [
            f"{code} since {when}" if when else str(code) for code, when in error_codes.items()
        ],
        "error_codes": error_codes,
        "error_count": len(error_codes),
        "led": slow["led"],
        "network": slow["network"],
    }


def normalise_pool(pool: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "index": coerce.truncated_or_text(pool.get("POOL")),
        "url": coerce.stripped_text(pool.get("URL")),
        "user": coerce.stripped_text(pool.get("User")),
        "status": coerce.stripped_text(pool.get("Status")),
        "priority": coerce.truncated_or_text(pool.get("Priority")),
        "stratum_active": coerce.flag_or_word(pool.get("Stratum Active")),
        "difficulty": coerce.number_or_text(pool.get("Stratum Difficulty")),
        "accepted": coerce.truncated_or_text(pool.get("Accepted")),
        "rejected": coerce.truncated_or_text(pool.get("Rejected")),
        "last_share_time": coerce.truncated_or_text(pool.get("Last Share Time")),
    }


def active_pool(pools: list[dict[str, Any]]) -> dict[str, Any]:
    """The pool mining now: stratum active, else the best-priority alive one, else the first."""
    chosen = next((p for p in pools if p["stratum_active"]), None)
    if chosen is None:
        alive = [p for p in pools if p["status"] == "Alive"]
        chosen = min(alive, key=lambda p: p["priority"] or 0) if alive else None
    if chosen is None and pools:
        chosen = pools[0]
    if chosen is None:
        return {"url": None, "user": None, "status": None}
    return {"url": chosen["url"], "user": chosen["user"], "status": chosen["status"]}


def normalise_board(dev: Mapping[str, Any], models: Mapping[int, str]) -> dict[str, Any]:
    slot = coerce.truncated_or_text(dev.get("Slot"))
    asc = coerce.truncated_or_text(dev.get("ASC"))
    return {
        "slot": slot if slot is not None else asc,
        "status": coerce.stripped_text(dev.get("Status")),
        "enabled": coerce.flag_or_word(dev.get("Enabled")),
        "model": models.get(asc if asc is not None else -1),
        "temperature_c": coerce.number_or_text(dev.get("Temperature")),
        "frequency_mhz": coerce.number_or_text(dev.get("Chip Frequency")),
        "hashrate_hs": {w: _scaled(dev.get(k), 1e6) for w, k in _MHS_KEYS.items()},
        "factory_hashrate_hs": _scaled(dev.get("HS Factory"), 1e9),
        "effective_chips": coerce.truncated_or_text(dev.get("Effective Chips")),
        "chip_temperature_c": _chip_temps(dev),
        "accepted": coerce.truncated_or_text(dev.get("Accepted")),
        "rejected": coerce.truncated_or_text(dev.get("Rejected")),
        "upfreq_complete": coerce.flag_or_word(dev.get("Upfreq Complete")),
        "pcb_serial": coerce.stripped_text(dev.get("PCB SN")),
        "chip_data": coerce.stripped_text(dev.get("Chip Data")),
    }


def board_models(details: Mapping[str, Any]) -> dict[int, str]:
    found: dict[int, str] = {}
    for entry in _list(details, "DEVDETAILS"):
        index = coerce.truncated_or_text(entry.get("ID", entry.get("DEVDETAILS")))
        model = coerce.stripped_text(entry.get("Model"))
        if index is not None and model:
            found[index] = model
    return found


def normalise_psu(psu: Mapping[str, Any], power_w: float | None = None) -> dict[str, Any]:
    """get_psu → state. The doc names no unit for `iin` and `vin`: mA and 10 mV are assumed
    (its example, 8718 and 22400, reads as 8.7 A at 224 V), and readings those scales make
    implausible are flagged, since another firmware may use others."""
    amps, volts = _scaled(psu.get("iin"), 1e-3), _scaled(psu.get("vin"), 1e-2)
    warnings = psu_warnings(amps, volts, power_w)
    return {
        "model": coerce.stripped_text(psu.get("model")),
        "name": coerce.stripped_text(psu.get("name")),
        "serial": coerce.stripped_text(psu.get("serial_no")),
        "vendor": coerce.stripped_text(psu.get("vendor")),
        "hw_version": coerce.stripped_text(psu.get("hw_version")),
        "sw_version": coerce.stripped_text(psu.get("sw_version")),
        "input_current_a": amps,
        "input_voltage_v": volts,
        "fan_rpm": coerce.number_or_text(psu.get("fan_speed")),
        "temperature_c": coerce.number_or_text(psu.get("temp0")),
        "readings_plausible": None if amps is None and volts is None else not warnings,
        "warnings": warnings,
    }


def psu_warnings(amps: float | None, volts: float | None, power_w: float | None) -> list[str]:
    """What is physically implausible in the scaled PSU input readings."""
    warnings = []
    low, high = PSU_VOLTS
    volts_ok = volts is not None and low <= volts <= high
    if volts is not None and not volts_ok:
        warnings.append(
            f"input voltage {volts:g} V is outside {low:g} … {high:g} V: "
            "vin ÷ 100 may not be this firmware's scale"
        )
    if amps is not None and not 0 <= amps <= PSU_MAX_AMPS:
        warnings.append(
            f"input current {amps:g} A is outside 0 … {PSU_MAX_AMPS:g} A: "
            "iin ÷ 1000 may not be this firmware's scale"
        )
    elif amps is not None and volts_ok and power_w is not None and power_w >= MIN_CHECKED_W:
        apparent = amps * (volts or 0.0)
        if not PSU_VA_PER_W[0] <= apparent / power_w <= PSU_VA_PER_W[1]:
            warnings.append(
                f"input {apparent:.0f} VA (vin * iin) against {power_w:.0f} W of input power: "
                "iin ÷ 1000 may not be this firmware's scale"
            )
    return warnings


# ------------------------------------------------------------------ helpers


async def _optional(read: Callable[[], Awaitable[Any]]) -> Any:
    """A secondary read: a refusal or an unreadable reply leaves the cached value in place;
    a miner that stops answering still fails the poll."""
    try:
        return await read()
    except (DeviceError, ProtocolError):
        return None


def _keep(raw: dict[str, Any] | None, endpoint: str, body: Any) -> None:
    if raw is not None:
        raw[endpoint] = body


def _jitter(interval: float) -> float:
    return interval * random.uniform(0.9, 1.1)


def _summary_of(sections: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    summary = _first(sections["summary"], "SUMMARY")
    if summary is None:
        raise ProtocolError("the miner's summary reply has no SUMMARY section")
    return summary


def _first(reply: Mapping[str, Any], key: str) -> dict[str, Any] | None:
    value = reply.get(key)
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return value[0]
    return value if isinstance(value, dict) else None


def _list(reply: Mapping[str, Any] | None, key: str) -> list[dict[str, Any]]:
    value = reply.get(key) if reply else None
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _chip_temps(source: Mapping[str, Any]) -> dict[str, float | None]:
    return {
        "min": coerce.number_or_text(source.get("Chip Temp Min")),
        "max": coerce.number_or_text(source.get("Chip Temp Max")),
        "avg": coerce.number_or_text(source.get("Chip Temp Avg")),
    }


def _efficiency(rate: Any, power: float | None, hashrate_hs: float | None) -> float | None:
    reported = coerce.number_or_text(rate)
    if reported is not None and reported > 0:
        return reported
    if power and hashrate_hs:
        return round(power / (hashrate_hs * 1e-12), 2)
    return None


def _scaled(value: Any, factor: float) -> float | None:
    number = coerce.number_or_text(value)
    return number * factor if number is not None else None


def _enabled(value: Any) -> bool | None:
    if isinstance(value, str) and value.lower() in ("enable", "disable"):
        return value.lower() == "enable"
    return coerce.flag_or_word(value)


def _firmware(value: Any) -> str | None:
    text = coerce.stripped_text(value)
    return text.strip("'\"") or None if text else None
