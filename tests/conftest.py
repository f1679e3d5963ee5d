from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent_sim.fleet import LoopThread, SimFleet
from tests.harness import Mosquitto, Probe


@pytest.fixture(scope="session", autouse=True)
def state_directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Agents started by tests keep their energy counters here, not in the home directory."""
    path = tmp_path_factory.mktemp("state")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STATE_DIRECTORY", str(path))
        yield path


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """One Mosquitto for the session, on a free loopback port."""
    server = Mosquitto(tmp_path_factory.mktemp("mosquitto"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A Mosquitto for one test that stops and restarts it."""
    server = Mosquitto(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def probe(broker: Mosquitto) -> Iterator[Probe]:
    client = Probe(broker.port)
    yield client
    client.close()


@pytest.fixture(scope="session")
def sim_loop() -> Iterator[LoopThread]:
    loop = LoopThread()
    yield loop
    loop.stop()


@pytest.fixture
def xmrig_fleet(sim_loop: LoopThread) -> Iterator[SimFleet]:
    from edge_agent_sim.xmrig import start_fleet

    fleet = sim_loop.run(start_fleet(2, gpu=True))
    yield fleet
    sim_loop.run(fleet.close())
