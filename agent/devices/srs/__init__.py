"""SRS (Simple Realtime Server) media server over its HTTP API."""

from agent.devices.kind import DeviceKind
from agent.devices.srs.catalog import CATALOG
from agent.devices.srs.config import SrsConfig
from agent.devices.srs.driver import SrsDriver

KIND = DeviceKind(
    name="srs",
    config=SrsConfig,
    catalog=CATALOG,
    driver=SrsDriver,
    simulator="edge_agent_sim.srs",
    demo_count=1,
    usual_port=1985,
)
