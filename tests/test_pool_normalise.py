"""`pool` kind without a network: fixtures → state, unit conversion, catalog and config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from agent.config.settings import load_config
from agent.devices import KINDS
from agent.devices.pool.catalog import CATALOG, entity_slug
from agent.devices.pool.config import PoolConfig
from agent.devices.pool.normalise import (
    block_row,
    pool_section,
    round_section,
    shift_row,
    top50_section,
    user_section,
)
from agent.errors import ProtocolError

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "bitminter"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def fixture_state() -> dict[str, Any]:
    round_body = fixture("pool_round.json")
    blocks = [block_row(row) for row in fixture("pool_blocks.json")]
    return {
        "pool": pool_section(round_body, "https://pool.example"),
        "round": round_section(round_body),
        "blocks": blocks,
        "latest_block": blocks[0],
        "shifts": [shift_row(row) for row in fixture("pool_shifts.json")],
        "top50": top50_section(fixture("pool_top50.json")),
        "user": user_section(fixture("user.json")),
    }


def lookup(state: Any, path: str) -> Any:
    for part in path.split("."):
        state = state[part]
    return state


def config(**fields: Any) -> PoolConfig:
    return PoolConfig.model_validate(
        {"id": "pool1", "kind": "pool", "url": "https://pool.example", **fields}
    )


# -- normalisation ------------------------------------------------------------------------


def test_pool_hash_rate_is_converted_from_ghs_to_hs() -> None:
    pool = pool_section(fixture("pool_stats.json"), "https://pool.example")
    assert pool == {
        "url": "https://pool.example",
        "hashrate_hs": 20_513_370_000_000.0,  # 20513.37 GH/s
        "active_workers": 412,
        "active_users": 187,
    }


def test_round_keeps_shift_and_every_chain_with_durations_in_seconds() -> None:
    round_ = round_section(fixture("pool_round.json"))
    assert round_["shift"] == {
        "accepted": 1834522,
        "rejected": 1203,
        "score": 1712.3384,
        "duration_s": 1411,
    }
    assert set(round_["chains"]) == {"BTC", "NMC"}
    assert round_["chains"]["NMC"] == {
        "accepted": 884126311,
        "rejected": 610522,
        "difficulty": 13978345123541.27,
        "duration_s": 389221,
    }


def test_blocks_keep_every_documented_status() -> None:
    rows = [block_row(row) for row in fixture("pool_blocks.json")]
    assert [r["status"] for r in rows[:7]] == [
        "processing",
        "unconfirmed",
        "unconfirmed",
        "confirmed",
        "stale",
        "confirmed",
        "orphan",
    ]
    assert rows[0]["id"] == 31876 and rows[0]["height"] == 637000
    assert rows[0]["duration_s"] == 86400 and "duration" not in rows[0]
    assert [r["confirmations_left"] for r in rows[3:5]] == [0, -1]


def test_shifts_rename_duration() -> None:
    row = shift_row(fixture("pool_shifts.json")[0])
    assert row == {
        "id": 986512,
        "difficulty": 15138043247082.88,
        "accepted": 1834522,
        "rejected": 1203,
        "score": 1712.3384,
        "completed": 1593561600,
        "duration_s": 1411,
    }


def test_user_and_worker_hash_rates_are_converted_from_mhs_to_hs() -> None:
    user = user_section(fixture("user.json"))
    assert user["hashrate_hs"] == 14_200_500_000.0  # 14200.5 MH/s
    assert user["workers"]["rig1"]["hashrate_hs"] == 14_200_500_000.0
    assert user["workers"]["rig2"] == {
        "hashrate_hs": 0.0,
        "alive": False,
        "last_work": 1593558000,
        "work": {
            "BTC": {
                "total_accepted": 1232,
                "total_rejected": 3,
                "checkpoint_accepted": 1000,
                "checkpoint_rejected": 3,
            }
        },
    }
    assert user["balances"] == {"BTC": 0.01942117, "NMC": 1.29331}
    assert user["shift"]["user_score"] == 10.4412
    assert user["round_start"] == {"BTC": 1593172379, "NMC": 1593172379}


def test_top50_is_converted_from_mhs_to_hs() -> None:
    top = top50_section(fixture("pool_top50.json"))
    assert len(top) == 50
    assert top["user00"] == 2_500_000_000_000.0
    assert top["user02"] == 833_333_330_000.0


def test_missing_fields_become_null() -> None:
    assert pool_section({}, "u")["hashrate_hs"] is None
    assert round_section({"shift_accepted": 5})["shift"]["score"] is None
    assert user_section({"name": "x"})["workers"] == {}


@pytest.mark.parametrize(
    ("normalise", "body", "named"),
    [
        (lambda b: pool_section(b, "u"), {"hash_rate": "fast"}, "hash_rate"),
        (lambda b: pool_section(b, "u"), {"active_workers": True}, "active_workers"),
        (lambda b: pool_section(b, "u"), {"active_users": 1.5}, "active_users"),
        (round_section, {"chains": {"BTC": 7}}, "chains.BTC"),
        (round_section, {"chains": []}, "chains"),
        (block_row, {"height": 5}, "id"),
        (block_row, {"id": 1, "status": 3}, "status"),
        (shift_row, {"id": "986512"}, "id"),
        (user_section, {"workers": {"rig1": {}}}, "workers"),
        (user_section, {"workers": [{"hash_rate": 1}]}, "name"),
        (user_section, {"workers": [{"name": "r", "alive": "yes"}]}, "alive"),
        (user_section, {"balances": {"BTC": "0.1"}}, "BTC"),
        (user_section, {"shift": [1, 2]}, "shift"),
        (user_section, {"hash_rate": float("inf")}, "hash_rate"),
    ],
)
def test_wrong_types_are_protocol_errors_naming_the_field(
    normalise: Any, body: dict[str, Any], named: str
) -> None:
    with pytest.raises(ProtocolError) as caught:
        normalise(body)
    assert named in caught.value.message


# -- catalog ------------------------------------------------------------------------------


def test_every_entity_reads_a_present_value_of_the_fixture_state() -> None:
    state = fixture_state()
    entities = CATALOG.entities_for(state)
    keys = [e.key for e in entities]
    assert len(keys) == len(set(keys))
    for entity in entities:
        assert entity.value is not None
        assert lookup(state, entity.value) is not None, entity.key


def test_hash_rate_entities_scale_back_to_the_api_units() -> None:
    state = fixture_state()
    by_key = {e.key: e for e in CATALOG.entities_for(state)}
    pool = by_key["pool_hashrate"]
    assert pool.unit == "GH/s"
    assert lookup(state, pool.value or "") * (pool.scale or 0) == pytest.approx(20513.37)
    worker = by_key["worker_rig1_hashrate"]
    assert worker.unit == "MH/s"
    assert lookup(state, worker.value or "") * (worker.scale or 0) == pytest.approx(14200.5)
    assert by_key["user_hashrate"].unit == "MH/s"


def test_dynamic_entities_follow_chains_coins_and_workers() -> None:
    state = fixture_state()
    keys = {e.key for e in CATALOG.entities_for(state)}
    assert {"round_btc_accepted", "round_nmc_difficulty", "round_nmc_duration"} <= keys
    assert {"balance_btc", "balance_nmc", "user_hashrate", "user_active_workers"} <= keys
    assert {"worker_rig1_hashrate", "worker_rig1_alive", "worker_rig2_alive"} <= keys
    alive = next(e for e in CATALOG.entities_for(state) if e.key == "worker_rig2_alive")
    assert alive.platform == "binary_sensor"

    state["user"]["workers"] = {"rig9": state["user"]["workers"]["rig1"]}
    keys = {e.key for e in CATALOG.entities_for(state)}
    assert "worker_rig9_alive" in keys and "worker_rig1_alive" not in keys

    state["user"] = None
    keys = {e.key for e in CATALOG.entities_for(state)}
    assert not any(k.startswith(("worker_", "balance_", "user_")) for k in keys)
    assert "round_btc_accepted" in keys


def test_latest_block_status_is_an_enum_of_the_documented_statuses() -> None:
    status = next(e for e in CATALOG.entities if e.key == "latest_block_status")
    assert status.device_class == "enum"
    assert status.extra["options"] == ["processing", "unconfirmed", "confirmed", "stale", "orphan"]


def test_odd_worker_names_get_distinct_slugs() -> None:
    assert entity_slug("rig1") == "rig1"
    assert entity_slug("Rig 1") != entity_slug("rig_1")
    assert entity_slug("Rig 1").startswith("rig_1_")
    assert entity_slug("çà") != entity_slug("éè")


def test_the_api_has_no_writes_so_the_kind_has_no_commands() -> None:
    assert CATALOG.commands == ()
    assert KINDS["pool"].catalog is CATALOG


def test_every_state_field_in_the_fixture_state_is_documented() -> None:
    documented = {f.path.split("{}")[0].split("[]")[0].split(".")[0] for f in CATALOG.fields}
    assert set(fixture_state()) == documented


# -- config -------------------------------------------------------------------------------


def test_defaults_are_polite() -> None:
    cfg = config()
    assert cfg.poll_interval == 60.0
    assert cfg.min_poll_interval == 60.0
    assert cfg.auth == "header"
    assert cfg.warnings() == []


def test_polling_below_the_minimum_warns_and_the_minimum_is_configurable() -> None:
    warnings = config(poll_interval="10s").warnings()
    assert len(warnings) == 1 and "below min_poll_interval 60s" in warnings[0]
    assert config(poll_interval="10s", min_poll_interval="5s").warnings() == []


def test_key_in_url_or_over_plain_http_warns_without_showing_the_key() -> None:
    warnings = config(api_key="K3Y-SECRET", auth="query").warnings()
    assert any('auth = "query"' in w for w in warnings)
    plain = config(url="http://pool.example", api_key="K3Y-SECRET").warnings()
    assert any("plain http" in w for w in plain)
    assert config(url="http://127.0.0.1:8080", api_key="K3Y-SECRET").warnings() == []
    assert all("K3Y-SECRET" not in w for w in warnings + plain)


def test_user_data_needs_a_key() -> None:
    with pytest.raises(ValidationError, match="needs an API key"):
        config(user="alice")
    assert config(user="alice", api_key="k").user == "alice"


def test_key_comes_from_a_file_and_never_shows_in_a_dump(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("FILE-KEY-123\n")
    cfg = config(api_key_file=str(key_file))
    assert cfg.api_key is not None and cfg.api_key.get_secret_value() == "FILE-KEY-123"
    assert "FILE-KEY-123" not in cfg.model_dump_json() + repr(cfg)


@pytest.mark.parametrize(
    "url",
    ["ftp://pool.example", "https://user:pw@pool.example", "https://pool.example/?key=1", "pool"],
)
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(ValidationError):
        config(url=url)


def test_url_is_the_site_root() -> None:
    assert config(url="https://pool.example/api/").url == "https://pool.example"
    assert config(url="https://host/mirror/").url == "https://host/mirror"


def test_key_with_whitespace_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValidationError) as caught:
        config(api_key="bad key\n")
    assert "printable" in str(caught.value.errors()[0]["msg"])


def test_page_sizes_follow_the_api_limits() -> None:
    with pytest.raises(ValidationError):
        config(blocks_page=51)
    with pytest.raises(ValidationError):
        config(shifts_page=0)


def test_the_config_loader_reports_the_polling_warning(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        '[[devices]]\nid = "pool1"\nkind = "pool"\nurl = "https://pool.example"\n'
        'poll_interval = "15s"\n'
    )
    loaded = load_config(path, environ={})
    assert any("pool1" in w and "min_poll_interval" in w for w in loaded.warnings)
