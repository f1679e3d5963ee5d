"""Whatsminer as data: its state schema, its Home Assistant entities and its commands.

Ranges are the vendor doc's (API v2.0.5 §3), inclusive as written there.
"""

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
    StateField,
)
from agent.runtime.energy import ENERGY_ENTITY, ENERGY_STATE_FIELD

H = "H/s"
TH = "TH/s"
TO_TH = 1e-12
C = "°C"
WINDOWS = ("5s", "1m", "5m", "15m", "avg")

_IPV4 = r"(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)"
_HOSTNAME = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_ADMIN_PW_SHAPE = r"[A-Za-z0-9_]{1,8}"  # doc §3.10: letters, digits, underscore; at most 8 bytes

FIELDS = (
    StateField("model", "string", "model of the hash boards (devdetails), e.g. M30S+VE40"),
    StateField("firmware", "string", "firmware version (status, else get_version fw_ver)"),
    StateField("api_version", "string", "API version (get_version api_ver)"),
    StateField("platform", "string", "control board platform (get_version), e.g. H6OS"),
    StateField("chip", "string", "chip type (get_version)"),
    StateField("serial", "string", "miner serial number (get_miner_info minersn)"),
    StateField("mining", "boolean", "btminer is mining (status btmineroff / mineroff false)"),
    StateField("power_mode", "string", "power mode: low, normal or high"),
    StateField("hash_percent", "number", "frequency percent set by set_target_freq (status)", "%"),
    *(
        StateField(f"hashrate_hs.{w}", "number", f"hash rate, {w} window (MHS {w} * 10^6)", H)
        for w in WINDOWS
    ),
    StateField("target_hashrate_hs", "number", "hash rate btminer aims for (Target MHS)", H),
    StateField("factory_hashrate_hs", "number", "factory rated hash rate (Factory GHS)", H),
    StateField("hash_stable", "boolean", "btminer reports the hash rate as stable"),
    StateField("shares.accepted", "integer", "accepted shares"),
    StateField("shares.rejected", "integer", "rejected shares"),
    StateField("power_w", "number", "input power", "W"),
    StateField("power_limit_w", "number", "power limit (adjust_power_limit)", "W"),
    ENERGY_STATE_FIELD,
    StateField("efficiency_j_th", "number", "energy per hash (Power Rate, else power ÷ TH/s)"),
    StateField("temperature_c", "number", "hash board temperature at the outlet", C),
    StateField("env_temperature_c", "number", "environment (intake) temperature", C),
    StateField("chip_temperature_c.min", "number", "coldest chip", C),
    StateField("chip_temperature_c.max", "number", "hottest chip", C),
    StateField("chip_temperature_c.avg", "number", "average chip temperature", C),
    StateField("fans_rpm.in", "number", "Fan Speed In: the air outlet fan, as the doc says", "rpm"),
    StateField(
        "fans_rpm.out", "number", "Fan Speed Out: the air inlet fan, as the doc says", "rpm"
    ),
    StateField("frequency_mhz.avg", "number", "average chip frequency", "MHz"),
    StateField("frequency_mhz.target", "number", "target chip frequency", "MHz"),
    StateField("uptime_s", "integer", "control board uptime", "s"),
    StateField("elapsed_s", "integer", "time since btminer started", "s"),
    StateField("fast_boot", "boolean", "btminer fast boot enabled"),
    StateField("pool.url", "string", "active pool (stratum active, else best priority alive)"),
    StateField("pool.user", "string", "worker name on the active pool"),
    StateField("pool.status", "string", "active pool status (Alive, Dead …)"),
    StateField("pools[].index", "integer", "pool number (POOL)"),
    StateField("pools[].url", "string", "pool URL"),
    StateField("pools[].user", "string", "worker name"),
    StateField("pools[].status", "string", "pool status"),
    StateField("pools[].priority", "integer", "priority, 0 highest"),
    StateField("pools[].stratum_active", "boolean", "stratum connection active"),
    StateField("pools[].difficulty", "number", "stratum difficulty"),
    StateField("pools[].accepted", "integer", "accepted by this pool"),
    StateField("pools[].rejected", "integer", "rejected by this pool"),
    StateField("pools[].last_share_time", "integer", "last share, Unix time", "s"),
    StateField("boards[].slot", "integer", "hash board slot"),
    StateField("boards[].status", "string", "board status (Alive, Dead …)"),
    StateField("boards[].enabled", "boolean", "board enabled"),
    StateField("boards[].model", "string", "board model (devdetails)"),
    StateField("boards[].temperature_c", "number", "board temperature at the outlet", C),
    StateField("boards[].frequency_mhz", "number", "average chip frequency", "MHz"),
    StateField("boards[].hashrate_hs", "object", "5s / 1m / 5m / 15m / avg for the board", H),
    StateField("boards[].factory_hashrate_hs", "number", "factory rated (HS Factory)", H),
    StateField("boards[].effective_chips", "integer", "working chips"),
    StateField("boards[].chip_temperature_c", "object", "min / max / avg chip temperature", C),
    StateField("boards[].accepted", "integer", "accepted shares"),
    StateField("boards[].rejected", "integer", "rejected shares"),
    StateField("boards[].upfreq_complete", "boolean", "frequency ramp finished"),
    StateField("boards[].pcb_serial", "string", "PCB serial number"),
    StateField("boards[].chip_data", "string", "chip batch data"),
    StateField("psu", "object", "power supply (get_psu); null when the firmware has none"),
    StateField("psu.model", "string", "PSU model"),
    StateField("psu.serial", "string", "PSU serial number"),
    StateField("psu.hw_version", "string", "PSU hardware version"),
    StateField("psu.sw_version", "string", "PSU firmware version"),
    StateField("psu.input_current_a", "number", "input current (iin ÷ 1000, assumed)", "A"),
    StateField("psu.input_voltage_v", "number", "input voltage (vin ÷ 100, assumed)", "V"),
    StateField("psu.fan_rpm", "number", "PSU fan speed", "rpm"),
    StateField("psu.temperature_c", "number", "PSU temperature (temp0)", C),
    StateField(
        "psu.readings_plausible",
        "boolean",
        "input current and voltage physically plausible (null: neither read)",
    ),
    StateField("psu.warnings", "array", "what is implausible in them, as text (empty if nothing)"),
    StateField("errors", "array", "active error codes as text, e.g. `329 since 2022-01-17 …`"),
    StateField("error_codes{}", "string", "error code → time it was raised (null if not sent)"),
    StateField("error_count", "integer", "number of active error codes"),
    StateField("led", "string", "LED state (get_miner_info ledstat): auto, red, green …"),
    StateField("network.ip", "string", "IP address"),
    StateField("network.proto", "string", "dhcp or static"),
    StateField("network.netmask", "string", "netmask"),
    StateField("network.gateway", "string", "gateway"),
    StateField("network.dns", "string", "DNS servers, space separated"),
    StateField("network.hostname", "string", "host name"),
    StateField("network.mac", "string", "MAC address"),
    StateField("settings.power_percent", "number", "last power percent written by this agent", "%"),
    StateField("settings.power_percent_ramp", "string", "fast (set_power_pct) or normal (_v2)"),
    StateField("settings.target_freq_percent", "number", "last set_target_freq percent", "%"),
    StateField("settings.temp_offset_c", "number", "last set_temp_offset", C),
    StateField("settings.upfreq_speed", "integer", "last adjust_upfreq_speed"),
    StateField(
        "api_join_limit",
        "integer",
        "reads the miner answers in one joined request, as learned (1: it joins none)",
    ),
)


