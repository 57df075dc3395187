"""`editstream replay`: re-run a range of a topic through the pipeline, apart from the live run.

A replay never touches the live pipeline. It copies the selected range of `edit-events` (or
`settled-examples`) into a fresh run namespace — its own topics (`<prefix>replay-<id>-*`) and
its own consumer groups (`<app_id>-replay-<id>`, `<app_id>-replay-<id>-settle` for its
settle runner and `<app_id>-replay-<id>-stages` for its stage runner) — preserving
partition, order, keys and headers, then runs a worker on that namespace until every example
in the range is accounted for (training record, rejection or dead letter), and stops it.

    edit-events       → the replay's edit-events: re-settles, re-samples, re-scores, re-distils
    settled-examples  → the replay's settled-examples: re-samples and re-scores only (its
                        settle agent has nothing to do)

    settled-examples with --eval-only
                      → the eval stage alone (its own group, `<app_id>-replay-<id>-eval`):
                        every configured candidate (`--candidate NAME=URL`, e.g. tonight's
                        checkpoint) scored on last week's traffic, with `noop` and `served`,
                        into the replay's eval-results; nothing is sampled or distilled. An
                        example is accounted for by its `noop` record (an example's records
                        are written together); examples outside the evaluated set
                        (`streams.evaluate.selected`) are not expected.

Determinism: settling decides on event time only, and the live worker writes its wall-clock
idle ticks into `edit-events` as `control` events, so a copied range carries the very ticks
the live run acted on. The replay's own worker therefore gets idle ticks switched off (a
replay runs at full speed, and a tick from *its* wall clock would be a decision the live run
never made); the end of the copied input is marked by a control `flush` per partition, as
`produce --flush` does. With the same configuration and a seeded model, the replay writes the
same settled examples and training records as the live run, byte for byte; the eval
stage's records too (candidates are asked greedily with a seed from the request id), but
for `latency_ms`, which is measured: `--no-eval-latency` (`eval_latency=false`) leaves it
null, and a second replay is then byte-identical to the first. A different
`--pipeline-version` changes the record ids (they hash it), so both datasets can coexist.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import secrets
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, cast

import orjson
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from tqdm import tqdm

from agents.kafka_security import Cluster, kafka_client_config
from editstream.demo import accounted, expected_predictions, settled_examples
from editstream.infra.process import ManagedProcess, spawn_worker
from editstream.topics.kafka_io import ensure_topics, send_flush, start_producer
from editstream.topics.offsets import (
    When,
    new_consumer,
    parse_topic_arg,
    parse_when,
    partitions_of,
    resolve,
    retrying,
)
from schemas.records import SettledExample
from schemas.topics import STAGE_SOURCES, app_group, settle_group, stages_group
from streams import settings as settings_mod
from streams.evaluate import selected
from streams.settings import Settings

# Topics whose records account for an example, plus settled-examples for the summary (with
# the settle stage's rejections, which carry their example).
WATCHED = ("training-records", "rejected-examples", "edit-events-dlq", "pipeline-dlq",
           "settled-examples", "eval-results")
# Topics the pipeline's consumer groups read: zero lag on all of them means it is idle.
CONSUMED = ("edit-events", "settled-examples", "student-samples", "scored-examples", "repair",
            "model-retry")
REPLAYABLE = ("edit-events", "settled-examples")
# A replay has a finite input ending in a flush: wall-clock idle ticks would only add
# decisions the live run never made, so the replay worker effectively never ticks.
REPLAY_IDLE_TICK_MS = 365 * 86_400_000


@dataclass(frozen=True)
class PartitionRange:
    partition: int
    start: int  # first offset copied
    end: int  # exclusive

    @property
    def count(self) -> int:
        return max(0, self.end - self.start)


@dataclass
class ReplayResult:
    source_topic: str
    kind: str  # edit-events | settled-examples
    ranges: list[PartitionRange]
    settings: Settings | None = None  # the replay namespace (None for a dry run)
    copied: int = 0
    expected: set[str] = field(default_factory=set)
    outputs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    seconds: float = 0.0
    worker_log: Path | None = None


def source_kind(topic: str) -> str:
    """Which pipeline input `topic` is (by its name, so other namespaces replay too)."""
    for kind in REPLAYABLE:
        if topic.endswith(kind):
            return kind
    raise ValueError(f"cannot replay {topic!r}: only edit-events and settled-examples topics "
                     "are pipeline inputs")


def namespace(settings: Settings, replay_id: str, partitions: int) -> Settings:
    """The replay's run: own topics, own consumer group, same pipeline configuration."""
    return settings.replace(topic_prefix=f"{settings.topic_prefix}replay-{replay_id}-",
                            app_id=f"{settings.app_id}-replay-{replay_id}",
                            partitions=partitions, idle_tick_ms=REPLAY_IDLE_TICK_MS)


