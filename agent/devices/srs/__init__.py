"""SRS (Simple Realtime Server) media server over its HTTP API."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.devices.kind import DeviceKind
from agent.devices.srs.catalog import CATALOG
from agent.devices.srs.config import SrsConfig

if TYPE_CHECKING:
    from agent.devices.srs.driver import SrsDriver


def _driver(config: SrsConfig) -> SrsDriver:
    # Imported with the first SRS device: the HTTP client (requests, urllib3: ~6 MB) stays out
    # of an agent whose fleet has none.
    from agent.devices.srs.driver import SrsDriver

    return SrsDriver(config)


KIND = DeviceKind(
    name="srs",
    config=SrsConfig,
    catalog=CATALOG,
    driver=_driver,
    simulator="edge_agent_sim.srs",
    demo_count=1,
    usual_port=1985,
)
