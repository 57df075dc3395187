"""The production model client on a production-shaped server: llama.cpp's ``llama-server``
(SmolLM2-135M-Instruct, the ``local-model`` tier: parallel slots, continuous batching, ``n``
honoured up to the slot count), and what a training record costs on it.

Run ``python -m bench.bench_local_model [--quick] [--only limits,modes,efficiency,cost]
[--slots 1,4,8] [--model GGUF] [--json]`` (``make local-model`` first; ``--only limits
--slots 8`` runs the limits part against 8 slots alone). Four parts, each on a server of its
own started for it; every figure is a ratio or a comparison measured in the same run, runs
alternating so load from elsewhere hits both sides alike:

* **limits**: the adaptive concurrency limit against 1, 4 and 8 slots. The production
  ``StudentClient`` (``max_in_flight=64``, adaptive limit starting at 1, the sample stage's
  timeout) gets every example at once, one request per sample (``n=1``: a request is one
  slot's work); where its limit settles (time-weighted over the second half of the run),
  the highest it tried, and every request that timed out or was retried (an example lost
  to our own queueing would show there).
Every measured run has a fresh server, so no run finds another's prompts in llama-server's
prompt cache (an earlier version of this bench ran both sides on one server: the second side
found the first's prompts cached).

* **modes**: n-mode (one request asks for up to ``slots`` choices; the server evaluates the
  prompt once and copies it to the other slots) against parallel requests (one per sample),
  the same samples (same seeds), production client both times: samples/s and the prompt
  tokens the server evaluated (its ``/metrics``).
* **efficiency**: samples/s of the production client (its default mode) against a minimal
  client that sends the same request bodies and keeps exactly the server's slots busy
  (``slots / n`` requests in flight, no limiter, no retries).
* **cost**: model-server time and tokens per example and per training record. *Naive*: 50
  samples, one request each, a fixed ``max_tokens`` (``NAIVE_MAX_TOKENS``), no stop
  sequences. *Defaults*: the sample stage's own ``sample_example`` (adaptive sampling,
  n-mode, ``max_tokens`` fitted to the region, the format's stop sequences). Both with the
  same seeds, so sample ``i`` is drawn with the same seed on both sides; both records go
  through the score stage's ``score_example``, and the band decisions are compared.
  Server time is the wall time of a server doing nothing else (what a deployment pays for);
  tokens are the server's own counters (``usage`` in an ``n`` response counts the first
  choice only).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, cast

import httpx
from prometheus_client.parser import text_string_to_metric_families

from agents.models import StudentClient
from bench.common import load, machine, median, save, settled_examples, spread
from editstream.demo import LOCAL_DEFAULTS
from editstream.infra.local_model import LocalModel, start_local_model
from editstream.sessions.generate import GenerateConfig, generate_events
from schemas.records import SettledExample
from streams.adaptive import replay
from streams.formats import build_prompt, prompt_format
from streams.limiter import AdaptiveLimit
from streams.models import Endpoint, SampleBatch
from streams.sample import (
    max_tokens_for,
    policy_for,
    sample_distance,
    sample_example,
    sample_seed,
    samples_record,
)
from streams.score import score_example
from streams.settings import Settings

NAIVE_SAMPLES = 50
# The naive setup's fixed max_tokens: one cap for every example, large enough that it cuts no
# answer the fitted rule allows for the cost part's examples (their fitted max_tokens are
# 170-198), and also the defaults' cap, so the defaults never ask more per sample. The client's
# old fixed default was 1024; 256 keeps the naive run within minutes on 2 shared cores and
# makes its cost an underestimate (the ratio below is conservative).
NAIVE_MAX_TOKENS = 256
PARTS = ("limits", "modes", "efficiency", "cost")


def settings(**changes: Any) -> Settings:
    """The real-model tier's settings (`editstream demo --models local`) and ``changes``."""
    return Settings().replace(**{**LOCAL_DEFAULTS, **changes})


