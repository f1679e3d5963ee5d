"""What a `pool` device publishes and shows in Home Assistant.

Hash rates are stored in H/s like every other kind (`hashrate_hs`): the API's pool figures are
GH/s (x 1e9), its user, worker and top-50 figures MH/s (x 1e6). Home Assistant shows them back
in the API's units through `scale`. Times from the API stay seconds since the epoch.

The API is read-only, so the kind has no commands: `{device}/get` already re-reads it.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from agent.catalog.model import Catalog, EntityDescription, StateField

BLOCK_STATUSES = ("processing", "unconfirmed", "confirmed", "stale", "orphan")
GHS = 1e9  # API GH/s → H/s
MHS = 1e6  # API MH/s → H/s

_BLOCK_FIELDS = (
    ("id", "int", "block id, unique within the pool", None),
    ("chain", "str", "chain / commodity (BTC, NMC…)", None),
    ("height", "int", "block number", None),
    ("hash", "str", "block header hash", None),
    ("status", "str", "processing, unconfirmed, confirmed, stale or orphan", None),
    ("confirmations_left", "int", "confirmations to go; 0 confirmed, -1 stale/orphan", None),
    ("income", "float", "minted coins plus fees, in the chain's coin", None),
    ("difficulty", "float", "network difficulty when found", None),
    ("accepted", "int", "accepted proofs of work for this block", None),
    ("rejected", "int", "rejected proofs of work for this block", None),
    ("generator", "str", "user who found it", None),
    ("generated", "int", "when it was found, seconds since the epoch", "s"),
    ("duration_s", "int", "time spent on the block", "s"),
)

FIELDS: tuple[StateField, ...] = (
    StateField("pool.url", "str", "the pool's base URL (never the API key)"),
    StateField("pool.hashrate_hs", "float", "pool hash rate (API: GH/s x 1e9)", "H/s"),
    StateField("pool.active_workers", "int", "active workers in the pool"),
    StateField("pool.active_users", "int", "active users in the pool"),
    StateField("round.shift.accepted", "int", "accepted proofs of work in the current shift"),
    StateField("round.shift.rejected", "int", "rejected proofs of work in the current shift"),
    StateField("round.shift.score", "float", "total score of the current shift so far"),
    StateField("round.shift.duration_s", "int", "time spent on the current shift", "s"),
    StateField("round.chains{}.accepted", "int", "accepted proofs of work this round, per chain"),
    StateField("round.chains{}.rejected", "int", "rejected proofs of work this round, per chain"),
    StateField("round.chains{}.difficulty", "float", "current network difficulty of the chain"),
    StateField("round.chains{}.duration_s", "int", "round duration so far", "s"),
    *(StateField(f"blocks[].{p}", t, d, u) for p, t, d, u in _BLOCK_FIELDS),
    StateField("latest_block", "object|null", "the newest of `blocks` (same fields), or null"),
    StateField("shifts[].id", "int", "shift id, unique within the pool"),
    StateField("shifts[].difficulty", "float", "network difficulty when the shift completed"),
    StateField("shifts[].accepted", "int", "accepted proofs of work in the shift"),
    StateField("shifts[].rejected", "int", "rejected proofs of work in the shift"),
    StateField("shifts[].score", "float", "total score of the shift"),
    StateField("shifts[].completed", "int", "when it completed, seconds since the epoch", "s"),
    StateField("shifts[].duration_s", "int", "length of the shift", "s"),
    StateField("top50{}", "float", "the 50 fastest users: name → hash rate (MH/s x 1e6)", "H/s"),
    StateField("user", "object|null", "the API key's user; null without api_key"),
    StateField("user.name", "str", "user name"),
    StateField("user.hashrate_hs", "float", "the user's hash rate (API: MH/s x 1e6)", "H/s"),
    StateField("user.active_workers", "int", "the user's active workers"),
    StateField("user.now", "int", "pool server time, seconds since the epoch", "s"),
    StateField("user.round_start{}", "int", "round start per commodity, epoch seconds", "s"),
    StateField("user.shift.start", "int", "current shift start, seconds since the epoch", "s"),
    StateField("user.shift.accepted", "int", "the user's accepted proofs of work this shift"),
    StateField("user.shift.rejected", "int", "the user's rejected proofs of work this shift"),
    StateField("user.shift.user_score", "float", "the user's score this shift"),
    StateField("user.shift.total_score", "float", "the pool's total score this shift"),
    StateField("user.balances{}", "float", "balance per commodity, in that coin"),
    StateField("user.workers{}.hashrate_hs", "float", "worker hash rate (MH/s x 1e6)", "H/s"),
    StateField("user.workers{}.alive", "bool", "proof of work received in the last 5 minutes"),
    StateField("user.workers{}.last_work", "int", "last proof of work, epoch seconds", "s"),
    StateField("user.workers{}.work{}.total_accepted", "int", "accepted, all time, per coin"),
    StateField("user.workers{}.work{}.total_rejected", "int", "rejected, all time, per coin"),
    StateField("user.workers{}.work{}.checkpoint_accepted", "int", "accepted before last reset"),
    StateField("user.workers{}.work{}.checkpoint_rejected", "int", "rejected before last reset"),
)

ENTITIES: tuple[EntityDescription, ...] = (
    EntityDescription(
        key="pool_hashrate",
        platform="sensor",
        name="Pool hash rate",
        value="pool.hashrate_hs",
        unit="GH/s",
        scale=1 / GHS,
        state_class="measurement",
        precision=2,
        icon="mdi:pickaxe",
    ),
    EntityDescription(
        key="pool_active_workers",
        platform="sensor",
        name="Active workers in pool",
        value="pool.active_workers",
        state_class="measurement",
        icon="mdi:server-network",
    ),
    EntityDescription(
        key="pool_active_users",
        platform="sensor",
        name="Active users in pool",
        value="pool.active_users",
        state_class="measurement",
        icon="mdi:account-group",
    ),
    EntityDescription(
        key="shift_accepted",
        platform="sensor",
        name="Shift accepted",
        value="round.shift.accepted",
        state_class="total_increasing",
        icon="mdi:check",
    ),
    EntityDescription(
        key="shift_rejected",
        platform="sensor",
        name="Shift rejected",
        value="round.shift.rejected",
        state_class="total_increasing",
        icon="mdi:close",
    ),
    EntityDescription(
        key="shift_score",
        platform="sensor",
        name="Shift score",
        value="round.shift.score",
        state_class="measurement",
        precision=2,
        icon="mdi:scoreboard",
    ),
    EntityDescription(
        key="shift_duration",
        platform="sensor",
        name="Shift duration",
        value="round.shift.duration_s",
        unit="s",
        device_class="duration",
        state_class="measurement",
        entity_category="diagnostic",
    ),
    EntityDescription(
        key="latest_block_height",
        platform="sensor",
        name="Latest block height",
        value="latest_block.height",
        icon="mdi:cube-outline",
        attributes="latest_block",
    ),
    EntityDescription(
        key="latest_block_status",
        platform="sensor",
        name="Latest block status",
        value="latest_block.status",
        device_class="enum",
        extra={"options": list(BLOCK_STATUSES)},  # discovery adds `options` only to selects
        icon="mdi:cube-scan",
    ),
    EntityDescription(
        key="latest_block_confirmations_left",
        platform="sensor",
        name="Latest block confirmations left",
        value="latest_block.confirmations_left",
        state_class="measurement",
        icon="mdi:timer-sand",
    ),
)

_NOT_SLUG = re.compile(r"[^a-z0-9_]+")


def entity_slug(name: str) -> str:
    """A key part for a worker, chain or coin name; a checksum keeps odd names apart."""
    slug = _NOT_SLUG.sub("_", name.lower()).strip("_")
    if slug != name.lower() or not slug:
        slug = f"{slug}_{zlib.crc32(name.encode()):08x}".lstrip("_")
    return slug


def dynamic_entities(state: Mapping[str, Any]) -> Sequence[EntityDescription]:
    """Per-chain round sensors; with user data, the user's, per coin and per worker ones."""
    round_ = state.get("round") or {}
    user = state.get("user")
    chains = tuple(sorted(round_.get("chains") or ()))
    if not user:
        return _entities(chains, False, (), ())
    coins = tuple(sorted(user.get("balances") or ()))
    workers = tuple(sorted(user.get("workers") or ()))
    return _entities(chains, True, coins, workers)


