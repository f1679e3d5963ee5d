"""`edge-agent scan` through the real entry point, on a loopback /24 of its own (127/8 is all
loopback on Linux) holding simulators of every kind, closed ports, silent ports (accept, never
answer) and services that are no device."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from agent.config.settings import load_config
from edge_agent_sim.fleet import LoopThread, SimFleet
from edge_agent_sim.pool import start_fleet as start_pools
from edge_agent_sim.srs import start_fleet as start_srs
from edge_agent_sim.whatsminer import start_fleet as start_whatsminers
from edge_agent_sim.xmrig import start_fleet as start_xmrigs
from tests.test_cli_and_docs import run_cli

HTTP_PORTS = "8080,44444,18080"


@dataclass
class Lan:
    prefix: str  # "127.A.B."

    def ip(self, last: int) -> str:
        return f"{self.prefix}{last}"


async def _silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while await reader.read(1 << 16):  # takes every request and never answers
        pass
    writer.close()


async def _garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(1 << 16)
    writer.write(b"220 mail.example ESMTP ready\r\n")
    await writer.drain()
    writer.close()


async def _web_page(request: web.Request) -> web.Response:
    return web.Response(text="<html><body>router login</body></html>", content_type="text/html")


async def _other_json(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "service": "not srs"})


async def _start_others(lan: Lan) -> list[object]:
    servers: list[object] = []
    for port in (4028, 1985, 44444):  # silent on .6
        servers.append(await asyncio.start_server(_silent, lan.ip(6), port))
    servers.append(await asyncio.start_server(_garbage, lan.ip(7), 4028))
    for handler, port in ((_web_page, 8080), (_other_json, 1985), (_web_page, 18080)):
        app = web.Application()
        app.router.add_get("/{tail:.*}", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, lan.ip(7), port).start()
        servers.append(runner)
    return servers


async def _stop_others(servers: list[object]) -> None:
    for server in servers:
        if isinstance(server, asyncio.Server):
            server.close()
        elif isinstance(server, web.AppRunner):
            await server.cleanup()


@pytest.fixture
def lan(sim_loop: LoopThread) -> Iterator[Lan]:
    """.1 Whatsminer, .2 XMRig with a token, .3 restricted XMRig without one, .4 SRS,
    .5 pool, .6 silent ports, .7 services that are no device, .8 nothing at all."""
    lan = Lan(f"127.{random.randint(100, 250)}.{random.randint(0, 255)}.")
    fleets: list[SimFleet] = [
        sim_loop.run(start_whatsminers(1, lan.ip(1), 4028)),
        sim_loop.run(start_xmrigs(1, lan.ip(2), 44444, token="SECRET-TOKEN")),
        sim_loop.run(start_xmrigs(1, lan.ip(3), 8080, token=None, restricted=True)),
        sim_loop.run(start_srs(1, lan.ip(4), 1985)),
        sim_loop.run(start_pools(1, lan.ip(5), 18080)),
    ]
    others = sim_loop.run(_start_others(lan))
    yield lan
    sim_loop.run(_stop_others(others))
    for fleet in fleets:
        sim_loop.run(fleet.close())


def scan(lan: Lan, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_cli("scan", f"{lan.ip(1)}-8", "--ports", HTTP_PORTS, "--timeout", "0.5", *extra)


def test_scan_finds_every_kind_and_nothing_else(lan: Lan) -> None:
    done = scan(lan, "--json")
    assert done.returncode == 0, done.stderr
    found = {(d["kind"], d["address"]): d for d in json.loads(done.stdout)}
    assert set(found) == {
        ("whatsminer", f"{lan.ip(1)}:4028"),
        ("xmrig", f"{lan.ip(2)}:44444"),
        ("xmrig", f"{lan.ip(3)}:8080"),
        ("srs", f"{lan.ip(4)}:1985"),
        ("pool", f"{lan.ip(5)}:18080"),
    }
    assert found["whatsminer", f"{lan.ip(1)}:4028"]["version"] == "20230125.13.Rel"
    assert found["whatsminer", f"{lan.ip(1)}:4028"]["model"]
    assert found["xmrig", f"{lan.ip(2)}:44444"]["auth"] == "token"
    assert found["xmrig", f"{lan.ip(3)}:8080"]["auth"] == "none (restricted: read-only)"
    assert found["srs", f"{lan.ip(4)}:1985"]["version"]
    # open: 5 devices, 3 silent ports on .6, 4 services on .7; .8 has none
    assert "5 devices on 8 addresses" in done.stderr
    assert "(12 open ports, 7 of them no known device)" in done.stderr
    assert "scan: 100%" in done.stderr  # the progress, as plain lines when not on a terminal
    assert "SECRET-TOKEN" not in done.stdout + done.stderr


def test_scan_prints_a_table(lan: Lan) -> None:
    done = scan(lan)
    assert done.returncode == 0, done.stderr
    header, _rule, *rows = done.stdout.splitlines()
    assert header.split() == ["KIND", "ADDRESS", "MODEL", "VERSION", "AUTH"]
    assert len(rows) == 5
    assert rows[0].startswith("whatsminer") and "admin password (writes)" in rows[0]


EXISTING = """\
# my farm: hand-written, keep my notes
[agent]
id = "farm"   # the agent's id

