"""Sample stage: draw up to N student predictions for a settled example.

The sampling seed is derived from the request id and the configured seed, so a replay asks
the (seeded) student for exactly the same samples as the live run did. It is sent only with
``student_seed`` on: a server that ignores seeds makes samples irreproducible either way,
and the record then says ``seed: null``. "Choice i of a request with seed s is the sample of
seed s + i" is the simulator's convention (and how the parallel fallback asks); a real
server with ``n`` may derive its choices otherwise, so batching is reproducible only there.

Each request carries the format's stop sequences and a ``max_tokens`` that follows the
region's size (``max_tokens_for``); the prompt is trimmed to ``prompt_max_tokens`` by
dropping the oldest history first. Every sample's ``finish_reason`` goes on the record.

Adaptive sampling (``settings.adaptive_sampling``, see ``streams.adaptive``): samples are
drawn in batches and drawing stops as soon as the example's decision (its band, or too few
valid samples) is settled with high confidence. Batch seeds line up with the full run: a
batch starting at sample j asks for ``n=batch`` with ``seed = base_seed + j``, and the server
derives choice i from ``seed + i``, so sample j always has seed ``base_seed + j`` whatever the
batching. The record then carries ``adaptive = {"drawn": k, "cap": N, "decided": band |
"unparsable" | None, "distances": [...]}`` (the distances of the valid samples, in sample
order: truncated and unparsable samples never count towards a band).
"""

from __future__ import annotations

from typing import Any

from schemas.records import SettledExample, StudentInfo, StudentSamples
from streams.adaptive import AdaptivePolicy
from streams.formats import (
    build_prompt,
    completion_for,
    estimate_tokens,
    format_id,
    history_kept,
    parse_answer,
    prompt_format,
    split_excerpt,
)
from streams.ids import stable_int
from streams.models import SampleBatch, Student
from streams.score import min_valid
from streams.scoring import normalized_levenshtein
from streams.settings import Settings


def sample_seed(example: SettledExample, settings: Settings) -> int:
    return stable_int("sample", settings.seed, example["request_id"])


def max_tokens_for(example: SettledExample, fmt: str, cap: int, margin: int = 64) -> int:
    """max_tokens for one answer: twice the region's answer in tokens plus a margin (an
    edit may grow the region), never above ``cap``. A fixed 1024 cut 4 KiB regions short."""
    region = split_excerpt(example).region
    return min(cap, 2 * estimate_tokens(completion_for(region, fmt)) + margin)


def student_info(settings: Settings, seed: int, mode: str | None = None,
                 batch: SampleBatch | None = None,
                 example: SettledExample | None = None) -> StudentInfo:
    fmt = format_id(settings.prompt_format)
    info: StudentInfo = {
        "model": settings.student_model,
        "n": settings.samples,
        "temperature": settings.sample_temperature,
        "max_tokens": settings.sample_max_tokens if example is None else max_tokens_for(
            example, settings.prompt_format, settings.sample_max_tokens),
        "prompt_format": fmt["name"],
        "prompt_format_version": fmt["version"],
        "stop": list(prompt_format(settings.prompt_format).stop),
        # None when no seed is sent: the server's samples are then not reproducible
        "seed": seed if settings.student_seed else None,
    }
    if example is not None:
        history = example.get("history") or []
        info["history_dropped"] = len(history) - history_kept(
            example, settings.prompt_format, settings.prompt_max_tokens)
    if mode is not None:
        info["mode"] = mode
    if batch is not None:  # how the samples were drawn (the server may ignore or cap n)
        info["n_per_request"] = batch.n_per_request
        info["short_responses"] = batch.short_responses
    return info


def samples_record(
    example: SettledExample,
    batch: SampleBatch,
    settings: Settings,
    seed: int,
    adaptive: dict[str, Any] | None = None,
) -> StudentSamples:
    record: StudentSamples = {
        "v": 1,
        "pipeline_version": settings.pipeline_version,
        "request_id": example["request_id"],
        "example": example,
        "student": student_info(settings, seed, batch.mode, batch, example),
        "samples": batch.texts,
        "finish_reasons": batch.finish_reasons,
        "latencies_ms": [round(x, 3) for x in batch.latencies_ms],
        "requests": batch.requests,
        "retries": batch.retries,
        "prompt_tokens": batch.prompt_tokens,
        "completion_tokens": batch.completion_tokens,
    }
    if adaptive is not None:
        record["adaptive"] = adaptive
    return record


