"""XMRig CPU/GPU miner over its HTTP API."""

from agent.devices.kind import DeviceKind, PowerCapability
from agent.devices.xmrig.catalog import CATALOG
from agent.devices.xmrig.config import XmrigConfig
from agent.devices.xmrig.driver import XmrigDriver

# A rig has no power limit: site power control switches it (pause/resume) at its nominal_w.
KIND = DeviceKind(
    name="xmrig",
    config=XmrigConfig,
    catalog=CATALOG,
    driver=XmrigDriver,
    power=PowerCapability(sleep="pause", wake="resume"),
    simulator="edge_agent_sim.xmrig",
    demo_count=2,
)
