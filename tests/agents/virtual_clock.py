"""An asyncio event loop on a virtual clock, for tests whose subject is timing.

The adaptive limit decides on latencies. Against an in-process server over real sockets,
the latency the client measures on the wall clock is the server's work *plus* the CPU time
client and server spend on HTTP, JSON and scheduling. On a machine whose cores are shared,
that CPU time stretches with the load: a burst of 64 requests that takes a few ms on an idle
core took 100+ ms under load, read as queueing (latency +40 % at 64 in flight), and the limit
stopped growing short of a 64-slot server's ceiling. On this loop's clock CPU work takes no
time at all: the clock moves only when every task waits for a timer and no socket has
anything to read, and then it jumps to the next timer. Sleeps, server latencies and timeouts
take exactly their length, whatever the load, so what such a test checks is the logic.

Everything stays real except the clock: sockets, HTTP, both ends' code. It assumes the loop
waits on nothing outside its thread but in-process peers on loopback (no executor threads,
no other processes): a loopback write is readable on the other end when the write returns,
so "no socket ready" means nothing is on its way. The clock reads through ``loop.time()``;
code that times itself with ``time.monotonic()`` still sees the wall clock (the model
clients time requests on their loop's clock for this reason).
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from editstream.simulator.server import RunningSimulator, SimulatorConfig, start_simulator

T = TypeVar("T")
StartSim = Callable[..., Awaitable[RunningSimulator]]

# A last real wait before the clock jumps (s): hands the CPU over once, so anything the
# kernel still had to deliver surfaces; costs 1 ms of wall time per jump, not per request.
_SETTLE_S = 0.001


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """A selector event loop whose ``time()`` is a virtual clock (see the module docstring);
    it starts at 0."""

    def __init__(self) -> None:
        super().__init__()
        self._now = 0.0
        selector: selectors.BaseSelector = self._selector  # type: ignore[attr-defined]
        real_select = selector.select

        def select(timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
            ready = real_select(0)
            if ready or timeout == 0:  # work to do now: the clock stands still
                return ready
            if timeout is None:  # no timer at all: only a socket can wake us, wait for it
                return real_select(None)
            ready = real_select(_SETTLE_S)
            if not ready:  # idle until the next timer: jump to it
                self._now += timeout
            return ready

        selector.select = select  # type: ignore[method-assign]

    def time(self) -> float:
        return self._now


def run_on_virtual_clock(main: Callable[[], Awaitable[T]]) -> T:
    """Run ``main()`` to completion on a fresh :class:`VirtualClockLoop`."""

    async def wrapped() -> T:
        return await main()

    with asyncio.Runner(loop_factory=VirtualClockLoop) as runner:
        return runner.run(wrapped())


def on_virtual_clock(test: Callable[[StartSim], Awaitable[None]]) -> Callable[[], None]:
    """Make ``async def test(start_sim)`` a test that runs on a virtual clock, with a
    ``start_sim`` of its own on that loop (as the fixture in tests/agents/fixtures.py: start
    simulators with config fields; all are stopped after the test)."""

    async def main() -> None:
        running: list[RunningSimulator] = []

        async def start(**fields: Any) -> RunningSimulator:
            sim = await start_simulator(SimulatorConfig(**fields))
            running.append(sim)
            return sim

        try:
            await test(start)
        finally:
            for sim in running:
                await sim.stop()

    def run() -> None:
        run_on_virtual_clock(main)

    run.__name__, run.__qualname__, run.__doc__ = test.__name__, test.__qualname__, test.__doc__
    return run
