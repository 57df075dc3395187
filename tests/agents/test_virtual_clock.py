"""The virtual clock the timing tests run on (tests/agents/virtual_clock.py): timers take
exactly their length, CPU work and socket round trips take none."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.agents.virtual_clock import run_on_virtual_clock


def test_sleeps_are_exact_and_cpu_work_is_free() -> None:
    async def main() -> tuple[float, float]:
        clock = asyncio.get_running_loop().time
        t0 = clock()
        end = time.monotonic() + 0.05
        while time.monotonic() < end:  # 50 ms of CPU
            pass
        busy = clock() - t0
        await asyncio.gather(asyncio.sleep(3600), asyncio.sleep(1800))
        return busy, clock() - t0

    wall = time.monotonic()
    busy, slept = run_on_virtual_clock(main)
    assert busy == 0.0 and slept == 3600.0
    assert time.monotonic() - wall < 30  # an hour of sleeps in a moment


def test_a_socket_round_trip_takes_the_server_latency_only() -> None:
    async def main() -> float:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readexactly(4)
            await asyncio.sleep(0.25)  # the server's work
            writer.write(b"pong")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        clock = asyncio.get_running_loop().time
        t0 = clock()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"pong"
        elapsed = clock() - t0
        writer.close()
        server.close()
        await server.wait_closed()
        return elapsed

    assert run_on_virtual_clock(main) == pytest.approx(0.25, abs=1e-9)
