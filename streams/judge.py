"""Judge: is a teacher prediction good enough to train on?

Deterministic checks always run (cheap, reproducible): the answer must parse into a region,
stay close enough to what the user really wrote, and not undo the user's last edit. An LLM
judge, when configured, adds a second opinion; either can send the prediction to repair.
"""

from __future__ import annotations

from typing import Any

import orjson

from streams.formats import parse_output
from streams.scoring import normalized_levenshtein, reversal_ratio_from_history
from streams.settings import Settings


def check_prediction(example: dict[str, Any], raw: str, settings: Settings) -> dict[str, Any]:
    """The deterministic judgement of a teacher answer (marker format)."""
    region = parse_output(raw, "marker")
    if region is None:
        return {"ok": False, "reasons": ["unparsable"], "parse_ok": False,
                "distance": None, "reversal_ratio": None}
    distance = normalized_levenshtein(region, example["settled_region"])
    reversal = reversal_ratio_from_history(
        example["base_region"], example.get("history") or [], region, example["path"]
    )
    reasons = []
    if distance > settings.judge_max_distance:
        reasons.append("too_far_from_settled")
    if reversal > settings.judge_max_reversal:
        reasons.append("reverts_user_edit")
    return {"ok": not reasons, "reasons": reasons, "parse_ok": True,
            "distance": round(distance, 6), "reversal_ratio": round(reversal, 6)}


def parse_llm_judgement(text: str) -> dict[str, Any] | None:
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


def merge_llm(judgement: dict[str, Any], llm: dict[str, Any] | None,
              settings: Settings) -> dict[str, Any]:
    """Fold the LLM judge's verdict into the deterministic one."""
    out = dict(judgement)
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
