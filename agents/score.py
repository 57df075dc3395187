"""Score stage (run by agents/stages.py): student samples → per-sample scores, distribution
summary and band, and the rejection of every example that does not go on to distill
(`streams.route.route_scored`).

Every scored example is written to `scored-examples` (the contract's per-example record:
the export's unfiltered eval and the band counts read it), rejected ones too, with the
header `ROUTED_HEADER`: it tells distill the rejection is written. A scored record without it
was written by a version that left the rejection to distill (one still on the topic when
this version starts), so distill writes that one and none is lost over an upgrade."""

from __future__ import annotations

from typing import cast

import orjson

from agents import metrics
from agents.cpu import CpuPool
from agents.runtime import ROUTED_HEADER, Runtime
from schemas.records import ScoredExample, StudentSamples
from streams.route import route_scored, to_distill
from streams.score import score_example
from streams.settings import Settings


def score_bytes(value: bytes, settings: Settings) -> ScoredExample:
    """Decode and score one `student-samples` record (runs in the CPU pool)."""
    return score_example(cast(StudentSamples, orjson.loads(value)), settings)


async def score_one(rt: Runtime, pool: CpuPool, value: bytes) -> None:
    """Score one `student-samples` record; the bytes go to the CPU pool as they are (it
    decodes them there)."""
    scored = await pool.run(score_bytes, value, rt.settings)
    for sc in scored["scores"]:
        if sc.get("invalid"):  # truncated / unparsable: counted, not scored
            metrics.INVALID_SAMPLES.labels(sc["invalid"]).inc()
            continue
        metrics.SAMPLE_DISTANCE.observe(sc["distance"])
        if "reversal_ratio" in sc:  # the first score_metrics_samples only
            metrics.SAMPLE_REVERSAL.observe(sc["reversal_ratio"])
    metrics.BANDS.labels(scored["band"]).inc()
    await rt.send("scored-examples", scored["request_id"], scored,
                  headers={ROUTED_HEADER: b"score"})
    route = route_scored(scored, rt.settings)
    if not to_distill(route):
        assert route is not None
        await rt.reject("score", route, scored["example"], band=scored["band"],
                        summary=scored["summary"])
