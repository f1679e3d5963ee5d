"""SRS (Simple Realtime Server) media server over its HTTP API."""

from __future__ import annotations

from agent.devices.kind import DeviceKind, driver_imported_when_used
from agent.devices.srs.catalog import CATALOG
from agent.devices.srs.config import SrsConfig

KIND = DeviceKind(
    name="srs",
    config=SrsConfig,
    catalog=CATALOG,
    driver=driver_imported_when_used("agent.devices.srs.driver", "SrsDriver"),
    simulator="edge_agent_sim.srs",
    demo_count=1,
    usual_port=1985,
)
