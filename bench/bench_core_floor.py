"""The stages after settle with Kafka taken out: their own CPU per example, and the ratio
ceiling it leaves for issue 15's goal 1.

Run ``python -m bench.bench_core_floor [--sessions 200] [--runs 3]``.

Goal 1 asks the whole pipeline for half the examples/s of settle alone. Whatever carries
records between stages, a worker must still do each stage's own work: build the prompts,
draw the student's samples over HTTP (the production `StudentClient`, adaptive sampling),
score them, ask the teacher (and again on repair), judge, and format the records. This
bench does exactly that, in one process with no broker, on the settled examples of the
end-to-end bench's corpus (``editstream.sessions.generate``, seed 11, settled by the pure core), the
model simulator (no added latency) in its own process, and measures the process's CPU per
example, phase by phase:

* ``sample``: ``streams.sample.sample_example`` for every example, 64 at a time, and the
  encoding of its `student-samples` record;
* ``score``: ``streams.score.score_example`` and the `scored-examples` record's encoding;
* ``distill``: the distill and repair agents' flow (``agents.distill.teach``, here without
  its sends): teacher, gates, repair requests while attempts remain, training and rejected
  records encoded.

A worker that runs settle and these stages spends at least settle's CPU per example plus
this floor, so (if the worker's CPU is the bound) the pipeline's examples/s cannot exceed
``settle / (settle + floor)`` of settle-only's, however cheap the transport between the
stages; ``bench/report.py`` puts that next to goal 1 with settle-only's CPU per example from
the end-to-end bench of the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, cast

import aiohttp
import orjson
from prometheus_client import REGISTRY

from agents.distill import NOOP_JUDGEMENT
from agents.runtime import Runtime
from bench.common import events, machine, median, settled_examples
from editstream.sessions.generate import ground_truth, write_jsonl
from editstream.simulator.server import spawn_simulator
from schemas.records import RepairRequest, ScoredExample, SettledExample, StudentSamples
from streams.distill import attempt, student_median
from streams.emit import rejected_record, training_records
from streams.repair import repair_request
from streams.route import next_step, rejection_after, route_scored, to_distill
from streams.sample import build_prompt, sample_example
from streams.score import score_example
from streams.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
IN_FLIGHT = 64
CLK_TCK = os.sysconf("SC_CLK_TCK")


def requests_made() -> dict[str, float]:
    """Model requests the clients have made in this process, by kind (their metric)."""
    made = {"student": 0.0, "teacher": 0.0}
    for family in REGISTRY.collect():
        for sample in family.samples:
            if sample.name == "editstream_model_requests_total":
                kind = sample.labels["kind"]
                made[kind] = made.get(kind, 0.0) + sample.value
    return made


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


async def _bounded(items: list[Any], fn: Any) -> list[Any]:
    sem = asyncio.Semaphore(IN_FLIGHT)

    async def one(item: Any) -> Any:
        async with sem:
            return await fn(item)

    return list(await asyncio.gather(*(one(i) for i in items)))


async def _distill(rt: Runtime, scored: ScoredExample, s: Settings,
                   counts: Counter[str]) -> list[bytes]:
    """What the distill and repair agents do for one scored example, sends replaced by the
    encoded records they would send."""
    route = route_scored(scored, s)
    example = scored["example"]
    if not to_distill(route):
        assert route is not None
        counts["rejected_by_score"] += 1
        return [orjson.dumps(rejected_record(example["request_id"], "score", route, s,
                                             example=example, band=scored["band"],
                                             summary=scored["summary"]))]
    if route == "noop":
        counts["noop"] += 1
        return [orjson.dumps(r) for r in training_records(scored, example["base_region"],
                                                          NOOP_JUDGEMENT, s, attempts=0)]
    source: ScoredExample | RepairRequest = scored
    out: list[bytes] = []
    number = 0
    while True:
        counts["teacher_requests"] += 1
        att = await attempt(example, rt.teacher, rt.judge, s, number=number,
                            previous=cast(str | None, source.get("previous")),
                            judgement=cast(Any, source.get("judgement")),
                            median=student_median(source))
        step = next_step(number, att.judgement, s)
        if step == "emit":
            assert att.region is not None
            counts["emitted"] += 1
            return [*out, *(orjson.dumps(r) for r in training_records(
                source, att.region, att.judgement, s, attempts=number))]
        if step == "repair":
            source = repair_request(source, att, number + 1, s)
            out.append(orjson.dumps(source))
            number += 1
            continue
        counts["rejected_by_teacher"] += 1
        rejected = rejected_record(
            example["request_id"], "distill" if number == 0 else "repair",
            rejection_after(number), s, example=example,
            detail=",".join(att.judgement["reasons"]), band=scored["band"],
            summary=scored["summary"], judgement=att.judgement)
        return [*out, orjson.dumps(rejected)]


async def one_run(url: str, examples: list[bytes]) -> dict[str, Any]:
    s = Settings(student_url=url, teacher_url=url, log_level="warning")
    rt = Runtime(s, cast(Any, None))  # the model clients as the worker builds them
    counts: Counter[str] = Counter()
    cpu: dict[str, float] = {}
    wall: dict[str, float] = {}
    try:
        # warm the clients' pools and TLS context outside the timed phases
        await sample_example(cast(SettledExample, orjson.loads(examples[0])), rt.student, s)

        async def sample(raw: bytes) -> bytes:
            rec = await sample_example(cast(SettledExample, orjson.loads(raw)), rt.student, s)
            return orjson.dumps(rec)

        before = requests_made()
        c0, w0 = time.process_time(), time.perf_counter()
        sampled = await _bounded(examples, sample)
        c1, w1 = time.process_time(), time.perf_counter()
        scored = []
        for raw in sampled:
            sc = score_example(cast(StudentSamples, orjson.loads(raw)), s)
            scored.append(orjson.dumps(sc))
        c2, w2 = time.process_time(), time.perf_counter()

        async def distill(raw: bytes) -> list[bytes]:
            return await _distill(rt, cast(ScoredExample, orjson.loads(raw)), s, counts)

        await _bounded(scored, distill)
        c3, w3 = time.process_time(), time.perf_counter()
        after = requests_made()
    finally:
        await rt.aclose()
    n = len(examples)
    for name, (a, b) in {"sample": (c0, c1), "score": (c1, c2), "distill": (c2, c3)}.items():
        cpu[name] = (b - a) * 1000 / n
    for name, (a, b) in {"sample": (w0, w1), "score": (w1, w2), "distill": (w2, w3)}.items():
        wall[name] = (b - a) * 1000 / n
    return {"examples": n, "cpu_ms_per_example": cpu,
            "total_cpu_ms_per_example": sum(cpu.values()),
            "wall_ms_per_example": wall, "counts": dict(counts),
            "requests_per_example": {k: (after[k] - before[k]) / n for k in after}}


async def client_cost(url: str, examples: list[bytes], n: int = 10) -> dict[str, float]:
    """CPU per student request (n choices) of the production client and of a bare aiohttp
    session posting the same prompts: what the client adds over the least any Python HTTP
    client here does. Alternating, 3 rounds each, medians."""
    s = Settings(student_url=url, teacher_url=url, log_level="warning")
    prompts = [build_prompt(cast(SettledExample, orjson.loads(raw)), s.prompt_format,
                            s.prompt_max_tokens) for raw in examples[:300]]
    bodies = [orjson.dumps({"model": s.student_model, "prompt": p, "n": n,
                            "temperature": s.sample_temperature, "max_tokens": 256,
                            "seed": i}) for i, p in enumerate(prompts)]
    rt = Runtime(s, cast(Any, None))
    bare: list[float] = []
    prod: list[float] = []
    try:
        async with aiohttp.ClientSession() as session:
            async def bare_one(body: bytes) -> Any:
                async with session.post(f"{url}/v1/completions", data=body,
                                        headers={"content-type": "application/json"}) as r:
                    return orjson.loads(await r.read())

            async def prod_one(i: int) -> Any:
                return await rt.student.sample(prompts[i], n, temperature=s.sample_temperature,
                                               max_tokens=256, seed=i)

            for _ in range(4):  # the first round warms both up, not counted
                for fn, items, out in ((bare_one, bodies, bare),
                                       (prod_one, list(range(len(prompts))), prod)):
                    c0 = time.process_time()
                    await _bounded(items, fn)
                    out.append((time.process_time() - c0) * 1000 / len(items))
    finally:
        await rt.aclose()
    return {"choices": n, "bare_aiohttp_cpu_ms_per_request": median(bare[1:]),
            "production_cpu_ms_per_request": median(prod[1:])}


def _runs(examples: list[bytes], runs: int, *flags: str
          ) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """`runs` runs against one simulator started with `flags`, and the clients' cost per
    request against it."""
    sim = spawn_simulator(*flags, cwd=ROOT)
    try:
        results = []
        for _ in range(runs):
            sim_before = proc_cpu_s(sim.pid)
            r = asyncio.run(one_run(sim.url, examples))
            r["simulator_cpu_ms_per_example"] = (proc_cpu_s(sim.pid) - sim_before) * 1000 / len(
                examples)
            results.append(r)
        clients = asyncio.run(client_cost(sim.url, examples))
    finally:
        sim.stop(timeout=10)
    return results, clients


def _summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    stages = ("sample", "score", "distill")
    return {
        "runs": results,
        "cpu_ms_per_example": {st: median([r["cpu_ms_per_example"][st] for r in results])
                               for st in stages},
        "total_cpu_ms_per_example": median([r["total_cpu_ms_per_example"] for r in results]),
        "simulator_cpu_ms_per_example": median([r["simulator_cpu_ms_per_example"]
                                                for r in results]),
        "requests_per_example": {k: median([r["requests_per_example"][k] for r in results])
                                 for k in ("student", "teacher")},
    }


def run(sessions: int = 200, runs: int = 3) -> dict[str, Any]:
    evs = events(sessions, seed=11)
    examples = [orjson.dumps(e) for e in settled_examples(evs)]
    results, clients = _runs(examples, runs)
    # a second workload, the demo's simulator: it answers from the users' own settled code,
    # so the teacher's first answer nearly always passes and repairs are rare (the
    # end-to-end bench's teacher is judged bad on most examples); its student differs too
    with tempfile.TemporaryDirectory() as tmp:
        truth = Path(tmp) / "ground-truth.jsonl"
        write_jsonl(ground_truth(evs), truth)
        keyed, _ = _runs(examples, runs, "--ground-truth", str(truth))
    return {
        "machine": machine(),
        "sessions": sessions,
        "examples": len(examples),
        "in_flight": IN_FLIGHT,
        **_summary(results),
        "answer_key_teacher": _summary(keyed),
        "client_cost": clients,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    print(json.dumps(run(args.sessions, args.runs), indent=2))


if __name__ == "__main__":
    main()
