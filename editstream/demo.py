"""`editstream demo` / `make demo`: the whole pipeline on one machine, start to finish.

Starts what is not configured (the embedded Tansu broker, the model simulator), runs a worker,
feeds the bundled sample with a final flush, waits until every prediction is accounted for
(training record, rejection or dead letter), writes the dataset and prints a summary.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from editstream.kafka_io import ensure_topics, produce_events, read_to_end
from streams.ingest import Accepted, Discarded, decode_event
from streams.settings import Settings, to_env

# `--models local`: settings fit for SmolLM2-135M on llama.cpp's one-slot CPU server, applied
# where neither a flag nor an EDITSTREAM_* variable says otherwise. A 135M model is far from
# any settled region (median distance ~0.8): the ideal band is widened so the teacher and the
# judge run on real output too, instead of every example ending in `noise`.
LOCAL_DEFAULTS: dict[str, Any] = {
    "samples": 4,
    "sample_max_tokens": 64,
    "student_timeout_s": 120.0,
    "teacher_timeout_s": 300.0,
    "band_high": 0.95,
    "repair_attempts": 1,
    "student_max_in_flight": 8,
    "teacher_max_in_flight": 8,
}
LOCAL_MAX_PREDICTIONS = 10  # the bundled sample's first sessions, up to this many predictions
LOCAL_TIMEOUT_S = 1800.0

OUTPUT_TOPICS = ("training-records", "rejected-examples", "edit-events-dlq", "pipeline-dlq",
                 "settled-examples", "scored-examples", "repair")


def expected_predictions(lines: list[bytes], settings: Settings) -> set[str]:
    """Request ids of the predictions ingest will forward (privacy and schema applied)."""
    out = set()
    for raw in lines:
        v = decode_event(raw, settings)
        if isinstance(v, Accepted) and v.event["type"] == "prediction":
            out.add(v.event["request_id"])
    return out


def ingest_discards(lines: list[bytes], settings: Settings) -> Counter[str]:
    """Events ingest discards for privacy, by reason (the worker's own verdict)."""
    return Counter(v.reason for raw in lines
                   if isinstance(v := decode_event(raw, settings), Discarded))


def _request_id_of_dead_letter(rec: dict[str, Any]) -> str | None:
    try:
        original = orjson.loads(base64.b64decode(rec["original_b64"]))
    except (orjson.JSONDecodeError, ValueError, KeyError):
        return None
    if isinstance(original, dict) and isinstance(original.get("request_id"), str):
        rid: str = original["request_id"]
        # an orphan `settled` or a late `outcome` does not account for its prediction
        return rid if original.get("type") in ("prediction", None) else None
    if isinstance(original, dict) and isinstance(original.get("example"), dict):
        return str(original["example"].get("request_id"))
    return None


async def collect(settings: Settings) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for name in OUTPUT_TOPICS:
        out[name] = [orjson.loads(r.value) async for r in
                     read_to_end(settings.broker, settings.topic(name))]
    return out


def accounted(outputs: dict[str, list[dict[str, Any]]]) -> set[str]:
    ids = {r["request_id"] for r in outputs["training-records"]}
    ids |= {r["request_id"] for r in outputs["rejected-examples"]}
    for name in ("edit-events-dlq", "pipeline-dlq"):
        ids |= {rid for r in outputs[name] if (rid := _request_id_of_dead_letter(r))}
    return ids


def write_dataset(outputs: dict[str, list[dict[str, Any]]], out: Path) -> dict[str, int]:
    out.mkdir(parents=True, exist_ok=True)
    records = {r["id"]: r for r in outputs["training-records"]}  # dedupe by id
    rejected = {r["request_id"]: r for r in outputs["rejected-examples"]}
    counts = {}
    for split in ("train", "eval"):
        rows = [r for r in records.values() if r["split"] == split]
        (out / f"{split}.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
        counts[split] = len(rows)
    (out / "rejected.jsonl").write_bytes(
        b"".join(orjson.dumps(r) + b"\n" for r in rejected.values()))
    counts["rejected"] = len(rejected)
    return counts


async def export_dataset(settings: Settings, out: Path) -> str:
    """`editstream export --rejected` of this run, with the unfiltered eval set: the
    directory a training team gets (dataset card, splits, near-duplicates handled)."""
    from editstream.export import export

    result = await export(settings.replace(eval_unfiltered=True), out, include_rejected=True,
                          restart=True, progress=False)
    m = result.manifest or {}
    c, nd = m.get("counts", {}), m.get("near_duplicates", {})
    return (f"  export:           {out} (README.md dataset card): sft {c.get('sft')}, "
            f"preference {c.get('preference')}, eval_unfiltered {c.get('eval_unfiltered')}, "
            f"near-duplicate groups {nd.get('groups')} ({nd.get('dropped_examples')} dropped); "
            f"load_dataset({str(out)!r}, 'sft')\n"
            "                    (its split is the one to train on: near-duplicates and eval "
            "policy applied; `dataset:` above is the split stamped while streaming)")


def summary(lines: int, outputs: dict[str, list[dict[str, Any]]], expected: set[str],
            counts: dict[str, int], seconds: float, discards: Counter[str] | None = None) -> str:
    settled = Counter(r["settle_reason"] for r in outputs["settled-examples"])
    bands = Counter(r["band"] for r in outputs["scored-examples"])
    kinds = Counter((r["format"], r["split"]) for r in
                    {r["id"]: r for r in outputs["training-records"]}.values())
    repaired = {r["request_id"] for r in outputs["training-records"]
                if r["provenance"]["repair_attempts"] > 0}
    reasons = Counter(f"{r['stage']}:{r['reason']}" for r in outputs["rejected-examples"])
    dlq = Counter(r["reason"] for n in ("edit-events-dlq", "pipeline-dlq") for r in outputs[n])
    fmt = lambda c: ", ".join(f"{k}={v}" for k, v in sorted(c.items())) or "-"  # noqa: E731
    return "\n".join([
        f"editstream demo finished in {seconds:.1f} s",
        f"  events in:        {lines}",
        f"  discarded:        {fmt(discards or Counter())} (privacy, at ingest; their "
        "predictions' later events follow them)",
        f"  predictions:      {len(expected)} forwarded past ingest, "
        f"{len(accounted(outputs) & expected)} accounted for",
        f"  settled by reason: {fmt(settled)}",
        f"  bands:            {fmt(bands)}",
        f"  repair requests:  {len(outputs['repair'])}, repaired examples: {len(repaired)}",
        f"  records:          {fmt({f'{k}/{s}': v for (k, s), v in kinds.items()})}",
        f"  rejected:         {fmt(reasons)}",
        f"  dead letters:     {fmt(dlq)}",
        f"  dataset:          train={counts['train']} eval={counts['eval']} "
        f"rejected={counts['rejected']}",
    ])


def local_settings(settings: Settings, explicit: set[str]) -> Settings:
    """`settings` with LOCAL_DEFAULTS for the fields not in `explicit` (set by flag or env)."""
    changes = {k: v for k, v in LOCAL_DEFAULTS.items() if k not in explicit}
    return settings.replace(**changes)


def first_predictions(lines: list[bytes], limit: int, settings: Settings) -> list[bytes]:
    """`lines` cut to their first `limit` predictions that ingest forwards: later predictions
    (with their `settled`/`outcome` events) and sessions left without one are dropped; the
    edits of the kept sessions stay, since they settle the kept predictions."""
    kept: set[str] = set()
    sessions: set[str] = set()
    out: list[tuple[bytes, str | None, str]] = []
    for raw in lines:
        v = decode_event(raw, settings)
        if not isinstance(v, Accepted):
            out.append((raw, None, ""))  # ingest's business (dead letters, discards)
            continue
        ev = v.event
        if ev["type"] == "prediction":
            if len(kept) >= limit:
                continue
            kept.add(ev["request_id"])
            sessions.add(ev["session_id"])
        elif ev["type"] in ("settled", "outcome") and ev["request_id"] not in kept:
            continue
        out.append((raw, ev["session_id"], ev["type"]))
    return [raw for raw, sid, _ in out if sid is None or sid in sessions]


def run_demo(settings: Settings, *, sample: Path, out: Path, timeout_s: float = 170,
             models: str = "simulator", max_predictions: int = 0) -> int:
    return asyncio.run(_demo(settings, sample, out, timeout_s, models, max_predictions))


async def _demo(settings: Settings, sample: Path, out: Path, timeout_s: float,
                models: str = "simulator", max_predictions: int = 0) -> int:
    t0 = time.monotonic()
    lines = [ln for ln in sample.read_bytes().splitlines() if ln.strip()]
    if max_predictions:
        lines = first_predictions(lines, max_predictions, settings)
    async with contextlib.AsyncExitStack() as stack:
        if not settings.broker:
            from editstream.broker import start_broker

            broker = await asyncio.to_thread(start_broker, "tansu",
                                             partitions=settings.partitions)
            stack.callback(broker.stop)
            settings = settings.replace(broker=broker.bootstrap)
            print(f"started embedded Tansu broker on {broker.bootstrap}")
        else:  # a shared broker: keep this run's topics apart
            run = time.strftime("%Y%m%d%H%M%S")
            settings = settings.replace(topic_prefix=f"{settings.topic_prefix}demo-{run}-",
                                        app_id=f"{settings.app_id}-demo-{run}")
        if models == "local":
            from editstream.local_model import start_local_model

            print("starting llama.cpp's server with SmolLM2-135M-Instruct…")
            llm = await asyncio.to_thread(start_local_model, out / "local-model.log")
            stack.callback(llm.stop)
            settings = settings.replace(
                student_url=settings.student_url or llm.url,
                teacher_url=settings.teacher_url or llm.url,
                judge_url=settings.judge_url or llm.url)
            print(f"started local model {llm.model} on {llm.url} (student, teacher, judge)")
        if not settings.student_url or not settings.teacher_url:
            from editstream.simulate import SimulatorConfig, start_simulator
            from streams.generate import ground_truth, write_jsonl

            # The simulator's teacher answers from the sample's answer key (what the users
            # left, settled offline by the pipeline's rules), never from the prompt.
            out.mkdir(parents=True, exist_ok=True)
            truth = out / "ground-truth.jsonl"
            write_jsonl(ground_truth(orjson.loads(ln) for ln in lines), truth)
            sim = await start_simulator(SimulatorConfig(seed=settings.seed,
                                                        ground_truth=str(truth)))
            stack.push_async_callback(sim.stop)
            settings = settings.replace(student_url=settings.student_url or sim.url,
                                        teacher_url=settings.teacher_url or sim.url)
            print(f"started model simulator on {sim.url}")
        await ensure_topics(settings)
        worker = _spawn_worker(settings, out)
        stack.callback(_stop, worker)
        expected = expected_predictions(lines, settings)
        await produce_events(settings, lines, flush=True)
        print(f"produced {len(lines)} events ({len(expected)} predictions past ingest); "
              "waiting for the pipeline…")
        deadline = time.monotonic() + timeout_s
        outputs: dict[str, list[dict[str, Any]]] = {}
        while time.monotonic() < deadline:
            if worker.poll() is not None:
                print(f"worker exited with {worker.returncode}; see {out / 'worker.log'}")
                return 1
            outputs = await collect(settings)
            missing = expected - accounted(outputs)
            if not missing:
                break
            await asyncio.sleep(2)
        else:
            print(f"timed out: {len(expected - accounted(outputs))} predictions unaccounted")
            return 1
        outputs = await collect(settings)  # settle stragglers such as preference records
        counts = write_dataset(outputs, out)
        print(summary(len(lines), outputs, expected, counts, time.monotonic() - t0,
                      ingest_discards(lines, settings)))
        print(await export_dataset(settings, out / "dataset"))
    return 0


def _spawn_worker(settings: Settings, out: Path) -> subprocess.Popen[bytes]:
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **to_env(settings)}
    log = open(out / "worker.log", "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen([sys.executable, "-m", "editstream.cli", "worker"], env=env,
                            stdout=log, stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
