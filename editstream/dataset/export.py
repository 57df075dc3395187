"""`editstream export`: the sink topic → dataset files a trainer loads unchanged.

    DIR/sft/train.jsonl  sft/eval.jsonl             {prompt, completion, ...}        (TRL SFT)
    DIR/preference/train.jsonl  preference/eval.jsonl  {prompt, chosen, rejected, ...}  (TRL DPO)
    DIR/sft/eval_unfiltered.jsonl                   with eval_unfiltered: any band, settled
                                                    region as the reference (measure a student)
    DIR/kto/train.jsonl  kto/eval.jsonl             with export_kto: {prompt, completion,
                                                    label, ...} from live outcomes (TRL KTO)
    DIR/rejected/rejected.jsonl                     with --rejected (+ near-duplicates dropped)
    DIR/manifest.json                               counts, versions, thresholds, hash, ...
    DIR/README.md                                   the dataset card: load_dataset(DIR, "sft")
    DIR/.export-state/                              checkpoint + spool (resume, increments)

(`.parquet` instead of `.jsonl` with `--format parquet`.) A split without rows gets no file,
because `datasets` cannot load an empty split; `manifest.json` lists the files there are
under `data_files`, per kind, in the form `load_dataset(..., data_files=...)` takes.

Deduplication: at-least-once delivery can repeat a record, and a reprocessed example gets
the same id (ids hash pipeline version, request id, kind and prompt format), so the first
record per id is kept; rejections are kept once per request id. Only records of one
`pipeline_version` (the configured one) are exported: two versions of the same example in
one dataset would be near-duplicates.

The split is the export's (`streams/dataset.py`): per repository key, near-duplicate groups
kept in one split and thinned to `dedup_max_per_group`, eval topped up to `eval_min_repos`;
with `eval_unfiltered` the export also reads `scored-examples` (without the per-sample scores)
for the unfiltered eval set.

Columns: TRL's columns first, then flat, always-present, consistently typed extras (band,
settle reason, repair attempts, student distance median, ...), and the nested `provenance`
and `scores` dicts as JSON strings — they hold nullable and optional fields whose inferred
types would otherwise change from one file, or one block of a file, to the next. Rows are
sorted by id, so the same records always give the same bytes.

Resuming: records are spooled to `.export-state/` as they are read, and a checkpoint (next
offset per partition, spool lengths) is written atomically every few seconds and on Ctrl-C.
A second run truncates the spool to the checkpoint, continues from its offsets and then
writes the files from the spool, so the result equals a one-shot export. Run it again later
and it picks up only the records that arrived since (an incremental export).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import TopicPartition
from tqdm import tqdm

from editstream.dataset.card import dataset_card
from editstream.topics.offsets import When, new_consumer, parse_when, partitions_of, resolve
from streams import settings as settings_mod
from streams.corpus import corpus_figures
from streams.dataset import arrange
from streams.languages import language_of
from streams.settings import Settings

STATE_DIR = ".export-state"
CHECKPOINT = "checkpoint.json"
SPOOLS = {"training-records": "records.jsonl", "rejected-examples": "rejected.jsonl",
          "scored-examples": "scored.jsonl", "settled-examples": "settled.jsonl"}
KINDS = ("sft", "preference")
SPLITS = ("train", "eval")
UNFILTERED = "eval_unfiltered"  # the sft split of the unfiltered eval set
FORMATS = ("jsonl", "parquet")
CHECKPOINT_EVERY_S = 2.0


# --------------------------------------------------------------------------- rows


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _float(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else float("nan")


def kto_row(rec: Mapping[str, Any]) -> dict[str, Any]:
    """A KTO record (`streams.kto`) as a row: TRL's prompt, completion, label, then extras."""
    prov = rec.get("provenance") or {}
    return {
        "prompt": rec["prompt"], "completion": rec["completion"], "label": bool(rec["label"]),
        "id": rec["id"],
        "request_id": rec["request_id"],
        "split": rec["split"],
        "pipeline_version": rec["pipeline_version"],
        "prompt_format": rec.get("prompt_format") or "",
        "prompt_format_version": int(rec.get("prompt_format_version") or 0),
        "outcome": str(rec.get("outcome") or ""),
        "undone": bool(rec.get("undone")),
        "kept_rate": _float(prov.get("kept_rate")),
        "repo": str(prov.get("repo") or ""),
        "language": language_of(prov.get("path")),
        "served_model_version": str(prov.get("served_model_version") or ""),
        "settle_reason": str(prov.get("settle_reason") or ""),
        "settled_at_ms": int(prov.get("settled_at_ms") or 0),
        "provenance": _json(prov),
    }