def _hashrate(window: str, name: str, **kw: Any) -> EntityDescription:
    return EntityDescription(
        f"hashrate_{window}",
        "sensor",
        name,
        value=f"hashrate_hs.{window}",
        unit=TH,
        scale=TO_TH,
        state_class="measurement",
        precision=2,
        icon="mdi:pickaxe",
        **kw,
    )


def _temperature(key: str, name: str, value: str, **kw: Any) -> EntityDescription:
    return EntityDescription(
        key,
        "sensor",
        name,
        value=value,
        unit=C,
        device_class="temperature",
        state_class="measurement",
        precision=1,
        **kw,
    )


def _diagnostic(key: str, name: str, value: str, **kw: Any) -> EntityDescription:
    return EntityDescription(key, "sensor", name, value=value, entity_category="diagnostic", **kw)


ENTITIES = (
    _hashrate("1m", "Hashrate"),
    _hashrate("5s", "Hashrate 5s", enabled_by_default=False),
    _hashrate("15m", "Hashrate 15m"),
    _hashrate("avg", "Hashrate average"),
    EntityDescription(
        "power",
        "sensor",
        "Power",
        value="power_w",
        unit="W",
        device_class="power",
        state_class="measurement",
        precision=0,
    ),
    ENERGY_ENTITY,
    EntityDescription(
        "efficiency",
        "sensor",
        "Efficiency",
        value="efficiency_j_th",
        unit="J/TH",
        state_class="measurement",
        precision=1,
        icon="mdi:lightning-bolt-outline",
    ),
    _temperature("temperature", "Temperature", "temperature_c"),
    _temperature("env_temperature", "Environment temperature", "env_temperature_c"),
    *(
        _temperature(
            f"chip_temperature_{s}",
            f"Chip temperature {label}",
            f"chip_temperature_c.{s}",
            entity_category="diagnostic",
        )
        for s, label in (("min", "min"), ("max", "max"), ("avg", "average"))
    ),
    EntityDescription(
        "fan_in",
        "sensor",
        "Fan speed in (air outlet)",
        value="fans_rpm.in",
        unit="rpm",
        state_class="measurement",
        icon="mdi:fan",
    ),
    EntityDescription(
        "fan_out",
        "sensor",
        "Fan speed out (air inlet)",
        value="fans_rpm.out",
        unit="rpm",
        state_class="measurement",
        icon="mdi:fan",
    ),
    EntityDescription("pool", "sensor", "Pool", value="pool.url", icon="mdi:server-network"),
    EntityDescription(
        "pool_status", "sensor", "Pool status", value="pool.status", icon="mdi:lan-connect"
    ),
    EntityDescription(
        "shares_accepted",
        "sensor",
        "Shares accepted",
        value="shares.accepted",
        state_class="total_increasing",
        icon="mdi:check-circle-outline",
    ),
    EntityDescription(
        "shares_rejected",
        "sensor",
        "Shares rejected",
        value="shares.rejected",
        state_class="total_increasing",
        icon="mdi:close-circle-outline",
    ),
    _diagnostic(
        "uptime",
        "Uptime",
        "uptime_s",
        unit="s",
        device_class="duration",
        state_class="measurement",
    ),
    EntityDescription(
        "errors",
        "sensor",
        "Errors",
        value="error_count",
        state_class="measurement",
        attributes="error_codes",
        icon="mdi:alert-circle-outline",
    ),
    _diagnostic("firmware", "Firmware", "firmware", icon="mdi:tag"),
    _diagnostic(
        "power_limit_reading", "Power limit", "power_limit_w", unit="W", device_class="power"
    ),
    _temperature(
        "psu_temperature", "PSU temperature", "psu.temperature_c", entity_category="diagnostic"
    ),
    _diagnostic(
        "psu_input_voltage",
        "PSU input voltage",
        "psu.input_voltage_v",
        unit="V",
        device_class="voltage",
        state_class="measurement",
        enabled_by_default=False,
    ),
    _diagnostic(
        "psu_input_current",
        "PSU input current",
        "psu.input_current_a",
        unit="A",
        device_class="current",
        state_class="measurement",
        enabled_by_default=False,
    ),
    EntityDescription(
        "mining", "switch", "Mining", value="mining", command="mining", icon="mdi:pickaxe"
    ),
    EntityDescription(
        "power_mode",
        "select",
        "Power mode",
        value="power_mode",
        command="power_mode",
        options=("low", "normal", "high"),
        icon="mdi:speedometer",
    ),
    EntityDescription(
        "power_limit",
        "number",
        "Power limit",
        value="power_limit_w",
        command="power_limit",
        unit="W",
        device_class="power",
        step=1,
        mode="box",
        entity_category="config",
    ),
    EntityDescription(
        "power_percent",
        "number",
        "Power percent",
        value="settings.power_percent",
        command="power_percent",
        unit="%",
        step=1,
        mode="slider",
        icon="mdi:percent",
    ),
    EntityDescription(
        "target_freq",
        "number",
        "Target frequency",
        value="settings.target_freq_percent",
        command="set_target_freq",
        unit="%",
        step=1,
        mode="box",
        entity_category="config",
        icon="mdi:sine-wave",
    ),
    EntityDescription(
        "temp_offset",
        "number",
        "Temperature offset",
        value="settings.temp_offset_c",
        command="set_temp_offset",
        unit=C,
        step=1,
        mode="box",
        entity_category="config",
        icon="mdi:thermometer-minus",
    ),
    EntityDescription(
        "led",
        "select",
        "LED",
        value="led",
        command="set_led",
        options=("auto", "red", "green"),
        icon="mdi:led-on",
    ),
    EntityDescription(
        "restart_btminer",
        "button",
        "Restart btminer",
        command="restart_btminer",
        device_class="restart",
    ),
    EntityDescription(
        "reboot",
        "button",
        "Reboot",
        command="reboot",
        device_class="restart",
        entity_category="config",
    ),
)


