"""Adaptive sampling in the sampler: the student client against the real simulator (seeds
line up with the full run, the band decided is the score stage's, the off switch)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

import schemas
from agents.models import StudentClient
from editstream.sessions.generate import GenerateConfig, generate_events
from editstream.simulator.server import RunningSimulator, SimulatorConfig, start_simulator
from streams.models import Endpoint
from streams.sample import policy_for, sample_distance, sample_example
from streams.score import score_example
from streams.settings import Settings
from streams.settle import settle_events


@pytest.fixture(scope="module")
def examples() -> list[dict[str, Any]]:
    evs = generate_events(GenerateConfig(seed=3, sessions=12))
    settled = [r for r in settle_events(evs) if r["settle_reason"] == "quiescence"][:12]
    return [{**r, "pipeline_version": "v1"} for r in settled]  # as the settle agent sends it


@pytest.fixture
async def sim() -> AsyncIterator[RunningSimulator]:
    running = await start_simulator(SimulatorConfig())
    yield running
    await running.stop()


@pytest.fixture
async def sim_no_n() -> AsyncIterator[RunningSimulator]:
    running = await start_simulator(SimulatorConfig(accept_n=False))
    yield running
    await running.stop()


def client(sim: RunningSimulator) -> StudentClient:
    return StudentClient(Endpoint(sim.url, "student", max_retries=0), max_in_flight=16)


async def test_adaptive_samples_are_a_prefix_of_the_full_run(
    sim: RunningSimulator, sim_no_n: RunningSimulator, examples: list[dict[str, Any]]
) -> None:
    on = Settings(samples=30)
    off = on.replace(adaptive_sampling=False)
    stopped_early = 0
    async with client(sim) as c, client(sim_no_n) as c_par:
        for ex in examples:
            full = await sample_example(ex, c, off)
            adaptive = await sample_example(ex, c, on)
            parallel = await sample_example(ex, c_par, on)
            k = adaptive["adaptive"]["drawn"]
            assert adaptive["samples"] == full["samples"][:k]
            assert parallel["samples"] == adaptive["samples"]  # parallel mode: seed + j too
            assert parallel["student"]["mode"] == "parallel"
            assert len(adaptive["latencies_ms"]) == k
            stopped_early += k < 30
            assert not schemas.errors("student-samples", adaptive)
    assert stopped_early > 0


async def test_decided_band_is_the_score_stage_band(
    sim: RunningSimulator, examples: list[dict[str, Any]]
) -> None:
    settings = Settings()
    async with client(sim) as c:
        for ex in examples:
            rec = await sample_example(ex, c, settings)
            info = rec["adaptive"]
            assert info["cap"] == 50 and info["drawn"] == len(rec["samples"])
            assert info["decided"] is not None or info["drawn"] == 50  # undecided: all drawn
            all_d = [sample_distance(ex, t, "zeta1", f)
                     for t, f in zip(rec["samples"], rec["finish_reasons"], strict=True)]
            dists = [d for d in all_d if d is not None]  # valid samples only
            assert info["distances"] == dists
            assert policy_for(settings).decide(dists, info["drawn"]) == info["decided"]
            scores = score_example(rec, settings)["scores"]
            valid = [s["distance"] for s in scores if not s.get("invalid")]
            assert valid == dists  # what score computes, reusable
            if info["decided"] is not None:
                assert score_example(rec, settings)["band"] == info["decided"]


async def test_off_switch_draws_n_in_one_request(
    sim: RunningSimulator, examples: list[dict[str, Any]]
) -> None:
    settings = Settings(samples=20, adaptive_sampling=False)
    async with client(sim) as c:
        rec = await sample_example(examples[0], c, settings)
    assert "adaptive" not in rec
    assert len(rec["samples"]) == 20 and rec["requests"] == 1
