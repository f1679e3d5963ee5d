"""The agent's XMRig poll: asyncio HTTP/1.1 keep-alive (agent/devices/http.py KeepAliveClient)
against the XMRig simulator over real loopback HTTP and HTTPS."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from agent.devices.base import PollResult
from agent.devices.http import KeepAliveClient, Reply
from agent.devices.xmrig.config import XmrigConfig
from agent.devices.xmrig.driver import XmrigDriver
from agent.errors import (
    AgentError,
    AuthError,
    DeviceError,
    DeviceTimeoutError,
    ProtocolError,
    UnreachableError,
)
from edge_agent_sim.fleet import LoopThread, SimDevice
from edge_agent_sim.xmrig import XmrigModel, XmrigSimulator, start_fleet

TOKEN = "tok-Kq71-must-never-leak"


@pytest.fixture(scope="module")
def loop() -> Iterator[LoopThread]:
    thread = LoopThread("xmrig-keepalive-sim")
    yield thread
    thread.stop()


@pytest.fixture
def start_miner(loop: LoopThread) -> Iterator[Callable[..., tuple[SimDevice, XmrigModel]]]:
    fleets = []

    def start(**options: Any) -> tuple[SimDevice, XmrigModel]:
        options.setdefault("token", TOKEN)
        fleet = loop.run(start_fleet(1, **options))
        fleets.append(fleet)
        device = fleet.devices[0]
        assert isinstance(device.model, XmrigModel)
        return device, device.model

    yield start
    for fleet in fleets:
        loop.run(fleet.close())


def driver_for(url: str, **fields: Any) -> XmrigDriver:
    fields.setdefault("token", TOKEN)
    return XmrigDriver(XmrigConfig(id="rig1", kind="xmrig", url=url, **fields))


async def polls(driver: XmrigDriver, count: int) -> list[PollResult | AgentError]:
    """`count` agent polls in a row, each a result or the agent error it raised."""
    found: list[PollResult | AgentError] = []
    try:
        for _ in range(count):
            try:
                found.append(await driver.poll())
            except AgentError as exc:
                found.append(exc)
    finally:
        await driver.client.aclose()
    return found


def paths(loop: LoopThread, model: XmrigModel) -> list[str]:
    return loop.call(lambda: [f"{method} {path}" for method, path, _ in model.requests])


def test_polls_share_one_connection_and_read_what_the_blocking_poll_reads(
    start_miner: Callable[..., tuple[SimDevice, XmrigModel]], loop: LoopThread
) -> None:
    device, model = start_miner(gpu=True)
    driver = driver_for(device.url)
    first, _, third = asyncio.run(polls(driver, 3))
    assert isinstance(first, PollResult) and isinstance(third, PollResult)
    assert set(first.raw) == {"summary", "backends", "config"}
    assert first.raw["config"]["http"]["access-token"] == "***"
    assert first.state["api"] == "/2/summary" and first.state["mining"] is True
    assert first.state["configured_pools"] == ["some.pool:10064"]
    assert TOKEN not in json.dumps(first.raw) + json.dumps(first.state)
    assert (
        paths(loop, model)
        == ["GET /2/summary", "GET /2/backends", "GET /2/config"]
        + [
            "GET /2/summary",
            "GET /2/backends",
        ]
        * 2
    )
    assert driver.client.polls.connections_opened == 1


def test_api_level_0_falls_back_to_api_json_on_the_same_connection(
    start_miner: Callable[..., tuple[SimDevice, XmrigModel]], loop: LoopThread
) -> None:
    device, model = start_miner(api_level=0)
    driver = driver_for(device.url)
    (result,) = asyncio.run(polls(driver, 1))
    assert isinstance(result, PollResult) and result.state["api"] == "/api.json"
    assert paths(loop, model)[:3] == ["GET /2/summary", "GET /1/summary", "GET /api.json"]
    assert driver.client.polls.connections_opened == 1


@pytest.mark.parametrize(
    ("options", "fields", "kind", "text"),
    [
        ({}, {"token": None}, AuthError, "requires an access token (HTTP 401)"),
        ({}, {"token": TOKEN + "x"}, AuthError, "forbidden (HTTP 403)"),
        ({"fault": "garbage"}, {}, ProtocolError, "not JSON"),
        ({"fault": "truncated"}, {}, ProtocolError, "not JSON"),
        ({"fault": "error500"}, {}, DeviceError, "failed with HTTP 500"),
        ({"fault": "hang"}, {"timeout": "300ms"}, DeviceTimeoutError, "did not answer within 0.3s"),
    ],
)
def test_failures_are_the_agent_errors_of_the_blocking_poll(
    start_miner: Callable[..., tuple[SimDevice, XmrigModel]],
    options: dict[str, Any],
    fields: dict[str, Any],
    kind: type[AgentError],
    text: str,
) -> None:
    device, _ = start_miner(**options)
    (error,) = asyncio.run(polls(driver_for(device.url, **fields), 1))
    assert isinstance(error, kind)
    assert text in error.message
    assert TOKEN not in str(error) and TOKEN not in json.dumps(error.as_dict(), default=str)


def test_connection_refused_is_unreachable(loop: LoopThread) -> None:
    fleet = loop.run(start_fleet(1))
    url = fleet.devices[0].url
    loop.run(fleet.close())
    (error,) = asyncio.run(polls(driver_for(url), 1))
    assert isinstance(error, UnreachableError)
    assert f"cannot connect to {url}/2/summary" in error.message


def test_a_timed_out_connection_is_replaced_once_the_miner_answers_again(
    start_miner: Callable[..., tuple[SimDevice, XmrigModel]], loop: LoopThread
) -> None:
    device, model = start_miner(fault="hang")
    driver = driver_for(device.url, timeout="300ms")

    async def hang_then_recover() -> list[PollResult | AgentError]:
        try:
            first = await polls_open(driver)
            loop.call(lambda: setattr(model, "fault", None))
            return [first, await polls_open(driver)]
        finally:
            await driver.client.aclose()

    first, second = asyncio.run(hang_then_recover())
    assert isinstance(first, DeviceTimeoutError)
    assert isinstance(second, PollResult) and second.state["api"] == "/2/summary"
    assert driver.client.polls.connections_opened == 2


async def polls_open(driver: XmrigDriver) -> PollResult | AgentError:
    try:
        return await driver.poll()
    except AgentError as exc:
        return exc


# ---------------------------------------------------------------- HTTPS


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA and a server certificate for 127.0.0.1, made with the openssl CLI."""
    d = tmp_path_factory.mktemp("xmrig-certs")
    common = ("-newkey", "rsa:2048", "-nodes")
    openssl("req", "-x509", *common, "-days", "2", "-subj", "/CN=test-ca", "-keyout", "ca.key",
            "-out", "ca.pem", cwd=d)  # fmt: skip
    openssl("req", *common, "-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out",
            "server.csr", cwd=d)  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.pem",
            cwd=d)  # fmt: skip
    return d


