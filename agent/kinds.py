"""The device kinds this agent speaks: one line per kind (agent.devices.kind says what a kind
declares). The composition roots (the command line, the runtime, the demo) hand it down."""

from __future__ import annotations

from agent.devices import pool, srs, whatsminer, xmrig
from agent.devices.kind import DeviceKind, registry

KINDS: dict[str, DeviceKind] = registry(xmrig.KIND, pool.KIND, srs.KIND, whatsminer.KIND)
