"""API bodies → the `pool` state sections the catalog documents.

A field the pool leaves out becomes null; a field of the wrong type is a ProtocolError naming
it. Hash rates become H/s (pool GH/s x 1e9; user, worker and top-50 MH/s x 1e6).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from agent.devices import coerce
from agent.devices.pool.catalog import GHS, MHS
from agent.errors import ProtocolError

Row = dict[str, Any]
Reader = Callable[[Mapping[str, Any], str, str], Any]


def pool_section(body: Mapping[str, Any], url: str) -> Row:
    """`/api/pool/stats` or `/api/pool/round` → `pool`."""
    where = "/api/pool/round"
    return {
        "url": url,
        "hashrate_hs": _rate(body, "hash_rate", GHS, where),
        "active_workers": _int(body, "active_workers", where),
        "active_users": _int(body, "active_users", where),
    }


def round_section(body: Mapping[str, Any]) -> Row:
    """`/api/pool/round` → `round`: the current shift and per-chain round data."""
    where = "/api/pool/round"
    chains = {
        name: {
            "accepted": _int(chain, "accepted", f"{where} chains.{name}"),
            "rejected": _int(chain, "rejected", f"{where} chains.{name}"),
            "difficulty": _number(chain, "difficulty", f"{where} chains.{name}"),
            "duration_s": _int(chain, "duration", f"{where} chains.{name}"),
        }
        for name, chain in _objects(body, "chains", where).items()
    }
    return {
        "shift": {
            "accepted": _int(body, "shift_accepted", where),
            "rejected": _int(body, "shift_rejected", where),
            "score": _number(body, "shift_score", where),
            "duration_s": _int(body, "shift_duration", where),
        },
        "chains": chains,
    }


def block_row(raw: Mapping[str, Any]) -> Row:
    where = "/api/pool/blocks"
    return {
        "id": _required_int(raw, "id", where),
        "chain": _text(raw, "chain", where),
        "height": _int(raw, "height", where),
        "hash": _text(raw, "hash", where),
        "status": _text(raw, "status", where),
        "confirmations_left": _int(raw, "confirmations_left", where),
        "income": _number(raw, "income", where),
        "difficulty": _number(raw, "difficulty", where),
        "accepted": _int(raw, "accepted", where),
        "rejected": _int(raw, "rejected", where),
        "generator": _text(raw, "generator", where),
        "generated": _int(raw, "generated", where),
        "duration_s": _int(raw, "duration", where),
    }


def shift_row(raw: Mapping[str, Any]) -> Row:
    where = "/api/pool/shifts"
    return {
        "id": _required_int(raw, "id", where),
        "difficulty": _number(raw, "difficulty", where),
        "accepted": _int(raw, "accepted", where),
        "rejected": _int(raw, "rejected", where),
        "score": _number(raw, "score", where),
        "completed": _int(raw, "completed", where),
        "duration_s": _int(raw, "duration", where),
    }


def top50_section(body: Mapping[str, float]) -> dict[str, float | None]:
    """User name → H/s (the API's MH/s x 1e6); the client checked the values are numbers."""
    return {name: _rate(body, name, MHS, "/api/pool/top50") for name in body}


def user_section(body: Mapping[str, Any]) -> Row:
    """`/api/users[/{name}]` → `user`; workers keyed by name."""
    where = "/api/users"
    shift = _object(body, "shift", where)
    workers: dict[str, Row] = {}
    for raw in _rows(body, "workers", where):
        name = _text(raw, "name", f"{where} workers[]")
        if name is None:
            raise ProtocolError(f"{where}: a worker has no name")
        workers[name] = _worker(raw, f"{where} workers.{name}")
    return {
        "name": _text(body, "name", where),
        "hashrate_hs": _rate(body, "hash_rate", MHS, where),
        "active_workers": _int(body, "active_workers", where),
        "now": _int(body, "now", where),
        "round_start": _map(body, "round_start", where, _int),
        "shift": {
            "start": _int(shift, "start", f"{where} shift"),
            "accepted": _int(shift, "accepted", f"{where} shift"),
            "rejected": _int(shift, "rejected", f"{where} shift"),
            "user_score": _number(shift, "user_score", f"{where} shift"),
            "total_score": _number(shift, "total_score", f"{where} shift"),
        },
        "balances": _map(body, "balances", where, _number),
        "workers": workers,
    }


def _worker(raw: Mapping[str, Any], where: str) -> Row:
    return {
        "hashrate_hs": _rate(raw, "hash_rate", MHS, where),
        "alive": _flag(raw, "alive", where),
        "last_work": _int(raw, "last_work", where),
        "work": {
            coin: {  # round_* are documented as "no longer used (always zero)"
                "total_accepted": _int(work, "total_accepted", f"{where} work.{coin}"),
                "total_rejected": _int(work, "total_rejected", f"{where} work.{coin}"),
                "checkpoint_accepted": _int(work, "checkpoint_accepted", f"{where} work.{coin}"),
                "checkpoint_rejected": _int(work, "checkpoint_rejected", f"{where} work.{coin}"),
            }
            for coin, work in _objects(raw, "work", where).items()
        },
    }


# -- typed field access -----------------------------------------------------------------


def _number(obj: Mapping[str, Any], key: str, where: str) -> float | None:
    return coerce.strict_number(obj.get(key), f"{where}: {key}")


def _int(obj: Mapping[str, Any], key: str, where: str) -> int | None:
    return coerce.strict_integer(obj.get(key), f"{where}: {key}")


def _required_int(obj: Mapping[str, Any], key: str, where: str) -> int:
    value = _int(obj, key, where)
    if value is None:
        raise ProtocolError(f"{where}: an entry has no {key}")
    return value


def _rate(obj: Mapping[str, Any], key: str, factor: float, where: str) -> float | None:
    value = _number(obj, key, where)
    return None if value is None else float(round(value * factor))


def _text(obj: Mapping[str, Any], key: str, where: str) -> str | None:
    return coerce.strict_text(obj.get(key), f"{where}: {key}")


def _flag(obj: Mapping[str, Any], key: str, where: str) -> bool | None:
    return coerce.strict_flag(obj.get(key), f"{where}: {key}")


def _object(obj: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError(f"{where}: {key} is {coerce.shown(value)}, not an object")
    return value


def _objects(obj: Mapping[str, Any], key: str, where: str) -> Mapping[str, Mapping[str, Any]]:
    """A map whose values are all objects (chains, per-coin work)."""
    value = _object(obj, key, where)
    for name, item in value.items():
        if not isinstance(item, dict):
            raise ProtocolError(f"{where}: {key}.{name} is {coerce.shown(item)}, not an object")
    return value


def _map(obj: Mapping[str, Any], key: str, where: str, read: Reader) -> dict[str, Any]:
    """A map of scalars (balances, round starts), each read with `read`."""
    value = _object(obj, key, where)
    return {name: read(value, name, f"{where} {key}") for name in value}


def _rows(obj: Mapping[str, Any], key: str, where: str) -> list[Mapping[str, Any]]:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(row, dict) for row in value):
        raise ProtocolError(f"{where}: {key} is {coerce.shown(value)}, not a list of objects")
    return value