@lru_cache(maxsize=256)
def _entities(
    chains: tuple[str, ...],
    has_user: bool,
    coins: tuple[str, ...],
    workers: tuple[str, ...],
) -> tuple[EntityDescription, ...]:
    found = [e for chain in chains for e in _chain_entities(chain)]
    if has_user:
        found.extend(_user_entities())
        found.extend(_balance_entity(coin) for coin in coins)
        found.extend(e for worker in workers for e in _worker_entities(worker))
    return tuple(found)


def _chain_entities(chain: str) -> tuple[EntityDescription, ...]:
    key = f"round_{entity_slug(chain)}"
    path = f"round.chains.{chain}"
    return (
        EntityDescription(
            key=f"{key}_accepted",
            platform="sensor",
            name=f"{chain} round accepted",
            value=f"{path}.accepted",
            state_class="total_increasing",
            icon="mdi:check",
        ),
        EntityDescription(
            key=f"{key}_rejected",
            platform="sensor",
            name=f"{chain} round rejected",
            value=f"{path}.rejected",
            state_class="total_increasing",
            icon="mdi:close",
        ),
        EntityDescription(
            key=f"{key}_difficulty",
            platform="sensor",
            name=f"{chain} difficulty",
            value=f"{path}.difficulty",
            state_class="measurement",
            icon="mdi:chart-line",
            entity_category="diagnostic",
        ),
        EntityDescription(
            key=f"{key}_duration",
            platform="sensor",
            name=f"{chain} round duration",
            value=f"{path}.duration_s",
            unit="s",
            device_class="duration",
            state_class="measurement",
        ),
    )


