"""Distill stage: ask the teacher for a clean target and gate it.

The teacher's answer passes the gates of ``streams.judge`` or goes to repair with the failed
gate's reason as feedback. Which examples reach the teacher, and what happens to its answer,
is decided in ``streams.route``.
"""

from __future__ import annotations

from schemas.records import Judgement, RepairRequest, ScoredExample, SettledExample
from streams.formats import (
    JUDGE_SYSTEM,
    TEACHER_SYSTEM,
    completion_for,
    estimate_tokens,
    judge_user_message,
    parse_answer,
    teacher_user_message,
)
from streams.ids import stable_int
from streams.judge import Attempt, check_target, merge_llm, parse_llm_judgement
from streams.models import Teacher
from streams.repair import feedback_for
from streams.settings import Settings


def student_median(source: ScoredExample | RepairRequest) -> float | None:
    """The median distance of the example's valid student samples (None if there were none)."""
    summary = source.get("summary") or {}
    return float(summary["p50"]) if summary.get("n") else None


def teacher_max_tokens(example: SettledExample, settings: Settings) -> int:
    """Room for a short explanation and the rewritten region, capped."""
    region = completion_for(example["base_region"], "zeta1")
    return min(settings.teacher_max_tokens, 2 * estimate_tokens(region) + 512)


async def attempt(
    example: SettledExample,
    teacher: Teacher,
    judge: Teacher | None,
    settings: Settings,
    *,
    number: int = 0,
    previous: str | None = None,
    judgement: Judgement | None = None,
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