def eval_only_ids(values: Iterable[bytes], settings: Settings) -> set[str]:
    """Request ids an eval-only replay must account for: the copied settled examples the
    eval stage evaluates (`streams.evaluate.selected`)."""
    out = set()
    for raw in values:
        with contextlib.suppress(orjson.JSONDecodeError):
            rec = orjson.loads(raw)
            if not isinstance(rec, dict) or not isinstance(rec.get("request_id"), str):
                continue
            try:
                chosen = selected(cast(SettledExample, rec), settings)
            except (KeyError, TypeError, AttributeError):  # not an example: nothing to score
                continue
            if chosen:
                out.add(rec["request_id"])
    return out


def new_replay_id() -> str:
    # sortable by start time, unique enough for several replays in the same second
    return time.strftime("%Y%m%d%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)


async def plan(bootstrap: Cluster, topic: str, frm: When, to: When) -> list[PartitionRange]:
    """Per-partition [start, end) offsets of the range (empty when `to` precedes `from`)."""
    consumer = new_consumer(bootstrap)
    await consumer.start()
    try:
        tps = await partitions_of(consumer, topic)
        starts = await resolve(consumer, tps, frm)
        ends = await resolve(consumer, tps, to)
    finally:
        await consumer.stop()
    return [PartitionRange(tp.partition, starts[tp], max(starts[tp], ends[tp])) for tp in tps]


def ranges_table(topic: str, ranges: list[PartitionRange]) -> str:
    lines = [f"{'TOPIC':<40} {'PARTITION':>9} {'FROM':>10} {'TO (excl.)':>10} {'RECORDS':>8}"]
    for r in ranges:
        lines.append(f"{topic:<40} {r.partition:>9} {r.start:>10} {r.end:>10} {r.count:>8}")
    lines.append(f"{'total':<40} {'':>9} {'':>10} {'':>10} {sum(r.count for r in ranges):>8}")
    return "\n".join(lines)


async def copy_range(bootstrap: Cluster, source: str, dest_settings: Settings, dest: str,
                     ranges: list[PartitionRange], bar: tqdm) -> list[bytes]:
    """Copy partition p → partition p in offset order, keys and headers as they are; return
    the copied values (to know which examples the replay must account for).

    read_committed: under exactly-once the live worker's ticks are transactional, and an
    aborted one never reached its settle agent either."""
    consumer = new_consumer(bootstrap, isolation_level="read_committed")
    producer = await start_producer(dest_settings)
    await consumer.start()
    values: list[bytes] = []
    try:
        todo = {TopicPartition(source, r.partition): r for r in ranges if r.count}
        if not todo:
            return values
        consumer.assign(list(todo))
        for tp, r in todo.items():
            consumer.seek(tp, r.start)
        pending: list[asyncio.Future[Any]] = []
        while todo:
            batch = await consumer.getmany(*todo, timeout_ms=500, max_records=2000)
            for tp, records in batch.items():
                r = todo[tp]
                for rec in records:
                    if rec.offset >= r.end:
                        break
                    pending.append(await producer.send(
                        dest, rec.value, key=rec.key, partition=tp.partition,
                        headers=list(rec.headers) or None))
                    values.append(rec.value or b"")
                bar.update(sum(1 for rec in records if rec.offset < r.end))
            for tp in list(todo):
                if await consumer.position(tp) >= todo[tp].end:
                    del todo[tp]
            if len(pending) >= 2000 or not todo:
                await asyncio.gather(*pending)
                pending.clear()
    finally:
        await consumer.stop()
        await producer.stop()
    return values


def expected_ids(kind: str, values: Iterable[bytes], settings: Settings) -> set[str]:
    """Request ids the replay must account for: predictions ingest forwards, or the
    settled examples copied (unparsable copies go to the DLQ without an id)."""
    if kind == "edit-events":
        return expected_predictions(list(values), settings)
    out = set()
    for raw in values:
        with contextlib.suppress(orjson.JSONDecodeError):
            rec = orjson.loads(raw)
            if isinstance(rec, dict) and isinstance(rec.get("request_id"), str):
                out.add(rec["request_id"])
    return out


class Tail:
    """Follows the replay's output topics from the beginning, accumulating records."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.consumer = new_consumer(settings)
        # a second, unassigned client for end offsets: an assigned consumer only keeps
        # metadata of the topics it was assigned
        self.meta = new_consumer(settings)
        self.outputs: dict[str, list[dict[str, Any]]] = {name: [] for name in WATCHED}
        self.accounted: set[str] = set()
        self._names: dict[str, str] = {}

    async def start(self) -> None:
        await self.consumer.start()
        await self.meta.start()
        tps = []
        for name in WATCHED:
            topic = self.settings.topic(name)
            self._names[topic] = name
            tps += await partitions_of(self.consumer, topic)
        self.consumer.assign(tps)
        await self.consumer.seek_to_beginning(*tps)

    async def poll(self, timeout_ms: int = 1000) -> int:
        batch = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=5000)
        new: dict[str, list[dict[str, Any]]] = {name: [] for name in WATCHED}
        n = 0
        for tp, records in batch.items():
            for rec in records:
                with contextlib.suppress(orjson.JSONDecodeError):
                    new[self._names[tp.topic]].append(orjson.loads(rec.value))
                    n += 1
        for name, recs in new.items():
            self.outputs[name].extend(recs)
        if self.settings.eval_only:  # an example's records come together: noop among them
            self.accounted |= {r["request_id"] for r in new["eval-results"]
                               if r.get("candidate") == "noop"}
        else:
            self.accounted |= accounted(new)
        return n

    async def stop(self) -> None:
        await self.consumer.stop()
        await self.meta.stop()


async def group_lag(admin: AIOKafkaAdminClient, settings: Settings, tail: Tail) -> int:
    """Records the replay's consumer groups have not yet committed, over every topic they
    read (`edit-events` is the settle runner's group's, `STAGE_SOURCES`, `model-retry` among
    them, the stage runner's; Faust's group's offsets are older versions')."""
    if settings.eval_only:
        # an eval-only run is done when every expected example has its records (they are
        # written together); the examples it does not evaluate leave nothing to wait for
        return 0
    committed = dict(await retrying(
        lambda: admin.list_consumer_group_offsets(app_group(settings))))
    groups = ((settle_group(settings), ("edit-events",)),
              (stages_group(settings), STAGE_SOURCES))
    for group, names in groups:
        topics = {settings.topic(name) for name in names}
        offsets = await retrying(functools.partial(admin.list_consumer_group_offsets, group))
        committed.update({tp: meta for tp, meta in offsets.items() if tp.topic in topics})
    tps = [tp for name in CONSUMED
           for tp in await partitions_of(tail.meta, settings.topic(name))]
    ends = await tail.meta.end_offsets(tps)
    lag = 0
    for tp in tps:
        meta = committed.get(tp)
        done = meta.offset if meta is not None and meta.offset >= 0 else 0
        lag += max(0, ends[tp] - done)
    return lag


def _tail_text(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


async def replay(settings: Settings, topic: str, frm: When, to: When, *,
                 dry_run: bool = False, replay_id: str | None = None, workers: int = 1,
                 timeout_s: float = 1800.0, progress: bool = True,
                 out: TextIO | None = None, eval_only: bool = False) -> ReplayResult:
    """Copy `topic`[frm, to) into a fresh namespace and run it to completion (see module);
    `eval_only`: run the eval stage alone on a range of settled-examples."""
    out = out or sys.stdout
    t0 = time.monotonic()
    kind = source_kind(topic)
    if eval_only and kind != "settled-examples":
        raise ValueError("--eval-only replays settled-examples (the eval stage's input)")
    ranges = await plan(settings, topic, frm, to)
    result = ReplayResult(topic, kind, ranges)
    print(f"replay {topic} from {frm.describe()} to {to.describe()}", file=out)
    print(ranges_table(topic, ranges), file=out)
    if dry_run:
        print("dry run: nothing copied", file=out)
        return result

    rid = replay_id or new_replay_id()
    rs = namespace(settings, rid, len(ranges))
    if eval_only:
        rs = rs.replace(eval_only=True)
    result.settings = rs
    dest = rs.topic(kind)
    await ensure_topics(rs)
    if await _has_records(rs, dest):
        raise ValueError(f"replay namespace {rs.topic_prefix!r} is already in use "
                         f"({dest} has records); pick another --id")
    log = Path(tempfile.gettempdir()) / f"editstream-replay-{rid}.log"
    result.worker_log = log
    print(f"namespace: topic prefix {rs.topic_prefix!r}, consumer group {rs.app_id!r}, "
          f"pipeline_version {rs.pipeline_version!r}; worker log {log}", file=out)

    # the worker starts while the copy runs: both take seconds, and with idle ticks off
    # a worker that catches up with the copy cannot decide anything differently
    procs = [spawn_worker(rs, log) for _ in range(max(1, workers))]  # editstream.infra.process
    tail = Tail(rs)
    admin = AIOKafkaAdminClient(**kafka_client_config(rs))
    try:
        total = sum(r.count for r in ranges)
        with tqdm(total=total, desc="copy", unit="rec", file=sys.stderr, disable=not progress,
                  dynamic_ncols=True) as bar:
            values = await copy_range(settings, topic, rs, dest, ranges, bar)
        result.copied = len(values)
        if kind == "edit-events":  # end of the finite input: settle what is still open
            producer = await start_producer(rs)
            try:
                await send_flush(producer, dest, range(len(ranges)))
            finally:
                await producer.stop()
        result.expected = (eval_only_ids(values, rs) if eval_only
                           else expected_ids(kind, values, rs))
        await tail.start()
        await admin.start()
        await _drain(rs, result.expected, tail, admin, procs, log, timeout_s, progress)
        result.outputs = tail.outputs
    finally:
        for proc in procs:
            proc.stop(timeout=30)
        await tail.stop()
        await admin.close()
    result.seconds = time.monotonic() - t0
    print(summary(result), file=out)
    return result


async def _has_records(bootstrap: Cluster, topic: str) -> bool:
    consumer = new_consumer(bootstrap)
    await consumer.start()
    try:
        tps = await partitions_of(consumer, topic)
        begin = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
        return any(end[tp] > begin[tp] for tp in tps)
    finally:
        await consumer.stop()


async def _drain(rs: Settings, expected: set[str], tail: Tail, admin: AIOKafkaAdminClient,
                 procs: list[ManagedProcess], log: Path, timeout_s: float,
                 progress: bool) -> None:
    """Wait until every expected example is accounted for AND the group has read and
    committed everything (so trailing records, e.g. a preference after its SFT twin, and
    stray re-queues have landed), with one quiet poll to confirm."""
    deadline = time.monotonic() + timeout_s
    with tqdm(total=len(expected), desc="process", unit="ex", file=sys.stderr,
              disable=not progress, dynamic_ncols=True) as bar:
        quiet_checks = 0
        while True:
            new = await tail.poll()
            done = len(expected & tail.accounted)
            bar.update(done - bar.n)
            if done == len(expected) and new == 0:
                quiet_checks = quiet_checks + 1 if await group_lag(admin, rs, tail) == 0 else 0
                if quiet_checks >= 2:
                    return
            else:
                quiet_checks = 0
            dead = [p for p in procs if not p.is_running()]
            if dead:
                raise RuntimeError(f"replay worker exited with {dead[0].returncode}; "
                                   f"log {log}:\n{_tail_text(log)}")
            if time.monotonic() > deadline:
                missing = sorted(expected - tail.accounted)
                raise TimeoutError(f"replay not drained after {timeout_s:.0f} s: "
                                   f"{len(missing)} examples unaccounted, e.g. {missing[:3]}; "
                                   f"log {log}")


def _fmt(counter: Counter[str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(counter.items())) or "-"


def summary(result: ReplayResult) -> str:
    out = result.outputs
    rs = result.settings
    assert rs is not None
    records = {r["id"]: r for r in out.get("training-records", [])}
    kinds = Counter(f"{r['format']}/{r['split']}" for r in records.values())
    settled = Counter(r.get("settle_reason", "?") for r in settled_examples(out).values())
    rejected = Counter(f"{r['stage']}:{r['reason']}"
                       for r in {r["request_id"]: r for r in out.get("rejected-examples", [])
                                 }.values())
    dlq = Counter(r["reason"] for n in ("edit-events-dlq", "pipeline-dlq")
                  for r in out.get(n, []))
    evals = Counter(f"{r['candidate']}:{'ok' if r['failure'] is None else r['failure']['reason']}"
                    for r in out.get("eval-results", []))
    return "\n".join([
        f"editstream replay finished in {result.seconds:.1f} s",
        f"  source:        {result.source_topic} ({result.kind}), "
        f"{sum(r.count for r in result.ranges)} offsets in {len(result.ranges)} partitions",
        f"  copied:        {result.copied} records"
        + (" + a flush per partition" if result.kind == "edit-events" else ""),
        f"  namespace:     topic prefix {rs.topic_prefix}, consumer group {rs.app_id}, "
        f"pipeline_version {rs.pipeline_version}",
        f"  examples:      {len(result.expected)} in range, all accounted for",
        f"  settled:       {_fmt(settled)}",
        f"  records:       {_fmt(kinds)}",
        f"  rejected:      {_fmt(rejected)}",
        f"  dead letters:  {_fmt(dlq)}",
        f"  eval results:  {_fmt(evals)}",
        *([f"  scorecard:     editstream scorecard --topic-prefix {rs.topic_prefix}"]
          if evals else []),
        f"  export with:   editstream export --topic-prefix {rs.topic_prefix} "
        f"--pipeline-version {rs.pipeline_version} --out DIR",
    ])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `editstream replay` (plus every settings flag, e.g. --pipeline-version)."""
    parser.add_argument("--topic", default="edit-events", metavar="T",
                        help="edit-events (re-settle and everything after) or "
                             "settled-examples (re-sample and re-score); pipeline names get "
                             "the --topic-prefix (default: edit-events)")
    parser.add_argument("--from", dest="from_", default="earliest", metavar="WHEN",
                        help="start: ISO-8601 time, a duration ago (2h, 30m, 1d), offset:N "
                             "or earliest (default: earliest)")
    parser.add_argument("--to", default="latest", metavar="WHEN",
                        help="end, exclusive: same forms, or latest (default: latest)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the per-partition offset ranges and counts, copy nothing")
    parser.add_argument("--id", dest="replay_id", default=None,
                        help="replay id in the namespace names (default: UTC time + random)")
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes for the replay run (default: 1)")
    parser.add_argument("--timeout", type=float, default=1800.0,
                        help="seconds to wait for the replay to drain (default: 1800)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--eval-only", action="store_true",
                        help="settled-examples only: run the eval stage alone (the "
                             "candidates given with --candidate against noop and served), "
                             "nothing else")
    settings_mod.add_arguments(parser)


def main_replay(ns: argparse.Namespace) -> int:
    settings = settings_mod.from_args(ns)
    if not settings.broker:
        print("editstream replay: set --broker or EDITSTREAM_BROKER", file=sys.stderr)
        return 2
    topic = parse_topic_arg(ns.topic, settings)
    frm, to = parse_when(ns.from_), parse_when(ns.to)
    try:
        asyncio.run(replay(settings, topic, frm, to, dry_run=ns.dry_run,
                           replay_id=ns.replay_id, workers=ns.workers, timeout_s=ns.timeout,
                           progress=not ns.no_progress, eval_only=ns.eval_only))
    except (RuntimeError, TimeoutError, ValueError) as exc:
        print(f"editstream replay: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # the worker was stopped on the way out; the topics stay
        print("\neditstream replay: interrupted; the replay namespace is left as it is "
              "(delete its topics, or inspect them)", file=sys.stderr)
        return 130
    return 0
