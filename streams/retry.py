"""Model outages: an example whose calls exhausted their retry budget is re-queued.

The HTTP client already retries quickly (seconds). When a model server is down for longer,
the example goes to the `model-retry` topic with a growing delay instead of blocking its
stage; after `retry_attempts` re-queues it is rejected with the reason.
"""

from __future__ import annotations

from typing import TypeGuard, get_args

from schemas.records import ModelRetry, RetryPayload, RetryStage
from streams.settings import Settings

STAGES: tuple[RetryStage, ...] = get_args(RetryStage)


def delay_ms(attempt: int, settings: Settings) -> int:
    """Delay before re-queued attempt `attempt` (1-based): doubles each time."""
    return int(settings.retry_delay_ms * 2 ** max(0, attempt - 1))


def retry_record(stage: str, payload: RetryPayload, reason: str, attempt: int,
                 now_ms: int, settings: Settings) -> ModelRetry | None:
    """The record for re-queued attempt `attempt`, or None when the budget is spent."""
    if not _is_stage(stage):
        raise ValueError(f"unknown stage {stage!r}")
    if attempt > settings.retry_attempts:
        return None
    return {
        "v": 1,
        "pipeline_version": settings.pipeline_version,
        "request_id": payload["request_id"],
        "stage": stage,
        "attempt": attempt,
        "reason": reason,
        "not_before_ms": now_ms + delay_ms(attempt, settings),
        "payload": payload,
    }


def _is_stage(stage: str) -> TypeGuard[RetryStage]:
    return stage in STAGES
