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
from streams.ingest import Accepted, decode_event
from streams.settings import Settings, to_env

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


def summary(lines: int, outputs: dict[str, list[dict[str, Any]]], expected: set[str],
            counts: dict[str, int], seconds: float) -> str:
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


def run_demo(settings: Settings, *, sample: Path, out: Path, timeout_s: float = 170) -> int:
    return asyncio.run(_demo(settings, sample, out, timeout_s))


async def _demo(settings: Settings, sample: Path, out: Path, timeout_s: float) -> int:
    t0 = time.monotonic()
    lines = [ln for ln in sample.read_bytes().splitlines() if ln.strip()]
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
        print(summary(len(lines), outputs, expected, counts, time.monotonic() - t0))
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
