"""Kafka client factories shared by the worker, its settle runner and the tools.

One place for the producer's durability settings (acks=all, idempotent where the broker
allows it), so the settle runner and `editstream.topics.kafka_io` cannot drift apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import UnknownError

from agents import metrics
from agents.kafka_security import kafka_client_config
from streams.settings import Settings

# One record to send: topic (full name), partition, key, value, headers.
Send = tuple[str, int, bytes | None, bytes | None, list[tuple[str, bytes]] | None]
# sends between two yields to the event loop (aiokafka's `send` costs ~20-30 µs of CPU)
SEND_CHUNK = 200


async def start_producer(settings: Settings, *, linger_ms: int = 5) -> AIOKafkaProducer:
    """An idempotent acks=all producer; plain acks=all on brokers without producer ids
    (the embedded Tansu broker answers InitProducerId with an unknown error)."""
    for idempotent in (True, False):
        prod = AIOKafkaProducer(**kafka_client_config(settings), acks="all",
                                enable_idempotence=idempotent, linger_ms=linger_ms,
                                max_request_size=4 * 1024 * 1024)
        try:
            # aiokafka logs the refusal as an error before raising it; the fallback is the
            # answer, so a newcomer's demo shows no error line for it
            with quiet_logger(_SENDER_LOG if idempotent else None):
                await prod.start()
            return prod
        except UnknownError:
            await prod.stop()
            if not idempotent:
                raise
    raise AssertionError("unreachable")


_SENDER_LOG = logging.getLogger("aiokafka.producer.sender")


@contextlib.contextmanager
def quiet_logger(logger: logging.Logger | None) -> Iterator[None]:
    """Silence `logger` for the block (None: leave logging as it is)."""
    if logger is None:
        yield
        return
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


class Runner(Protocol):
    """A consumer's owner that takes partitions on and gives them up (settle, stages)."""

    async def on_revoked(self, revoked: set[TopicPartition]) -> None: ...

    async def on_assigned(self, assigned: set[TopicPartition]) -> None: ...


class Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """aiokafka's rebalance callbacks, handed to a `Runner`; the partitions it holds are
    `editstream_assigned_partitions{runner=name}`."""

    def __init__(self, runner: Runner, name: str) -> None:
        self.runner, self.name = runner, name
        self.owned: set[TopicPartition] = set()

    async def on_partitions_revoked(self, revoked: Any) -> None:
        self.owned -= set(revoked)
        metrics.ASSIGNED_PARTITIONS.labels(self.name).set(len(self.owned))
        await self.runner.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.runner.on_assigned(set(assigned))
        self.owned |= set(assigned)
        metrics.ASSIGNED_PARTITIONS.labels(self.name).set(len(self.owned))


async def send_all(prod: AIOKafkaProducer, records: Iterable[Send]) -> None:
    """Send every record and wait until the broker has acknowledged them all. aiokafka's
    `send` only suspends when a batch is full, so a thousand sends would hold the event loop
    in one step (a settle batch's took 24 ms of CPU, past issue 15's 20 ms bound): it yields
    every `SEND_CHUNK` sends."""
    futures = []
    for i, (topic, partition, key, value, headers) in enumerate(records):
        if i and i % SEND_CHUNK == 0:
            await asyncio.sleep(0)
        futures.append(await prod.send(topic, value, key=key, partition=partition,
                                       headers=headers))
    if futures:
        await asyncio.gather(*futures)
