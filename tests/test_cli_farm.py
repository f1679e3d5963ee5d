"""README's "a farm in minutes", step by step through the real CLI: simulated devices spread
over a loopback /24, `scan --write`, `run`, `status`."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config.settings import load_config
from agent.kinds import KINDS
from tests.harness import REPO, Mosquitto, Probe, env_without_notify
from tests.test_cli_and_docs import run_cli


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "agent", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env_without_notify(),
    )


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.fixture
def simulated_lan() -> Iterator[str]:
    """10 Whatsminers, 2 SRS and a pool on their own addresses of a /24, as on a farm."""
    prefix = f"127.{random.randint(100, 250)}.{random.randint(0, 255)}"
    kinds = (("whatsminer", 10, f"{prefix}.0/28"), ("srs", 2, f"{prefix}.16/29"))
    processes = [
        start("simulate", "--kind", k, "--count", str(n), "--spread", net) for k, n, net in kinds
    ]
    processes.append(
        start("simulate", "--kind", "pool", "--host", f"{prefix}.30", "--port", "8080")
    )
    try:
        for process, count in zip(processes, (10, 2, 1), strict=True):
            assert process.stdout is not None
            for _ in range(count):
                assert "listening on" in process.stdout.readline()
        yield f"{prefix}.0/24"
    finally:
        for process in processes:
            stop(process)


def test_a_farm_in_minutes(simulated_lan: str, tmp_path: Path, broker: Mosquitto) -> None:
    config = tmp_path / "farm.toml"
    base = f"farm-{random.randint(0, 1 << 30)}"
    config.write_text(
        '[agent]\nid = "farm"\n'
        f'[mqtt]\nurl = "{broker.url}"\nbase_topic = "{base}"\n'
        f'[homeassistant]\ndiscovery_prefix = "ha-{base}"\n'
    )
    config.chmod(0o600)
    scanned = run_cli("scan", simulated_lan, "--write", str(config), "--timeout", "1")
    assert scanned.returncode == 0, scanned.stderr
    assert "added 13 devices" in scanned.stderr
    checked = run_cli("check-config", "-c", str(config))
    assert checked.returncode == 0, checked.stderr
    ids = [d.id for d in load_config(config, kinds=KINDS).settings.devices]
    assert len(ids) == 13 and ids[0].startswith("wm-")

    probe = Probe(broker.port)
    probe.subscribe(f"{base}/#")
    agent = start("run", "-c", str(config))
    try:
        for device in ids:
            probe.wait_for(f"{base}/{device}/availability", lambda m: m.text == "online", 60)
        status = run_cli("status", "-c", str(config))
        assert status.returncode == 0, status.stdout + status.stderr
        assert "13/13 devices online" in status.stdout
        assert " TH/s" in status.stdout
    finally:
        stop(agent)
        probe.close()
