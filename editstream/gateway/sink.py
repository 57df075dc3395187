"""How the gateway writes accepted events to Kafka: one small interface, two clients.

`EventSink.deliver` sends a request's events and says whether the broker acknowledged every
one of them (acks=all) in time; the gateway answers 200 only when it did. Both sinks keep the
pipeline's guarantees: acks=all, idempotent producer, each event keyed by its session and
partitioned as aiokafka's `DefaultPartitioner` does (murmur2 of the key, as the Java client),
so a session keeps its partition whichever client wrote it.

* `LibrdkafkaSink` (default, `--producer librdkafka`): confluent-kafka's `Producer`, a C
  client. `produce()` only queues the record (~1 µs); batching, the wire protocol and retries
  run in librdkafka's own threads, off the event loop and without the GIL. Delivery reports
  are served by one polling thread, which wakes the loop once per request, not per event.
  aiokafka's per-event `send` and its sender were a third of the gateway's CPU.
* `AiokafkaSink` (`--producer aiokafka`): the pure-Python client the worker uses; the
  fallback for brokers librdkafka cannot use (an idempotent producer needs InitProducerId).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, UnknownError
from aiokafka.partitioner import murmur2

from agents.kafka_security import (
    Cluster,
    KafkaAccessError,
    kafka_client_config,
    librdkafka_security,
    refusal_line,
)

log = logging.getLogger("editstream.gateway.server")

MiB = 1024 * 1024
PRODUCERS = ("librdkafka", "aiokafka")
# Batches sized for whole requests: a request's events are enqueued back to back, so one
# produce request can carry a whole HTTP request's events per partition; a short linger
# still merges concurrent requests. 512 KiB stays under brokers' default 1 MiB
# message.max.bytes.
PRODUCER_BATCH_BYTES = 512 * 1024
PRODUCER_LINGER_MS = 2
MAX_REQUEST_BYTES = 4 * MiB

Record = tuple[bytes, bytes]  # (key, value)


class BrokerUnavailable(ConnectionError):
    """The broker could not be reached at start-up (an OSError, so callers retry it)."""


class EventSink(Protocol):
    """What the gateway needs from a Kafka client."""

    async def deliver(self, topic: str, records: Sequence[Record], timeout_s: float) -> bool:
        """Send `records` (key, value) to `topic`; True once the broker acknowledged every
        one within `timeout_s`. A False answer leaves unacknowledged records to the client's
        own retries (they may still be written: at-least-once, as any Kafka producer)."""
        ...

    async def probe(self, timeout_s: float) -> bool:
        """The broker answered a metadata request within `timeout_s`."""
        ...

    async def stop(self, timeout_s: float) -> None:
        """Flush, but not forever: what is still unsent after `timeout_s` was answered 503."""
        ...


# --------------------------------------------------------------------------- librdkafka


class _Request:
    """The delivery reports of one request's records. Only the polling thread counts them
    down; the event loop is woken once, when the last one arrived."""

    __slots__ = ("error", "future", "loop", "remaining")

    def __init__(self, loop: asyncio.AbstractEventLoop, n: int) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.remaining = n
        self.error: Any = None

    def report(self, err: Any, msg: Any) -> None:  # librdkafka's on_delivery (poll thread)
        if err is not None and self.error is None:
            self.error = err
        self.remaining -= 1
        if self.remaining == 0:
            # a closed loop (shutdown) has nobody left to tell
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self._finish)

    def _finish(self) -> None:
        if not self.future.done():
            self.future.set_result(None)


def librdkafka_config(bootstrap: Cluster) -> dict[str, Any]:
    """The producer's settings: the gateway's guarantees, spelled for librdkafka, and the
    cluster's security settings (agents/kafka_security.py)."""
    if not isinstance(bootstrap, str):
        return {**librdkafka_config(bootstrap.broker), **librdkafka_security(bootstrap)}
    return {
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        # Java's (and aiokafka's DefaultPartitioner's) murmur2 of the key; session ids are
        # never empty or null, so `_random` (for null keys) never applies.
        "partitioner": "murmur2_random",
        "linger.ms": PRODUCER_LINGER_MS,
        "batch.size": PRODUCER_BATCH_BYTES,
        "message.max.bytes": MAX_REQUEST_BYTES,
        # an event the broker still has not taken after this is reported failed (it was
        # answered 503 long before, at send_timeout_s)
        "message.timeout.ms": 30_000,
        "compression.type": "none",
    }


