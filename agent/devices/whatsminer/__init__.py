"""MicroBT Whatsminer over its API v2 (TCP 4028, encrypted writes)."""

from typing import Any

from agent.devices.kind import Command, DeviceKind, PowerCapability
from agent.devices.whatsminer.catalog import CATALOG
from agent.devices.whatsminer.cli import add_whatsminer_parser
from agent.devices.whatsminer.config import WhatsminerConfig
from agent.devices.whatsminer.driver import WhatsminerDriver

_PERCENT_COMMANDS = {"fast": "set_power_pct", "normal": "set_power_pct_v2"}  # v2 ramps slowly


def _set_percent(percent: int, ramp: str) -> Command:
    params: dict[str, Any] = {"percent": percent}
    return _PERCENT_COMMANDS[ramp], params


def _preheat_complete(data: Any) -> bool:
    """pre_power_on's `complete`, which the document types as a string ("true"/"false")."""
    if isinstance(data, dict):
        value = data.get("complete")
        return value is True or str(value).lower() == "true"
    return False


KIND = DeviceKind(
    name="whatsminer",
    config=WhatsminerConfig,
    catalog=CATALOG,
    driver=WhatsminerDriver,
    power=PowerCapability(
        sleep="power_off",
        wake="power_on",
        preheat="pre_power_on",
        preheat_complete=_preheat_complete,
        percent=_set_percent,
    ),
    commands=add_whatsminer_parser,
    simulator="edge_agent_sim.whatsminer",
    demo_count=3,
    usual_port=4028,
)
