"""The agent's collector policy (agent.runtime.collector): what is frozen, and what a reload
gives back. gc state is process-wide, so every test leaves nothing frozen."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from agent.runtime.collector import FULL_COLLECTION_EVERY, MAX_SETTLE_S, HeapSettler


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


@pytest.fixture(autouse=True)
def nothing_frozen_after() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_settle_delay_is_the_first_poll_spread_plus_one_interval_and_bounded() -> None:
    assert HeapSettler.settle_delay([10.0, 5.0]) == 20.0
    assert HeapSettler.settle_delay([60.0]) == 90.0  # first polls spread over at most 30 s
    assert HeapSettler.settle_delay([600.0]) == MAX_SETTLE_S
    assert HeapSettler.settle_delay([]) == 20.0


def test_freeze_collects_garbage_first_and_hides_the_rest_from_the_collector() -> None:
    garbage = Node()
    gone = weakref.ref(garbage)
    del garbage
    kept = Node()
    HeapSettler().freeze()
    assert gone() is None  # collected before freezing: no cycle is frozen for good
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold()[2] == FULL_COLLECTION_EVERY  # full collections are rarer
    assert not any(o is kept for o in gc.get_objects())  # frozen objects are not tracked


def test_thaw_lets_a_replaced_worker_cycle_be_collected() -> None:
    replaced = Node()
    gone = weakref.ref(replaced)
    settler = HeapSettler()
    settler.freeze()
    del replaced
    gc.collect()
    assert gone() is not None  # frozen: a full collection does not look at it
    settler.thaw()
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert gone() is None


def test_settle_after_freezes_once_on_the_loop_and_a_thaw_cancels_a_pending_one() -> None:
    async def scenario() -> tuple[int, int]:
        settler = HeapSettler()
        done = asyncio.Event()
        original = settler.freeze

        def freeze() -> None:
            original()
            done.set()

        settler.freeze = freeze  # type: ignore[method-assign]
        settler.settle_after(0.0)
        settler.settle_after(0.0)  # rescheduled, not doubled
        await asyncio.wait_for(done.wait(), 5)
        first = settler.freezes
        settler.settle_after(3600.0)
        settler.thaw()  # a reload before the pending freeze: it must not fire later
        return first, int(settler._timer is None)

    first, cancelled = asyncio.run(scenario())
    assert first == 1
    assert cancelled == 1


def test_settle_waits_for_the_fleet_to_have_polled() -> None:
    async def scenario() -> list[bool]:
        settler = HeapSettler()
        done = asyncio.Event()
        asked: list[bool] = []
        original = settler.freeze

        def freeze() -> None:
            original()
            done.set()

        def settled() -> bool:
            asked.append(len(asked) >= 2)  # the fleet is up at the third look
            return asked[-1]

        settler.freeze = freeze  # type: ignore[method-assign]
        settler.settle_after(0.001, settled)
        await asyncio.wait_for(done.wait(), 5)
        assert settler.freezes == 1
        return asked

    assert asyncio.run(scenario()) == [False, False, True]
