"""Fixtures of the agents' tests: real model servers (the simulator in-process) to drive the
HTTP clients against. Test modules load them with ``pytest_plugins``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from editstream.simulator.server import RunningSimulator, SimulatorConfig, start_simulator

StartSim = Callable[..., Awaitable[RunningSimulator]]


@pytest.fixture
async def start_sim() -> AsyncIterator[StartSim]:
    """Start simulators with given config fields; all are stopped after the test."""
    running: list[RunningSimulator] = []

    async def start(**fields: Any) -> RunningSimulator:
        sim = await start_simulator(SimulatorConfig(**fields))
        running.append(sim)
        return sim

    yield start
    for sim in running:
        await sim.stop()