[[devices]]
# the first miner, added by hand
id = "old-miner"
kind = "whatsminer"
host = "{host}"
"""


def test_write_merges_keeping_comments_and_never_duplicates(lan: Lan, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(EXISTING.format(host=lan.ip(1)))
    config.chmod(0o600)
    done = scan(lan, "--write", str(config), "--id-template", "xmrig=rig-{last}-{port}")
    assert done.returncode == 0, done.stderr
    text = config.read_text()
    assert text.startswith(EXISTING.format(host=lan.ip(1)))  # comments and order untouched
    assert f"{lan.ip(1)}:4028 is already there as old-miner" in done.stderr
    ids = [d.id for d in load_config(config).settings.devices]
    ip = lan.prefix.replace(".", "-").rstrip("-")
    assert ids == [
        "old-miner",
        "rig-2-44444",
        "rig-3-8080",
        f"srs-{ip}-4-1985",
        f"pool-{ip}-5-18080",
    ]
    assert "token_file" in text  # the XMRig that needs a token says so
    assert text.count("# added by edge-agent scan on ") == 1  # one note for the run
    assert config.stat().st_mode & 0o777 == 0o600

    again = scan(lan, "--write", str(config))
    assert again.returncode == 0, again.stderr
    assert "added 0 devices" in again.stderr
    assert config.read_text() == text
    checked = run_cli("check-config", "-c", str(config))
    assert checked.returncode == 0, checked.stderr


def test_write_starts_a_new_private_config(lan: Lan, tmp_path: Path) -> None:
    config = tmp_path / "new.toml"
    done = scan(lan, "--write", str(config), "--id-template", "{kind}-{last}")
    assert done.returncode == 0, done.stderr
    assert config.stat().st_mode & 0o777 == 0o600
    devices = load_config(config).settings.devices
    assert [d.id for d in devices] == ["whatsminer-1", "xmrig-2", "xmrig-3", "srs-4", "pool-5"]
    assert "# Whatsminer writes need the admin password" in config.read_text()


def test_scan_refuses_large_ranges_and_bad_targets() -> None:
    large = run_cli("scan", "10.0.0.0/8", timeout=30)
    assert large.returncode == 2
    assert "more than 4096 addresses" in large.stderr and "--allow-large" in large.stderr
    bad = run_cli("scan", "10.0.0.300")
    assert bad.returncode == 2 and "is not an address, a range" in bad.stderr
    backwards = run_cli("scan", "10.0.0.50-10")
    assert backwards.returncode == 2 and "ends before it starts" in backwards.stderr
    template = run_cli("scan", "127.0.0.1", "--id-template", "rig.{nope}")
    assert template.returncode == 2 and "usable fields are" in template.stderr
    ports = run_cli("scan", "127.0.0.1", "--ports", "80,99999")
    assert ports.returncode == 2 and "ports are 1-65535" in ports.stderr


def test_write_skips_devices_a_group_already_makes(lan: Lan, tmp_path: Path) -> None:
    config = tmp_path / "groups.toml"
    config.write_text(
        f'[[groups]]\nkind = "whatsminer"\nid = "rack-{{ip}}"\nhosts = "{lan.ip(1)}-{lan.ip(1)}"\n'
    )
    config.chmod(0o600)
    done = scan(lan, "--write", str(config))
    assert done.returncode == 0, done.stderr
    rack_id = "rack-" + lan.ip(1).replace(".", "-")
    assert f"{lan.ip(1)}:4028 is already there as {rack_id}" in done.stderr
    devices = load_config(config).settings.devices
    assert sorted(d.kind for d in devices) == ["pool", "srs", "whatsminer", "xmrig", "xmrig"]