def _percent(name: str, description: str, low: int = 0, high: int = 100) -> Param:
    return Param(name, "int", description, minimum=low, maximum=high)


def _pool(n: int) -> tuple[Param, ...]:
    required = n == 1
    return (
        Param(f"pool{n}", "str", f"pool {n} URL", required=required, max_length=256),
        Param(f"worker{n}", "str", f"pool {n} worker", required=required, max_length=128),
        Param(
            f"passwd{n}", "str", f"pool {n} password", required=False, max_length=128, secret=True
        ),
    )


COMMANDS = (
    CommandSpec(
        "update_pools",
        "Replace the pool list and switch at once (§3.1).",
        params=_pool(1) + _pool(2) + _pool(3),
        security="sensitive",
        why="it changes where the hashrate goes",
    ),
    # Not disruptive: it only restarts the mining process (control board, network and config
    # stay), exactly what power modes and power limits already do as ordinary controls.
    CommandSpec("restart_btminer", "Restart the btminer process, not the control board (§3.2)."),
    CommandSpec(
        "power_off",
        "Stop mining and power the hash boards off (§3.3).",
        params=(
            Param("respbefore", "bool", "answer before stopping", required=False, default=True),
        ),
    ),
    CommandSpec("power_on", "Power the hash boards on and start mining (§3.4)."),
    CommandSpec(
        "set_led",
        "LED: auto (flashes by status), or a colour flashing in a cycle (§3.5).",
        params=(
            Param("color", "str", "auto, red or green", choices=("auto", "red", "green")),
            Param(
                "period",
                "int",
                "flash cycle",
                minimum=0,
                maximum=60000,
                required=False,
                default=1000,
            ),
            Param(
                "duration",
                "int",
                "on time in the cycle",
                minimum=0,
                maximum=60000,
                required=False,
                default=500,
            ),
            Param(
                "start",
                "int",
                "on time offset in the cycle",
                minimum=0,
                maximum=60000,
                required=False,
                default=0,
            ),
        ),
        plain="color",
    ),
    CommandSpec("set_low_power", "Low power mode; btminer restarts (§3.6)."),
    CommandSpec("set_normal_power", "Normal power mode; btminer restarts (§3.6)."),
    CommandSpec("set_high_power", "High power mode; btminer restarts (§3.6)."),
    CommandSpec(
        "update_firmware",
        "Upload a firmware file (§3.7); `edge-agent whatsminer upgrade` shows progress.",
        params=(Param("path", "str", "firmware file on the agent's host"),),
        security="sensitive",
        why="new firmware can do anything with the miner",
        cli_only=True,
    ),
    CommandSpec("reboot", "Restart the control board (§3.8).", security="disruptive"),
    CommandSpec(
        "factory_reset",
        "Restore factory settings: network, passwords, API switch, pools, power (§3.9).",
        security="sensitive",
        why="it resets the admin password to the factory one, the pools and the network",
    ),
    CommandSpec(
        "update_pwd",
        "Change the admin password (§3.10); writes then sign with the new one.",
        params=(
            Param(
                "new",
                "str",
                "new password: ≤ 8 letters, digits, _",
                pattern=_ADMIN_PW_SHAPE,
                secret=True,
            ),
            Param(
                "old",
                "str",
                "current password (default: the configured one)",
                required=False,
                pattern=_ADMIN_PW_SHAPE,
                secret=True,
            ),
        ),
        plain="new",
        security="sensitive",
        why="it changes the miner's credentials",
    ),
    CommandSpec(
        "net_config",
        "Network: dhcp, or static with ip/mask/gate/dns/host; miner restarts.",
        params=(
            Param("mode", "str", "dhcp or static", choices=("dhcp", "static")),
            Param("ip", "str", "static address", required=False, pattern=_IPV4),
            Param("mask", "str", "netmask", required=False, pattern=_IPV4),
            Param("gate", "str", "gateway", required=False, pattern=_IPV4),
            Param(
                "dns",
                "str",
                "DNS servers, space separated",
                required=False,
                pattern=f"{_IPV4}(?: {_IPV4})*",
            ),
            Param("host", "str", "host name", required=False, pattern=_HOSTNAME),
        ),
        plain="mode",
        security="sensitive",
        why="it changes the miner's network settings",
    ),
    CommandSpec(
        "download_logs",
        "Download the miner's logs to a file (§3.12); `edge-agent whatsminer logs`.",
        params=(Param("path", "str", "destination file on the agent's host"),),
        security="sensitive",
        why="the logs show the pools, workers and network of the miner",
        cli_only=True,
    ),
    CommandSpec(
        "set_target_freq",
        "Frequency percent vs normal mode; btminer restarts (§3.13).",
        params=(_percent("percent", "-100 … 100; fan-cooled miners only go down", -100),),
        plain="percent",
    ),
    CommandSpec("enable_btminer_fast_boot", "Fast boot from the next restart (§3.14)."),
    CommandSpec("disable_btminer_fast_boot", "No fast boot from the next restart (§3.15)."),
    CommandSpec(
        "enable_web_pools",
        "Allow pool changes on the web page (§3.16).",
        security="sensitive",
        why="it lets the miner's web page change where the hashrate goes",
    ),
    CommandSpec("disable_web_pools", "Forbid pool changes on the web page (§3.17)."),
    # A network setting: a new host name takes effect at the next network restart and can
    # leave the miner unreachable under the name the agent (or DHCP/DNS) knows it by.
    CommandSpec(
        "set_hostname",
        "Host name, effective after the network restarts (§3.18).",
        params=(Param("hostname", "str", "host name", pattern=_HOSTNAME),),
        plain="hostname",
        security="sensitive",
        why="it changes the miner's network settings",
    ),
    # Not disruptive: the time zone only changes local timestamps, nothing stops or moves.
    CommandSpec(
        "set_zone",
        "Time zone, effective after the network restarts (§3.19).",
        params=(
            Param("timezone", "str", "POSIX TZ, e.g. CST-8", pattern=r"[A-Za-z0-9+\-:,.<>]{1,64}"),
            Param(
                "zonename",
                "str",
                "zone name, e.g. Asia/Shanghai",
                pattern=r"[A-Za-z0-9_+\-/]{1,64}",
            ),
        ),
    ),
    CommandSpec(
        "load_log",
        "Send the miner's logs to an rsyslog server (§3.20).",
        params=(
            Param("ip", "str", "log server address", pattern=_IPV4),
            Param("port", "int", "log server port", minimum=1, maximum=65535),
            Param("proto", "str", "tcp or udp", choices=("tcp", "udp")),
        ),
        security="sensitive",
        why="it changes where the miner's logs go",
    ),
    CommandSpec(
        "set_power_pct",
        "Power percent, fast mode: within a second, approximate (§3.21).",
        params=(_percent("percent", "percent of the stable mining power"),),
        plain="percent",
    ),
    CommandSpec(
        "set_power_pct_v2",
        "Power percent, normal mode: ramps over minutes (§3.22).",
        params=(_percent("percent", "percent of the stable mining power"),),
        plain="percent",
    ),
    CommandSpec(
        "pre_power_on",
        "Preheat a powered-off miner so power_on is quick; also reports progress (§3.23).",
        params=(
            Param("complete", "bool", "the doc's `complete` flag", required=False),
            Param(
                "msg",
                "str",
                "the doc's `msg`",
                required=False,
                choices=("wait for adjust temp", "adjust complete", "adjust continue"),
            ),
        ),
    ),
    CommandSpec(
        "set_temp_offset",
        "Offset of the hash board target temperature (§3.24).",
        params=(Param("temp_offset", "int", "°C, -30 … 0", minimum=-30, maximum=0),),
        plain="temp_offset",
    ),
    CommandSpec(
        "adjust_power_limit",
        "Upper power limit; btminer restarts if it takes effect (§3.25).",
        params=(Param("power_limit", "int", "watts, 0 … 99999", minimum=0, maximum=99999),),
        plain="power_limit",
    ),
    CommandSpec(
        "adjust_upfreq_speed",
        "Frequency ramp speed: 0 normal … 9 fastest (§3.26).",
        params=(Param("upfreq_speed", "int", "0 … 9", minimum=0, maximum=9),),
        plain="upfreq_speed",
    ),
    CommandSpec(
        "set_poweroff_cool",
        "Keep cooling after mining stops (§3.27).",
        params=(Param("poweroff_cool", "bool", "ON to cool"),),
        plain="poweroff_cool",
    ),
    CommandSpec(
        "set_fan_zero_speed",
        "Let the fans stop completely (§3.28).",
        params=(Param("fan_zero_speed", "bool", "ON to allow 0 rpm"),),
        plain="fan_zero_speed",
    ),
    CommandSpec(
        "mining",
        "Switch: ON → power_on, OFF → power_off.",
        params=(Param("state", "bool", "ON to mine, OFF to stop"),),
        plain="state",
    ),
    CommandSpec(
        "power_mode",
        "Select: low / normal / high → set_*_power; btminer restarts.",
        params=(Param("mode", "str", "low, normal or high", choices=("low", "normal", "high")),),
        plain="mode",
    ),
    CommandSpec(
        "power_limit",
        "Number: watts → adjust_power_limit; btminer restarts.",
        params=(Param("power_limit", "int", "watts, 0 … 99999", minimum=0, maximum=99999),),
        plain="power_limit",
    ),
    CommandSpec(
        "power_percent",
        "Number: percent → set_power_pct_v2 (the doc's recommended ramp).",
        params=(_percent("percent", "percent of the stable mining power"),),
        plain="percent",
    ),
)


