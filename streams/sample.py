"""Sample stage: draw N student predictions for a settled example.

The sampling seed is derived from the request id and the configured seed, so a replay asks
the (seeded) student for exactly the same samples as the live run did.
"""

from __future__ import annotations

from typing import Any

from streams.formats import build_prompt
from streams.ids import stable_int
from streams.models import SampleBatch, StudentClient
from streams.settings import Settings


def sample_seed(example: dict[str, Any], settings: Settings) -> int:
    return stable_int("sample", settings.seed, example["request_id"])


def student_info(settings: Settings, seed: int, mode: str | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {
        "model": settings.student_model,
        "n": settings.samples,
        "temperature": settings.sample_temperature,
        "max_tokens": settings.sample_max_tokens,
        "prompt_format": settings.prompt_format,
        "seed": seed,
    }
    if mode is not None:
        info["mode"] = mode
    return info


def samples_record(
    example: dict[str, Any], batch: SampleBatch, settings: Settings, seed: int
) -> dict[str, Any]:
    return {
        "v": 1,
        "pipeline_version": settings.pipeline_version,
        "request_id": example["request_id"],
        "example": example,
        "student": student_info(settings, seed, batch.mode),
        "samples": batch.texts,
        "latencies_ms": [round(x, 3) for x in batch.latencies_ms],
        "requests": batch.requests,
        "retries": batch.retries,
        "prompt_tokens": batch.prompt_tokens,
        "completion_tokens": batch.completion_tokens,
    }


async def sample_example(
    example: dict[str, Any], client: StudentClient, settings: Settings
) -> dict[str, Any]:
    """One `student-samples` record; raises `streams.models.ModelError` when the model fails."""
    seed = sample_seed(example, settings)
    batch = await client.sample(
        build_prompt(example, settings.prompt_format),
        settings.samples,
        temperature=settings.sample_temperature,
        max_tokens=settings.sample_max_tokens,
        seed=seed,
    )
    return samples_record(example, batch, settings, seed)