class LibrdkafkaSink:
    """confluent-kafka's C producer behind the `EventSink` interface."""

    def __init__(self, bootstrap: Cluster, extra: dict[str, Any] | None = None) -> None:
        """`extra`: more librdkafka settings (tests shrink the local queue with it)."""
        from confluent_kafka import Producer

        self.settings = None if isinstance(bootstrap, str) else bootstrap
        # the cluster refused us (login, TLS, an ACL): one line for /readyz and the exit
        self.refusal: str | None = None
        # its log lines (broker addresses, never record content) go to the gateway's logger,
        # served by the polling thread, instead of straight to stderr
        self._producer = Producer({**librdkafka_config(bootstrap),
                                   **(extra or {}),
                                   "error_cb": self._on_error, "logger": log})
        self._closing = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="gateway-rdkafka-poll",
                                        daemon=True)
        self._poller.start()

    @classmethod
    async def start(cls, bootstrap: Cluster, timeout_s: float = 10.0,
                    extra: dict[str, Any] | None = None) -> LibrdkafkaSink:
        """A sink whose broker answered a metadata request (librdkafka connects lazily)."""
        sink = cls(bootstrap, extra)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        # short probes: a refused login (retried by librdkafka for ever) ends the wait
        while not (up := await sink.probe(min(1.0, timeout_s))) and sink.refusal is None \
                and loop.time() < deadline:
            pass
        if not up or sink.refusal is not None:
            await sink.stop(0)
            if sink.refusal is not None:
                raise KafkaAccessError("refused", sink.refusal)
            where = bootstrap if isinstance(bootstrap, str) else bootstrap.broker
            raise BrokerUnavailable(f"no metadata from {where} in {timeout_s:.0f} s")
        return sink

    def _on_error(self, err: Any) -> None:
        # Connection errors are retried by librdkafka; a fatal one (idempotence broken) makes
        # every later produce fail, so the gateway answers 503 and /readyz tells the balancer.
        self._note_refusal(err)
        log.warning("librdkafka: %s", err)

    def _note_refusal(self, err: Any) -> None:
        """Remember a login, TLS or ACL refusal as its one line (librdkafka retries them
        quietly for ever; the gateway must say so instead of 'broker unreachable')."""
        from confluent_kafka import KafkaError as RdKafkaError

        code = err.code()
        if code == RdKafkaError._AUTHENTICATION:
            self.refusal = refusal_line("authentication", self.settings)
        elif code == RdKafkaError._SSL:
            self.refusal = refusal_line("tls", self.settings, err.str().rpartition(": ")[2])
        elif code == RdKafkaError.TOPIC_AUTHORIZATION_FAILED:
            self.refusal = refusal_line("authorization", self.settings, err.name(), "topic")
        elif code == RdKafkaError.CLUSTER_AUTHORIZATION_FAILED:
            # an idempotent producer's id: Kafka grants it to a principal that may Write a
            # topic; librdkafka's producer is dead from here on (a fatal error)
            self.refusal = refusal_line("authorization", self.settings, err.name(),
                                        "Write on edit-events (needed for a producer id)")

    def _poll(self) -> None:
        while not self._closing.is_set():
            try:
                self._producer.poll(0.05)
            except Exception as exc:  # a callback's error must not end delivery reports
                if exc.args and hasattr(exc.args[0], "code"):  # librdkafka's fatal error
                    self._note_refusal(exc.args[0])
                log.exception("librdkafka delivery report failed")

    async def deliver(self, topic: str, records: Sequence[Record], timeout_s: float) -> bool:
        if not records:
            return True
        from confluent_kafka import KafkaError as RdKafkaError
        from confluent_kafka import KafkaException

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        req = _Request(loop, len(records))
        # One call queues the whole request (the configured partitioner places each record).
        # A record librdkafka could not queue gets `_error` set and no delivery report.
        batch: list[dict[str, Any]] = [{"key": key, "value": value} for key, value in records]
        while batch:
            try:
                queued = self._producer.produce_batch(topic, batch, on_delivery=req.report)
            except KafkaException as exc:
                log.warning("produce failed: %s", exc)
                return False
            if queued == len(batch):
                break
            errors = [m["_error"] for m in batch if "_error" in m]
            if any(e.code() != RdKafkaError._QUEUE_FULL for e in errors):
                log.warning("produce failed: %s", errors[0])
                return False
            # the local queue is full: give librdkafka time to drain it, then queue the rest
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.005)
            batch = [{"key": m["key"], "value": m["value"]} for m in batch if "_error" in m]
        try:
            await asyncio.wait_for(asyncio.shield(req.future),
                                   max(0.0, deadline - loop.time()))
        except TimeoutError:
            log.warning("broker did not acknowledge %d of %d events in time",
                        req.remaining, len(records))
            return False
        if req.error is not None:
            self._note_refusal(req.error)
            log.warning("broker refused a batch: %s", req.error)
            return False
        self.refusal = None  # writing again: whatever refused us was put right
        return True

    async def probe(self, timeout_s: float) -> bool:
        from confluent_kafka import KafkaException

        try:
            await asyncio.to_thread(self._producer.list_topics, None, timeout_s)
        except KafkaException:
            return False
        return True

    async def stop(self, timeout_s: float) -> None:
        # one thread serves the reports at a time: the poller ends, then flush serves them
        self._closing.set()
        await asyncio.to_thread(self._poller.join)
        remaining = await asyncio.to_thread(self._producer.flush, timeout_s)
        if remaining:
            log.warning("broker unreachable; dropping %d unacknowledged sends on shutdown",
                        remaining)
            self._producer.purge()
            await asyncio.to_thread(self._producer.flush, 1.0)  # serve the purge's reports


