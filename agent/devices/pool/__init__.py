"""`pool`: a BitMinter-shaped mining pool API (pool statistics, blocks, shifts, a user's
workers and balances), read politely over HTTP."""

from __future__ import annotations

from agent.devices import DeviceKind
from agent.devices.pool.catalog import CATALOG
from agent.devices.pool.config import PoolConfig
from agent.devices.pool.driver import PoolDriver

KIND = DeviceKind(name="pool", config=PoolConfig, catalog=CATALOG, driver=PoolDriver)

__all__ = ["KIND", "PoolConfig", "PoolDriver"]