def record_row(rec: Mapping[str, Any]) -> dict[str, Any]:
    """A training record as a dataset row: TRL columns first, then typed extras."""
    prov = rec.get("provenance") or {}
    student = (rec.get("scores") or {}).get("student") or {}
    if rec["format"] == "sft":
        head: dict[str, Any] = {"prompt": rec["prompt"], "completion": rec["completion"]}
    else:
        head = {"prompt": rec["prompt"], "chosen": rec["chosen"], "rejected": rec["rejected"],
                "rejected_source": str(rec.get("rejected_source") or "")}
    return {
        **head,
        "id": rec["id"],
        "request_id": rec["request_id"],
        "split": rec["split"],
        "pipeline_version": rec["pipeline_version"],
        "prompt_format": rec.get("prompt_format") or "",
        "repo": str(prov.get("repo") or ""),
        "language": language_of(prov.get("path")),
        "prompt_format_version": int(rec.get("prompt_format_version") or 0),
        "noop": bool(rec.get("noop")),  # the completion is the format's no-edit answer
        "band": str(prov.get("band") or ""),
        "settle_reason": str(prov.get("settle_reason") or ""),
        "repair_attempts": int(prov.get("repair_attempts") or 0),
        "settled_at_ms": int(prov.get("settled_at_ms") or 0),
        "student_distance_p50": _float(student.get("p50")),
        "student_reversal_mean": _float(student.get("reversal_mean")),
        "provenance": _json(prov),
        "scores": _json(rec.get("scores") or {}),
    }


def rejected_row(rec: Mapping[str, Any]) -> dict[str, Any]:
    """A rejection as a row; None becomes "" / "null" so every column keeps one type."""
    example = rec.get("example") or {}
    return {
        "request_id": rec["request_id"],
        "stage": str(rec.get("stage") or ""),
        "reason": str(rec.get("reason") or ""),
        "detail": str(rec.get("detail") or ""),
        "band": str(rec.get("band") or ""),
        "pipeline_version": rec.get("pipeline_version") or "",
        "settled_at_ms": int(example.get("settled_at_ms") or 0),
        "example": _json(rec.get("example")),
        "summary": _json(rec.get("summary")),
        "judgement": _json(rec.get("judgement")),
    }


def _arrow_schema(kind: str) -> Any:
    import pyarrow as pa

    text, i64, f64 = pa.string(), pa.int64(), pa.float64()
    if kind == "kto":
        return pa.schema([
            ("prompt", text), ("completion", text), ("label", pa.bool_()), ("id", text),
            ("request_id", text), ("split", text), ("pipeline_version", text),
            ("prompt_format", text), ("prompt_format_version", i64), ("outcome", text),
            ("undone", pa.bool_()), ("kept_rate", f64), ("repo", text), ("language", text),
            ("served_model_version", text), ("settle_reason", text), ("settled_at_ms", i64),
            ("provenance", text)])
    head = {"sft": [("prompt", text), ("completion", text)],
            "preference": [("prompt", text), ("chosen", text), ("rejected", text),
                           ("rejected_source", text)],
            "rejected": []}[kind]
    if kind == "rejected":
        cols = [("request_id", text), ("stage", text), ("reason", text), ("detail", text),
                ("band", text), ("pipeline_version", text), ("settled_at_ms", i64),
                ("example", text), ("summary", text), ("judgement", text)]
    else:
        cols = [*head, ("id", text), ("request_id", text), ("split", text),
                ("pipeline_version", text), ("prompt_format", text),
                ("prompt_format_version", i64), ("noop", pa.bool_()), ("repo", text),
                ("language", text), ("band", text),
                ("settle_reason", text), ("repair_attempts", i64), ("settled_at_ms", i64),
                ("student_distance_p50", f64), ("student_reversal_mean", f64),
                ("provenance", text), ("scores", text)]
    return pa.schema(cols)