@pytest.fixture
def https_miner(loop: LoopThread, certs: Path) -> Iterator[str]:
    """The XMRig simulator's app behind TLS on a free loopback port: its https URL."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs / "server.pem", certs / "server.key")
    simulator = XmrigSimulator()
    runner = web.AppRunner(simulator.app, access_log=None, handle_signals=False)

    async def start() -> int:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        port: int = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        simulator.by_port[port] = XmrigModel(worker_id="tls0", token=TOKEN)
        return port

    port = loop.run(start())
    yield f"https://127.0.0.1:{port}"
    loop.run(simulator.release())
    loop.run(runner.cleanup())


def test_https_with_the_ca_bundle_polls_with_the_token(https_miner: str, certs: Path) -> None:
    (result,) = asyncio.run(polls(driver_for(https_miner, verify_tls=str(certs / "ca.pem")), 1))
    assert isinstance(result, PollResult) and result.state["worker_id"] == "tls0"


def test_https_with_verification_off_accepts_the_self_signed_miner(https_miner: str) -> None:
    (result,) = asyncio.run(polls(driver_for(https_miner, verify_tls=False), 1))
    assert isinstance(result, PollResult) and result.state["worker_id"] == "tls0"


def test_https_against_an_unknown_ca_is_a_tls_failure(https_miner: str) -> None:
    (error,) = asyncio.run(polls(driver_for(https_miner), 1))
    assert isinstance(error, UnreachableError)
    assert "TLS failed for https://127.0.0.1" in error.message
    assert TOKEN not in str(error)


def test_a_poll_cancelled_mid_request_leaves_no_half_read_connection_behind(
    start_miner: Callable[..., tuple[SimDevice, XmrigModel]], loop: LoopThread
) -> None:
    device, model = start_miner(fault="hang")
    driver = driver_for(device.url, timeout="5s")

    async def cancel_then_poll() -> PollResult | AgentError:
        try:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3):  # the runtime's deadline for a whole poll
                    await driver.poll()
            loop.call(lambda: setattr(model, "fault", None))
            return await polls_open(driver)
        finally:
            await driver.client.aclose()

    result = asyncio.run(cancel_then_poll())
    assert isinstance(result, PollResult) and result.state["api"] == "/2/summary"
    assert driver.client.polls.connections_opened == 2


# ---------------------------------------------------------------- framing, over a raw server


Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]


async def against(script: Script, *paths: str) -> tuple[list[Reply | AgentError], int]:
    """GET each path from a loopback server that answers by `script`, in one connection pool
    of one: the replies (or errors) and how many connections the client opened."""
    server = await asyncio.start_server(script, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = KeepAliveClient(f"http://127.0.0.1:{port}", headers={}, timeout=2)
    found: list[Reply | AgentError] = []
    try:
        for path in paths:
            try:
                found.append(await client.get(path))
            except AgentError as exc:
                found.append(exc)
    finally:
        await client.close()
        server.close()
        await server.wait_closed()
    return found, client.connections_opened


async def read_request(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


def test_chunked_replies_arriving_byte_by_byte_keep_the_connection() -> None:
    reply = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'4;ext=1\r\n{"a"\r\n5\r\n: 1, \r\n7\r\n"b": 2}\r\n0\r\n\r\n'
    )

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while not reader.at_eof():
            try:
                await read_request(reader)
            except asyncio.IncompleteReadError:
                break
            for byte in reply:
                writer.write(bytes([byte]))
                await writer.drain()
        writer.close()

    replies, opened = asyncio.run(against(script, "/one", "/two"))
    assert [r.json() for r in replies if isinstance(r, Reply)] == [{"a": 1, "b": 2}] * 2
    assert opened == 1


def test_connection_close_and_an_idle_close_by_the_device_open_a_new_connection() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await read_request(reader)
        last = request.startswith(b"GET /close")
        header = b"Connection: close\r\n" if last else b""
        writer.write(b"HTTP/1.1 200 OK\r\n" + header + b"Content-Length: 2\r\n\r\n{}")
        await writer.drain()
        writer.close()  # after each reply: the next request finds the kept one closed

    replies, opened = asyncio.run(against(script, "/close", "/idle-closed", "/again"))
    assert [r.status_code for r in replies if isinstance(r, Reply)] == [200, 200, 200]
    assert opened == 3


def test_a_reply_cut_off_mid_body_is_a_broken_reply_and_the_next_request_reconnects() -> None:
    answered = 0

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal answered
        await read_request(reader)
        answered += 1
        body = b'{"ok": true}'
        length = len(body) + (10 if answered == 1 else 0)
        writer.write(f"HTTP/1.1 503 Busy\r\nContent-Length: {length}\r\n\r\n".encode() + body)
        await writer.drain()
        writer.close()

    (cut, whole), opened = asyncio.run(against(script, "/2/summary", "/2/summary"))
    assert isinstance(cut, ProtocolError) and "sent a broken reply" in cut.message
    assert isinstance(whole, Reply) and (whole.status_code, whole.reason) == (503, "Busy")
    assert whole.json() == {"ok": True}
    assert opened == 2


def test_a_reply_that_is_not_http_is_a_broken_reply() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        await writer.drain()
        writer.close()

    (error,), _ = asyncio.run(against(script, "/2/summary"))
    assert isinstance(error, ProtocolError) and "not an HTTP status line" in error.message
