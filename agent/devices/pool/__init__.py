"""`pool`: a BitMinter-shaped mining pool API (pool statistics, blocks, shifts, a user's
workers and balances), read politely over HTTP."""

from __future__ import annotations

from agent.devices.kind import DeviceKind, driver_imported_when_used
from agent.devices.pool.catalog import CATALOG
from agent.devices.pool.config import PoolConfig

KIND = DeviceKind(
    name="pool",
    config=PoolConfig,
    catalog=CATALOG,
    driver=driver_imported_when_used("agent.devices.pool.driver", "PoolDriver"),
    simulator="edge_agent_sim.pool",
    demo_count=1,
)

__all__ = ["KIND", "PoolConfig"]
