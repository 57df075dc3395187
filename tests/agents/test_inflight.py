"""The worker-wide ceiling on examples in flight (agents/inflight.py): however many stage
handlers want a slot, at most `limit` hold one, and the gauges say so."""

from __future__ import annotations

import asyncio

import pytest

from agents import metrics
from agents.inflight import InFlight


async def test_at_most_limit_records_are_handled_at_once() -> None:
    slots = InFlight(3)
    now = 0
    seen: list[int] = []

    async def handler() -> None:
        nonlocal now
        async with slots.slot():
            now += 1
            seen.append(now)
            await asyncio.sleep(0.01)
            now -= 1

    await asyncio.gather(*(handler() for _ in range(20)))
    assert max(seen) == 3 and len(seen) == 20
    assert (slots.taken, slots.peak) == (0, 3)
    assert metrics.EXAMPLES_IN_FLIGHT._value.get() == 0
    assert metrics.EXAMPLES_IN_FLIGHT_PEAK._value.get() == 3
    assert metrics.EXAMPLES_IN_FLIGHT_LIMIT._value.get() == 3


async def test_a_record_waits_until_a_slot_is_given_back() -> None:
    slots = InFlight(1)
    release = asyncio.Event()

    async def holder() -> None:
        async with slots.slot():
            await release.wait()

    first = asyncio.create_task(holder())
    await asyncio.sleep(0)
    second = asyncio.create_task(holder())
    await asyncio.sleep(0.05)
    assert slots.taken == 1 and not second.done()
    release.set()
    await asyncio.wait_for(asyncio.gather(first, second), 1)
    assert slots.peak == 1


async def test_a_handler_that_raises_gives_its_slot_back() -> None:
    slots = InFlight(1)
    with pytest.raises(RuntimeError):
        async with slots.slot():
            raise RuntimeError("boom")
    async with asyncio.timeout(1), slots.slot():
        assert slots.taken == 1
    assert slots.taken == 0


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError):
        InFlight(0)
