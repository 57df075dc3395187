"""Sampling through the production client against a real model server, as a ratio of the
bound: llama.cpp's server (SmolLM2-135M, the `local-model` tier) driven by a minimal client.

Run ``python -m bench.bench_local_model [--examples 6] [--samples 2] [--max-tokens 32]
[--runs 2] [--json]`` (``make local-model`` first).

* **bound**: the same requests (one per sample: the server ignores ``n``), sent one at a
  time by a minimal httpx loop, example after example. The server works one request at a
  time, so this is what it does alone.
* **production**: ``StudentClient.sample(prompt, samples)`` for every example at once
  (as the sample stage does), ``max_in_flight=64`` with the adaptive limit: it must find
  the one slot (asking ``n`` once, learning it is ignored) without flooding the server.

Runs alternate (bound, production, bound, …) so load from elsewhere hits both alike; the
figure is the median ratio of production samples/s to bound samples/s, with the limit the
client settled on and the highest it tried.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from agents.models import StudentClient
from bench.common import machine, median, settled_examples, spread
from editstream.generate import GenerateConfig, generate_events
from editstream.local_model import LocalModel, start_local_model
from streams.formats import build_prompt
from streams.limiter import AdaptiveLimit
from streams.models import Endpoint


def prompts(examples: int) -> list[str]:
    evs = generate_events(GenerateConfig(seed=21, sessions=3, predictions_per_session=5))
    chosen = [e for e in settled_examples(evs) if e["settle_reason"] == "quiescence"]
    return [build_prompt(e) for e in chosen[:examples]]


def _body(model: str, prompt: str, seed: int, max_tokens: int) -> dict[str, Any]:
    return {"model": model, "prompt": prompt, "n": 1, "seed": seed, "temperature": 0.8,
            "max_tokens": max_tokens}


async def bound(llm: LocalModel, work: list[str], samples: int, max_tokens: int
                ) -> dict[str, Any]:
    """The minimal client: one request at a time, no limiter, no retries."""
    done = tokens = 0
    t0 = time.monotonic()
    async with httpx.AsyncClient(base_url=llm.url, timeout=600) as client:
        for p in work:
            for i in range(samples):
                r = await client.post("/v1/completions", json=_body(llm.model, p, i, max_tokens))
                r.raise_for_status()
                done += len(r.json()["choices"])
                tokens += r.json()["usage"]["completion_tokens"]
    elapsed = time.monotonic() - t0
    return {"samples": done, "elapsed_s": elapsed, "samples_per_s": done / elapsed,
            "completion_tokens": tokens}


async def production(llm: LocalModel, work: list[str], samples: int, max_tokens: int
                     ) -> dict[str, Any]:
    limits: list[float] = []
    limiter = AdaptiveLimit(64, observer=limits.append)
    ep = Endpoint(llm.url, llm.model, timeout_s=120, max_retries=4)
    t0 = time.monotonic()
    async with StudentClient(ep, max_in_flight=64, limiter=limiter) as client:
        batches = await asyncio.gather(*(
            client.sample(p, samples, max_tokens=max_tokens, seed=0) for p in work))
    elapsed = time.monotonic() - t0
    done = sum(len(b.texts) for b in batches)
    return {"samples": done, "elapsed_s": elapsed, "samples_per_s": done / elapsed,
            "completion_tokens": sum(b.completion_tokens for b in batches),
            "requests": sum(b.requests for b in batches),
            "retries": sum(b.retries for b in batches),
            "short_responses": sum(b.short_responses for b in batches),
            "final_limit": limiter.limit, "peak_limit": limiter.peak_limit,
            "mean_limit": statistics.mean(limits) if limits else limiter.limit}


def run(runs: int = 2, examples: int = 6, samples: int = 2, max_tokens: int = 32
        ) -> dict[str, Any]:
    work = prompts(examples)
    with tempfile.TemporaryDirectory() as tmp, \
            start_local_model(Path(tmp) / "server.log") as llm:
        asyncio.run(bound(llm, work[:1], 1, 4))  # load the weights into the page cache
        pairs = []
        for _ in range(runs):
            b = asyncio.run(bound(llm, work, samples, max_tokens))
            p = asyncio.run(production(llm, work, samples, max_tokens))
            pairs.append({"bound": b, "production": p,
                          "ratio": p["samples_per_s"] / b["samples_per_s"]})
    ratios = [x["ratio"] for x in pairs]
    return {"machine": machine(), "examples": len(work), "samples": samples,
            "max_tokens": max_tokens, "runs": pairs, "ratio": median(ratios),
            "ratio_spread": spread(ratios),
            "bound_samples_per_s": median([x["bound"]["samples_per_s"] for x in pairs]),
            "production_samples_per_s":
                median([x["production"]["samples_per_s"] for x in pairs]),
            "final_limit": median([x["production"]["final_limit"] for x in pairs]),
            "peak_limit": max(x["production"]["peak_limit"] for x in pairs),
            "retries": sum(x["production"]["retries"] for x in pairs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--examples", type=int, default=6)
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--json", action="store_true")
    a = parser.parse_args()
    figures = run(a.runs, a.examples, a.samples, a.max_tokens)
    if a.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"production client {figures['production_samples_per_s']:.3f} samples/s, bound "
          f"{figures['bound_samples_per_s']:.3f} samples/s: ratio {figures['ratio']:.2f} "
          f"({figures['ratio_spread']}); limit settled at {figures['final_limit']:.2f} "
          f"(peak {figures['peak_limit']:.0f}), {figures['retries']} retries")


if __name__ == "__main__":
    main()
