"""Target gates against the simulator's teacher erring on purpose, through the real HTTP
client: each seeded error kind is caught by its own gate (the pure checks are
tests/streams/test_gates.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.models import TeacherClient
from editstream.simulator.answers import AnswerConfig
from editstream.simulator.server import SimulatorConfig, start_simulator
from streams.distill import attempt
from streams.formats import split_excerpt
from streams.models import Endpoint
from tests.streams.test_gates import SETTLED, S, example

KINDS = ("stale", "junk", "revert", "truncation", "preamble")
EXPECTED = {"stale": {"noop_target"}, "junk": {"low_kept_rate", "farther_than_students"},
            "revert": {"reverts_user_edit"}, "truncation": {"target_truncated"},
            "preamble": set()}


@pytest.mark.parametrize("kind", KINDS)
async def test_seeded_teacher_errors_are_caught(tmp_path: Path, kind: str) -> None:
    ex = example()
    parts = split_excerpt(ex)
    truth = tmp_path / "truth.jsonl"
    truth.write_text(json.dumps({"request_id": "r-1", "path": "shop.py",
                                 "base_region": parts.region,
                                 "cursor_in_region": parts.cursor_in_region,
                                 "settled_region": SETTLED}) + "\n")
    rates = {f"teacher_{k}_rate": float(k == kind) for k in KINDS}
    async with (
        await start_simulator(SimulatorConfig(ground_truth=str(truth),
                                              answers=AnswerConfig(**rates))) as sim,
        TeacherClient(Endpoint(base_url=sim.url, model="t")) as teacher,
    ):
        att = await attempt(ex, teacher, None, S, median=0.3)
    got = set(att.judgement["reasons"])
    if kind == "preamble":  # chatty but correct: it must read, and pass
        assert att.region == SETTLED and got == set()
    else:
        assert got & EXPECTED[kind], got  # its own gate fires (others may too)
