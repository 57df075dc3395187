"""The records of one source partition in offset order, and the done prefix of them.

The stage runner (agents/stages.py) handles the records of a partition concurrently, so they
finish in any order; it may write a record's outputs and commit its offset only once every
earlier record of that partition is done too, or a crash would leave the later record's
outputs written and the earlier record to be handled again by the next owner, the later one
with it (its outputs twice). This class is that bookkeeping and nothing else: no Kafka, no
asyncio, so it is tested in microseconds (tests/agents/test_inorder.py).
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class _Entry(Generic[T]):
    __slots__ = ("done", "offset", "result")

    def __init__(self, offset: int) -> None:
        self.offset = offset
        self.result: T | None = None
        self.done = False


class InOrder(Generic[T]):
    """Offsets `add`ed in increasing order; `done` in any order; `take` hands out the results
    of the done prefix, oldest first, with the offset to commit after them."""

    def __init__(self) -> None:
        self._queue: deque[_Entry[T]] = deque()
        self._by_offset: dict[int, _Entry[T]] = {}
        self.last: int | None = None  # the last offset added

    def __len__(self) -> int:
        """Records added and not yet taken (in work, or done behind an unfinished one)."""
        return len(self._queue)

    def add(self, offset: int) -> bool:
        """Track `offset`; False (and nothing tracked) when it is not past the last one added
        (a record fetched again after a seek)."""
        if self.last is not None and offset <= self.last:
            return False
        entry: _Entry[T] = _Entry(offset)
        self._queue.append(entry)
        self._by_offset[offset] = entry
        self.last = offset
        return True

    def done(self, offset: int, result: T) -> None:
        entry = self._by_offset[offset]
        entry.result = result
        entry.done = True

    def take(self) -> tuple[list[T], int | None]:
        """Remove the done prefix: its results in offset order and the offset after its last
        record (what the consumer group commits), or ([], None) when the oldest is unfinished."""
        results: list[T] = []
        after: int | None = None
        queue = self._queue
        while queue and queue[0].done:
            entry = queue.popleft()
            del self._by_offset[entry.offset]
            results.append(entry.result)  # type: ignore[arg-type]  # set by done()
            after = entry.offset + 1
        return results, after