def write_rows(path: Path, rows: list[dict[str, Any]], fmt: str, kind: str) -> bytes:
    """Write rows as JSONL or Parquet (explicit schema); return the bytes written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        blob = b"".join(orjson.dumps(r) + b"\n" for r in rows)
        path.write_bytes(blob)
        return blob
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(rows, schema=_arrow_schema(kind))
    pq.write_table(table, path, compression="zstd")
    return path.read_bytes()


# --------------------------------------------------------------------------- state


@dataclass
class ExportState:
    """What the checkpoint holds: where to continue and what has been seen so far."""

    options: dict[str, Any]
    since_ms: int | None = None
    positions: dict[str, dict[str, int]] = field(default_factory=dict)  # topic → part → next
    spool_bytes: dict[str, int] = field(default_factory=dict)
    stats: Counter[str] = field(default_factory=Counter)
    kafka_ts: dict[str, int] = field(default_factory=dict)  # min / max record timestamp
    runs: int = 0
    complete: bool = False

    def to_json(self) -> bytes:
        return orjson.dumps({
            "version": 1, "options": self.options, "since_ms": self.since_ms,
            "positions": self.positions, "spool_bytes": self.spool_bytes,
            "stats": dict(self.stats), "kafka_ts": self.kafka_ts, "runs": self.runs,
            "complete": self.complete}, option=orjson.OPT_INDENT_2)

    @classmethod
    def from_json(cls, blob: bytes) -> ExportState:
        d = orjson.loads(blob)
        return cls(options=d["options"], since_ms=d["since_ms"], positions=d["positions"],
                   spool_bytes=d["spool_bytes"], stats=Counter(d["stats"]),
                   kafka_ts=d["kafka_ts"], runs=d["runs"], complete=d["complete"])


class Spool:
    """Append-only unique records of one source topic, plus the set of keys already in it."""

    def __init__(self, path: Path, key: str, length: int, drop: tuple[str, ...] = ()) -> None:
        self.path = path
        self.key = key
        self.drop = drop  # fields not kept in the spool
        # drop whatever was appended after the last checkpoint (a crash or a kill -9)
        with path.open("ab") as fh:
            fh.truncate(length)
        self.keys: set[str] = {orjson.loads(line)[key] for line in self._lines()}
        self.fh = path.open("ab")

    def _lines(self) -> Iterator[bytes]:
        with self.path.open("rb") as fh:
            for line in fh:
                if line.strip():
                    yield line

    def add(self, rec: dict[str, Any]) -> bool:
        """Append `rec` unless its key is already there; True when it was new."""
        k = rec[self.key]
        if k in self.keys:
            return False
        self.keys.add(k)
        self.fh.write(orjson.dumps({f: v for f, v in rec.items() if f not in self.drop})
                      + b"\n")
        return True

    def sync(self) -> int:
        self.fh.flush()
        os.fsync(self.fh.fileno())
        return self.fh.tell()

    def records(self) -> Iterator[dict[str, Any]]:
        self.fh.flush()
        for line in self._lines():
            yield orjson.loads(line)

    def close(self) -> None:
        self.fh.close()


def _write_atomic(path: Path, blob: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("wb") as fh:
        fh.write(blob)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


# --------------------------------------------------------------------------- export


@dataclass
class ExportResult:
    complete: bool
    read_this_run: int
    manifest: dict[str, Any] | None


class OptionsMismatch(ValueError):
    pass


def _options(settings: Settings, since: When | None, include_rejected: bool) -> dict[str, Any]:
    topics = [settings.topic("training-records")]
    if include_rejected:
        topics.append(settings.topic("rejected-examples"))
    if settings.eval_unfiltered:
        topics.append(settings.topic("scored-examples"))
    if settings.export_kto:
        topics.append(settings.topic("settled-examples"))
    return {"pipeline_version": settings.pipeline_version, "topics": topics,
            "since": since.text if since else None}


def load_state(out: Path, options: dict[str, Any], restart: bool) -> ExportState:
    state_dir = out / STATE_DIR
    if restart and state_dir.exists():
        shutil.rmtree(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    cp = state_dir / CHECKPOINT
    if not cp.exists():
        return ExportState(options=options)
    state = ExportState.from_json(cp.read_bytes())
    if state.options != options:
        raise OptionsMismatch(
            f"{out} holds an export made with other options ({state.options}); use another "
            "--out directory, the same options, or --restart to start over")
    return state


async def export(settings: Settings, out: Path, *, since: When | None = None,
                 fmt: str = "jsonl", include_rejected: bool = False, restart: bool = False,
                 max_records: int | None = None, progress: bool = True) -> ExportResult:
    """Read the sink topic(s) from the checkpoint to their current end, then (if the end
    was reached) write the dataset files and the manifest. See the module docstring."""
    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}")
    options = _options(settings, since, include_rejected)
    state = load_state(out, options, restart)
    state_dir = out / STATE_DIR
    names = (["training-records"] + (["rejected-examples"] if include_rejected else [])
             + (["scored-examples"] if settings.eval_unfiltered else [])
             + (["settled-examples"] if settings.export_kto else []))
    spools = {settings.topic(n): Spool(state_dir / SPOOLS[n],
                                       "id" if n == "training-records" else "request_id",
                                       state.spool_bytes.get(SPOOLS[n], 0),
                                       # the per-sample scores are not needed, and large
                                       drop=("scores",) if n == "scored-examples" else ())
              for n in names}
    state.runs += 1
    state.complete = False
    read = 0
    consumer = new_consumer(settings, isolation_level="read_committed")
    await consumer.start()
    try:
        tps: list[TopicPartition] = []
        for topic in spools:
            tps += await partitions_of(consumer, topic)
        if since is not None and state.since_ms is None and since.kind == "time":
            state.since_ms = since.value  # "2h" means the same instant on every resume
        start_at = since if since is not None else When("earliest")
        if state.since_ms is not None:
            start_at = When("time", state.since_ms)
        first = await resolve(consumer, tps, start_at)
        pos = {tp: state.positions.get(tp.topic, {}).get(str(tp.partition), first[tp])
               for tp in tps}
        ends = await consumer.end_offsets(tps)
        todo = {tp for tp in tps if pos[tp] < ends[tp]}
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, pos[tp])
        total = sum(max(0, ends[tp] - pos[tp]) for tp in tps)
        last_cp = time.monotonic()

        def checkpoint() -> None:
            for topic, spool in spools.items():
                state.spool_bytes[SPOOLS[_base(settings, topic)]] = spool.sync()
            state.positions = {}
            for tp, p in pos.items():
                state.positions.setdefault(tp.topic, {})[str(tp.partition)] = p
            _write_atomic(state_dir / CHECKPOINT, state.to_json())

        with tqdm(total=total, desc="export", unit="rec", file=sys.stderr,
                  disable=not progress, dynamic_ncols=True) as bar:
            try:
                stop = False
                while todo and not stop:
                    batch = await consumer.getmany(*todo, timeout_ms=1000, max_records=5000)
                    for tp, records in batch.items():
                        # No cut at ends[tp]: Tansu's end offset is the last batch's base
                        # offset + 1, and fetches return whole batches (see read_to_end).
                        for rec in records:
                            _take(rec, spools[tp.topic], settings, state)
                            pos[tp] = rec.offset + 1
                            read += 1
                            bar.update(1)
                            if max_records is not None and read >= max_records:
                                stop = True
                                break
                        if stop:
                            break
                        pos[tp] = max(pos[tp], await consumer.position(tp))
                    todo = {tp for tp in todo if pos[tp] < ends[tp]}
                    if time.monotonic() - last_cp > CHECKPOINT_EVERY_S:
                        checkpoint()
                        last_cp = time.monotonic()
            finally:  # also on Ctrl-C: what was read is kept, the next run continues
                checkpoint()
        if todo:
            return ExportResult(False, read, None)
        state.complete = True
        manifest = finalize(out, spools, settings, state, fmt, include_rejected, ends)
        checkpoint()
        return ExportResult(True, read, manifest)
    finally:
        await consumer.stop()
        for spool in spools.values():
            spool.close()


def _base(settings: Settings, topic: str) -> str:
    return topic.removeprefix(settings.topic_prefix)


def _take(rec: Any, spool: Spool, settings: Settings, state: ExportState) -> None:
    """One source record into the spool: parse, filter by pipeline version, dedupe."""
    state.stats["read"] += 1
    ts = rec.timestamp
    if state.since_ms is not None and ts < state.since_ms:
        # the start offset is the first record stamped at or after --since; a record after
        # it with an older stamp (a late repeat, a slow producer) was not written since then
        state.stats["before_since"] += 1
        return
    state.kafka_ts["min"] = min(state.kafka_ts.get("min", ts), ts)
    state.kafka_ts["max"] = max(state.kafka_ts.get("max", ts), ts)
    try:
        value = orjson.loads(rec.value)
    except (orjson.JSONDecodeError, TypeError):
        state.stats["unparsable"] += 1
        return
    if not isinstance(value, dict) or not isinstance(value.get(spool.key), str):
        state.stats["unparsable"] += 1
        return
    if value.get("pipeline_version") != settings.pipeline_version:
        state.stats["other_pipeline_version"] += 1
        return
    if not spool.add(value):
        own = {SPOOLS["scored-examples"]: "duplicates:scored",  # not dataset rows: own counts
               SPOOLS["settled-examples"]: "duplicates:settled"}
        state.stats[own.get(spool.path.name, f"duplicates:{spool.key}")] += 1


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds"
                                                           ).replace("+00:00", "Z")


def finalize(out: Path, spools: dict[str, Spool], settings: Settings, state: ExportState,
             fmt: str, include_rejected: bool, ends: dict[TopicPartition, int]
             ) -> dict[str, Any]:
    """Write the data files from the spool (sorted by id), the manifest and the card."""
    scored = (list(spools[settings.topic("scored-examples")].records())
              if settings.eval_unfiltered else None)
    # the split, near-duplicates and the unfiltered eval set (streams/dataset.py)
    outcomes = (list(spools[settings.topic("settled-examples")].records())
                if settings.export_kto else None)
    arranged = arrange(list(spools[settings.topic("training-records")].records()), scored,
                       settings, outcomes)
    records = arranged.records
    for stale in ("sft", "preference", "rejected", "kto"):  # a previous run's (other format)
        shutil.rmtree(out / stale, ignore_errors=True)
    files: dict[str, dict[str, Any]] = {}

    counts: dict[str, dict[str, int]] = {}
    data_files: dict[str, dict[str, str]] = {}

    def emit(kind: str, split: str, rows: list[dict[str, Any]]) -> None:
        counts.setdefault(kind, {})[split] = len(rows)
        if not rows:  # `datasets` refuses an empty split, in JSON and in Parquet alike
            return
        rel = f"{kind}/{split}.{fmt}"
        blob = write_rows(out / rel, rows, fmt, kind)
        files[rel] = {"rows": len(rows), "sha256": hashlib.sha256(blob).hexdigest()}
        data_files.setdefault(kind, {})[split] = rel

    for kind in KINDS:
        for split in SPLITS:
            emit(kind, split, [record_row(r) for r in records
                               if r["format"] == kind and r["split"] == split])
    if outcomes is not None:  # the editor's live outcomes (streams/kto.py)
        for split in SPLITS:
            emit("kto", split, [kto_row(r) for r in arranged.kto if r["split"] == split])
    if scored is not None:
        emit("sft", UNFILTERED, [record_row(r) for r in arranged.unfiltered])
        counts["sft"].pop(UNFILTERED)  # counted on its own: not part of the sft records
    rejected: list[Mapping[str, Any]] = []
    if include_rejected:  # the pipeline's rejections, and the export's near-duplicates
        rejected = sorted([*spools[settings.topic("rejected-examples")].records(),
                           *arranged.rejections], key=lambda r: r["request_id"])
        emit("rejected", "rejected", [rejected_row(r) for r in rejected])

    # content hash: every data file, in path order, as "path NUL bytes" (README documents it)
    digest = hashlib.sha256()
    for rel in sorted(files):
        digest.update(rel.encode() + b"\0" + (out / rel).read_bytes())
    prov = [r.get("provenance") or {} for r in records]
    # per example (its SFT record; a preference record is a second record of the same one)
    per_example = [r.get("provenance") or {} for r in records if r.get("format") == "sft"]
    settled = [int(p["settled_at_ms"]) for p in prov if isinstance(p.get("settled_at_ms"), int)]
    models = {name: sorted({str(p[key]) for p in prov if p.get(key)})
              for name, key in (("student", "student_model"), ("teacher", "teacher_model"),
                                ("judge", "judge_model"), ("served", "served_model_version"))}
    manifest: dict[str, Any] = {
        "editstream_export": 1,
        "format": fmt,
        "pipeline_version": settings.pipeline_version,
        "files": files,
        # per kind, the non-empty splits: load_dataset(fmt, data_files=...) takes it as is
        # (paths relative to the export directory)
        "data_files": data_files,
        "counts": {
            "records": len(records),
            **{kind: counts[kind] for kind in KINDS},
            # KTO records by split and label, and the settled examples that gave none, by
            # reason (streams/kto.py); None: not exported
            "kto": None if outcomes is None else {
                **counts["kto"],
                "desirable": sum(1 for r in arranged.kto if r["label"]),
                "undesirable": sum(1 for r in arranged.kto if not r["label"]),
                "undone": sum(1 for r in arranged.kto if r.get("undone")),
                "settled_examples": len(outcomes),
                "skipped": dict(sorted(arranged.kto_skipped.items()))},
            "rejected": len(rejected) if include_rejected else None,
            "examples": len(per_example),
            "by_band": dict(sorted(Counter(str(p.get("band")) for p in per_example).items())),
            "by_settle_reason": dict(sorted(Counter(str(p.get("settle_reason"))
                                                    for p in per_example).items())),
            "repaired": sum(1 for p in per_example if (p.get("repair_attempts") or 0) > 0),
            "rejected_by_reason": dict(sorted(Counter(f"{r.get('stage')}:{r.get('reason')}"
                                                      for r in rejected).items())),
            "eval_unfiltered": len(arranged.unfiltered) if scored is not None else None,
            **_figures(records, arranged.unfiltered),
            # every settled example the pipeline scored (needs scored-examples: with
            # eval_unfiltered): edits by kind and language, the noop/oracle references
            "corpus": (corpus_figures(sc["example"] for sc in scored
                                      if isinstance(sc.get("example"), dict))
                       if scored is not None else None),
        },
        "near_duplicates": {**arranged.plan.stats["near_duplicates"],
                            "dropped_records": {k: arranged.dropped_records[k] for k in
                                                (*KINDS, "kto")}},
        "eval_policy": {**arranged.plan.stats["eval_policy"],
                        "eval_unfiltered": settings.eval_unfiltered,
                        "export_kto": settings.export_kto},
        "license": settings.dataset_license,
        "records_read": state.stats["read"],
        "duplicates_removed": state.stats["duplicates:id"]
        + state.stats["duplicates:request_id"],
        "skipped": {"other_pipeline_version": state.stats["other_pipeline_version"],
                    "unparsable": state.stats["unparsable"],
                    "before_since": state.stats["before_since"]},
        "models": models,
        # name and version of every prompt layout in the dataset (streams/formats.py)
        "prompt_formats": [{"name": n, "version": v} for n, v in sorted(
            {(str(r.get("prompt_format")), r.get("prompt_format_version")) for r in records},
            key=str)],
        "thresholds": {"band_low": settings.band_low, "band_high": settings.band_high,
                       "gate_min_kept_rate": settings.gate_min_kept_rate,
                       "min_valid_samples": settings.min_valid_samples,
                       "noop_keep_fraction": settings.noop_keep_fraction,
                       "judge_max_reversal": settings.judge_max_reversal,
                       "teacher_hindsight": settings.teacher_hindsight,
                       "eval_fraction": settings.eval_fraction},
        "time_range": {
            "settled_at": {"min": _iso(min(settled, default=None)),
                           "max": _iso(max(settled, default=None))},
            "kafka_timestamp": {"min": _iso(state.kafka_ts.get("min")),
                                "max": _iso(state.kafka_ts.get("max"))},
        },
        "since": None if state.since_ms is None and state.options["since"] is None else {
            "text": state.options["since"], "at": _iso(state.since_ms)},
        "source": {"topics": {tp.topic: {} for tp in ends}},
        "content_sha256": digest.hexdigest(),
        "runs": state.runs,
        "exported_at": _iso(int(time.time() * 1000)),
    }
    for tp, end in sorted(ends.items()):
        manifest["source"]["topics"][tp.topic][str(tp.partition)] = end
    _write_atomic(out / "manifest.json", orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    _write_atomic(out / "README.md", dataset_card(manifest).encode())
    return manifest


def _figures(records: Sequence[Mapping[str, Any]], unfiltered: Sequence[Mapping[str, Any]]
             ) -> dict[str, dict[str, dict[str, int]]]:
    """Examples (SFT records) and preference records per split, by language and by
    repository, plus the unfiltered eval examples: `{by_language: {python: {train: n, ...}}}`."""
    out: dict[str, dict[str, Counter[str]]] = {"by_language": {}, "by_repo": {}}
    for rec in [*records, *unfiltered]:
        prov = rec.get("provenance") or {}
        column = (rec["split"] if rec["format"] == "sft" or rec["split"] == UNFILTERED
                  else f"preference_{rec['split']}")
        for name, key in (("by_language", language_of(prov.get("path"))),
                          ("by_repo", str(prov.get("repo") or "(no repository)"))):
            out[name].setdefault(key, Counter())[column] += 1
    return {name: {k: dict(sorted(c.items())) for k, c in sorted(table.items())}
            for name, table in out.items()}


def data_files(out: str | Path, kind: str = "sft") -> dict[str, str]:
    """`{"train": path, "eval": path}` of an export's non-empty splits of `kind` (sft,
    preference, rejected), ready for `load_dataset(format, data_files=...)`."""
    root = Path(out)
    manifest = orjson.loads((root / "manifest.json").read_bytes())
    return {split: str(root / rel) for split, rel in manifest["data_files"].get(kind, {}).items()}


# --------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `editstream export` (plus the settings flags: --pipeline-version selects
    which records are exported, --topic-prefix which run, e.g. a replay's)."""
    parser.add_argument("--out", required=True, metavar="DIR", help="dataset directory")
    parser.add_argument("--since", default=None, metavar="WHEN",
                        help="only records written at or after WHEN (ISO-8601, 2h, 1d, "
                             "offset:N)")
    parser.add_argument("--format", dest="fmt", choices=FORMATS, default="jsonl",
                        help="file format (default: jsonl)")
    parser.add_argument("--rejected", action="store_true",
                        help="also export rejected-examples (rejected/rejected.<format>)")
    parser.add_argument("--restart", action="store_true",
                        help="discard DIR's checkpoint and export from the start")
    parser.add_argument("--max-records", type=int, default=None, metavar="N",
                        help="stop after reading N records (run again to continue)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    settings_mod.add_arguments(parser)


def main_export(ns: argparse.Namespace) -> int:
    settings = settings_mod.from_args(ns)
    if not settings.broker:
        print("editstream export: set --broker or EDITSTREAM_BROKER", file=sys.stderr)
        return 2
    since = parse_when(ns.since) if ns.since else None
    out = Path(ns.out)
    try:
        result = asyncio.run(export(settings, out, since=since, fmt=ns.fmt,
                                    include_rejected=ns.rejected, restart=ns.restart,
                                    max_records=ns.max_records, progress=not ns.no_progress))
    except OptionsMismatch as exc:
        print(f"editstream export: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted; checkpoint saved in {out / STATE_DIR} — run the same command "
              "to continue", file=sys.stderr)
        return 130
    if not result.complete or result.manifest is None:
        print(f"stopped after {result.read_this_run} records; run the same command to "
              "continue")
        return 0
    m = result.manifest
    c = m["counts"]
    print(f"exported {c['records']} records to {out} "
          f"(sft train/eval {c['sft']['train']}/{c['sft']['eval']}, preference train/eval "
          f"{c['preference']['train']}/{c['preference']['eval']}"
          + (f", rejected {c['rejected']}" if c["rejected"] is not None else "")
          + (f", eval_unfiltered {c['eval_unfiltered']}" if c["eval_unfiltered"] is not None
             else "")
          + (f", kto train/eval {c['kto'].get('train', 0)}/{c['kto'].get('eval', 0)} "
             f"({c['kto']['desirable']} kept, {c['kto']['undesirable']} rejected or undone)"
             if c.get("kto") is not None else "")
          + f"); read {result.read_this_run} this run, {m['duplicates_removed']} duplicates "
          f"removed, {m['near_duplicates']['dropped_examples']} near-duplicate examples "
          f"dropped, eval repositories {m['eval_policy']['eval_units']} of "
          f"{m['eval_policy']['units']}, sha256 {m['content_sha256'][:16]}; card {out}/README.md")
    return 0
