"""Retry stage: examples re-queued after a model outage go back to their stage when due.

The stage runner (agents/stages.py) runs it like the other stages, so a retried example's
outputs commit in one transaction with its `model-retry` offset. A record waits for its time
without holding a slot, so an outage never stalls the stages that are still able to work.
"""

from __future__ import annotations

import asyncio
import time
from typing import cast

from agents.distill import teach
from agents.runtime import Runtime
from agents.sample import sample_one
from schemas.records import ModelRetry, RepairRequest, ScoredExample, SettledExample

MAX_WAIT_S = 300.0


async def retry_one(rt: Runtime, rec: ModelRetry) -> None:
    """Wait until the record is due, then run its stage again."""
    wait = rec["not_before_ms"] / 1000 - time.time()
    if wait > 0:
        await asyncio.sleep(min(wait, MAX_WAIT_S))
    payload, attempt = rec["payload"], int(rec["attempt"])
    async with rt.examples.slot():  # only once due: a waiting example holds no slot
        if rec["stage"] == "sample":
            # the schema ties the payload to the stage (`model-retry`), mypy cannot
            await sample_one(rt, cast(SettledExample, payload), attempt)
        else:
            number = (int(cast(RepairRequest, payload).get("attempt", 0))
                      if rec["stage"] == "repair" else 0)
            await teach(rt, cast(ScoredExample | RepairRequest, payload), number, attempt)
