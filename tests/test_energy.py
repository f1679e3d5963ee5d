"""Energy counters: trapezoidal integration, gaps, the site sum, persistence, never backwards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.runtime.energy import (
    FILE_NAME,
    SAVE_INTERVAL_S,
    SITE_KEY,
    EnergyBook,
    EnergyMeter,
    state_directory,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_trapezoid_of_a_ramp_is_its_average_power_times_time() -> None:
    meter = EnergyMeter()
    assert meter.add(0.0, 1000, max_gap_s=30) == 0.0  # the first reading earns nothing
    meter.add(10.0, 2000, max_gap_s=30)  # 1.5 kW for 10 s
    meter.add(20.0, 2000, max_gap_s=30)  # 2 kW for 10 s
    assert meter.total_kwh == pytest.approx((1500 * 10 + 2000 * 10) / 3_600_000)


def test_no_credit_across_a_gap_longer_than_the_limit_and_after_junk() -> None:
    meter = EnergyMeter()
    meter.add(0.0, 3600, max_gap_s=30)
    assert meter.add(31.0, 3600, max_gap_s=30) == 0.0  # the device was not read for 31 s
    assert meter.add(61.0, 3600, max_gap_s=30) == pytest.approx(0.03)  # 30 s at 3.6 kW
    for junk in (None, "1200", -5, float("nan"), True):
        assert meter.add(62.0, junk, max_gap_s=30) == 0.0
        assert meter.last is None  # the next reading starts a new chain
    assert meter.add(70.0, 3600, max_gap_s=30) == 0.0
    assert meter.total_kwh == pytest.approx(0.03)


def feed(book: EnergyBook, clock: Clock, device: str, watts: float, seconds: int) -> dict:
    state: dict = {}
    for _ in range(seconds):
        state = {"power_w": watts}
        book.record(device, 1.0, state)
        clock.now += 1
    return state


def test_published_value_moves_only_when_written_and_a_crash_never_goes_backwards(
    tmp_path: Path,
) -> None:
    clock = Clock()
    book = EnergyBook(tmp_path, clock=clock)
    state = feed(book, clock, "wm0", 3600.0, 30)
    assert state["energy_kwh"] == 0.0  # seen, but nothing written yet
    assert not (tmp_path / FILE_NAME).exists()
    state = feed(book, clock, "wm0", 3600.0, int(SAVE_INTERVAL_S) + 1)
    on_disk = json.loads((tmp_path / FILE_NAME).read_text())["kwh"]["wm0"]
    assert on_disk == pytest.approx(3.6 * 60 / 3600, rel=0.02)
    assert state["energy_kwh"] == round(on_disk, 6)
    published = [feed(book, clock, "wm0", 3600.0, 1)["energy_kwh"] for _ in range(20)]
    assert max(published) <= on_disk  # ahead of the file nothing is published
    # A crash now loses the running sum; the restarted counter starts from the file.
    reborn = EnergyBook(tmp_path, clock=clock)
    assert feed(reborn, clock, "wm0", 3600.0, 1)["energy_kwh"] >= max(published)


def test_clean_shutdown_keeps_everything_and_the_file_is_replaced_atomically(
    tmp_path: Path,
) -> None:
    clock = Clock()
    book = EnergyBook(tmp_path, members=["wm0", "wm1"], clock=clock)
    feed(book, clock, "wm0", 7200.0, 11)
    feed(book, clock, "wm1", 3600.0, 11)
    feed(book, clock, "wm9", 3600.0, 11)  # not a member: not in the site sum
    book.save()
    assert [p.name for p in tmp_path.iterdir()] == [FILE_NAME]  # no temporary file left behind
    saved = json.loads((tmp_path / FILE_NAME).read_text())["kwh"]
    assert saved["wm0"] == pytest.approx(7.2 * 10 / 3600)
    assert saved[SITE_KEY] == pytest.approx(saved["wm0"] + saved["wm1"])
    assert book.site_state()["site_kwh"] == round(saved[SITE_KEY], 6)
    again = EnergyBook(tmp_path, members=["wm0", "wm1"], clock=clock)
    assert again.published("wm9") == round(saved["wm9"], 6)


def test_a_device_never_read_has_no_value_and_an_unreadable_file_starts_from_zero(
    tmp_path: Path,
) -> None:
    (tmp_path / FILE_NAME).write_text("{not json")
    clock = Clock()
    book = EnergyBook(tmp_path, clock=clock)
    state: dict = {"power_w": None}
    book.record("cpu-rig", 1.0, state)
    assert state["energy_kwh"] is None
    feed(book, clock, "wm0", 100.0, 3)
    book.save()
    assert json.loads((tmp_path / FILE_NAME).read_text())["kwh"]["wm0"] > 0


def test_a_directory_that_cannot_be_written_keeps_counting_in_memory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    clock = Clock()
    book = EnergyBook(blocker / "state", clock=clock)  # a path below a file: never writable
    feed(book, clock, "wm0", 3600.0, 5)
    book.save()  # logs a warning, raises nothing
    assert book.published("wm0") == 0.0
    assert book.meters["wm0"].total_kwh > 0


def test_state_directory_prefers_config_then_systemd_then_xdg(tmp_path: Path) -> None:
    assert state_directory("/srv/ea", {"STATE_DIRECTORY": "/x"}) == Path("/srv/ea")
    assert state_directory(None, {"STATE_DIRECTORY": "/var/lib/edge-agent:/y"}) == Path(
        "/var/lib/edge-agent"
    )
    assert state_directory(None, {"XDG_STATE_HOME": str(tmp_path)}) == tmp_path / "edge-agent"


def test_the_file_is_written_at_most_once_a_minute(tmp_path: Path) -> None:
    clock = Clock()
    book = EnergyBook(tmp_path, clock=clock)
    versions = set()
    for _ in range(int(SAVE_INTERVAL_S * 5)):  # five minutes of one-second polls
        feed(book, clock, "wm0", 1000.0, 1)
        path = tmp_path / FILE_NAME
        if path.exists():
            versions.add(path.read_text())  # the running sum grew: every write differs
    assert 4 <= len(versions) <= 5
