"""Corrections to faust-streaming's exactly-once commit, applied when the app is built.

Table changelog writes are buffered (`send_soon`) and published by a background task. In
at-least-once mode faust flushes that buffer before committing offsets; in exactly-once mode
it does not, so a commit can carry the source offsets while the changelog writes of the
events it covers are still in the buffer. They then land in the *next* transaction, and a
crash before that one commits loses them while the offsets stay committed: state silently
goes back in time (seen in tests/integration/test_reliability.py's kill -9 test as settled
examples that never settle). Flushing first puts them in the transaction they belong to.

The settle agent writes its changelog itself (agents.settle.publish) and holds COMMIT_GATE
while it does, so a commit never splits one event's writes between two transactions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from faust.transport.consumer import TransactionManager

_original_commit = TransactionManager.commit
COMMIT_GATE = asyncio.Lock()


async def _commit_after_flush(self: TransactionManager, offsets: Mapping[Any, int],
                              start_new_transaction: bool = True) -> bool:
    await self.app.producer.flush()
    async with COMMIT_GATE:
        return await _original_commit(self, offsets, start_new_transaction=start_new_transaction)


def apply() -> None:
    """Idempotent: install the flushing commit once."""
    if TransactionManager.commit is not _commit_after_flush:
        TransactionManager.commit = _commit_after_flush  # type: ignore[method-assign]
