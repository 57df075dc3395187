"""Distill stage: ask the teacher for a clean target and gate it.

Routing is decided here as data, so the Faust agents for distill and repair stay thin and
the same decisions run offline:

* an example the user left as it was (settled == request-time region) is a *no-op*: its
  target is the format's no-edit answer, no teacher needed, and only
  ``noop_keep_fraction`` of them are kept (a stable hash of the request id decides), so
  their share of a dataset is a setting;
* an example with too few valid student samples is rejected as ``unparsable_samples``;
* an example outside the ``ideal`` band is rejected as ``band_<band>``;
* the rest go to the teacher, whose answer passes the gates of ``streams.judge`` or goes to
  repair with the failed gate's reason as feedback.
"""

from __future__ import annotations

from typing import Any

from streams.formats import (
    JUDGE_SYSTEM,
    TEACHER_SYSTEM,
    completion_for,
    estimate_tokens,
    judge_user_message,
    parse_answer,
    teacher_user_message,
)
from streams.ids import stable_fraction, stable_int
from streams.judge import Attempt, check_target, merge_llm, parse_llm_judgement
from streams.models import Teacher
from streams.repair import feedback_for
from streams.settings import Settings


def is_noop(example: dict[str, Any]) -> bool:
    """The user left the editable region exactly as it was at request time."""
    return bool(example["settled_region"] == example["base_region"])


def route_scored(scored: dict[str, Any], settings: Settings) -> str | None:
    """``None``: to the teacher; ``"noop"``: emit the no-edit answer; else the rejection."""
    example = scored["example"]
    if is_noop(example):
        keep = stable_fraction("noop", example["request_id"]) < settings.noop_keep_fraction
        return "noop" if keep else "noop_sampled_out"
    if scored.get("unparsable_samples"):
        return "unparsable_samples"
    band = scored["band"]
    return None if band == "ideal" else f"band_{band}"


def student_median(source: dict[str, Any]) -> float | None:
    """The median distance of the example's valid student samples (None if there were none)."""
    summary = source.get("summary") or {}
    return float(summary["p50"]) if summary.get("n") else None


def teacher_max_tokens(example: dict[str, Any], settings: Settings) -> int:
    """Room for a short explanation and the rewritten region, capped."""
    region = completion_for(example["base_region"], "zeta1")
    return min(settings.teacher_max_tokens, 2 * estimate_tokens(region) + 512)


async def attempt(
    example: dict[str, Any],
    teacher: Teacher,
    judge: Teacher | None,
    settings: Settings,
    *,
    number: int = 0,
    previous: str | None = None,
    judgement: dict[str, Any] | None = None,
    median: float | None = None,
) -> Attempt:
    """Ask the teacher (with the failed gates as feedback on repair) and gate the answer."""
    feedback = feedback_for(judgement) if judgement is not None else None
    seed = stable_int("teacher", settings.seed, example["request_id"], number)
    sent_seed = seed if settings.teacher_seed else None
    result = await teacher.chat(
        TEACHER_SYSTEM,
        teacher_user_message(example, feedback, previous, hindsight=settings.teacher_hindsight),
        seed=sent_seed,
        max_tokens=teacher_max_tokens(example, settings),
    )
    parsed = parse_answer(result.text, "zeta1", example["base_region"], result.finish_reason)
    verdict = check_target(example, parsed.region, settings, student_median=median,
                           parse_error=parsed.error)
    if judge is not None and verdict["parse_ok"]:
        answer = await judge.chat(JUDGE_SYSTEM, judge_user_message(example, parsed.region or ""),
                                  seed=sent_seed)
        verdict = merge_llm(verdict, parse_llm_judgement(answer.text), settings)
    return Attempt(result.text, parsed.region, verdict, result.latency_ms)
