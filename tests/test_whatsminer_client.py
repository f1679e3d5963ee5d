"""The protocol client against the simulator (and a few scripted servers), over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from agent.devices.whatsminer.client import (
    MAX_REPLY_BYTES,
    MINER_INFO_FIELDS,
    JoinNotAnsweredError,
    WhatsminerClient,
)
from agent.errors import (
    AuthError,
    DeviceError,
    DeviceTimeoutError,
    ProtocolError,
    UnknownCommandError,
    UnreachableError,
    ValidationError,
)
from edge_agent_sim.whatsminer import JOIN_VARIANTS, QUIRKS, WhatsminerModel, running

TIMEOUT = 2.0


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 15))


def client_for(
    model: Any, port: int, password: str | None = "admin", **kw: Any
) -> WhatsminerClient:
    kw.setdefault("connect_timeout", TIMEOUT)
    kw.setdefault("read_timeout", TIMEOUT)
    return WhatsminerClient("127.0.0.1", port, password, **kw)


@contextlib.asynccontextmanager
async def miner(**options: Any) -> AsyncIterator[tuple[WhatsminerModel, WhatsminerClient]]:
    async with running(1, **options) as fleet:
        device = fleet.devices[0]
        yield device.model, client_for(device.model, device.port)


@contextlib.asynccontextmanager
async def scripted(*replies: bytes | None) -> AsyncIterator[tuple[int, list[bytes]]]:
    """A server that answers its n-th connection with replies[n] (None: close at once, b"HANG":
    never answer) and records every request; stands in for firmware the simulator does not
    imitate."""
    received: list[bytes] = []
    pending = list(replies)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.read(65536))
        reply = pending.pop(0) if pending else None
        if reply == b"HANG":
            await asyncio.sleep(30)
        elif reply is not None:
            writer.write(reply)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], received
    finally:
        server.close()


def envelope(code: int, msg: Any, status: str = "E") -> bytes:
    return json.dumps({"STATUS": status, "When": 1, "Code": code, "Msg": msg}).encode()


TOKEN_REPLY = envelope(134, {"time": "5626", "salt": "BQ5hoXV9", "newsalt": "jbzkfQls"}, "S")

# ---------------------------------------------------------------------- reads


def test_every_read_command() -> None:
    async def scenario() -> None:
        async with miner(error_codes={"329": "2022-01-17 11:28:11"}) as (model, client):
            assert (await client.summary())["SUMMARY"][0]["Power"] > 1000
            assert (await client.pools())["POOLS"][0]["URL"].startswith("stratum+tcp://")
            assert len((await client.edevs())["DEVS"]) == 3
            assert len((await client.devs())["DEVS"]) == 3
            assert (await client.devdetails())["DEVDETAILS"][0]["Model"] == model.model_name
            assert (await client.get_psu())["temp0"]
            assert (await client.get_version())["api_ver"] == "2.0.5"
            token = await client.get_token()
            assert set(token) == {"time", "salt", "newsalt"} and len(token["time"]) == 4
            assert (await client.status())["btmineroff"] == "false"
            assert set(await client.get_miner_info()) == set(MINER_INFO_FIELDS)
            assert await client.get_miner_info(["ip", "mac"]) == {
                "ip": model.network["ip"],
                "mac": "C6:07:20:00:00:00",
            }
            assert await client.get_error_code() == {"329": "2022-01-17 11:28:11"}

    run(scenario)


def test_joined_read_uses_one_connection() -> None:
    async def scenario() -> None:
        async with miner() as (model, client):
            before = model.connections
            sections = await client.joined("summary", "edevs")
            assert model.connections == before + 1
            assert set(sections) == {"summary", "edevs"}
            assert sections["summary"]["SUMMARY"][0]["Power Mode"] == "Normal"
            assert sections["edevs"]["DEVS"][2]["Slot"] == 2

    run(scenario)


# What a join of three answers on each firmware: the parts it answered, or the refusal's code.
THREE_PART_JOIN = {
    "two": {"summary", "pools"},
    "two_refusing_more": 14,
    "any": {"summary", "pools", "edevs"},
    "none": 14,
    "none_answering_first": {"summary"},  # its plain reply to summary
}


@pytest.mark.parametrize("variant", sorted(JOIN_VARIANTS))
def test_a_join_returns_what_the_firmware_answered(variant: str) -> None:
    async def scenario() -> None:
        async with miner(**JOIN_VARIANTS[variant]) as (_model, client):
            expected = THREE_PART_JOIN[variant]
            if isinstance(expected, int):
                with pytest.raises(DeviceError) as refused:
                    await client.joined("summary", "pools", "edevs")
                assert refused.value.device_code == expected
            else:
                sections = await client.joined("summary", "pools", "edevs")
                assert set(sections) == expected
                assert sections["summary"]["SUMMARY"][0]["Power"] > 1000
                assert all(s["STATUS"][0]["STATUS"] == "S" for s in sections.values())

    run(scenario)


def test_a_join_answered_with_none_of_its_parts_is_a_protocol_error() -> None:
    async def scenario() -> None:
        async with scripted(b'{"STATUS":[{"STATUS":"S"}],"id":1}') as (port, _received):
            with pytest.raises(JoinNotAnsweredError, match="answered none of summary\\+pools"):
                await client_for(None, port).joined("summary", "pools")

    run(scenario)


@pytest.mark.parametrize("led_fields", ["integer", "lenient"])
def test_set_led_numbers_go_out_as_integers(led_fields: str) -> None:
    async def scenario() -> None:
        async with miner(led_fields=led_fields) as (model, client):
            params = {"color": "red", "period": "2000", "duration": 500.0, "start": 0}
            assert await client.write("set_led", params) == "ok"
            assert model.led == "red"

    run(scenario)


def test_get_and_status_are_never_joined() -> None:
    async def scenario() -> None:
        async with miner() as (model, client):
            for command in ("status", "get_psu"):
                with pytest.raises(UnknownCommandError):
                    await client.joined("summary", command)
            assert model.connections == 0

    run(scenario)


@pytest.mark.parametrize("quirk", ["nul", "newlines", "trailing_comma"])
def test_text_quirks_on_every_read(quirk: str) -> None:
    async def scenario() -> None:
        async with miner(quirks={quirk}) as (_model, client):
            sections = await client.joined("summary", "edevs")
            assert sections["summary"]["SUMMARY"][0]["Power"] > 1000
            assert len(sections["edevs"]["DEVS"]) == 3
            assert (await client.status())["btmineroff"] == "false"
            assert (await client.get_psu())["temp0"]
            assert (await client.get_version())["platform"] == "H6OS"
            assert await client.write("set_led", {"param": "auto"}) == "ok"

    run(scenario)


def test_missing_comma_in_get_psu() -> None:
    async def scenario() -> None:
        async with miner(quirks={"missing_comma"}) as (model, client):
            raw = model.handle(b'{"cmd":"get_psu"}', "127.0.0.1").body
            assert b'""temp0"' in raw  # the simulator does send the broken form
            psu = await client.get_psu()
            assert psu["serial_no"] and psu["temp0"]

    run(scenario)


CODES = {str(code): f"2024-01-01 00:{code % 60:02d}:00" for code in range(300, 340)}


@pytest.mark.parametrize(
    ("quirks", "whole"),
    [
        (set(), True),
        ({"error_code_dict_list"}, True),
        ({"error_code_objects"}, True),
        ({"truncate"}, False),
        ({"truncate", "error_code_dict_list"}, False),
        ({"truncate", "error_code_objects", "nul"}, False),
    ],
)
def test_error_code_shapes(quirks: set[str], whole: bool) -> None:
    async def scenario() -> None:
        async with miner(quirks=quirks, error_codes=CODES, truncate_at=300) as (_model, client):
            codes = await client.get_error_code()
            if whole:
                assert codes == CODES
            else:
                assert 0 < len(codes) < len(CODES)
                assert all(CODES[code] == when for code, when in codes.items())

    run(scenario)


def test_mineroff_is_read_as_btmineroff() -> None:
    async def scenario() -> None:
        async with miner(quirks={"mineroff"}) as (_model, client):
            await client.write("power_off", {"respbefore": "true"})
            assert (await client.status())["btmineroff"] == "true"

    run(scenario)


def test_status_without_envelope() -> None:
    async def scenario() -> None:
        async with miner(quirks={"bare_status"}) as (_model, client):
            assert (await client.status())["power_mode"] == "Normal"

    run(scenario)


def test_token_time_as_whole_epoch_still_signs() -> None:
    async def scenario() -> None:
        async with miner(quirks={"epoch_time"}) as (_model, client):
            assert len((await client.get_token())["time"]) >= 10
            assert await client.write("set_led", {"param": "auto"}) == "ok"

    run(scenario)


def test_every_quirk_is_covered_here() -> None:
    covered = {"nul", "newlines", "trailing_comma", "missing_comma", "truncate", "mineroff"}
    covered |= {"error_code_dict_list", "error_code_objects", "epoch_time", "bare_status"}
    assert covered == QUIRKS


# --------------------------------------------------------------- device errors


@pytest.mark.parametrize(
    ("code", "msg", "expected"),
    [
        (14, "invalid API command or data", "rejected the command or its data (code 14"),
        (23, "invalid JSON message", "could not read the request (code 23"),
        (45, "permission denied", "write API not enabled on the miner"),
        (132, "old password error", "could not carry out the command (code 132"),
        (135, "check token error", "rejected the write token (code 135"),
        (136, "token over max times", "no write tokens left"),
        (137, "base64 decode error", "could not decode the encrypted request (code 137"),
        (7, "can't access write cmd", "write API not enabled on the miner"),
    ],
)
def test_every_device_code_is_mapped(code: int, msg: str, expected: str) -> None:
    async def scenario() -> None:
        bare = json.dumps({"Code": code, "Msg": msg}).encode()
        async with scripted(envelope(code, msg), bare) as (port, _):
            client = client_for(None, port)
            for _ in range(2):  # with STATUS E, and with a code but no STATUS
                with pytest.raises(DeviceError) as caught:
                    await client.read("summary")
                assert expected in caught.value.message
                assert caught.value.device_code == (45 if code == 7 else code)

    run(scenario)


def test_cgminer_style_error_status() -> None:
    async def scenario() -> None:
        reply = json.dumps({"STATUS": [{"STATUS": "E", "Code": 14, "Msg": "Invalid command"}]})
        async with scripted(reply.encode()) as (port, _):
            with pytest.raises(DeviceError) as caught:
                await client_for(None, port).read("bogus")
            assert caught.value.device_code == 14

    run(scenario)


def test_unknown_read_and_bad_data_are_code_14_from_the_miner() -> None:
    async def scenario() -> None:
        async with miner() as (_model, client):
            with pytest.raises(DeviceError) as caught:
                await client.read("no_such_command")
            assert caught.value.device_code == 14
            with pytest.raises(DeviceError) as caught:
                await client.write("set_power_pct", {"percent": 101})
            assert caught.value.device_code == 14

    run(scenario)


def test_command_error_carries_the_miner_message() -> None:
    async def scenario() -> None:
        async with miner() as (_model, client):
            with pytest.raises(DeviceError) as caught:
                await client.write("pre_power_on")
            assert caught.value.device_code == 132
            assert "power_off btminer before pre_power_on" in caught.value.message

    run(scenario)


def test_write_api_disabled_is_reported_once_without_retry() -> None:
    async def scenario() -> None:
        async with miner(write_api=False) as (model, client):
            with pytest.raises(DeviceError) as caught:
                await client.write("power_on")
            assert "write API not enabled on the miner" in caught.value.message
            assert caught.value.device_code == 45
            assert model.errors_sent[45] == 1

    run(scenario)


def test_wrong_password_is_an_auth_error_without_the_password() -> None:
    async def scenario() -> None:
        async with running(1, password="right_1") as fleet:
            device = fleet.devices[0]
            client = client_for(device.model, device.port, password="wrong_99")
            with pytest.raises(AuthError) as caught:
                await client.write("power_on")
            assert caught.value.message.startswith("wrong admin password")
            assert caught.value.device_code == 135
            text = json.dumps(caught.value.as_dict())
            assert "wrong_99" not in text and "right_1" not in text
            assert device.model.tokens_issued == 1  # no second fetch for a fresh token

    run(scenario)


def test_no_password_means_read_only() -> None:
    async def scenario() -> None:
        async with running(1) as fleet:
            device = fleet.devices[0]
            client = client_for(device.model, device.port, password=None)
            assert not client.can_write
            with pytest.raises(AuthError) as caught:
                await client.write("power_off")
            assert "no admin password configured" in caught.value.message
            assert device.model.connections == 0
            assert (await client.status())["btmineroff"] == "false"

    run(scenario)


# ---------------------------------------------------------------------- tokens


def test_200_writes_use_one_token() -> None:
    commands = [
        ("set_power_pct", {"percent": 90}),
        ("set_led", {"param": "auto"}),
        ("set_temp_offset", {"temp_offset": -5}),
        ("enable_web_pools", {}),
        ("adjust_upfreq_speed", {"upfreq_speed": 3}),
    ]

    async def scenario() -> None:
        async with miner() as (model, client):
            for index in range(200):
                command, params = commands[index % len(commands)]
                assert await client.write(command, params) == "ok"
            assert client.tokens_fetched == 1
            assert model.tokens_issued == 1
            assert model.errors_sent[136] == 0 and model.errors_sent[135] == 0
            assert len(model.writes) == 200 and all(w.code == 131 for w in model.writes)

    run(scenario)


def test_concurrent_writes_share_one_token() -> None:
    async def scenario() -> None:
        async with miner() as (model, client):
            await asyncio.gather(
                *(client.write("set_power_pct", {"percent": 80}) for _ in range(20))
            )
            assert model.tokens_issued == 1

    run(scenario)


def test_token_is_fetched_again_after_code_135() -> None:
    async def scenario() -> None:
        async with miner() as (model, client):
            await client.write("power_on")
            model.tokens.clear()  # what a miner reboot does to its token table
            assert await client.write("power_on") == "ok"
            assert model.errors_sent[135] == 1
            assert model.tokens_issued == 2 and client.tokens_fetched == 2

    run(scenario)


def test_token_is_renewed_before_the_miner_expires_it() -> None:
    now = [1000.0]

    async def scenario() -> None:
        async with running(1) as fleet:
            device = fleet.devices[0]
            client = client_for(device.model, device.port, clock=lambda: now[0])
            await client.write("power_on")
            now[0] += 27 * 60
            await client.write("power_on")
            assert device.model.tokens_issued == 1
            now[0] += 2 * 60  # 29 minutes: inside the 2-minute margin
            await client.write("power_on")
            assert device.model.tokens_issued == 2
            assert device.model.errors_sent[135] == 0

    run(scenario)


def test_token_exhaustion_does_not_start_a_retry_storm() -> None:
    now = [0.0]

    async def scenario() -> None:
        async with running(1, max_tokens_per_ip=2) as fleet:
            device = fleet.devices[0]
            clients = [
                client_for(device.model, device.port, clock=lambda: now[0]) for _ in range(3)
            ]
            for client in clients[:2]:
                await client.write("power_on")
            victim = clients[2]
            with pytest.raises(DeviceError) as caught:
                await victim.write("power_on")
            assert caught.value.device_code == 136
            requests = device.model.requests
            for _ in range(50):
                with pytest.raises(DeviceError):
                    await victim.write("power_on")
            assert device.model.requests == requests  # refused locally during the back-off
            assert device.model.errors_sent[136] == 1
            device.model.tokens.clear()
            now[0] += victim.refused_backoff
            assert await victim.write("power_on") == "ok"

    run(scenario)


def test_password_change_rekeys_the_client() -> None:
    async def scenario() -> None:
        async with miner() as (model, client):
            await client.write("power_on")
            assert await client.update_password("n3w_pw") == "ok"
            assert model.password == "n3w_pw"
            assert await client.write("set_led", {"param": "auto"}) == "ok"
            assert model.tokens_issued == 2
            stale = client_for(model, 0, password="admin")
            stale.port = client.port
            with pytest.raises(AuthError):
                await stale.write("power_on")

    run(scenario)


def test_password_change_refused_keeps_the_old_key() -> None:
    async def scenario() -> None:
        async with miner() as (model, client):
            with pytest.raises(DeviceError) as caught:
                await client.write("update_pwd", {"old": "nope", "new": "abc"})
            assert caught.value.device_code == 132
            assert model.password == "admin"
            assert await client.write("power_on") == "ok"
            with pytest.raises(ValidationError):
                await client.write("update_pwd", {"old": "admin"})

    run(scenario)


def test_unknown_write_is_refused_before_sending() -> None:
    async def scenario() -> None:
        async with miner() as (model, client):
            with pytest.raises(UnknownCommandError):
                await client.write("summary")
            with pytest.raises(UnknownCommandError):
                await client.read("reboot")
            assert model.connections == 0

    run(scenario)


# --------------------------------------------------------------- binary flows


def test_firmware_upload(tmp_path: Path) -> None:
    firmware = tmp_path / "fw.bin"
    firmware.write_bytes(bytes(range(256)) * 1200)
    seen: list[tuple[int, int]] = []

    async def scenario() -> None:
        async with miner() as (model, client):
            result = await client.upload_firmware(firmware, lambda d, t: seen.append((d, t)))
            assert result["command"] == "update_firmware"
            assert result["bytes"] == firmware.stat().st_size
            assert model.firmware_uploads == [firmware.stat().st_size]
            assert model.firmware_version.endswith("-upgraded")

    run(scenario)
    assert seen[-1] == (firmware.stat().st_size, firmware.stat().st_size)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_firmware_upload_falls_back_to_upgrade_firmware(tmp_path: Path) -> None:
    firmware = tmp_path / "fw.bin"
    firmware.write_bytes(b"\x7fELF" * 100)

    async def scenario() -> None:
        async with miner(firmware_command="upgrade_firmware") as (model, client):
            result = await client.upload_firmware(firmware)
            assert result["command"] == "upgrade_firmware"
            assert model.firmware_uploads == [400]
            assert model.errors_sent[14] == 1

    run(scenario)


def test_firmware_upload_refused_under_both_names(tmp_path: Path) -> None:
    firmware = tmp_path / "fw.bin"
    firmware.write_bytes(b"x" * 10)

    async def scenario() -> None:
        async with miner(firmware_command="flash") as (model, client):
            with pytest.raises(DeviceError) as caught:
                await client.upload_firmware(firmware)
            assert caught.value.device_code == 14
            assert model.firmware_uploads == []

    run(scenario)


def test_firmware_file_checks(tmp_path: Path) -> None:
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")

    async def scenario() -> None:
        async with miner() as (model, client):
            for path in (empty, tmp_path / "missing.bin", tmp_path):
                with pytest.raises(ValidationError):
                    await client.upload_firmware(path)
            assert model.connections == 0

    run(scenario)


def test_log_download() -> None:
    chunks: list[bytes] = []
    seen: list[tuple[int, int]] = []

    async def scenario() -> None:
        async with miner(log_size=200_000) as (model, client):
            size = await client.download_logs(chunks.append, lambda d, t: seen.append((d, t)))
            assert size == 200_000
            assert model.log_downloads == 1

    run(scenario)
    assert len(b"".join(chunks)) == 200_000
    assert b"btminer[0]: sim log line" in chunks[0]
    assert seen[-1] == (200_000, 200_000)


# ----------------------------------------------------------- misbehaving miners


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("garbage", ProtocolError),
        ("close", ProtocolError),
        ("hang", DeviceTimeoutError),
        ("stall", DeviceTimeoutError),
    ],
)
def test_misbehaving_miner_gives_a_clear_error(fault: str, error: type[Exception]) -> None:
    async def scenario() -> None:
        async with running(1, fault=fault) as fleet:
            device = fleet.devices[0]
            client = client_for(device.model, device.port, read_timeout=0.3)
            for call in (client.summary, client.status, lambda: client.write("power_on")):
                with pytest.raises(error):
                    await call()

    run(scenario)


def test_connection_refused_is_unreachable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: connections are refused

        async def scenario() -> None:
            with pytest.raises(UnreachableError) as caught:
                await client_for(None, port).summary()
            assert f"127.0.0.1:{port}" in caught.value.message

        run(scenario)


def test_a_host_name_is_resolved_and_every_address_tried() -> None:
    """`localhost` may resolve to ::1 first; the simulator listens on 127.0.0.1 only, so the
    read works only if the next address is tried after the first one refused."""

    async def scenario() -> None:
        async with miner() as (_model, client):
            named = WhatsminerClient("localhost", client.port, connect_timeout=TIMEOUT)
            reply = await named.summary()
            assert reply["SUMMARY"][0]["Elapsed"] is not None

    run(scenario)


def test_an_unknown_host_name_is_unreachable() -> None:
    async def scenario() -> None:
        client = WhatsminerClient("no-such-miner.invalid", 4028, connect_timeout=TIMEOUT)
        with pytest.raises(UnreachableError) as caught:
            await client.summary()
        assert "cannot connect to no-such-miner.invalid:4028" in caught.value.message

    run(scenario)


def test_a_reply_past_the_limit_is_a_protocol_error() -> None:
    async def scenario() -> None:
        async with scripted(b"{" + b" " * MAX_REPLY_BYTES + b"}") as (port, _):
            with pytest.raises(ProtocolError) as caught:
                await client_for(None, port).summary()
            assert f"sent more than {MAX_REPLY_BYTES} bytes" in caught.value.message

    run(scenario)


def test_a_cancelled_read_closes_its_connection() -> None:
    """A poll cut off by the worker's deadline must not leave its socket open."""

    async def scenario() -> None:
        asked, closed = asyncio.Event(), asyncio.Event()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(65536)
            asked.set()
            await reader.read(65536)  # b"" once the client side is closed
            closed.set()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            read = asyncio.create_task(client_for(None, port, read_timeout=30).summary())
            await asyncio.wait_for(asked.wait(), 5)
            read.cancel()
            with pytest.raises(asyncio.CancelledError):
                await read
            await asyncio.wait_for(closed.wait(), 5)

    run(scenario)


