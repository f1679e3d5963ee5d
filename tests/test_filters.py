"""Publish filters (agent.catalog.filters): decisions poll by poll, on an injected clock."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.catalog.filters import (
    Band,
    Decision,
    FilterRules,
    PublishFilter,
    parse_band,
    pattern_problems,
)
from agent.catalog.model import PublishDefaults
from agent.config.base import PublishConfig
from agent.config.settings import ConfigError, load_config
from agent.devices.whatsminer.catalog import CATALOG as WHATSMINER
from agent.devices.xmrig.catalog import CATALOG as XMRIG
from agent.kinds import KINDS

KIND = PublishDefaults(
    immediate=("mining", "errors*", "pool.url"),
    deadband={"*hashrate_hs*": "5%", "*temperature_c": 2},
    quiet=("uptime_s", "shares.*"),
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(
    overrides: dict[str, Any] | None = None, *, refresh: float = 300.0
) -> tuple[PublishFilter, Clock]:
    clock = Clock()
    table = PublishConfig.model_validate(overrides or {}).model_dump()
    return PublishFilter(FilterRules.build(KIND, table, refresh), clock), clock


def state(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "mining": True,
        "hashrate_hs": {"5s": 100.0, "1m": 100.0},
        "boards": [{"temperature_c": 60.0}, {"temperature_c": 61.0}],
        "uptime_s": 10,
        "shares": {"accepted": 5},
        "pool": {"url": "stratum+tcp://a:3333"},
        "errors": [],
        "firmware": "v1",
    }
    base.update(changes)
    return base


def sent(decision: Decision) -> list[dict[str, Any]]:
    return [json.loads(payload) for payload in decision.payloads]


def primed(overrides: dict[str, Any] | None = None) -> tuple[PublishFilter, Clock]:
    """A filter that has published its first state."""
    publish_filter, clock = make(overrides)
    assert sent(publish_filter.offer(state())) == [state()]
    clock.now += 10
    return publish_filter, clock


def test_the_first_state_goes_out_at_once() -> None:
    publish_filter, _ = make({"debounce": "5s", "throttle": "1m"})
    assert sent(publish_filter.offer(state())) == [state()]


@pytest.mark.parametrize(
    ("text", "band"),
    [(2, Band(2.0)), ("0.5", Band(0.5)), ("5%", Band(0.05, relative=True)), (0, Band(0.0))],
)
def test_bands_parse(text: Any, band: Band) -> None:
    assert parse_band(text) == band


@pytest.mark.parametrize("text", ["-1", "five", "5 %%", True, "inf%", [1]])
def test_bad_bands_are_refused(text: Any) -> None:
    with pytest.raises(ValueError, match="deadband"):
        parse_band(text)


def test_relative_deadband_holds_small_changes_and_publishes_big_ones() -> None:
    publish_filter, clock = primed()
    jitter = state(hashrate_hs={"5s": 104.0, "1m": 97.0})
    assert publish_filter.offer(jitter) == Decision()
    clock.now += 10
    big = state(hashrate_hs={"5s": 105.0, "1m": 100.0})
    assert sent(publish_filter.offer(big)) == [big]


def test_deadband_compares_with_the_last_published_value_so_drift_publishes() -> None:
    publish_filter, _ = primed()
    assert publish_filter.offer(state(hashrate_hs={"5s": 103.0, "1m": 100.0})) == Decision()
    drifted = state(hashrate_hs={"5s": 106.0, "1m": 100.0})
    assert sent(publish_filter.offer(drifted)) == [drifted]


def test_absolute_deadband_on_list_items() -> None:
    publish_filter, _ = primed()
    warm = state(boards=[{"temperature_c": 61.9}, {"temperature_c": 61.0}])
    assert publish_filter.offer(warm) == Decision()
    hot = state(boards=[{"temperature_c": 62.0}, {"temperature_c": 61.0}])
    assert sent(publish_filter.offer(hot)) == [hot]


def test_a_value_that_appears_or_turns_null_publishes_even_inside_a_deadband() -> None:
    publish_filter, _ = primed()
    gone = state(hashrate_hs={"5s": None, "1m": 100.0})
    assert sent(publish_filter.offer(gone)) == [gone]


def test_quiet_fields_ride_along_but_never_publish_alone() -> None:
    publish_filter, _ = primed()
    assert publish_filter.offer(state(uptime_s=20, shares={"accepted": 9})) == Decision()
    changed = state(uptime_s=30, shares={"accepted": 12}, firmware="v2")
    assert sent(publish_filter.offer(changed)) == [changed]


def test_any_other_change_publishes() -> None:
    publish_filter, _ = primed()
    assert sent(publish_filter.offer(state(firmware="v2"))) == [state(firmware="v2")]
    board_lost = state(firmware="v2", boards=[{"temperature_c": 60.0}])
    assert sent(publish_filter.offer(board_lost)) == [board_lost]


@pytest.mark.parametrize(
    ("before", "after"),
    [(1, 1.0), (True, 1), (0, False), ("v1", {"v": 1}), ({"v": 1}, "v1"), ("v1", None), ("v1", [])],
)
def test_a_value_of_another_type_or_shape_is_a_change_even_when_equal(
    before: Any, after: Any
) -> None:
    """Unchanged keys are skipped without a call per key: 1 == 1.0 == True must still count
    (next to a quiet change, so that the state as a whole differs)."""
    publish_filter, _ = make()
    publish_filter.offer(state(firmware=before))
    retyped = state(firmware=after, uptime_s=11)
    assert sent(publish_filter.offer(retyped)) == [retyped]


def test_a_key_that_appears_or_goes_publishes() -> None:
    publish_filter, _ = primed()
    added = {**state(), "model": "M30S"}
    assert sent(publish_filter.offer(added)) == [added]
    assert sent(publish_filter.offer(state())) == [state()]


def test_max_interval_republishes_a_state_inside_its_deadbands() -> None:
    publish_filter, clock = make({"max_interval": "60s"})
    publish_filter.offer(state())
    clock.now += 59.9
    assert publish_filter.offer(state(uptime_s=69)) == Decision()
    clock.now += 0.1
    assert sent(publish_filter.offer(state(uptime_s=70))) == [state(uptime_s=70)]


def test_max_interval_defaults_to_state_refresh() -> None:
    publish_filter, clock = make(refresh=120.0)
    publish_filter.offer(state())
    clock.now += 119
    assert publish_filter.offer(state()) == Decision()
    clock.now += 1
    assert sent(publish_filter.offer(state())) == [state()]


@pytest.mark.parametrize(
    "change",
    [
        {"mining": False},
        {"errors": ["329 since 2026-12-03"]},
        {"pool": {"url": "stratum+tcp://b:3333"}},
    ],
)
def test_immediate_fields_pass_debounce_throttle_and_device_patterns(
    change: dict[str, Any],
) -> None:
    publish_filter, _ = primed(
        {"debounce": "30s", "throttle": "5m", "quiet": ["*"], "deadband": {"*": 1000}}
    )
    assert sent(publish_filter.offer(state(**change))) == [state(**change)]


def test_force_publishes_at_once_even_unchanged() -> None:
    publish_filter, _ = primed({"throttle": "5m"})
    assert sent(publish_filter.offer(state(), force=True)) == [state()]


def test_throttle_holds_the_newest_state_until_the_window_ends() -> None:
    publish_filter, clock = primed({"throttle": "60s"})  # published at 1000
    first = publish_filter.offer(state(firmware="v2"))
    assert first == Decision((), 1060.0)
    clock.now += 10
    newer = state(firmware="v3", uptime_s=30)
    assert publish_filter.offer(newer) == Decision((), 1060.0)
    clock.now = 1059.0
    assert publish_filter.due() == Decision((), 1060.0)
    clock.now = 1060.0
    assert sent(publish_filter.due()) == [newer]
    assert publish_filter.due() == Decision()


def test_throttle_lets_a_change_through_once_its_window_is_over() -> None:
    publish_filter, _ = primed({"throttle": "5s"})
    assert sent(publish_filter.offer(state(firmware="v2"))) == [state(firmware="v2")]


def test_debounce_waits_for_later_polls_and_sends_the_newest() -> None:
    publish_filter, clock = primed({"debounce": "15s"})  # now 1010
    assert publish_filter.offer(state(firmware="v2")) == Decision((), 1025.0)
    clock.now += 10
    newer = state(firmware="v3")
    assert publish_filter.offer(newer) == Decision((), 1035.0)  # restarted by the change
    clock.now += 10
    quiet_only = state(firmware="v3", uptime_s=40)
    assert publish_filter.offer(quiet_only) == Decision((), 1035.0)  # held state refreshed
    clock.now = 1035.0
    assert sent(publish_filter.due()) == [quiet_only]


def test_debounce_ignore_sends_the_held_state_before_its_field_changes() -> None:
    publish_filter, clock = primed({"debounce": "15s", "debounce_ignore": ["firmware"]})
    assert publish_filter.offer(state(firmware="v2")) == Decision((), 1025.0)
    clock.now += 5
    decision = publish_filter.offer(state(firmware="v3"))
    assert sent(decision) == [state(firmware="v2")]
    assert decision.recheck_at == 1030.0
    clock.now = 1030.0
    assert sent(publish_filter.due()) == [state(firmware="v3")]


def test_filtered_attributes_leave_the_state_and_never_trigger() -> None:
    publish_filter, _ = make({"filtered_attributes": ["boards.*.temperature_c", "firmware"]})
    first = sent(publish_filter.offer(state()))[0]
    assert "firmware" not in first
    assert first["boards"] == [{}, {}]
    assert first["hashrate_hs"] == state()["hashrate_hs"]
    assert publish_filter.offer(state(firmware="v9")) == Decision()


def test_device_patterns_come_before_the_kinds() -> None:
    publish_filter, _ = primed({"deadband": {"uptime_s": 0}, "quiet": ["*hashrate_hs*"]})
    assert sent(publish_filter.offer(state(uptime_s=11))) == [state(uptime_s=11)]
    assert publish_filter.offer(state(uptime_s=11, hashrate_hs={"5s": 1.0})) == Decision()


def test_the_kinds_patterns_match_their_documented_fields() -> None:
    for catalog in (WHATSMINER, XMRIG):
        defaults = catalog.publish
        patterns = [*defaults.immediate, *defaults.deadband, *defaults.quiet]
        assert pattern_problems(catalog, patterns, "defaults") == []


def test_a_pattern_matching_no_field_is_reported() -> None:
    problems = pattern_problems(XMRIG, ["hashrate_hs.*", "hasrate*"], "publish.quiet")
    assert problems == [
        "publish.quiet: 'hasrate*' matches no state field of XMRig (patterns are globs "
        "over dotted paths, e.g. 'boards.*.temperature_c')"
    ]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"deadband": {"power_w": "lots"}}, "deadband"),
        ({"throttle": -1}, "negative"),
        ({"max_interval": 0}, "positive"),
        ({"filtred_attributes": []}, "Extra inputs"),
    ],
)
def test_bad_publish_tables_are_refused(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PublishConfig.model_validate(table)


# config ----------------------------------------------------------------------------------

WHATSMINER_ENTRY = """
[[devices]]
id = "wm-17"
kind = "whatsminer"
host = "10.0.0.17"
"""


def test_the_readme_example_loads(tmp_path: Path) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("### Publish filters", 1)[1]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "config.toml"
    path.write_text(example)
    publish = load_config(path, environ={}, kinds=KINDS).settings.devices[0].publish
    assert publish.deadband == {"power_w": 25, "*hashrate_hs*": "3%"}
    assert publish.max_interval == 120.0
    assert publish.filtered_attributes == ["network.*", "boards.*.chip_data"]


def test_kind_defaults_carry_a_publish_table(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[defaults.whatsminer]\npublish = { throttle = "30s" }\n' + WHATSMINER_ENTRY)
    device = load_config(path, environ={}, kinds=KINDS).settings.devices[0]
    assert device.publish.throttle == 30.0


def test_bad_publish_config_is_a_clear_startup_error(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        WHATSMINER_ENTRY
        + '[devices.publish]\nquiet = ["fan_rpm.*"]\ndeadband = { power_w = "2 W" }\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={}, kinds=KINDS)
    problems = "\n".join(caught.value.problems)
    assert "publish.deadband" in problems and "'2 W' is not a deadband" in problems
    path.write_text(WHATSMINER_ENTRY + '[devices.publish]\nquiet = ["fan_rpm.*"]\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={}, kinds=KINDS)
    assert caught.value.problems == [
        f"{path}: device 'wm-17': publish.quiet: 'fan_rpm.*' matches no state field of "
        "Whatsminer (patterns are globs over dotted paths, e.g. 'boards.*.temperature_c')"
    ]


def test_devices_with_equal_publish_tables_share_one_set_of_rules_and_path_verdicts() -> None:
    """A fleet is mostly one kind's defaults: per device copies of the bands and of every
    state path looked at were ~15 KB a Whatsminer."""
    clock = Clock()
    one = PublishFilter(FilterRules.build(KIND, {"deadband": {"power_w": 5}}, 300), clock)
    two = PublishFilter(FilterRules.build(KIND, {"deadband": {"power_w": 5}}, 300), clock)
    other = PublishFilter(FilterRules.build(KIND, {"deadband": {"power_w": 9}}, 300), clock)
    assert one.rules is two.rules and one.rules is not other.rules
    one.offer({"power_w": 100})
    assert two.offer({"power_w": 100}).payloads  # each filter still decides for itself
    assert one.offer({"power_w": 103}) == Decision()  # inside the device's band of 5
    assert other.offer({"power_w": 100}).payloads
    assert other.offer({"power_w": 108}) == Decision()  # inside its own band of 9
    assert two.offer({"power_w": 106}).payloads  # past 5: the shared rules are the 5 ones


def test_a_held_state_shares_what_did_not_change_with_the_state_last_published() -> None:
    """A device keeps two states, its latest and the one last published: equal parts are one
    object, not two copies; the values of neither change."""
    publish_filter, _ = make()
    first = state()
    assert publish_filter.offer(first).payloads
    second = state(uptime_s=11, boards=[{"temperature_c": 60.0}, {"temperature_c": 61.5}])
    assert publish_filter.offer(second) == Decision()  # quiet uptime, a move inside the band
    assert first == state()
    assert second == state(uptime_s=11, boards=[{"temperature_c": 60.0}, {"temperature_c": 61.5}])
    assert publish_filter.published is first
    assert second["hashrate_hs"] is first["hashrate_hs"]
    assert second["boards"][0] is first["boards"][0]
    assert second["boards"][1] is not first["boards"][1]
    assert second["uptime_s"] == 11
