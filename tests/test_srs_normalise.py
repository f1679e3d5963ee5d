"""SRS normalisation against the replies captured from a real SRS 7.0.18 (fixtures/srs-real)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from agent.devices.srs.catalog import CATALOG
from agent.devices.srs.client import Identity, Listing
from agent.devices.srs.driver import StreamTracker, normalise, watch_slugs

CAPTURES = Path(__file__).resolve().parent / "fixtures" / "srs-real"


def capture(name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((CAPTURES / f"{name}.json").read_text())
    return body


def identity(body: dict[str, Any]) -> Identity:
    return Identity(body["server"], body["service"], body["pid"])


def real_state(
    *, steady: bool = False, watch: tuple[str, ...] = (), truncated: bool = False
) -> dict[str, Any]:
    suffix = "_steady" if steady else ""
    summaries = capture(f"v1_summaries{suffix}")
    return normalise(
        summaries["data"],
        capture("v1_vhosts")["vhosts"],
        Listing(capture(f"v1_streams{suffix}")["streams"], truncated=truncated, requests=1),
        Listing(capture(f"v1_clients{suffix}")["clients"], truncated=False, requests=1),
        watch_slugs(watch),
        identity(summaries),
    )


def test_server_figures_come_from_summaries_and_vhosts() -> None:
    server = real_state()["server"]
    assert server["id"] == "vid-gu21zdq"
    assert server["service_id"] == "x640j197"
    assert server["pid"] == 16460
    assert server["version"] == "7.0.18"
    assert server["uptime_s"] == 25
    # SRS reports fractions under *_percent names: 0.01 is 1 %.
    assert server["cpu_percent"] == 1.0
    assert server["system_cpu_percent"] == 50.0
    assert server["memory_bytes"] == 17172 * 1024
    assert server["load_average"] == [0.54, 0.42, 0.18]
    assert server["cpus"] == 2
    assert server["connections"] == 5
    assert (server["streams"], server["live_streams"], server["clients"]) == (3, 3, 5)


def test_server_bitrate_is_the_sum_of_vhost_bitrates() -> None:
    vhosts = capture("v1_vhosts")
    vhosts["vhosts"][0]["kbps"] = {"recv_30s": 558, "send_30s": 33}
    vhosts["vhosts"][1]["kbps"] = {"recv_30s": 159, "send_30s": 0}
    state = normalise(
        capture("v1_summaries")["data"],
        vhosts["vhosts"],
        Listing([], False, 1),
        Listing([], False, 1),
        {},
    )
    assert (state["server"]["kbps_in"], state["server"]["kbps_out"]) == (717, 33)


def test_streams_carry_vhost_names_codecs_and_publisher() -> None:
    streams = {row["stream"]: row for row in real_state(steady=True)["streams"]}
    assert set(streams) == {
        "studio.example/show/studio1",
        "__defaultVhost__/live/cam1",
        "__defaultVhost__/live/cam2",
    }
    cam1 = streams["__defaultVhost__/live/cam1"]
    assert cam1["publishing"] is True
    assert cam1["publisher_client"] == "187ba839"
    assert (cam1["kbps_in"], cam1["kbps_out"]) == (279, 33)
    assert cam1["video"] == {
        "codec": "H264",
        "profile": "Other",
        "level": "1.2",
        "width": 320,
        "height": 240,
    }
    assert cam1["audio"] == {
        "codec": "AAC",
        "sample_rate_hz": 44100,
        "channels": 2,
        "profile": "LC",
    }
    assert cam1["resolution"] == "320x240"
    studio = streams["studio.example/show/studio1"]
    assert studio["vhost"] == "studio.example"
    assert studio["audio"] is None  # captured publisher was video only


def test_clients_resolve_their_stream_and_kbps() -> None:
    clients = {row["id"]: row for row in real_state(steady=True)["clients"]}
    publisher = clients["187ba839"]
    assert publisher["type"] == "fmle-publish"
    assert publisher["publish"] is True
    assert publisher["stream"] == "__defaultVhost__/live/cam1"
    assert publisher["alive_s"] == pytest.approx(86.08)
    assert publisher["kbps_in"] == 279
    assert clients["f6e817fb"]["stream"] == "studio.example/show/studio1"


def test_vhosts_are_listed_with_counts() -> None:
    vhosts = {row["name"]: row for row in real_state()["vhosts"]}
    assert vhosts["__defaultVhost__"]["streams"] == 2
    assert vhosts["__defaultVhost__"]["clients"] == 4
    assert vhosts["studio.example"]["bytes_in"] == 409939
    assert vhosts["studio.example"]["hls"] is False


def test_watched_streams_are_keyed_by_slug_and_make_entities() -> None:
    state = real_state(steady=True, watch=("live/cam1", "studio.example/show/studio1", "x/y"))
    assert state["watched"]["live_cam1"] == {
        "stream": "__defaultVhost__/live/cam1",
        "live": True,
        "clients": 1,
        "kbps_in": 279,
        "kbps_out": 33,
    }
    assert state["watched"]["x_y"]["live"] is False  # not on the server at all
    keys = {e.key for e in CATALOG.entities_for(state)}
    assert {
        "stream_live_cam1_live",
        "stream_live_cam1_kbps_in",
        "stream_live_cam1_clients",
        "stream_studio_example_show_studio1_live",
    } <= keys
    assert "cpu" in keys
    # The normalised state does not know the raw API yet (the driver asks): no Reload button.
    assert state["server"]["reload_allowed"] is None and "reload" not in keys


@pytest.mark.parametrize(("allowed", "button"), [(True, True), (False, False), (None, False)])
def test_the_reload_button_exists_only_where_srs_allows_reloads(
    allowed: bool | None, button: bool
) -> None:
    state = real_state()
    state["server"]["reload_allowed"] = allowed
    reload = [e for e in CATALOG.entities_for(state) if e.key == "reload"]
    assert bool(reload) is button
    if reload:
        assert (reload[0].platform, reload[0].command) == ("button", "reload")


def test_a_watched_stream_missing_from_a_capped_listing_is_unknown_not_offline() -> None:
    state = real_state(watch=("live/elsewhere",), truncated=True)
    assert state["watched"]["live_elsewhere"]["live"] is None
    assert state["errors"] and "max_streams" in state["errors"][0]


def test_every_entity_value_path_resolves_in_the_real_state() -> None:
    state = real_state(steady=True, watch=("live/cam1",))
    for entity in CATALOG.entities_for(state):
        if entity.value is None:
            continue
        node: Any = state
        for part in entity.value.split("."):
            assert isinstance(node, dict) and part in node, f"{entity.key}: {entity.value}"
            node = node[part]


def test_odd_types_become_nulls_not_exceptions() -> None:
    summaries = copy.deepcopy(capture("v1_summaries")["data"])
    summaries["self"] = ["not", "an", "object"]
    summaries["system"]["load_1m"] = "high"
    summaries["system"]["cpu_percent"] = float("inf")
    streams = copy.deepcopy(capture("v1_streams")["streams"])
    streams[0].update(kbps="fast", publish=None, video="H264", clients=True, name=None)
    state = normalise(
        summaries,
        capture("v1_vhosts")["vhosts"],
        Listing(streams, False, 1),
        Listing([{"id": 7, "alive": "long"}], False, 1),
        {},
    )
    assert state["server"]["cpu_percent"] is None
    assert state["server"]["system_cpu_percent"] is None
    assert state["server"]["load_average"] == [None, 0.42, 0.18]
    odd = state["streams"][0]
    assert (odd["kbps_in"], odd["publishing"], odd["video"], odd["clients"]) == (
        None,
        False,
        None,
        None,
    )
    assert odd["stream"] == "studio.example/show/studio1"  # from the url when name is missing
    assert state["clients"][0] == {
        "id": "7",
        "type": None,
        "ip": None,
        "stream": "__defaultVhost__/?",
        "url": None,
        "publish": False,
        "alive_s": None,
        "kbps_in": None,
        "kbps_out": None,
    }


def test_tracker_reports_streams_that_went_live_and_stopped() -> None:
    tracker = StreamTracker()
    who = identity(capture("v1_summaries"))
    first = real_state()["streams"]
    assert tracker.update(who, first, complete=True) == []  # what was live before: no news
    fewer = [row for row in first if row["name"] != "cam2"]
    events = tracker.update(who, fewer, complete=True)
    assert events == [
        {
            "event": "stream_stopped",
            "stream": "__defaultVhost__/live/cam2",
            "stream_id": "vid-900a3ej",
            "reason": "unpublished",
        }
    ]
    events = tracker.update(who, first, complete=True)
    assert [(e["event"], e["stream"]) for e in events] == [
        ("stream_live", "__defaultVhost__/live/cam2")
    ]
    assert events[0]["publisher_client"] == "658v41p3"
    assert events[0]["video_codec"] == "H264"


def test_tracker_does_not_call_a_stream_stopped_because_a_cap_hid_it() -> None:
    tracker = StreamTracker()
    who = identity(capture("v1_summaries"))
    first = real_state()["streams"]
    tracker.update(who, first, complete=True)
    assert tracker.update(who, first[:1], complete=False) == []


def test_tracker_counts_a_restart_and_ends_every_stream_of_the_old_process() -> None:
    tracker = StreamTracker()
    before = identity(capture("v1_summaries"))
    streams = real_state()["streams"]
    tracker.update(before, streams, complete=True)
    after = Identity(before.server, "newproc1", "17001")  # SRS 5+ keeps its server id
    events = tracker.update(after, streams, complete=True)
    assert tracker.restarts == 1
    assert events[0] == {
        "event": "server_restarted",
        "server_id": "vid-gu21zdq",
        "service_id": "newproc1",
        "pid": 17001,
        "previous": {"server_id": "vid-gu21zdq", "service_id": "x640j197", "pid": 16460},
    }
    kinds = [(e["event"], e.get("reason")) for e in events[1:]]
    assert kinds.count(("stream_stopped", "server_restarted")) == 3
    assert kinds.count(("stream_live", None)) == 3
