"""MicroBT Whatsminer over its API v2 (TCP 4028, encrypted writes)."""

from agent.devices import DeviceKind
from agent.devices.whatsminer.catalog import CATALOG
from agent.devices.whatsminer.config import WhatsminerConfig
from agent.devices.whatsminer.driver import WhatsminerDriver

KIND = DeviceKind(
    name="whatsminer", config=WhatsminerConfig, catalog=CATALOG, driver=WhatsminerDriver
)