def policy_for(settings: Settings) -> AdaptivePolicy:
    return AdaptivePolicy(
        cap=settings.samples,
        band_low=settings.band_low,
        band_high=settings.band_high,
        min_samples=settings.adaptive_min_samples,
        batch=settings.adaptive_batch,
        confidence=settings.adaptive_confidence,
        rule=settings.adaptive_rule,
        min_valid=min_valid(settings),
    )


def sample_distance(example: SettledExample, text: str, prompt_format: str,
                    finish_reason: str = "stop") -> float | None:
    """The distance the score stage will compute for this sample (same parse and rounding
    as ``streams.score``), so the stopping rule and the band agree exactly; None for a
    truncated or unparsable sample, which the band median leaves out."""
    region = parse_answer(text, prompt_format, example["base_region"], finish_reason).region
    if region is None:
        return None
    return round(normalized_levenshtein(region, example["settled_region"]), 6)


def merge_batches(batches: list[SampleBatch]) -> SampleBatch:
    """Batches in seed order as one batch (costs summed; mode of the last batch, the
    widest response of any)."""
    if len(batches) == 1:
        return batches[0]
    return SampleBatch(
        texts=[t for b in batches for t in b.texts],
        latencies_ms=[x for b in batches for x in b.latencies_ms],
        mode=batches[-1].mode,
        requests=sum(b.requests for b in batches),
        retries=sum(b.retries for b in batches),
        prompt_tokens=sum(b.prompt_tokens for b in batches),
        completion_tokens=sum(b.completion_tokens for b in batches),
        n_per_request=max(b.n_per_request for b in batches),
        short_responses=sum(b.short_responses for b in batches),
        finish_reasons=[f for b in batches for f in b.finish_reasons],
    )


async def sample_example(
    example: SettledExample, client: Student, settings: Settings
) -> StudentSamples:
    """One `student-samples` record; raises `streams.models.ModelError` when the model fails."""
    seed = sample_seed(example, settings)
    prompt = build_prompt(example, settings.prompt_format, settings.prompt_max_tokens)
    stop = list(prompt_format(settings.prompt_format).stop)
    max_tokens = max_tokens_for(example, settings.prompt_format, settings.sample_max_tokens)
    send_seed = settings.student_seed
    if not settings.adaptive_sampling:
        batch = await client.sample(
            prompt,
            settings.samples,
            temperature=settings.sample_temperature,
            max_tokens=max_tokens,
            seed=seed if send_seed else None,
            stop=stop,
        )
        return samples_record(example, batch, settings, seed)

    policy = policy_for(settings)
    batches: list[SampleBatch] = []
    distances: list[float] = []
    decided: str | None = None
    drawn = 0
    for start, size in policy.batches():
        batch = await client.sample(
            prompt,
            size,
            temperature=settings.sample_temperature,
            max_tokens=max_tokens,
            # sample j always has seed + j, as in the one-request run
            seed=seed + start if send_seed else None,
            stop=stop,
        )
        batches.append(batch)
        drawn += len(batch.texts)
        reasons = batch.finish_reasons or ["stop"] * len(batch.texts)
        for t, f in zip(batch.texts, reasons, strict=True):
            d = sample_distance(example, t, settings.prompt_format, f)
            if d is not None:  # the band is decided on valid samples only
                distances.append(d)
        decided = policy.decide(distances, drawn)
        if decided is not None:
            break
    merged = merge_batches(batches)
    # the distances ride along so the score stage need not compute them a second time
    adaptive = {"drawn": len(merged.texts), "cap": policy.cap, "decided": decided,
                "distances": distances}
    return samples_record(example, merged, settings, seed, adaptive)
