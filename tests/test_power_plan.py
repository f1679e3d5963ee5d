"""The allocation rules of site power control, on their own (agent/power/plan.py)."""

from __future__ import annotations

import math

from agent.power.plan import MemberModel, allocate, choose_awake, merit_order


def miner(member_id: str, efficiency: float, full_w: float = 3000.0, **kw: object) -> MemberModel:
    return MemberModel(
        id=member_id,
        switch_only=False,
        full_w=full_w,
        floor_percent=50,
        standby_w=20,
        efficiency_j_th=efficiency,
        **kw,  # type: ignore[arg-type]
    )


def rig(member_id: str, nominal: float = 150.0, awake: bool = True) -> MemberModel:
    return MemberModel(
        id=member_id,
        switch_only=True,
        full_w=nominal,
        floor_percent=100,
        standby_w=0,
        efficiency_j_th=math.inf,
        awake=awake,
    )


def planned_total(plan: dict[str, object]) -> float:
    return sum(a.planned_w for a in plan.values())  # type: ignore[attr-defined]


def test_full_target_runs_everything_at_100() -> None:
    fleet = [miner("a", 30), miner("b", 35), rig("x")]
    plan = allocate(6150, fleet)
    assert plan["a"].percent == 100 and plan["b"].percent == 100
    assert plan["x"].awake is True


def test_budget_fills_the_most_efficient_first() -> None:
    fleet = [miner("worse", 38), miner("best", 29), miner("mid", 33)]
    plan = allocate(7500, fleet)
    # floors 3 x 1500 = 4500, 3000 left: best to 100 %, mid gets the remaining 1500 (to 100 %)
    assert plan["best"].percent == 100
    assert plan["mid"].percent == 100
    assert plan["worse"].percent == 50
    assert abs(planned_total(plan) - 7500) < 1


def test_one_marginal_miner_absorbs_small_changes() -> None:
    fleet = [miner("a", 30), miner("b", 31), miner("c", 32)]
    before = allocate(7000, fleet)
    after = allocate(7100, fleet)
    changed = [m for m in before if before[m].percent != after[m].percent]
    assert changed == ["b"]


def test_below_the_floors_least_efficient_sleeps_first() -> None:
    fleet = [miner("a", 30), miner("b", 34), miner("c", 38), rig("x")]
    plan = allocate(3100, fleet)
    assert plan["x"].awake is False  # XMRig rigs are the least efficient by rule
    assert plan["c"].awake is False
    assert plan["a"].awake is True
    assert planned_total(plan) <= 3100 + 1


def test_target_below_every_floor_sleeps_all() -> None:
    fleet = [miner("a", 30), miner("b", 34)]
    plan = allocate(100, fleet)
    assert not any(a.awake for a in plan.values())


def test_a_sleeper_wakes_only_past_the_hysteresis_margin() -> None:
    sleeping = miner("b", 34, awake=False)
    fleet = [miner("a", 30), sleeping]
    floors = 1500 + 1500
    assert "b" not in choose_awake(floors + 50, merit_order(fleet))
    assert "b" in choose_awake(floors + 0.15 * 1500 + 50, merit_order(fleet))
    awake_b = miner("b", 34)
    assert "b" in choose_awake(floors + 50, merit_order([miner("a", 30), awake_b]))


def test_gain_corrects_a_miner_that_lands_high() -> None:
    exact = allocate(4500, [miner("a", 30)])["a"].percent
    high = allocate(4500, [miner("a", 30, gain=1.05)])["a"].percent
    assert exact is not None and high is not None and high < exact


def test_percent_never_goes_below_the_floor_or_above_100() -> None:
    plan = allocate(1600, [miner("a", 30, gain=1.3)])
    assert plan["a"].percent == 50
    plan = allocate(3000, [miner("a", 30, gain=0.7)])
    assert plan["a"].percent == 100
