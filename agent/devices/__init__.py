"""Device kinds. Each kind is a package with its protocol client, catalog, driver, config and
simulator; this module is the registry the runtime and the config loader look kinds up in."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.catalog.model import Catalog
from agent.config.base import DeviceConfig
from agent.devices.base import Driver


@dataclass(frozen=True, slots=True)
class DeviceKind:
    name: str
    config: type[DeviceConfig]
    catalog: Catalog
    driver: Callable[[Any], Driver[Any]]


def _load() -> dict[str, DeviceKind]:
    from agent.devices import pool, srs, whatsminer, xmrig

    kinds = [xmrig.KIND, pool.KIND, srs.KIND, whatsminer.KIND]
    return {kind.name: kind for kind in kinds}


KINDS: dict[str, DeviceKind] = _load()
