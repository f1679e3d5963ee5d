"""XMRig CPU/GPU miner over its HTTP API."""

from agent.devices import DeviceKind
from agent.devices.xmrig.catalog import CATALOG
from agent.devices.xmrig.config import XmrigConfig
from agent.devices.xmrig.driver import XmrigDriver

KIND = DeviceKind(name="xmrig", config=XmrigConfig, catalog=CATALOG, driver=XmrigDriver)