def _board_entities(state: Mapping[str, Any]) -> Sequence[EntityDescription]:
    boards = state.get("boards")
    if not isinstance(boards, list):
        return []
    slots = tuple(_slot(index, board) for index, board in enumerate(boards))
    try:
        return _entities_for_slots(slots)
    except TypeError:  # a slot that cannot be a cache key: built afresh
        return _entities_for_slots.__wrapped__(slots)


def _slot(index: int, board: Any) -> Any:
    slot = board.get("slot") if isinstance(board, dict) else None
    return index if slot is None else slot  # edevs without Slot or ASC: reply order


# Asked after every poll (discovery's re-check): the same boards give the same entities, built
# once and shared by every miner with those slots.
@functools.lru_cache(maxsize=64)
def _entities_for_slots(slots: tuple[Any, ...]) -> tuple[EntityDescription, ...]:
    found = []
    for index, slot in enumerate(slots):
        path = f"boards.{index}"
        found.append(
            EntityDescription(
                f"board{slot}_hashrate",
                "sensor",
                f"Board {slot} hashrate",
                value=f"{path}.hashrate_hs.avg",
                unit=TH,
                scale=TO_TH,
                state_class="measurement",
                precision=2,
                entity_category="diagnostic",
                icon="mdi:pickaxe",
            )
        )
        found.append(
            _temperature(
                f"board{slot}_temperature",
                f"Board {slot} temperature",
                f"{path}.temperature_c",
                entity_category="diagnostic",
            )
        )
    return tuple(found)