# --------------------------------------------------------------------------- aiokafka


@lru_cache(maxsize=1 << 16)
def partition_index(key: bytes, partitions: int) -> int:
    """aiokafka's `DefaultPartitioner` (murmur2 of the key, as the Java client), memoised: a
    request's events mostly share their session key, and murmur2 in pure Python was ~8 % of
    the gateway's CPU."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def _retrieve(fut: asyncio.Future[Any]) -> None:
    """Mark a late delivery failure as seen (it was already answered with 503)."""
    if not fut.cancelled():
        fut.exception()


class AiokafkaSink:
    """aiokafka's producer behind the `EventSink` interface."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer

    @classmethod
    async def start(cls, bootstrap: Cluster) -> AiokafkaSink:
        """acks=all, idempotent where the broker supports it (as `kafka_io.start_producer`:
        the embedded Tansu 0.6 has no InitProducerId)."""
        for idempotent in (True, False):
            prod = AIOKafkaProducer(**kafka_client_config(bootstrap), acks="all",
                                    enable_idempotence=idempotent,
                                    linger_ms=PRODUCER_LINGER_MS,
                                    max_batch_size=PRODUCER_BATCH_BYTES,
                                    max_request_size=MAX_REQUEST_BYTES)
            try:
                await prod.start()
                return cls(prod)
            except UnknownError:
                await prod.stop()
                if not idempotent:
                    raise
        raise AssertionError("unreachable")

    async def deliver(self, topic: str, records: Sequence[Record], timeout_s: float) -> bool:
        """Delivery futures are awaited with `asyncio.wait`, which never cancels them: a
        batch the broker acknowledges late is still written, and nothing answered 200 was
        left unsent."""
        if not records:
            return True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        futures: list[asyncio.Future[Any]] = []

        async def enqueue() -> None:
            parts = sorted(await self.producer.partitions_for(topic))
            for key, value in records:
                # the default partitioner's choice, memoised per key (see partition_index)
                p = parts[partition_index(key, len(parts))]
                fut = await self.producer.send(topic, value, key=key, partition=p)
                fut.add_done_callback(_retrieve)
                futures.append(fut)

        task = asyncio.ensure_future(enqueue())
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
        if not done:
            task.cancel()
            return False
        if task.exception() is not None:
            log.warning("send failed: %r", task.exception())
            return False
        _, pending = await asyncio.wait(futures, timeout=max(0.0, deadline - loop.time()))
        if pending or any(f.exception() is not None for f in futures):
            failed = next((f.exception() for f in futures if f.done() and f.exception()), None)
            log.warning("broker did not acknowledge %d of %d events in time (%r)",
                        len(pending), len(futures), failed)
            return False
        return True

    async def probe(self, timeout_s: float) -> bool:
        try:
            await asyncio.wait_for(self.producer.client.fetch_all_metadata(), timeout=timeout_s)
        except (KafkaError, OSError, TimeoutError):
            return False
        return True

    async def stop(self, timeout_s: float) -> None:
        """With the broker gone, aiokafka would retry pending batches for its whole request
        timeout; whatever is still pending then was answered 503, so dropping it loses
        nothing promised."""
        stopping = asyncio.ensure_future(self.producer.stop())
        done, _ = await asyncio.wait({stopping}, timeout=timeout_s)
        if not done:
            log.warning("broker unreachable; dropping unacknowledged sends on shutdown")
            # stop() waits for the flush OR the sender task: ending the sender ends the flush.
            sender = getattr(self.producer, "_sender", None)
            task = getattr(sender, "sender_task", None)
            if task is not None:
                task.cancel()
            await asyncio.wait({stopping}, timeout=5)


async def start_sink(kind: str, bootstrap: Cluster) -> EventSink:
    """The sink named by the gateway's `producer` setting, connected to `bootstrap`."""
    if kind == "librdkafka":
        return await LibrdkafkaSink.start(bootstrap)
    if kind == "aiokafka":
        return await AiokafkaSink.start(bootstrap)
    raise ValueError(f"producer must be one of {', '.join(PRODUCERS)}")
