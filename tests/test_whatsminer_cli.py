"""`edge-agent whatsminer upgrade|logs` against a simulated miner on its own loop thread."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.cli import main
from edge_agent_sim.fleet import LoopThread, SimDevice
from edge_agent_sim.whatsminer import start_fleet


@pytest.fixture
def miner() -> Iterator[tuple[LoopThread, SimDevice]]:
    loop = LoopThread("whatsminer-cli")
    fleet = loop.run(start_fleet(1, log_size=70_000))
    yield loop, fleet.devices[0]
    loop.run(fleet.close())
    loop.stop()


def write_config(path: Path, device: SimDevice, allow: list[str]) -> Path:
    allowed = ", ".join(f'"{name}"' for name in allow)
    path.write_text(
        "[[devices]]\n"
        'id = "wm1"\n'
        'kind = "whatsminer"\n'
        f'host = "{device.host}"\n'
        f"port = {device.port}\n"
        'password = "admin"\n'
        "timeout = 3\n"
        f"allow_commands = [{allowed}]\n"
    )
    path.chmod(0o600)
    return path


def test_upgrade_uploads_with_progress(
    miner: tuple[LoopThread, SimDevice], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    loop, device = miner
    config = write_config(tmp_path / "c.toml", device, ["update_firmware"])
    firmware = tmp_path / "fw.bin"
    firmware.write_bytes(b"\x5a" * 300_000)
    assert (
        main(["whatsminer", "upgrade", "-c", str(config), "wm1", str(firmware), "--wait", "0"]) == 0
    )
    assert loop.call(lambda: device.model.firmware_uploads) == [300_000]
    captured = capsys.readouterr()
    assert '"bytes": 300000' in captured.out
    assert "upload: 100% (300000/300000 bytes)" in captured.err
    assert "admin" not in captured.out + captured.err


def test_logs_download_to_a_file(
    miner: tuple[LoopThread, SimDevice], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _loop, device = miner
    config = write_config(tmp_path / "c.toml", device, ["download_logs"])
    output = tmp_path / "wm1.logs"
    assert main(["whatsminer", "logs", "-c", str(config), "wm1", "-o", str(output)]) == 0
    assert output.stat().st_size == 70_000
    assert "download: 100%" in capsys.readouterr().err


def test_flows_are_refused_unless_allowed(
    miner: tuple[LoopThread, SimDevice], tmp_path: Path
) -> None:
    loop, device = miner
    config = write_config(tmp_path / "c.toml", device, [])
    firmware = tmp_path / "fw.bin"
    firmware.write_bytes(b"x")
    with pytest.raises(SystemExit, match="not_allowed"):
        main(["whatsminer", "upgrade", "-c", str(config), "wm1", str(firmware)])
    with pytest.raises(SystemExit, match="not_allowed"):
        main(["whatsminer", "logs", "-c", str(config), "wm1"])
    with pytest.raises(SystemExit, match="no Whatsminer"):
        main(["whatsminer", "logs", "-c", str(config), "other"])
    assert loop.call(lambda: device.model.connections) == 0


def test_failed_upload_exits_non_zero(
    miner: tuple[LoopThread, SimDevice], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _loop, device = miner
    config = write_config(tmp_path / "c.toml", device, ["update_firmware"])
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    assert main(["whatsminer", "upgrade", "-c", str(config), "wm1", str(empty)]) == 1
    assert "validation" in capsys.readouterr().err
