"""The gateway picks each event's partition itself (memoised per key): it must be the
partition aiokafka's default partitioner would have picked, so records land where they did."""

from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner

from editstream.gateway.sink import partition_index as _partition_index


def test_memoised_partition_is_the_default_partitioners() -> None:
    rng = random.Random(3)
    default = DefaultPartitioner()
    for _ in range(2000):
        key = rng.randbytes(rng.randint(0, 40))
        parts = list(range(rng.randint(1, 64)))
        assert parts[_partition_index(key, len(parts))] == default(key, parts, parts)
        assert parts[_partition_index(key, len(parts))] == default(key, parts, [])  # cached
