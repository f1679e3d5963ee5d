"""Site power allocation: one target in watts → an awake set and a percent per miner.

Pure functions, no I/O, so every rule is unit-tested on its own:
- Merit order: the most efficient miners (lowest J/TH) get power first; XMRig rigs, whose
  efficiency is unknown in J/TH, come last.
- Below the sum of the awake miners' floors, whole miners sleep, least efficient first. A
  sleeping miner wakes only when the target clears its floor by a hysteresis margin.
- Above the floors, the budget fills miners in merit order up to 100 %: small target changes
  move one marginal miner instead of rewriting the whole fleet.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

WAKE_MARGIN = 0.15  # a sleeper wakes when the target clears its floor by 15 % of that floor


@dataclass(slots=True)
class MemberModel:
    """What the controller knows of one member miner."""

    id: str
    switch_only: bool  # XMRig: on (nominal) or off, no percent
    full_w: float  # power at 100 % (learned from readings; nominal_w for XMRig)
    floor_percent: float  # lowest percent it runs stably at
    standby_w: float  # power while asleep
    efficiency_j_th: float  # merit order; math.inf for XMRig
    awake: bool = True  # currently mining (or planned to)
    gain: float = 1.0  # measured ÷ expected at the current percent (closed loop)

    @property
    def floor_w(self) -> float:
        return self.full_w if self.switch_only else self.full_w * self.floor_percent / 100


@dataclass(frozen=True, slots=True)
class Assignment:
    awake: bool
    percent: int | None  # None for switch-only members and sleepers
    planned_w: float


def merit_order(members: Iterable[MemberModel]) -> list[MemberModel]:
    return sorted(members, key=lambda m: (m.switch_only, m.efficiency_j_th, m.id))


def fleet_max_w(members: Iterable[MemberModel]) -> float:
    return sum(m.full_w for m in members)


def fleet_min_w(members: Iterable[MemberModel]) -> float:
    return sum(m.standby_w for m in members)


def choose_awake(target_w: float, ordered: Sequence[MemberModel]) -> set[str]:
    """The longest merit-order prefix whose floors fit the target (others on standby)."""
    budget = target_w - fleet_min_w(ordered)
    awake: set[str] = set()
    for member in ordered:
        cost = member.floor_w - member.standby_w
        margin = 0.0 if member.awake else WAKE_MARGIN * member.floor_w
        if cost + margin > budget:
            break
        budget -= cost
        awake.add(member.id)
    return awake


def allocate(target_w: float, members: Sequence[MemberModel]) -> dict[str, Assignment]:
    ordered = merit_order(members)
    awake = choose_awake(target_w, ordered)
    budget = target_w - sum(m.floor_w if m.id in awake else m.standby_w for m in ordered)
    plan: dict[str, Assignment] = {}
    for member in ordered:
        if member.id not in awake:
            plan[member.id] = Assignment(False, None, member.standby_w)
        elif member.switch_only:
            plan[member.id] = Assignment(True, None, member.full_w)
        else:
            extra = max(0.0, min(budget, member.full_w - member.floor_w))
            budget -= extra
            plan[member.id] = _percent_for(member, member.floor_w + extra)
    return plan


def _percent_for(member: MemberModel, watts: float) -> Assignment:
    """The percent to write so that the miner lands at `watts`, given how it has landed so far."""
    wanted = watts / member.full_w * 100 / max(member.gain, 0.05)
    percent = int(min(100, max(member.floor_percent, math.floor(wanted + 0.5))))
    return Assignment(True, percent, min(watts, member.full_w))
