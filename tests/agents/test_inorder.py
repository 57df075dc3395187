"""The stage runner's in-order bookkeeping (agents/inorder.py): records finish in any order,
their outputs and offsets leave in offset order, and only as a contiguous done prefix."""

from __future__ import annotations

import random

from agents.inorder import InOrder


def test_a_later_record_done_first_waits_for_the_earlier_one() -> None:
    order: InOrder[str] = InOrder()
    for offset in (10, 11, 12):
        assert order.add(offset)
    order.done(12, "c")
    order.done(11, "b")
    assert order.take() == ([], None)  # 10 still running: nothing may be written
    assert len(order) == 3
    order.done(10, "a")
    assert order.take() == (["a", "b", "c"], 13)
    assert len(order) == 0
    assert order.take() == ([], None)


def test_take_stops_at_the_first_unfinished_record() -> None:
    order: InOrder[int] = InOrder()
    for offset in range(5):
        order.add(offset)
    for offset in (0, 1, 3, 4):
        order.done(offset, offset)
    assert order.take() == ([0, 1], 2)
    assert order.take() == ([], None)
    order.done(2, 2)
    assert order.take() == ([2, 3, 4], 5)


def test_offsets_not_past_the_last_added_are_refused() -> None:
    """A record fetched again (after a seek) is not tracked twice."""
    order: InOrder[int] = InOrder()
    assert order.add(5) and order.add(7)  # gaps (compaction, transaction markers) are fine
    assert not order.add(7) and not order.add(6) and not order.add(3)
    assert len(order) == 2
    order.done(7, 7)
    order.done(5, 5)
    assert order.take() == ([5, 7], 8)


def test_random_completion_orders_always_yield_offset_order() -> None:
    rng = random.Random(7)
    for _ in range(200):
        order: InOrder[int] = InOrder()
        offsets = sorted(rng.sample(range(1000), rng.randint(1, 40)))
        for offset in offsets:
            order.add(offset)
        finished = offsets[:]
        rng.shuffle(finished)
        out: list[int] = []
        commits: list[int] = []
        for offset in finished:
            order.done(offset, offset)
            results, after = order.take()
            out.extend(results)
            if after is not None:
                commits.append(after)
                # every record below the commit point is done and handed out
                assert all(o in out for o in offsets if o < after)
        assert out == offsets
        assert commits == sorted(commits) and commits[-1] == offsets[-1] + 1
