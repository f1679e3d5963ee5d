"""The CLI's messages name the fix: valid choices, one-line errors, safe file writes, and a
firmware upgrade that waits for the miner. All through the real entry point (a subprocess)."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent_sim.fleet import LoopThread, SimDevice, SimFleet
from edge_agent_sim.whatsminer import start_fleet as start_whatsminers
from tests.harness import free_port
from tests.test_cli_and_docs import run_cli


def whatsminer_config(path: Path, device: SimDevice, allow: list[str]) -> Path:
    allowed = ", ".join(f'"{name}"' for name in allow)
    path.write_text(
        f'[[devices]]\nid = "wm1"\nkind = "whatsminer"\nhost = "{device.host}"\n'
        f'port = {device.port}\npassword = "admin"\ntimeout = 3\n'
        f"allow_commands = [{allowed}]\n"
        '[[devices]]\nid = "rig1"\nkind = "xmrig"\nurl = "http://127.0.0.1:9"\n'
    )
    path.chmod(0o600)
    return path


@pytest.fixture
def miner(sim_loop: LoopThread) -> Iterator[tuple[LoopThread, SimDevice]]:
    fleet: SimFleet = sim_loop.run(start_whatsminers(1, log_size=70_000))
    yield sim_loop, fleet.devices[0]
    sim_loop.run(fleet.close())


@pytest.fixture
def fast_miner(sim_loop: LoopThread) -> Iterator[tuple[LoopThread, SimDevice]]:
    """Minutes pass in seconds: a reboot (60 s of miner time) takes one."""
    fleet: SimFleet = sim_loop.run(start_whatsminers(1, time_scale=60.0))
    yield sim_loop, fleet.devices[0]
    sim_loop.run(fleet.close())


def test_unknown_subcommand_device_and_command_list_the_valid_ones(
    tmp_path: Path, miner: tuple[LoopThread, SimDevice]
) -> None:
    unknown = run_cli("stauts")
    assert unknown.returncode == 2
    assert "invalid choice: 'stauts'" in unknown.stderr and "'status'" in unknown.stderr
    action = run_cli("whatsminer", "flash")
    assert action.returncode == 2 and "'upgrade'" in action.stderr and "'logs'" in action.stderr
    config = str(whatsminer_config(tmp_path / "c.toml", miner[1], []))
    device = run_cli("poll", "wm9", "-c", config)
    assert device.returncode == 78 and "(configured: wm1, rig1)" in device.stderr
    logs = run_cli("whatsminer", "logs", "rig1", "-c", config)
    assert logs.returncode == 1 and "its Whatsminers: wm1" in logs.stderr
    command = run_cli("send", "wm1", "warp", "--direct", "-c", config)
    assert "its commands: " in json.loads(command.stdout)["error"]["message"]


def test_simulate_reports_bad_input_in_one_line() -> None:
    zero = run_cli("simulate", "--count", "0")
    assert zero.returncode == 2 and "at least one device" in zero.stderr
    option = run_cli("simulate", "--kind", "xmrig", "-o", "colour=blue")
    assert option.returncode == 1
    assert option.stderr.count("\n") == 1 and "Traceback" not in option.stderr
    assert "bad option" in option.stderr and "restricted" in option.stderr  # the valid ones
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        taken = run_cli("simulate", "--kind", "whatsminer", "--port", str(port))
    assert taken.returncode == 1 and taken.stderr.count("\n") == 1
    assert f"port {port} on 127.0.0.1 is already in use" in taken.stderr
    nowhere = run_cli("simulate", "--host", "192.0.2.1", "--port", str(free_port()))
    assert nowhere.returncode == 1 and "not an address of this host" in nowhere.stderr


def test_logs_never_overwrite_silently_and_are_private(
    tmp_path: Path, miner: tuple[LoopThread, SimDevice]
) -> None:
    config = str(whatsminer_config(tmp_path / "c.toml", miner[1], ["download_logs"]))
    output = tmp_path / "wm1.log"
    output.write_text("my notes")
    refused = run_cli("whatsminer", "logs", "wm1", "-o", str(output), "-c", config)
    assert refused.returncode == 1 and "exists; pass --force" in refused.stderr
    assert output.read_text() == "my notes"
    forced = run_cli("whatsminer", "logs", "wm1", "-o", str(output), "--force", "-c", config)
    assert forced.returncode == 0, forced.stderr
    assert output.stat().st_size == 70_000
    assert output.stat().st_mode & 0o777 == 0o600
    fresh = tmp_path / "fresh.log"
    done = run_cli("whatsminer", "logs", "wm1", "-o", str(fresh), "-c", config)
    assert done.returncode == 0, done.stderr
    assert fresh.stat().st_mode & 0o777 == 0o600
    assert "download: 100%" in done.stderr and "/s" in done.stderr


def test_upgrade_waits_for_the_miner_and_reports_the_new_firmware(
    tmp_path: Path, fast_miner: tuple[LoopThread, SimDevice]
) -> None:
    loop, device = fast_miner
    config = str(whatsminer_config(tmp_path / "c.toml", device, ["update_firmware"]))
    firmware = tmp_path / "fw.bin"
    firmware.write_bytes(b"\x5a" * 2_000_000)
    done = run_cli("whatsminer", "upgrade", "wm1", str(firmware), "--wait", "60", "-c", config)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["firmware_before"] == "20230125.13.Rel"
    assert result["firmware_after"] == "20230125.13.Rel-upgraded"
    assert result["back_after_s"] > 0
    assert loop.call(lambda: device.model.reboots) == 1
    assert re.search(
        r"upload: \d+% \(\d+/2000000 bytes\) [\d.]+ [KMG]?i?B/s \d+s left", done.stderr
    )
    assert "back after" in done.stderr and "firmware 20230125.13.Rel-upgraded" in done.stderr


def test_upgrade_reports_a_miner_that_does_not_come_back(
    tmp_path: Path, miner: tuple[LoopThread, SimDevice]
) -> None:
    _loop, device = miner  # real time: its reboot takes a minute
    config = str(whatsminer_config(tmp_path / "c.toml", device, ["update_firmware"]))
    firmware = tmp_path / "fw.bin"
    firmware.write_bytes(b"\x5a" * 1000)
    done = run_cli("whatsminer", "upgrade", "wm1", str(firmware), "--wait", "1", "-c", config)
    assert done.returncode == 1
    assert "did not come back with a firmware version within 1s" in done.stderr
