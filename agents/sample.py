"""Sample stage: settled example → N student samples (or a rejection); run by the stage
runner (agents/stages.py) and, for re-queued examples, by the retry agent."""

from __future__ import annotations

from agents.runtime import Runtime
from schemas.records import SettledExample
from streams.models import ModelError
from streams.route import settle_rejection
from streams.sample import sample_example


async def sample_one(rt: Runtime, example: SettledExample, retry_attempt: int = 0) -> None:
    """Sample one settled example; `retry_attempt` counts re-queues after model outages."""
    s = rt.settings
    if (reason := settle_rejection(example, s)) is not None:
        # The settle stage rejects these itself; one here was written before it did (a
        # backlog from an older version): it still leaves with its rejection.
        await rt.reject("settle", reason, example)
        return
    try:
        record = await sample_example(example, rt.student, s)
    except ModelError as exc:
        await rt.requeue("sample", example, exc, retry_attempt)
        return
    await rt.send("student-samples", example["request_id"], record)
