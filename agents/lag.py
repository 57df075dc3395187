"""Consumer lag per assigned partition, exported as `editstream_consumer_lag_messages`.

Every few seconds each worker looks at the partitions of the pipeline topics that its
runners own and sets lag = log end offset (highwater) - committed offset, the number of
messages still to be processed. Partitions without a commit yet count from the earliest offset.
Partitions the worker owned before a rebalance are set to 0 rather than removed, so summing
over workers (and processes, in multiprocess mode) stays right.
`edit-events` is read by the settle runner (agents/settle.py) in its own consumer group,
`<app_id>-settle`, and the stages after settle (`settled-examples`, `student-samples`,
`scored-examples`, `repair`, `model-retry`) by the stage runner (agents/stages.py) in
`<app_id>-stages`; their lag comes from the runners (`runner_lag`). Faust's own group reads
no pipeline topic.
The settle state changelog is left out: its offsets are never committed by any group.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import faust

from agents import metrics
from agents.runtime import Runtime

INTERVAL_S = 5.0
TIMEOUT_S = 10.0
log = logging.getLogger(__name__)


def records_behind(listed_end: int | None, fetched_end: int | None,
                   start: int | None) -> int | None:
    """Lag of one partition: its end minus `start` (None when either is unknown). The end is
    the log end from ListOffsets, or the high watermark of the last fetch when larger
    (brokers such as Tansu answer ListOffsets with the last batch's base offset + 1)."""
    ends = [e for e in (listed_end, fetched_end) if e is not None]
    if not ends or start is None:
        return None
    return max(0, max(ends) - start)


def fetched_highwater(consumer: Any, tp: Any) -> int | None:
    """The high watermark of `consumer`'s last fetch of `tp` (Faust's or aiokafka's)."""
    try:
        value = consumer.highwater(tp)
    except Exception:  # not fetched yet / consumer restarting
        return None
    return value if isinstance(value, int) and value >= 0 else None


async def runner_lag(consumer: Any, topics: set[str], committed: Mapping[Any, int]
                     ) -> dict[Any, int]:
    """Lag of an aiokafka runner's consumer (settle, stages): per assigned partition of
    `topics`, its end minus the offset `committed` by the runner (the earliest offset when
    nothing is committed yet)."""
    if consumer is None:
        return {}
    assigned = sorted(tp for tp in consumer.assignment() if tp.topic in topics)
    if not assigned:
        return {}
    ends = await consumer.end_offsets(assigned)
    missing = [tp for tp in assigned if tp not in committed]
    begins = await consumer.beginning_offsets(missing) if missing else {}
    lag: dict[Any, int] = {}
    for tp in assigned:
        behind = records_behind(ends.get(tp), fetched_highwater(consumer, tp),
                                committed.get(tp, begins.get(tp)))
        if behind is not None:
            lag[tp] = behind
    return lag


def register(app: faust.App, rt: Runtime) -> None:
    reported: set[Any] = set()

    @app.timer(interval=INTERVAL_S, name="consumer-lag")
    async def consumer_lag() -> None:
        try:
            lag: dict[Any, int] = {}
            for runner in (rt.settle, rt.stages):
                if runner is not None:
                    lag.update(await asyncio.wait_for(runner.lag(), TIMEOUT_S))
        except Exception as exc:  # not started yet, rebalancing, broker busy: next tick
            log.debug("consumer lag not measured: %r", exc)
            return
        for tp in reported - lag.keys():
            metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(0)
        for tp, value in lag.items():
            metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(value)
        reported.update(lag)
