"""A student that answers the way real models do: the band is decided on valid samples
only, the invalid ones are counted, and the request carries stop sequences, a max_tokens
that follows the region and a seed only when configured. The student is a local HTTP server
speaking the completions protocol (real client, real HTTP, scripted answers)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from agents.models import StudentClient
from streams.formats import REGION_END, REGION_START
from streams.models import Endpoint
from streams.route import route_scored
from streams.sample import sample_example
from streams.score import score_example
from streams.scoring import normalized_levenshtein
from streams.settings import Settings

BASE = "    total = 0\n    for item in items:\n"
SETTLED = BASE + "        total += item.price\n"
NEAR = SETTLED.replace("price", "prices")
Student = tuple[str, list[dict[str, Any]], list[tuple[str, str]]]  # url, bodies, answers


def example() -> dict[str, Any]:
    before = "def f(items):\n"
    return {"request_id": "r-1", "session_id": "s", "path": "shop.py",
            "excerpt": before + BASE + "    return total\n", "excerpt_start": 0,
            "editable_range": [len(before), len(before) + len(BASE)],
            "cursor": len(before) + len(BASE), "history": [], "base_region": BASE,
            "settled_region": SETTLED, "settle_reason": "quiescence", "settled_at_ms": 1}


def zeta1(region: str) -> str:
    return f"{REGION_START}\n{region.removesuffix(chr(10))}\n"  # end marker: the stop sequence


# What the scripted student answers, in choice order: (text, finish_reason).
ANSWERS = [
    ("Here is the edit:\n```\n" + zeta1(SETTLED) + REGION_END + "\n```", "stop"),  # preamble
    ("Sure.\n" + zeta1(NEAR), "stop"),                                          # preamble
    (f"{REGION_START}{SETTLED.removesuffix(chr(10))}\n", "stop"),               # no newline
    (f"{REGION_START}{NEAR.removesuffix(chr(10))}\n{REGION_END}", "stop"),     # no newline
    (zeta1(BASE), "stop"),                                                      # no edit
    (zeta1(SETTLED), "stop"),
    (f"{REGION_START}\n{SETTLED}" + "        total += 1\n" * 50, "length"),     # truncated
    (f"{REGION_START}\n{BASE}", "length"),                                      # truncated
    ("I cannot help with that.", "stop"),                                       # garbage
    (f"{REGION_START}\na\n{REGION_END}{REGION_START}\nb\n{REGION_END}", "stop"),  # two regions
]


@pytest.fixture
async def student() -> AsyncIterator[Student]:
    bodies: list[dict[str, Any]] = []
    answers = list(ANSWERS)  # a test may script other answers

    async def completions(request: web.Request) -> web.Response:
        body = await request.json()
        bodies.append(body)
        n = body.get("n", 1)
        choices = [{"index": i, "text": answers[i % len(answers)][0],
                    "finish_reason": answers[i % len(answers)][1]} for i in range(n)]
        return web.json_response({"choices": choices, "usage": {}})

    app = web.Application()
    app.router.add_post("/v1/completions", completions)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}", bodies, answers
    await runner.cleanup()


async def run(url: str, settings: Settings) -> tuple[dict[str, Any], dict[str, Any]]:
    async with StudentClient(Endpoint(base_url=url, model="s")) as client:
        samples = await sample_example(example(), client, settings)
    return samples, score_example(samples, settings)


async def test_band_is_decided_on_valid_samples_only(student: Student) -> None:
    url, bodies, _ = student
    settings = Settings(samples=10, adaptive_sampling=False)
    samples, scored = await run(url, settings)
    summary = scored["summary"]
    assert (summary["n_samples"], summary["n"]) == (10, 6)
    assert (summary["n_truncated"], summary["n_unparsable"]) == (2, 2)
    invalid = [s.get("invalid") for s in scored["scores"]]
    assert invalid == [None] * 6 + ["truncated", "truncated", "unparsable", "unparsable"]
    valid = sorted(normalized_levenshtein(r, SETTLED)
                   for r in (SETTLED, NEAR, SETTLED, NEAR, BASE, SETTLED))
    assert summary["p50"] == round((valid[2] + valid[3]) / 2, 6)  # the median of 6 valid
    assert scored["valid_samples"] == 6 and not scored["unparsable_samples"]
    assert scored["rejected_candidate"] == BASE  # farthest valid sample: on-policy negative
    # the request: stop sequence of the format, max_tokens from the region, the seed
    body = bodies[0]
    assert body["stop"] == [REGION_END] and body["seed"] == samples["student"]["seed"]
    assert 64 < body["max_tokens"] < 200  # twice the region's tokens plus 64


async def test_too_few_valid_samples_is_unparsable_samples(student: Student) -> None:
    url, _, answers = student
    answers[:] = [ANSWERS[0]] * 4 + [ANSWERS[6], ANSWERS[8]] * 8  # 4 valid of 20
    settings = Settings(samples=20, adaptive_sampling=False)  # needs 5 (min_valid_samples)
    _, scored = await run(url, settings)
    assert scored["valid_samples"] == 4 and scored["unparsable_samples"]
    assert route_scored(scored, settings) == "unparsable_samples"
    # asking for 4 samples lowers the bar to half of them: 2 valid of 4 is enough
    answers[:] = [ANSWERS[0], ANSWERS[8]]
    _, few = await run(url, Settings(samples=4, adaptive_sampling=False))
    assert few["valid_samples"] == 2 and not few["unparsable_samples"]


async def test_no_seed_when_the_endpoint_does_not_honour_one(
    student: Student,
) -> None:
    url, bodies, _ = student
    samples, _ = await run(url, Settings(samples=10, adaptive_sampling=False,
                                         student_seed=False))
    assert "seed" not in bodies[0] and samples["student"]["seed"] is None


async def test_max_tokens_is_capped(student: Student) -> None:
    url, bodies, _ = student
    await run(url, Settings(samples=10, adaptive_sampling=False, sample_max_tokens=40))
    assert bodies[0]["max_tokens"] == 40