def examples(count: int, seed: int = 21) -> list[SettledExample]:
    """Settled examples from generated traces (quiescence: the usual case), in order."""
    evs = generate_events(GenerateConfig(seed=seed, sessions=max(3, count // 3 + 2),
                                         predictions_per_session=5))
    chosen = [e for e in settled_examples(evs) if e["settle_reason"] == "quiescence"]
    if len(chosen) < count:
        raise RuntimeError(f"only {len(chosen)} examples for {count}")
    return [cast(SettledExample, e) for e in chosen[:count]]


def server_counters(url: str) -> dict[str, float]:
    """llama-server's Prometheus counters (``llamacpp:*``), by name without the prefix."""
    text = httpx.get(f"{url}/metrics", timeout=10).raise_for_status().text
    return {s.name.removeprefix("llamacpp:"): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def _delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    keys = ("prompt_tokens_total", "prompt_tokens_cached_total", "tokens_predicted_total",
            "n_decode_total", "prompt_seconds_total", "tokens_predicted_seconds_total")
    return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in keys}


class Request:
    """One request body the production client would send, for the minimal client."""

    def __init__(self, prompt: str, start: int, count: int, seed: int, max_tokens: int,
                 stop: list[str]) -> None:
        self.prompt, self.start, self.count = prompt, start, count
        self.seed, self.max_tokens, self.stop = seed, max_tokens, stop

    def body(self, model: str, temperature: float) -> dict[str, Any]:
        return {"model": model, "prompt": self.prompt, "n": self.count,
                "seed": self.seed + self.start, "temperature": temperature,
                "max_tokens": self.max_tokens, "stop": self.stop}


def workload(exs: list[SettledExample], samples: int, s: Settings
             ) -> list[tuple[str, int, int, list[str]]]:
    """(prompt, seed, max_tokens, stop) per example, as the sample stage builds them."""
    stop = list(prompt_format(s.prompt_format).stop)
    return [(build_prompt(e, s.prompt_format, s.prompt_max_tokens), sample_seed(e, s),
             max_tokens_for(e, s.prompt_format, s.sample_max_tokens), stop) for e in exs]


async def production(llm: LocalModel, work: list[tuple[str, int, int, list[str]]],
                     samples: int, *, n_mode: bool, timeout_s: float = 120.0
                     ) -> dict[str, Any]:
    """Every example at once through the production client (as the sample stage submits
    them); ``n_mode=False`` makes it one request per sample from the start."""
    trace: list[tuple[float, float]] = []
    t0 = time.monotonic()
    limiter = AdaptiveLimit(64, latency_budget_s=timeout_s,
                            observer=lambda v: trace.append((time.monotonic() - t0, v)))
    ep = Endpoint(llm.url, llm.model, timeout_s=timeout_s, max_retries=4)
    before = server_counters(llm.url)
    async with StudentClient(ep, max_in_flight=64, limiter=limiter) as client:
        if not n_mode:
            client.n_cap = 1
        t0 = time.monotonic()
        batches: list[SampleBatch] = await asyncio.gather(*(
            client.sample(p, samples, temperature=0.8, max_tokens=mt, seed=seed, stop=stop)
            for p, seed, mt, stop in work))
        elapsed = time.monotonic() - t0
        cap = client.n_cap
    server = _delta(before, server_counters(llm.url))
    done = sum(len(b.texts) for b in batches)
    return {"samples": done, "elapsed_s": elapsed, "samples_per_s": done / elapsed,
            "requests": sum(b.requests for b in batches),
            "retries": sum(b.retries for b in batches),
            "modes": dict(Counter(b.mode for b in batches)), "n_cap": cap,
            "final_limit": limiter.limit, "peak_limit": limiter.peak_limit,
            "settled_limit": _settled(trace, elapsed, limiter.limit),
            "limit_trace": [(round(t, 2), round(v, 2)) for t, v in trace],
            "server": server}


def _settled(trace: list[tuple[float, float]], end: float, last: float) -> float:
    """The limit's time-weighted mean over the second half of the run."""
    if not trace:
        return last
    half = end / 2
    total = weighted = 0.0
    points = [*trace, (end, trace[-1][1])]
    for (t, v), (t_next, _) in itertools.pairwise(points):
        lo, hi = max(t, half), max(t_next, half)
        if hi > lo:
            weighted += v * (hi - lo)
            total += hi - lo
    return weighted / total if total else trace[-1][1]


async def minimal(llm: LocalModel, requests: list[Request], in_flight: int,
                  temperature: float = 0.8) -> dict[str, Any]:
    """The bound: ``in_flight`` workers, each sending the next request as soon as its last
    one is answered; plain httpx, no limiter, no retries."""
    queue = list(reversed(requests))
    done = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal done
        while queue:
            r = queue.pop()
            resp = await client.post("/v1/completions", json=r.body(llm.model, temperature))
            resp.raise_for_status()
            done += len(resp.json()["choices"])

    limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
    async with httpx.AsyncClient(base_url=llm.url, timeout=600, limits=limits) as client:
        t0 = time.monotonic()
        await asyncio.gather(*(worker(client) for _ in range(in_flight)))
        elapsed = time.monotonic() - t0
    return {"samples": done, "elapsed_s": elapsed, "samples_per_s": done / elapsed,
            "requests": len(requests), "in_flight": in_flight}


def student_gguf() -> Path | None:
    """The student every part serves: ``EDITSTREAM_BENCH_MODEL`` (a GGUF), else the
    flywheel's fine-tune when ``make flywheel`` has left one (``flywheel-output/model/
    model.gguf``), else SmolLM2-135M-Instruct.
    The base model never learned the answer format and rarely ends an answer, so its samples
    run to ``max_tokens``; a student trained on the format ends them, which is what the cost
    part's stop sequences and fitted ``max_tokens`` are for."""
    path = os.environ.get("EDITSTREAM_BENCH_MODEL")
    if path:
        return Path(path)
    # what `make flywheel` leaves in the checkout, when it has run
    made = Path(__file__).resolve().parent.parent / "flywheel-output" / "model" / "model.gguf"
    return made if made.exists() else None


def _server(tmp: str, slots: int, name: str) -> LocalModel:
    llm = start_local_model(Path(tmp) / f"{name}-{slots}.log", slots=slots,
                            model=student_gguf())
    # load the weights into the page cache and the threads' first run out of the figures
    httpx.post(f"{llm.url}/v1/completions", json={"model": llm.model, "prompt": "def f(",
                                                  "max_tokens": 4}, timeout=120)
    return llm


# --------------------------------------------------------------------------- parts


def limits(tmp: str, exs: list[SettledExample], samples: int,
           slot_counts: tuple[int, ...] = (1, 4, 8)) -> list[dict[str, Any]]:
    s = settings()
    work = workload(exs, samples, s)
    out = []
    for slots in slot_counts:
        with _server(tmp, slots, "limits") as llm:
            r = asyncio.run(production(llm, work, samples, n_mode=False))
        busy = r["server"]
        r.update(slots=slots, within_one=abs(r["settled_limit"] - slots) <= 1.0,
                 busy_slots_per_decode=None)
        if busy["n_decode_total"]:
            # sequences decoded per llama_decode call while generating: how full the slots were
            r["busy_slots_per_decode"] = busy["tokens_predicted_total"] / busy["n_decode_total"]
        out.append(r)
    return out


# modes and efficiency compare request patterns, not answer lengths: a 32-token cap halves
# their decode time on the shared cores (the cost part keeps the demo's settings)
SHORT = {"sample_max_tokens": 32}


def modes(tmp: str, exs: list[SettledExample], samples: int, slots: int, runs: int
          ) -> dict[str, Any]:
    s = settings(**SHORT)
    work = workload(exs, samples, s)
    pairs = []
    for _ in range(runs):  # a fresh server per run: no side finds the other's prompts cached
        with _server(tmp, slots, "modes") as llm:
            p = asyncio.run(production(llm, work, samples, n_mode=False))
        with _server(tmp, slots, "modes") as llm:
            n = asyncio.run(production(llm, work, samples, n_mode=True))
        pairs.append({"parallel": p, "n": n, "ratio": n["samples_per_s"] / p["samples_per_s"]})
    ratios = [x["ratio"] for x in pairs]
    return {"slots": slots, "examples": len(exs), "samples": samples, "runs": pairs,
            "ratio_n_over_parallel": median(ratios), "ratio_spread": spread(ratios),
            "faster": "n" if median(ratios) >= 1.0 else "parallel"}


def efficiency(tmp: str, exs: list[SettledExample], samples: int, slots: int, runs: int
               ) -> dict[str, Any]:
    s = settings(**SHORT)
    work = workload(exs, samples, s)
    per_request = min(samples, slots)  # the chunks the production client ends up asking
    requests = [Request(p, start, min(per_request, samples - start), seed, mt, stop)
                for p, seed, mt, stop in work for start in range(0, samples, per_request)]
    in_flight = max(1, slots // per_request)
    pairs = []
    for _ in range(runs):  # a fresh server per run: no side finds the other's prompts cached
        with _server(tmp, slots, "efficiency") as llm:
            b = asyncio.run(minimal(llm, requests, in_flight))
        with _server(tmp, slots, "efficiency") as llm:
            p = asyncio.run(production(llm, work, samples, n_mode=True))
        pairs.append({"minimal": b, "production": p,
                      "ratio": p["samples_per_s"] / b["samples_per_s"]})
    ratios = [x["ratio"] for x in pairs]
    return {"slots": slots, "examples": len(exs), "samples": samples,
            "choices_per_request": per_request, "minimal_in_flight": in_flight,
            "runs": pairs, "ratio": median(ratios), "ratio_spread": spread(ratios)}


def _decision(record: Any, s: Settings) -> str:
    scored = score_example(record, s)
    return "unparsable" if scored["unparsable_samples"] else str(scored["band"])


async def _naive(llm: LocalModel, exs: list[SettledExample], s: Settings) -> list[Any]:
    ep = Endpoint(llm.url, llm.model, timeout_s=s.student_timeout_s, max_retries=4)
    async with StudentClient(ep, max_in_flight=64) as client:
        client.n_cap = 1  # one request per sample

        async def one(e: SettledExample) -> Any:
            seed = sample_seed(e, s)
            batch = await client.sample(build_prompt(e, s.prompt_format, s.prompt_max_tokens),
                                        NAIVE_SAMPLES, temperature=s.sample_temperature,
                                        max_tokens=NAIVE_MAX_TOKENS, seed=seed)
            return samples_record(e, batch, s, seed)

        return list(await asyncio.gather(*(one(e) for e in exs)))


async def _defaults(llm: LocalModel, exs: list[SettledExample], s: Settings) -> list[Any]:
    ep = Endpoint(llm.url, llm.model, timeout_s=s.student_timeout_s, max_retries=4)
    async with StudentClient(ep, max_in_flight=64) as client:
        return list(await asyncio.gather(*(sample_example(e, client, s) for e in exs)))


def _cost_side(llm: LocalModel, name: str, exs: list[SettledExample], s: Settings
               ) -> dict[str, Any]:
    before = server_counters(llm.url)
    t0 = time.monotonic()
    records = asyncio.run((_naive if name == "naive" else _defaults)(llm, exs, s))
    elapsed = time.monotonic() - t0
    server = _delta(before, server_counters(llm.url))
    decisions = [_decision(r, s) for r in records]
    finish = Counter(f for r in records for f in r["finish_reasons"])
    return {"elapsed_s": elapsed, "server": server, "decisions": decisions,
            "samples": sum(len(r["samples"]) for r in records),
            "requests": sum(r["requests"] for r in records),
            "finish_reasons": dict(finish),
            "modes": dict(Counter(r["student"]["mode"] for r in records)),
            "records": records}


def _valid_distances(e: SettledExample, record: Any, s: Settings) -> list[float | None]:
    return [sample_distance(e, t, s.prompt_format, f)
            for t, f in zip(record["samples"], record["finish_reasons"], strict=True)]


def _per_example(e: SettledExample, naive: Any, default: Any, s: Settings) -> dict[str, Any]:
    """What each side drew and made of one example, and what the stopping rule makes of the
    naive side's 50 samples (same seeds; no stop sequences and the fixed ``max_tokens``
    there, so validity can differ from the defaults' own samples)."""
    nd, dd = _valid_distances(e, naive, s), _valid_distances(e, default, s)
    drawn, decided = replay(nd, policy_for(s))
    return {"request_id": e["request_id"], "region_bytes": len(e["base_region"].encode()),
            "max_tokens_fitted": max_tokens_for(e, s.prompt_format, s.sample_max_tokens),
            "naive_valid": sum(d is not None for d in nd), "naive": _decision(naive, s),
            "defaults_drawn": len(dd), "defaults_valid": sum(d is not None for d in dd),
            "defaults": _decision(default, s), "rule_on_naive": [drawn, decided]}


def cost(tmp: str, exs: list[SettledExample], slots: int, runs: int) -> dict[str, Any]:
    """Naive against defaults on one server, alternating; the decisions of the first run of
    each (the samples are seeded: later runs repeat them)."""
    s = settings(samples=NAIVE_SAMPLES, sample_max_tokens=NAIVE_MAX_TOKENS)
    sides: dict[str, list[dict[str, Any]]] = {"naive": [], "defaults": []}
    for _ in range(runs):
        for name in ("naive", "defaults"):  # a fresh server each: no prompt cached before
            with _server(tmp, slots, "cost") as llm:
                sides[name].append(_cost_side(llm, name, exs, s))
    naive, default = sides["naive"][0], sides["defaults"][0]
    changed = [i for i, (a, b) in enumerate(zip(naive["decisions"], default["decisions"],
                                                  strict=True)) if a != b]
    n = len(exs)

    def per_example(side: list[dict[str, Any]]) -> dict[str, float]:
        server = {k: statistics.mean(r["server"][k] for r in side) for k in side[0]["server"]}
        return {"server_s": median([r["elapsed_s"] for r in side]) / n,
                "prompt_tokens": server["prompt_tokens_total"] / n,
                "prompt_tokens_cached": server["prompt_tokens_cached_total"] / n,
                "completion_tokens": server["tokens_predicted_total"] / n,
                "samples": side[0]["samples"] / n, "requests": side[0]["requests"] / n}

    pn, pd = per_example(sides["naive"]), per_example(sides["defaults"])
    drawn = Counter(len(r["samples"]) for r in default["records"])
    ratios = [d["elapsed_s"] / nv["elapsed_s"]
              for nv, d in zip(sides["naive"], sides["defaults"], strict=True)]
    records = Counter(default["decisions"])
    return {
        "slots": slots, "examples": n, "runs": runs, "naive_max_tokens": NAIVE_MAX_TOKENS,
        "naive_samples": NAIVE_SAMPLES, "naive": pn, "defaults": pd,
        "adaptive": {"rule": s.adaptive_rule, "min_samples": s.adaptive_min_samples,
                     "batch": s.adaptive_batch, "confidence": s.adaptive_confidence},
        "ratio_server_s": median(ratios), "ratio_spread": spread(ratios),
        "ratio_tokens": (pd["prompt_tokens"] + pd["completion_tokens"])
        / (pn["prompt_tokens"] + pn["completion_tokens"]),
        "decisions_naive": dict(Counter(naive["decisions"])),
        "decisions_defaults": dict(records),
        "changed_decisions": len(changed), "changed_fraction": len(changed) / n,
        "changed": [{"request_id": exs[i]["request_id"], "naive": naive["decisions"][i],
                     "defaults": default["decisions"][i]} for i in changed],
        "defaults_drawn": {str(k): v for k, v in sorted(drawn.items())},
        "finish_naive": naive["finish_reasons"], "finish_defaults": default["finish_reasons"],
        "modes_defaults": default["modes"],
        # the examples that go on to the teacher (streams/route.py): the ideal band; the
        # others leave as band_trivial, band_noise or unparsable_samples
        "training_record_share": records.get("ideal", 0) / n,
        "per_example": [_per_example(e, a, b, s) for e, a, b in
                        zip(exs, naive["records"], default["records"], strict=True)],
        "sample_texts": {"naive": naive["records"][0]["samples"][:2],
                         "defaults": default["records"][0]["samples"][:2]},
    }


def run(quick: bool = False, only: tuple[str, ...] = PARTS,
        slot_counts: tuple[int, ...] = (1, 4, 8)) -> dict[str, Any]:
    runs = 1 if quick else 2
    model = student_gguf()
    figures: dict[str, Any] = {"machine": machine(), "quick": quick,
                               "model": str(model) if model else "SmolLM2-135M-Instruct"}
    with tempfile.TemporaryDirectory() as tmp:
        # sizes for ~25 min on 2 shared cores: prompts of ~800 tokens, answers run to the cap
        if "limits" in only:
            figures["limits"] = limits(tmp, examples(4 if quick else 8), 8, slot_counts)
        if "modes" in only:
            figures["modes"] = modes(tmp, examples(4), 8, 4, runs)
        if "efficiency" in only:
            figures["efficiency"] = efficiency(tmp, examples(4), 8, 4, runs)
        if "cost" in only:
            figures["cost"] = cost(tmp, examples(2 if quick else 3), 4, 1)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default=",".join(PARTS))
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--model", default=None, metavar="GGUF",
                        help="the student to serve (default: $EDITSTREAM_BENCH_MODEL, else "
                             "SmolLM2-135M-Instruct)")
    parser.add_argument("--slots", default="1,4,8",
                        help="the limits part's slot counts, e.g. 8 (one server each)")
    parser.add_argument("--save", action="store_true",
                        help="merge the parts run into bench/results/local_model.json (for "
                             "`python -m bench.run --saved local_model`)")
    a = parser.parse_args()
    if a.model:
        os.environ["EDITSTREAM_BENCH_MODEL"] = str(Path(a.model).resolve())
    t0 = time.monotonic()
    figures = run(a.quick, tuple(a.only.split(",")), tuple(int(x) for x in a.slots.split(",")))
    if a.save:
        old = load("local_model") or {}
        merged = {**(old if "limits" in old or "cost" in old else {}), **figures}
        merged["seconds"] = time.monotonic() - t0 + float(old.get("seconds", 0.0))
        merged.setdefault("load", []).append(
            " ".join(f"{x:.2f}" for x in os.getloadavg()))
        save("local_model", merged)
    if a.json:
        print(json.dumps(figures, indent=2, default=str))
        return
    for r in figures.get("limits", []):
        print(f"{r['slots']} slots: limit settled at {r['settled_limit']:.2f} (final "
              f"{r['final_limit']:.2f}, peak {r['peak_limit']:.0f}), {r['retries']} retries, "
              f"{r['samples_per_s']:.2f} samples/s, busy slots/decode "
              f"{r['busy_slots_per_decode']}")
    if m := figures.get("modes"):
        print(f"n-mode / parallel: {m['ratio_n_over_parallel']:.2f} ({m['ratio_spread']})")
    if e := figures.get("efficiency"):
        print(f"client efficiency: {e['ratio']:.3f} ({e['ratio_spread']})")
    if c := figures.get("cost"):
        print(f"cost: defaults / naive server time {c['ratio_server_s']:.3f}, tokens "
              f"{c['ratio_tokens']:.3f}; changed {c['changed_decisions']}/{c['examples']}")


if __name__ == "__main__":
    main()