# What a running miner changes on every poll is held inside a deadband or rides along (quiet);
# what an operator or a command changes goes out at once.
PUBLISH = PublishDefaults(
    immediate=(
        "mining",
        "power_mode",
        "errors*",
        "error_codes*",
        "error_count",
        "pool.url",
        "pool.user",
        "pool.status",
        "pools.*.url",
        "pools.*.user",
        "pools.*.status",
        "pools.*.priority",
        "pools.*.stratum_active",
        "settings.*",
        "hash_percent",
        "power_limit_w",
        "led",
        "fast_boot",
        "boards.*.status",
        "boards.*.enabled",
        "psu.warnings*",
    ),
    deadband={
        "*hashrate_hs*": "5%",
        "power_w": "2%",
        "efficiency_j_th": "2%",
        "*temperature_c*": 2,
        "fans_rpm.*": "10%",
        "psu.fan_rpm": "10%",
        "*frequency_mhz*": "2%",
        "psu.input_current_a": "5%",
        "psu.input_voltage_v": "2%",
    },
    quiet=(
        "uptime_s",
        "elapsed_s",
        "shares.*",
        "pools.*.accepted",
        "pools.*.rejected",
        "pools.*.difficulty",
        "pools.*.last_share_time",
        "boards.*.accepted",
        "boards.*.rejected",
        "boards.*.effective_chips",
        "hash_stable",
        "energy_kwh",
    ),
)

CATALOG = Catalog(
    kind="whatsminer",
    title="Whatsminer",
    manufacturer="MicroBT",
    default_model="Whatsminer",
    fields=FIELDS,
    entities=ENTITIES,
    commands=COMMANDS,
    dynamic_entities=_board_entities,
    device_info=DeviceInfoPaths(
        model="model", sw_version="firmware", hw_version="platform", serial_number="serial"
    ),
    publish=PUBLISH,
)