@lru_cache(maxsize=1)
def _user_entities() -> tuple[EntityDescription, ...]:
    return (
        EntityDescription(
            key="user_hashrate",
            platform="sensor",
            name="Hash rate",
            value="user.hashrate_hs",
            unit="MH/s",
            scale=1 / MHS,
            state_class="measurement",
            precision=1,
            icon="mdi:speedometer",
        ),
        EntityDescription(
            key="user_active_workers",
            platform="sensor",
            name="Active workers",
            value="user.active_workers",
            state_class="measurement",
            icon="mdi:server",
        ),
    )


def _balance_entity(coin: str) -> EntityDescription:
    return EntityDescription(
        key=f"balance_{entity_slug(coin)}",
        platform="sensor",
        name=f"{coin} balance",
        value=f"user.balances.{coin}",
        unit=coin,
        state_class="total",
        precision=8,
        icon="mdi:wallet",
    )


def _worker_entities(worker: str) -> tuple[EntityDescription, ...]:
    key = f"worker_{entity_slug(worker)}"
    path = f"user.workers.{worker}"
    return (
        EntityDescription(
            key=f"{key}_hashrate",
            platform="sensor",
            name=f"Worker {worker} hash rate",
            value=f"{path}.hashrate_hs",
            unit="MH/s",
            scale=1 / MHS,
            state_class="measurement",
            precision=1,
            icon="mdi:speedometer",
        ),
        EntityDescription(
            key=f"{key}_alive",
            platform="binary_sensor",
            name=f"Worker {worker}",
            value=f"{path}.alive",
            device_class="running",
        ),
    )


CATALOG = Catalog(
    kind="pool",
    title="Mining pool (BitMinter API)",
    manufacturer="BitMinter-compatible pool",
    default_model="Pool API",
    fields=FIELDS,
    entities=ENTITIES,
    commands=(),
    dynamic_entities=dynamic_entities,
)
