"""Target gates: is a teacher answer good enough to train on?

Every gate has its own rejection reason (and counter), and the first failures are what the
teacher is told on repair. The deterministic gates always run, in this order:

* ``unparsable`` / ``target_truncated``: the answer holds exactly one region, not cut by
  ``max_tokens``;
* ``noop_target``: the user changed the region, so "no edit" is wrong (a stale answer);
* ``low_kept_rate``: most of the target's edit must lie on the way from the request-time
  region to what the user kept: Zed's kept rate of the target's edit against the user's
  settled edit is at least ``gate_min_kept_rate`` (junk the user never typed lowers it);
* ``farther_than_students``: the target is no farther from the settled region than the
  example's median valid student sample (distillation must beat the student);
* ``reverts_user_edit``: its reversal ratio is at most ``judge_max_reversal``;
* ``breaks_syntax``: it puts a tree-sitter ERROR or MISSING node inside a region that had
  none at request time (``streams.syntax``; languages without a grammar pass unchecked,
  the judgement's ``syntax`` says which: ok, breaks_syntax, base_broken, unchecked).

An LLM judge, when configured, adds ``judge_says_reverts``, ``judge_low_confidence``
(confidence below ``judge_min_confidence``) and ``judge_unparsable``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import orjson

from schemas.records import Judgement, LlmVerdict, SettledExample
from streams.formats import parse_answer
from streams.scoring import kept_rate, normalized_levenshtein, reversal_ratio_from_history
from streams.settings import Settings
from streams.syntax import check_syntax


@dataclass(frozen=True)
class Attempt:
    """One teacher answer and its judgement."""

    raw: str
    region: str | None
    judgement: Judgement
    latency_ms: float


GATES = ("unparsable", "target_truncated", "noop_target", "low_kept_rate",
         "farther_than_students", "reverts_user_edit", "breaks_syntax", "judge_says_reverts",
         "judge_low_confidence", "judge_unparsable")


def check_target(example: SettledExample, region: str | None, settings: Settings, *,
                 student_median: float | None, parse_error: str | None = None
                 ) -> Judgement:
    """The deterministic judgement of a target region (None: the answer did not parse)."""
    if region is None:
        reason = "target_truncated" if parse_error == "truncated" else "unparsable"
        return {"ok": False, "reasons": [reason], "parse_ok": False, "parse_error": parse_error,
                "distance": None, "reversal_ratio": None, "kept_rate": None}
    base, settled = example["base_region"], example["settled_region"]
    distance = normalized_levenshtein(region, settled)
    reversal = reversal_ratio_from_history(base, example.get("history") or [], region,
                                           example["path"])
    kept = kept_rate(base, region, settled).kept_rate if region != base else 0.0
    reasons = []
    if region == base and settled != base:
        reasons.append("noop_target")
    elif settled != base and kept < settings.gate_min_kept_rate - 1e-9:
        reasons.append("low_kept_rate")
    if student_median is not None and distance > student_median + 1e-9:
        reasons.append("farther_than_students")
    if reversal > settings.judge_max_reversal:
        reasons.append("reverts_user_edit")
    syntax = "ok" if region == base else check_syntax(
        example["path"], example["excerpt"], example["editable_range"], region)
    if syntax == "breaks_syntax":
        reasons.append("breaks_syntax")
    return {"ok": not reasons, "reasons": reasons, "parse_ok": True, "parse_error": None,
            "distance": round(distance, 6), "reversal_ratio": round(reversal, 6),
            "kept_rate": round(kept, 6), "student_median": student_median, "syntax": syntax}


def check_prediction(example: SettledExample, raw: str, settings: Settings, *,
                     student_median: float | None = None,
                     finish_reason: str = "stop") -> Judgement:
    """Parse a teacher answer (lenient, as ``zeta1``'s region markers) and gate it."""
    parsed = parse_answer(raw, "zeta1", example["base_region"], finish_reason)
    return check_target(example, parsed.region, settings, student_median=student_median,
                        parse_error=parsed.error)


def parse_llm_judgement(text: str) -> LlmVerdict | None:
    """`{reasoning, reverts_edits, confidence}` from the judge's answer, or None."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        return None
    try:
        data = orjson.loads(text[start : end + 1])
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    conf = data.get("confidence")
    reverts = data.get("reverts_edits")
    if not isinstance(conf, int) or isinstance(conf, bool) or not 1 <= conf <= 5:
        return None
    if not isinstance(reverts, bool):
        return None
    return {"reasoning": str(data.get("reasoning", ""))[:2000], "reverts_edits": reverts,
            "confidence": conf}


def merge_llm(judgement: Judgement, llm: LlmVerdict | None,
              settings: Settings) -> Judgement:
    """Fold the LLM judge's verdict into the deterministic one."""
    out = cast(Judgement, dict(judgement))
    reasons = list(judgement["reasons"])
    if llm is None:
        reasons.append("judge_unparsable")
    else:
        if llm["reverts_edits"]:
            reasons.append("judge_says_reverts")
        if llm["confidence"] < settings.judge_min_confidence:
            reasons.append("judge_low_confidence")
    out["llm"] = llm
    out["reasons"] = reasons
    out["ok"] = not reasons
    return out
