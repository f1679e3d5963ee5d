"""What the running agent imports (issue 14, memory): the libraries only a CLI subcommand, the
simulators or another device kind use stay out of a Whatsminer + XMRig service.

Each check runs a fresh interpreter: this test process has imported everything already.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# What `edge-agent run` does before its first poll: the command line's parser (every
# subcommand's), the config, the service module, one driver per device.
START_LIKE_RUN = """
import json, sys
from pathlib import Path
from agent.cli import build_parser
from agent.config.settings import load_config
from agent.kinds import KINDS
import agent.runtime.service

build_parser().parse_args(["run", "-c", sys.argv[1]])
settings = load_config(Path(sys.argv[1]), {}, kinds=KINDS).settings
drivers = [KINDS[device.kind].driver(device) for device in settings.devices]
print(json.dumps(sorted(sys.modules)))
"""

MINERS = """
[[devices]]
id = "wm1"
kind = "whatsminer"
host = "127.0.0.1"

[[devices]]
id = "rig1"
kind = "xmrig"
url = "http://127.0.0.1:18080"
"""

POOL = """
[[devices]]
id = "pool1"
kind = "pool"
url = "http://127.0.0.1:18090"
"""

SRS = """
[[devices]]
id = "srs1"
kind = "srs"
url = "http://127.0.0.1:1985"
"""

NOT_FOR_THE_SERVICE = (
    "rich",  # structlog's console exception formatter: every exception is text before it
    "pygments",
    "tomlkit",  # `scan --write`
    "aiohttp",  # the simulators (their argument parsers are built, their servers not loaded)
    "agent.devices.pool.client",  # requests, for pool devices only
    "agent.devices.srs.client",
    "requests",  # XMRig and Whatsminer polls use the event loop; requests serves one-shot calls
    "Crypto",  # pycryptodome's AES (with cffi, pycparser): a Whatsminer's first write loads it
    "cffi",
    "pycparser",
)


def _modules_after_start(tmp_path: Path, config: str) -> set[str]:
    path = tmp_path / "agent.toml"
    path.write_text(config)
    done = subprocess.run(
        [sys.executable, "-c", START_LIKE_RUN, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return set(json.loads(done.stdout))


def _loaded(modules: set[str], names: tuple[str, ...]) -> set[str]:
    return {m for m in modules if m.split(".")[0] in names or m in names}


def test_a_miner_fleet_imports_no_cli_simulator_or_pretty_console_library(
    tmp_path: Path,
) -> None:
    modules = _modules_after_start(tmp_path, MINERS)
    assert "agent.devices.whatsminer.driver" in modules
    assert "agent.devices.xmrig.driver" in modules
    assert _loaded(modules, NOT_FOR_THE_SERVICE) == set()


@pytest.mark.parametrize(("config", "client"), [(POOL, "pool"), (SRS, "srs")])
def test_a_kind_s_http_client_comes_with_its_first_device(
    tmp_path: Path, config: str, client: str
) -> None:
    modules = _modules_after_start(tmp_path, MINERS + config)
    assert f"agent.devices.{client}.client" in modules
    assert "requests" in modules


ENCRYPT_LIKE_A_WRITE = """
import json, sys
from agent.devices.whatsminer import crypto

key = crypto.aes_key("key")
assert crypto.decrypt(crypto.encrypt(b"power_off", key), key) == b"power_off"
print(json.dumps(sorted(sys.modules)))
"""


def test_a_whatsminer_write_brings_the_aes_cipher_with_it() -> None:
    done = subprocess.run(
        [sys.executable, "-c", ENCRYPT_LIKE_A_WRITE],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "Crypto.Cipher.AES" in set(json.loads(done.stdout))
