"""Settling: predictions plus the edits that follow them become settled examples.

- `machine`: the pure, deterministic `SettleMachine`, and `settle_events` (the offline API);
- `batch`: the staged store and batch application the worker's settle runner uses;
- `changelog`: the state's changelog codec and its restore.
"""

from streams.settle.batch import (
    BatchEvent,
    BatchOutcome,
    StagedStore,
    apply_batch,
    batch_item,
)
from streams.settle.changelog import Restored, changelog_records
from streams.settle.machine import (
    ERRORS,
    OUTCOMES,
    SETTLE_REASONS,
    WATERMARK_KEY,
    Applied,
    Forget,
    SettleMachine,
    settle_events,
)

__all__ = [
    "ERRORS",
    "OUTCOMES",
    "SETTLE_REASONS",
    "WATERMARK_KEY",
    "Applied",
    "BatchEvent",
    "BatchOutcome",
    "Forget",
    "Restored",
    "SettleMachine",
    "StagedStore",
    "apply_batch",
    "batch_item",
    "changelog_records",
    "settle_events",
]
