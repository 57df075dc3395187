"""Repair: a teacher answer judged bad goes back to the teacher with the judgement.

At most `repair_attempts` retries; the judgement is turned into feedback the teacher can act
on, and the bad answers are kept so they can serve as `rejected` in preference records.
"""

from __future__ import annotations

from typing import cast

from schemas.records import Judgement, RepairRequest, ScoredExample
from streams.judge import Attempt
from streams.settings import Settings


def feedback_for(judgement: Judgement) -> str:
    """What the teacher is told on repair: the judgement in words it can act on."""
    words = {
        "unparsable": (
            "Your answer did not contain exactly one editable region between "
            "<|editable_region_start|> and <|editable_region_end|>."),
        "target_truncated": (
            "Your answer was cut off before the end of the editable region; give the region "
            "only, with less explanation."),
        "noop_target": (
            "Your region is the region as it was: you predicted no edit, but the developer "
            "was in the middle of changing it."),
        "low_kept_rate": (
            f"Most of your edit is not where the developer's work was heading (kept rate "
            f"{judgement.get('kept_rate')}): keep to what their edits imply, add nothing "
            f"speculative."),
        "farther_than_students": (
            f"Your region is a worse next edit than a small model's typical answer "
            f"(normalized distance {judgement.get('distance')} against "
            f"{judgement.get('student_median')})."),
        "reverts_user_edit": (
            f"Your region undoes the user's last edit (reversal ratio "
            f"{judgement.get('reversal_ratio')}). Keep their change."),
        "breaks_syntax": (
            "Your region leaves the code with a syntax error where the developer's had "
            "none: give complete, parseable code (finish open brackets and statements)."),
        "judge_says_reverts": "A reviewer found that your region reverts the user's edits.",
        "judge_low_confidence": "A reviewer was not confident the edit is right.",
        "judge_unparsable": "The reviewer could not read your answer.",
    }
    lines = [words.get(r, r) for r in judgement["reasons"]]
    llm = judgement.get("llm")
    if llm and llm.get("reasoning"):
        lines.append(f"Reviewer: {llm['reasoning']}")
    return "\n".join(lines)


def repair_request(
    scored_or_repair: ScoredExample | RepairRequest, att: Attempt, number: int,
    settings: Settings
) -> RepairRequest:
    """The `repair` record that asks for attempt `number` (1-based)."""
    # a scored example (the first attempt) has no rejected predictions yet
    previous_bad = list(cast(list[str], scored_or_repair.get("rejected_predictions", [])))
    if att.region is not None:
        previous_bad.append(att.region)
    return {
        "v": 1,
        "pipeline_version": settings.pipeline_version,
        "request_id": scored_or_repair["request_id"],
        "example": scored_or_repair["example"],
        "student": scored_or_repair["student"],
        "summary": scored_or_repair["summary"],
        "band": scored_or_repair["band"],
        "attempt": number,
        "judgement": att.judgement,
        "previous": att.raw,
        "rejected_predictions": previous_bad,
        "rejected_candidate": scored_or_repair.get("rejected_candidate"),
        "unparsable_samples": scored_or_repair.get("unparsable_samples", False),
    }
