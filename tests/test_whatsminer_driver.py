"""The driver and catalog: polls normalised against the simulator, every command from its
payload (as the runtime validates it) through the simulator to its result."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from agent.catalog.validate import (
    parse_command_payload,
    redact_params,
    resolve_command,
    validate_params,
)
from agent.devices.whatsminer import KIND
from agent.devices.whatsminer.catalog import CATALOG
from agent.devices.whatsminer.client import WRITE_COMMANDS
from agent.devices.whatsminer.config import WhatsminerConfig
from agent.devices.whatsminer.driver import WhatsminerDriver
from agent.errors import (
    AuthError,
    DeviceTimeoutError,
    NotAllowedError,
    ProtocolError,
    ValidationError,
)
from agent.kinds import KINDS
from agent.runtime.energy import ENERGY_STATE_FIELD
from edge_agent_sim.whatsminer import (
    JOIN_VARIANTS,
    REBOOT_S,
    SimClock,
    WhatsminerModel,
    running,
)

EVERYTHING = [c.name for c in CATALOG.commands]
ERRORS = {"329": "2022-01-17 11:28:11", "2010": "2022-01-18 09:00:00"}


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 15))


def config(port: int, **overrides: Any) -> WhatsminerConfig:
    fields: dict[str, Any] = {
        "id": "wm1",
        "kind": "whatsminer",
        "host": "127.0.0.1",
        "port": port,
        "password": "admin",
        "timeout": 2,
        "allow_commands": EVERYTHING,
    }
    fields.update(overrides)
    return WhatsminerConfig(**fields)


@contextlib.asynccontextmanager
async def driven(**options: Any) -> AsyncIterator[tuple[WhatsminerModel, WhatsminerDriver]]:
    overrides = options.pop("config", {})
    options.setdefault("error_codes", dict(ERRORS))
    async with running(1, **options) as fleet:
        device = fleet.devices[0]
        yield device.model, WhatsminerDriver(config(device.port, **overrides))


def params_for(command: str, payload: bytes) -> dict[str, Any]:
    """What the runtime does before execute(): resolve, parse the payload, validate."""
    spec = resolve_command(CATALOG, command, EVERYTHING, via_mqtt=False)
    return validate_params(spec, parse_command_payload(spec, payload).params)


def resolve(state: Any, path: str) -> list[Any]:
    """Every value a README schema path (`boards[].slot`, `error_codes{}`) names in a state."""
    values = [state]
    for part in path.split("."):
        key = part.rstrip("[]{}")
        found: list[Any] = []
        for value in values:
            assert isinstance(value, dict) and key in value, f"{path}: no {key!r}"
            item = value[key]
            if part.endswith("[]"):
                assert isinstance(item, list) and item, f"{path}: {key} is not a filled list"
                found.extend(item)
            elif part.endswith("{}"):
                assert isinstance(item, dict) and item, f"{path}: {key} is not a filled map"
                found.extend(item.values())
            else:
                found.append(item)
        values = found
    return values


# ------------------------------------------------------------------------ poll


@pytest.mark.parametrize("variant", sorted(JOIN_VARIANTS))
def test_poll_fills_every_documented_field(variant: str) -> None:
    """The first poll is complete on every firmware's joins, the doc's two included."""

    async def scenario() -> None:
        async with driven(**JOIN_VARIANTS[variant]) as (_model, driver):
            await driver.execute("set_power_pct", params_for("set_power_pct", b"80"))
            state = (await driver.poll()).state
            for field in CATALOG.fields:
                if field is ENERGY_STATE_FIELD:
                    continue  # the agent adds it to what the driver read (agent.runtime.energy)
                values = resolve(state, field.path)
                if not field.path.startswith("settings.") or field.path.startswith(
                    "settings.power"
                ):
                    assert values and all(v is not None for v in values), field.path
            json.dumps(state)  # publishable as it is

    run(scenario)


def test_poll_hands_over_replies_only_for_publish_raw() -> None:
    async def scenario() -> None:
        async with driven() as (_model, driver):
            assert (await driver.poll()).raw == {}  # nothing would publish them
        async with driven(config={"publish_raw": True}) as (_model, driver):
            raw = (await driver.poll()).raw
            assert {"summary", "pools", "edevs", "status", "get_psu", "devdetails"} <= set(raw)

    run(scenario)


def test_poll_normalises_units_and_values() -> None:
    async def scenario() -> None:
        async with driven(config={"publish_raw": True}) as (model, driver):
            result = await driver.poll()
            state = result.state
            summary = result.raw["summary"]["SUMMARY"][0]
            assert state["hashrate_hs"]["1m"] == pytest.approx(summary["MHS 1m"] * 1e6)
            assert state["hashrate_hs"]["1m"] > 50e12  # tens of TH/s, in H/s
            assert state["factory_hashrate_hs"] == pytest.approx(summary["Factory GHS"] * 1e9)
            assert state["power_w"] == summary["Power"]
            assert state["efficiency_j_th"] == pytest.approx(model.efficiency, rel=0.02)
            assert state["mining"] is True and state["power_mode"] == "normal"
            # The doc's labels: "Fan Speed In" is the outlet fan, "Fan Speed Out" the inlet.
            assert state["fans_rpm"] == {"in": 5900, "out": 5800}
            assert (summary["Fan Speed In"], summary["Fan Speed Out"]) == (5900, 5800)
            assert state["model"] == "M30S+VE40" and state["serial"] == "SIM00000000"
            assert state["firmware"] == model.firmware_version  # quotes stripped
            assert [b["slot"] for b in state["boards"]] == [0, 1, 2]
            assert state["boards"][1]["model"] == "M30S+VE40"
            assert state["pool"]["url"] == model.pools[0]["url"]
            assert state["error_codes"] == ERRORS and state["error_count"] == 2
            assert "329 since 2022-01-17 11:28:11" in state["errors"]
            assert state["psu"]["input_voltage_v"] == pytest.approx(224.0)
            assert state["psu"]["input_current_a"] * 224 == pytest.approx(
                state["power_w"], rel=0.05
            )
            assert state["psu"]["readings_plausible"] is True and state["psu"]["warnings"] == []
            assert state["led"] == "auto" and state["network"]["proto"] == "dhcp"
            assert "admin" not in json.dumps(state)

    run(scenario)


# Connections for summary, pools and edevs: the first poll (learning), the polls after it.
FAST_CONNECTIONS = {
    "two": (2, 2),  # summary+pools+edevs answers two parts, then edevs alone
    "two_refusing_more": (3, 2),  # the three-part join refused, then summary+pools and edevs
    "any": (1, 1),
    "none": (5, 3),  # joins of three and of two refused, then one read each
    "none_answering_first": (3, 3),  # the join answered as summary alone, then one read each
}
JOIN_LIMIT = {"two": 2, "two_refusing_more": 2, "any": 3, "none": 1, "none_answering_first": 1}


@pytest.mark.parametrize("variant", sorted(JOIN_VARIANTS))
def test_poll_reads_slow_data_rarely(variant: str) -> None:
    first, later = FAST_CONNECTIONS[variant]

    async def scenario() -> None:
        async with driven(**JOIN_VARIANTS[variant]) as (model, driver):
            await driver.poll()
            assert model.connections == first + 1 + 2 + 3  # + status, psu and errors, slow
            await driver.poll()
            # status too is read only every status_interval
            assert model.connections == first + 6 + later
            await driver.execute("set_led", params_for("set_led", b"red"))
            connections = model.connections
            state = (await driver.poll()).state
            assert state["led"] == "red"
            # A write: status at once (mining or the mode may have changed), and for the LED
            # the slow reads again (with them a probe of the full join: a free one on a
            # miner that answers part of it, one or two refusals on the others).
            probe = first - later
            assert model.connections == connections + later + probe + 1 + 3
            assert state["api_join_limit"] == JOIN_LIMIT[variant]
            assert model.errors_sent[14] == 2 * {"two_refusing_more": 1, "none": 2}.get(variant, 0)

    run(scenario)


def test_joins_are_learned_again_after_a_reboot_into_new_firmware() -> None:
    async def scenario() -> None:
        async with driven(join_limit="none") as (model, driver):
            assert (await driver.poll()).state["api_join_limit"] == 1
            await driver.execute("reboot", params_for("reboot", b"PRESS"))
            model.clock.advance(REBOOT_S + 1)  # type: ignore[union-attr]
            model.join_limit = "any"  # the firmware it came back with joins everything
            assert (await driver.poll()).state["api_join_limit"] == 1  # uptime went back…
            connections = model.connections
            with capture_logs() as logs:
                state = (await driver.poll()).state  # …so this poll probes the full join
            assert state["api_join_limit"] == 3 and len(state["boards"]) == 3
            assert {"event": "joined reads", "commands_per_join": 3} in [
                {k: e.get(k) for k in ("event", "commands_per_join")} for e in logs
            ]
            connections = model.connections
            await driver.poll()
            assert model.connections == connections + 1

    run(scenario)


@pytest.mark.parametrize(
    ("scales", "warning"),
    [
        ({"psu_iin_per_amp": 10_000.0}, "input current"),  # iin in 0.1 mA: ten times the amps
        ({"psu_iin_per_amp": 100.0}, "VA"),  # iin in 10 mA: a tenth of the power
        ({"psu_vin_per_volt": 10.0}, "input voltage 22.4 V"),  # vin in 0.1 V
        ({"psu_vin_per_volt": 1000.0}, "input voltage 2240 V"),  # vin in mV
    ],
)
def test_implausible_psu_readings_are_flagged(scales: dict[str, float], warning: str) -> None:
    async def scenario() -> None:
        async with driven(**scales, config={"detail_interval": 0}) as (_model, driver):
            with capture_logs() as logs:
                psu = (await driver.poll()).state["psu"]
                await driver.poll()  # the same readings again: no second warning
            assert psu["readings_plausible"] is False
            assert any(warning in text for text in psu["warnings"]), psu["warnings"]
            warned = [e for e in logs if e["event"] == "implausible PSU reading"]
            assert [e["warnings"] for e in warned] == [psu["warnings"]]

    run(scenario)


def test_set_led_numbers_reach_a_doc_strict_miner_as_integers() -> None:
    async def scenario() -> None:
        async with driven(led_fields="integer") as (model, driver):
            payload = b'{"color":"green","period":2000,"duration":100,"start":50}'
            assert await driver.execute("set_led", params_for("set_led", payload)) == "ok"
            assert model.led == "green" and model.errors_sent[14] == 0

    run(scenario)


def test_poll_follows_power_off_and_mineroff_firmware() -> None:
    async def scenario() -> None:
        async with driven(quirks={"mineroff", "nul", "trailing_comma"}) as (_model, driver):
            await driver.execute("mining", params_for("mining", b"OFF"))
            state = (await driver.poll()).state
            assert state["mining"] is False
            assert state["hashrate_hs"]["1m"] == 0 and state["power_w"] < 50

    run(scenario)


def test_missing_secondary_reads_keep_the_poll_going() -> None:
    async def scenario() -> None:
        unsupported = {"get_psu", "get_error_code", "get_miner_info", "status"}
        async with driven(unsupported=unsupported) as (_model, driver):
            state = (await driver.poll()).state
            assert state["psu"] is None and state["error_count"] == 0
            assert state["mining"] is None and state["serial"] is None
            assert state["power_w"] > 1000

    run(scenario)


@pytest.mark.parametrize(
    ("fault", "error"), [("garbage", ProtocolError), ("hang", DeviceTimeoutError)]
)
def test_poll_of_a_misbehaving_miner_fails_clearly(fault: str, error: type[Exception]) -> None:
    async def scenario() -> None:
        async with driven(fault=fault, config={"timeout": 0.3}) as (_model, driver):
            with pytest.raises(error):
                await driver.poll()

    run(scenario)


def test_board_entities_point_into_the_state() -> None:
    async def scenario() -> None:
        async with driven() as (_model, driver):
            state = (await driver.poll()).state
            entities = CATALOG.entities_for(state)
            boards = [e for e in entities if e.key.startswith("board")]
            assert {e.key for e in boards} == {
                f"board{slot}_{what}" for slot in range(3) for what in ("hashrate", "temperature")
            }
            for entity in boards:
                assert entity.entity_category == "diagnostic"
                assert entity.value is not None
                value: Any = state
                for part in entity.value.split("."):
                    value = value[int(part)] if isinstance(value, list) else value[part]
                assert isinstance(value, float) and value > 0

    run(scenario)


# -------------------------------------------------------------------- commands

Check = Callable[[WhatsminerModel, Any], None]
SETUP: dict[str, list[tuple[str, bytes]]] = {
    "power_on": [("power_off", b"")],
    "pre_power_on": [("power_off", b"")],
    "set_normal_power": [("set_low_power", b"")],
}


def _pools(model: WhatsminerModel, _: Any) -> None:
    assert [p["url"] for p in model.pools] == ["stratum+tcp://a.example:3333", "stratum+tcp://b:1"]
    assert model.pools[0]["user"] == "acct.w1"


CASES: dict[str, tuple[bytes, Check]] = {
    "update_pools": (
        b'{"pool1":"stratum+tcp://a.example:3333","worker1":"acct.w1","passwd1":"x",'
        b'"pool2":"stratum+tcp://b:1","worker2":"acct.w2"}',
        _pools,
    ),
    "restart_btminer": (b"PRESS", lambda m, r: m.btminer_restarts == 1 or _fail()),
    "power_off": (b"", lambda m, r: not m.mining or _fail()),
    "power_on": (b"", lambda m, r: m.mining or _fail()),
    "set_led": (b"green", lambda m, r: m.led == "green" or _fail()),
    "set_low_power": (b"", lambda m, r: m.power_mode == "low" or _fail()),
    "set_normal_power": (b"", lambda m, r: m.power_mode == "normal" or _fail()),
    "set_high_power": (b"", lambda m, r: m.power_mode == "high" or _fail()),
    "reboot": (b"PRESS", lambda m, r: m.reboots == 1 or _fail()),
    "factory_reset": (b"", lambda m, r: not m.write_api or _fail()),
    "update_pwd": (b"n3w_pw", lambda m, r: m.password == "n3w_pw" or _fail()),
    "net_config": (
        b'{"mode":"static","ip":"10.1.2.3","mask":"255.255.255.0","gate":"10.1.2.1",'
        b'"dns":"1.1.1.1 8.8.8.8","host":"rig-9"}',
        lambda m, r: (m.network["ip"] == "10.1.2.3" and m.hostname == "rig-9") or _fail(),
    ),
    "set_target_freq": (b"-100", lambda m, r: m.target_freq_percent == -100 or _fail()),
    "enable_btminer_fast_boot": (b"", lambda m, r: m.settings["fast_boot"] == "enable" or _fail()),
    "disable_btminer_fast_boot": (
        b"",
        lambda m, r: m.settings["fast_boot"] == "disable" or _fail(),
    ),
    "enable_web_pools": (b"", lambda m, r: m.settings["web_pools"] is True or _fail()),
    "disable_web_pools": (b"", lambda m, r: m.settings["web_pools"] is False or _fail()),
    "set_hostname": (b"rig-7", lambda m, r: m.hostname == "rig-7" or _fail()),
    "set_zone": (
        b'{"timezone":"CST-8","zonename":"Asia/Shanghai"}',
        lambda m, r: m.settings["zone"] == ("CST-8", "Asia/Shanghai") or _fail(),
    ),
    "load_log": (
        b'{"ip":"10.0.0.5","port":514,"proto":"udp"}',
        lambda m, r: m.settings["log_server"] == ("10.0.0.5", 514, "udp") or _fail(),
    ),
    "set_power_pct": (b"100", lambda m, r: m.target_fraction > 0.94 or _fail()),
    "set_power_pct_v2": (b"0", lambda m, r: m.btminer_restarts == 1 or _fail()),  # below floor
    "pre_power_on": (b"", lambda m, r: r == {"complete": False, "msg": "wait for adjust temp"}),
    "set_temp_offset": (b"-30", lambda m, r: m.settings["temp_offset"] == -30 or _fail()),
    "adjust_power_limit": (b"2800", lambda m, r: m.power_limit_w == 2800 or _fail()),
    "adjust_upfreq_speed": (b"9", lambda m, r: m.settings["upfreq_speed"] == 9 or _fail()),
    "set_poweroff_cool": (b"ON", lambda m, r: m.settings["poweroff_cool"] is True or _fail()),
    "set_fan_zero_speed": (b"OFF", lambda m, r: m.settings["fan_zero_speed"] is False or _fail()),
    "mining": (b"OFF", lambda m, r: not m.mining or _fail()),
    "power_mode": (b"high", lambda m, r: m.power_mode == "high" or _fail()),
    "power_limit": (b"3000", lambda m, r: m.power_limit_w == 3000 or _fail()),
    "power_percent": (b"50", lambda m, r: (m.exponent < 1 and m.target_fraction < 0.52) or _fail()),
}
FILE_FLOWS = {"update_firmware", "download_logs"}


def _fail() -> None:
    raise AssertionError("the simulator did not change as the command says")


def test_every_command_has_a_case() -> None:
    assert set(CASES) | FILE_FLOWS == {c.name for c in CATALOG.commands}


@pytest.mark.parametrize("command", sorted(CASES))
def test_command_reaches_the_miner(command: str) -> None:
    payload, check = CASES[command]

    async def scenario() -> None:
        async with driven(clock=SimClock(time_scale=0)) as (model, driver):
            for name, setup_payload in SETUP.get(command, []):
                await driver.execute(name, params_for(name, setup_payload))
            result = await driver.execute(command, params_for(command, payload))
            json.dumps(result)
            check(model, result)
            if command != "pre_power_on":
                assert result == "ok"
            assert model.writes[-1].code == 131
            assert model.tokens_issued == 1

    run(scenario)


def test_mining_on_and_power_mode_low_map_to_their_writes() -> None:
    async def scenario() -> None:
        async with driven() as (model, driver):
            await driver.execute("mining", params_for("mining", b"OFF"))
            await driver.execute("mining", params_for("mining", b"ON"))
            await driver.execute("power_mode", params_for("power_mode", b"low"))
            assert [w.command for w in model.writes] == ["power_off", "power_on", "set_low_power"]

    run(scenario)


def test_settings_the_api_cannot_read_back_are_remembered() -> None:
    async def scenario() -> None:
        async with driven() as (_model, driver):
            await driver.execute("power_percent", params_for("power_percent", b"65"))
            await driver.execute("set_temp_offset", params_for("set_temp_offset", b"-4"))
            await driver.execute("set_target_freq", params_for("set_target_freq", b"-10"))
            settings = (await driver.poll()).state["settings"]
            assert settings["power_percent"] == 65
            assert settings["power_percent_ramp"] == "normal"
            assert settings["temp_offset_c"] == -4 and settings["target_freq_percent"] == -10

    run(scenario)


def test_password_change_then_writes_still_work() -> None:
    async def scenario() -> None:
        async with driven() as (model, driver):
            result = await driver.execute("update_pwd", params_for("update_pwd", b"n3w_pw"))
            assert result == "ok" and model.password == "n3w_pw"
            assert await driver.execute("power_on", {}) == "ok"

    run(scenario)


def test_firmware_and_logs_through_execute(tmp_path: Path) -> None:
    firmware = tmp_path / "fw.bin"
    firmware.write_bytes(b"\x00\x01" * 5000)
    logs = tmp_path / "miner.log"

    async def scenario() -> None:
        clock = SimClock(time_scale=0)
        async with driven(log_size=12345, clock=clock) as (model, driver):
            path = json.dumps({"path": str(firmware)}).encode()
            result = await driver.execute("update_firmware", params_for("update_firmware", path))
            assert result["bytes"] == 10000 and model.firmware_uploads == [10000]
            clock.advance(REBOOT_S)  # the miner reboots into the new firmware
            assert (await driver.poll()).state["firmware"] == model.firmware_version
            target = json.dumps({"path": str(logs)}).encode()
            result = await driver.execute("download_logs", params_for("download_logs", target))
            assert result == {"path": str(logs), "bytes": 12345}

    run(scenario)
    assert logs.stat().st_size == 12345
    assert not (tmp_path / "miner.log.part").exists()


def test_200_commands_use_one_token() -> None:
    async def scenario() -> None:
        async with driven() as (model, driver):
            for index in range(200):
                command = ("power_percent", "set_power_pct", "set_led")[index % 3]
                payload = b"auto" if command == "set_led" else str(50 + index % 50).encode()
                await driver.execute(command, params_for(command, payload))
            assert model.tokens_issued == 1 and driver.client.tokens_fetched == 1
            assert model.errors_sent[136] == 0 and len(model.writes) == 200

    run(scenario)


def test_read_only_miner_refuses_writes_clearly() -> None:
    async def scenario() -> None:
        async with driven(config={"password": None}) as (model, driver):
            with pytest.raises(AuthError, match="no admin password configured"):
                await driver.execute("mining", params_for("mining", b"OFF"))
            assert model.mining and model.connections == 0
            assert (await driver.poll()).state["mining"] is True

    run(scenario)


# ------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("command", "payload"),
    [
        ("set_power_pct", b"101"),
        ("set_power_pct_v2", b"-1"),
        ("power_percent", b"100.5"),
        ("set_target_freq", b"101"),
        ("set_target_freq", b"-101"),
        ("set_temp_offset", b"1"),
        ("set_temp_offset", b"-31"),
        ("adjust_power_limit", b"100000"),
        ("power_limit", b"-1"),
        ("adjust_upfreq_speed", b"10"),
        ("set_poweroff_cool", b"2"),
        ("power_mode", b"turbo"),
        ("set_led", b"blue"),
        ("update_pwd", b"toolongpw"),
        ("update_pwd", b"no-dash"),
        ("net_config", b"bootp"),
        ("set_hostname", b"bad host"),
        ("load_log", b'{"ip":"10.0.0.300","port":514,"proto":"udp"}'),
        ("update_pools", b'{"worker1":"w"}'),
    ],
)
def test_out_of_range_is_refused_before_anything_is_sent(command: str, payload: bytes) -> None:
    with pytest.raises(ValidationError):
        params_for(command, payload)


@pytest.mark.parametrize(
    ("command", "payload"),
    [
        ("set_power_pct", b"0"),
        ("set_power_pct_v2", b"100"),
        ("set_target_freq", b"100"),
        ("set_target_freq", b"-100"),
        ("set_temp_offset", b"0"),
        ("adjust_power_limit", b"99999"),
        ("adjust_upfreq_speed", b"0"),
        ("update_pwd", b"abc_1234"),
    ],
)
def test_the_doc_ranges_are_inclusive(command: str, payload: bytes) -> None:
    params_for(command, payload)


def test_cross_field_checks_send_nothing() -> None:
    async def scenario() -> None:
        async with driven() as (model, driver):
            led = params_for("set_led", b'{"color":"red","period":100,"duration":500}')
            with pytest.raises(ValidationError, match="duration"):
                await driver.execute("set_led", led)
            with pytest.raises(ValidationError, match="mask, gate, dns, host"):
                await driver.execute(
                    "net_config", params_for("net_config", b'{"mode":"static","ip":"1.2.3.4"}')
                )
            assert model.connections == 0

    run(scenario)


# ----------------------------------------------------------------- catalog


def test_disruptive_and_cli_only_commands() -> None:
    gated = {c.name for c in CATALOG.commands if c.gated}
    assert gated == {
        "update_pools",
        "enable_web_pools",
        "reboot",
        "factory_reset",
        "update_pwd",
        "net_config",
        "update_firmware",
        "download_logs",
        "set_hostname",
        "load_log",
    }
    assert {c.name for c in CATALOG.commands if c.cli_only} == {"update_firmware", "download_logs"}
    with pytest.raises(NotAllowedError):
        resolve_command(CATALOG, "reboot", allowed=[])
    with pytest.raises(NotAllowedError):
        resolve_command(CATALOG, "update_firmware", allowed=["update_firmware"])  # MQTT


def test_every_api_write_has_a_command() -> None:
    names = {c.name for c in CATALOG.commands}
    assert WRITE_COMMANDS - {"upgrade_firmware"} <= names  # the alias is the client's fallback
    assert len(WRITE_COMMANDS - {"upgrade_firmware"}) == 30  # 28 sections, 3 power modes


def test_controls_match_their_commands() -> None:
    for entity in CATALOG.entities:
        if entity.command is None:
            continue
        spec = CATALOG.command(entity.command)
        assert spec is not None, entity.key
        if entity.platform in ("number", "select", "switch"):
            assert spec.plain is not None, entity.key
            param = spec.param(spec.plain)
            assert param is not None
            if entity.platform == "select":
                assert set(entity.options or ()) <= set(param.choices or ())
            if entity.platform == "number":
                assert param.minimum is not None and param.maximum is not None
    ranges = {e.key: CATALOG.command(e.command or "") for e in CATALOG.entities if e.command}
    power_limit = ranges["power_limit"]
    assert power_limit is not None and power_limit.param("power_limit") is not None


def test_secret_params_are_redacted() -> None:
    spec = CATALOG.command("update_pwd")
    assert spec is not None
    shown = redact_params(spec, {"new": "n3w_pw", "old": "admin"})
    assert shown == {"new": "***", "old": "***"}
    pools = CATALOG.command("update_pools")
    assert pools is not None and pools.param("passwd1") is not None
    assert pools.param("passwd1").secret  # type: ignore[union-attr]


def test_kind_is_registered() -> None:
    assert KINDS["whatsminer"] is KIND
    assert KIND.config.model_fields["port"].default == 4028


def test_config_defaults_and_secrets() -> None:
    cfg = config(4028, password="s3cret")
    assert cfg.slow_interval == 600 and cfg.detail_interval == 60
    assert cfg.firmware_command == "update_firmware"
    assert "s3cret" not in cfg.model_dump_json() and "s3cret" not in repr(cfg)
    with pytest.raises(ValueError):
        config(4028, host="tcp://10.0.0.1")
    assert config(4028, password=None).password is None
