"""`pool`: a BitMinter-shaped mining pool API (pool statistics, blocks, shifts, a user's
workers and balances), read politely over HTTP."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.devices.kind import DeviceKind
from agent.devices.pool.catalog import CATALOG
from agent.devices.pool.config import PoolConfig

if TYPE_CHECKING:
    from agent.devices.pool.driver import PoolDriver


def _driver(config: PoolConfig) -> PoolDriver:
    # Imported with the first pool device: the HTTP client (requests, urllib3: ~6 MB) stays out
    # of an agent whose fleet has none.
    from agent.devices.pool.driver import PoolDriver

    return PoolDriver(config)


KIND = DeviceKind(
    name="pool",
    config=PoolConfig,
    catalog=CATALOG,
    driver=_driver,
    simulator="edge_agent_sim.pool",
    demo_count=1,
)

__all__ = ["KIND", "PoolConfig"]