def test_never_answering_server_times_out_quickly() -> None:
    async def scenario() -> None:
        async with scripted(b"HANG") as (port, _):
            client = client_for(None, port, read_timeout=0.2)
            started = asyncio.get_running_loop().time()
            with pytest.raises(DeviceTimeoutError) as caught:
                await client.summary()
            assert asyncio.get_running_loop().time() - started < 1.5
            assert "did not answer within 0.2s" in caught.value.message

    run(scenario)


@pytest.mark.parametrize(
    "reply",
    [
        b'{"enc":"!!!not base64!!!"}',
        b'{"enc":"QUJD"}',  # base64, but not whole AES blocks
        b"\xde\xad\xbe\xef",
    ],
)
def test_unreadable_write_reply_is_a_protocol_error(reply: bytes) -> None:
    async def scenario() -> None:
        async with scripted(TOKEN_REPLY, reply) as (port, received):
            with pytest.raises(ProtocolError):
                await client_for(None, port).write("power_on")
            sent = json.loads(received[1])
            assert sent["enc"] == 1 and isinstance(sent["data"], str)
            assert b"admin" not in received[1]

    run(scenario)


@pytest.mark.parametrize(
    "reply", [b'{"STATUS":"S","Code":131,"Msg":[1,2]}', b'{"STATUS":"S","Code":131}']
)
def test_msg_of_the_wrong_shape_is_a_protocol_error(reply: bytes) -> None:
    async def scenario() -> None:
        async with scripted(reply) as (port, _):
            with pytest.raises(ProtocolError):
                await client_for(None, port).get_psu()

    run(scenario)


def test_token_reply_without_salts_is_a_protocol_error() -> None:
    async def scenario() -> None:
        async with scripted(envelope(134, {"time": "1"}, "S")) as (port, _):
            with pytest.raises(ProtocolError):
                await client_for(None, port).write("power_on")

    run(scenario)


def test_repr_and_errors_never_show_the_password() -> None:
    client = WhatsminerClient("10.0.0.1", password="s3cr3t")
    assert "s3cr3t" not in repr(client)
    assert client._redact("echo s3cr3t back") == "echo *** back"
