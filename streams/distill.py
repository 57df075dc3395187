"""Distill stage: ask the teacher for a clean target and judge it.

Routing is decided here as data (`Verdict`), so the Faust agents for distill and repair stay
thin and the same decisions run offline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streams.formats import (
    JUDGE_SYSTEM,
    TEACHER_SYSTEM,
    judge_user_message,
    parse_output,
    teacher_user_message,
)
from streams.ids import stable_int
from streams.judge import check_prediction, merge_llm, parse_llm_judgement
from streams.models import TeacherClient
from streams.repair import feedback_for
from streams.settings import Settings


@dataclass(frozen=True)
class Attempt:
    """One teacher answer and its judgement."""

    raw: str
    region: str | None
    judgement: dict[str, Any]
    latency_ms: float


def route_scored(scored: dict[str, Any]) -> str | None:
    """None when the example goes to the teacher, else the rejection reason."""
    band = scored["band"]
    return None if band == "ideal" else f"band_{band}"


async def attempt(
    example: dict[str, Any],
    teacher: TeacherClient,
    judge: TeacherClient | None,
    settings: Settings,
    *,
    number: int = 0,
    previous: str | None = None,
    judgement: dict[str, Any] | None = None,
) -> Attempt:
    """Ask the teacher (with feedback on repair) and judge the answer."""
    feedback = feedback_for(judgement) if judgement is not None else None
    seed = stable_int("teacher", settings.seed, example["request_id"], number)
    result = await teacher.chat(
        TEACHER_SYSTEM, teacher_user_message(example, feedback, previous), seed=seed
    )
    verdict = check_prediction(example, result.text, settings)
    region = parse_output(result.text, "marker")
    if judge is not None and verdict["parse_ok"]:
        answer = await judge.chat(JUDGE_SYSTEM, judge_user_message(example, region or ""),
                                  seed=seed)
        verdict = merge_llm(verdict, parse_llm_judgement(answer.text), settings)
    return Attempt(result.text, region, verdict, result.latency_ms)
