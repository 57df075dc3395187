"""The handling of one record every stage shares: decode → handle → send, with dead letters
and stage metrics. The stages after settle run in the stage runner (agents/stages.py),
which calls `handle_one` for each record.

A stage is a handler of one decoded record; it sends its results itself (`rt.send`,
`rt.reject`, `rt.requeue`), since a stage may send nothing, one record or several. What the
loop owns, so no agent repeats it:

- decoding the message value (JSON by default; `decode` changes it, e.g. `raw` when the
  handler decodes in a worker process);
- a record whose handling raises is kept in `pipeline-dlq` with reason `internal_error` and
  the exception's type (never its message: it may quote the record), and counted; but an
  error of the Kafka client (a fenced or broken transactional producer, a timeout) says
  nothing about the record: the worker exits at once, as a kill -9 would, so the record is
  neither dead-lettered nor acknowledged and the partition's next owner processes it again
  (found by the chaos run: a resumed zombie dead-lettered records it could no longer send);
- the time each record takes, in `editstream_stage_seconds{stage}`, dead letters included;
- a slot of the worker's `max_examples_in_flight` while a record is handled
  (agents/inflight.py; `bounded=False` for a stage that takes it itself).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

from aiokafka.errors import (
    IllegalOperation,
    KafkaError,
    MessageSizeTooLargeError,
    RecordTooLargeError,
)
from faust.exceptions import ProducerSendError

from agents import metrics
from agents.runtime import CURRENT_RECORD, Runtime

T = TypeVar("T")
log = logging.getLogger(__name__)
# exit status of a worker that stopped on a Kafka client failure (EX_TEMPFAIL: run it again)
EXIT_CLIENT_FAILURE = 75


def is_client_failure(exc: BaseException) -> bool:
    """An error of the Kafka client rather than of the record (a record too large for the
    broker is the record's own fault, and stays a dead letter)."""
    if isinstance(exc, RecordTooLargeError | MessageSizeTooLargeError):
        return False
    # faust's ProducerSendError: no transactional producer for the partition (revoked)
    return isinstance(exc, KafkaError | IllegalOperation | ProducerSendError)


def exit_on_client_failure(stage: str, exc: BaseException) -> NoReturn:
    """Leave now, without acknowledging the record or committing anything: faust would ack
    the record on the way out of its stream (and a commit could pass it); an exit leaves the
    open transaction to be aborted and the partition to its next owner."""
    log.critical("stage %s: Kafka client failure %s; exiting so the partition's next owner "
                 "processes the record again", stage, type(exc).__name__)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(EXIT_CLIENT_FAILURE)


def raw(value: bytes) -> bytes:
    """The `decode` of a handler that takes the message bytes as they are."""
    return value


async def handle_one(rt: Runtime, stage: str, handle: Callable[[T], Awaitable[None]],
                     decode: Callable[[bytes], T], msg: Any, bounded: bool = True) -> None:
    """Handle one message (`msg`: `.value`, `.topic`, `.partition`, `.offset`) with the
    verdicts above: dead letter, exit on a client failure, stage time, in-flight slot. Used
    by the stage runner (agents/stages.py)."""
    started = time.perf_counter()
    try:
        if bounded:
            async with rt.examples.slot():
                await handle(decode(msg.value))
        else:
            await handle(decode(msg.value))
    except Exception as exc:
        if is_client_failure(exc):
            exit_on_client_failure(stage, exc)
        if (rec := CURRENT_RECORD.get()) is not None:
            rec.outputs.clear()  # the runner's record: its dead letter is its only output
        try:
            await rt.dead_letter("pipeline-dlq", stage, "internal_error",
                                 type(exc).__name__, msg)
        except Exception as dlq_exc:
            if is_client_failure(dlq_exc):
                exit_on_client_failure(stage, dlq_exc)
            raise
    finally:
        metrics.STAGE_SECONDS.labels(stage).observe(time.perf_counter() - started)
