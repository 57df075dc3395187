"""Eval records for the scorecard tests, made by the real scoring on real settled examples.

The examples are the bundled sample (data/sample-traces.jsonl: sessions replayed from this
repository's own history) or generated sessions, settled with `settle_events`; each candidate's
prediction is scored with `streams.scoring.score_prediction`, as the eval stage scores it, and
laid out as /work/notes/EVAL-RECORD.md says. The candidates:

* `noop`: the region unchanged; `served`: what the editor was shown (the trace's `output`);
* `oracle`: what the user wrote (the settled region);
* `reverter`: the region with the user's recent edits undone (the history's original text of
  the region) where the history touches it, else the region with its middle lines deleted (a
  worse text than leaving it alone);
* `flaky`: the oracle, failing (unparsable) on every `fail_every`-th example;
* `sly`: the oracle, except the reverter's answer where the user's history touches the region
  (closer on most examples, reverses the user on some).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

from streams.emit import split_for
from streams.ids import stable_fraction
from streams.languages import language_of
from streams.scoring import score_prediction
from streams.scoring.reversal import _history_original
from streams.settle import settle_events

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample-traces.jsonl"
REJECTED = ("ttl", "context_lost")  # Settings.reject_settle_reasons: never reach eval


def settled_examples(events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    by_session: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        by_session[e["session_id"]].append(e)
    return [r for evs in by_session.values() for r in settle_events(evs)
            if r["settle_reason"] not in REJECTED]


@cache
def sample_examples() -> tuple[dict[str, Any], ...]:
    with SAMPLE.open() as fh:
        return tuple(settled_examples(json.loads(line) for line in fh))


def generated_examples(seed: int, sessions: int) -> list[dict[str, Any]]:
    from editstream.sessions.generate import GenerateConfig, generate_events

    return settled_examples(generate_events(GenerateConfig(seed=seed, sessions=sessions)))


def reverted(ex: dict[str, Any]) -> str:
    base = ex["base_region"]
    original = _history_original(base, ex["history"], ex["path"])
    if original is not None and original != base:
        return original
    lines = base.splitlines(keepends=True)
    k = len(lines) // 3
    return "".join(lines[:k] + lines[2 * k:]) if k else base[: len(base) // 2]


def touched_by_history(ex: dict[str, Any]) -> bool:
    original = _history_original(ex["base_region"], ex["history"], ex["path"])
    return original is not None and original != ex["base_region"]


def eval_record(ex: dict[str, Any], candidate: str, predicted: str | None, *,
                reason: str = "unparsable") -> dict[str, Any]:
    base, settled = ex["base_region"], ex["settled_region"]

    def score(text: str) -> dict[str, Any]:
        return score_prediction(base, settled, text, history=ex["history"],
                                path=ex["path"]).to_dict()

    failed = predicted is None
    builtin = candidate in ("noop", "served")
    # a latency that varies by example and candidate, reproducibly
    latency = None if builtin else round(50 + 400 * stable_fraction(
        "lat", ex["request_id"], candidate), 3)
    return {
        "v": 1, "pipeline_version": "v1", "request_id": ex["request_id"],
        "candidate": candidate,
        "model": ex.get("model_version") if candidate == "served" else
        (None if builtin else f"{candidate}-model"),
        "served_model_version": ex.get("model_version"),
        "split": split_for(ex, 0.15),  # type: ignore[arg-type]
        "language": language_of(ex["path"]),
        "ts_ms": ex["settled_at_ms"],
        "predicted_region": predicted,
        "failure": {"reason": reason, "detail": "test"} if failed else None,
        "noop": None if failed else predicted == base,
        "metrics": None if failed else score(predicted),
        "unchanged_metrics": score(base) if failed else None,
        "latency_ms": latency,
        "finish_reason": None if builtin or failed else "stop",
        "prompt_tokens": None, "completion_tokens": None,
    }


def predictions(ex: dict[str, Any], candidate: str, index: int, fail_every: int
                ) -> str | None:
    if candidate == "noop":
        return ex["base_region"]
    if candidate == "served":
        return ex.get("output")
    if candidate == "oracle":
        return ex["settled_region"]
    if candidate == "reverter":
        return reverted(ex)
    if candidate == "flaky":
        return None if index % fail_every == 0 else ex["settled_region"]
    if candidate == "sly":
        return reverted(ex) if touched_by_history(ex) else ex["settled_region"]
    raise ValueError(candidate)


def records_for(examples: Iterable[dict[str, Any]], candidates: Iterable[str], *,
                fail_every: int = 5) -> list[dict[str, Any]]:
    """One record per (example, candidate); `served` only where the trace has an output."""
    out = []
    for i, ex in enumerate(examples):
        for c in candidates:
            if c == "served" and not isinstance(ex.get("output"), str):
                continue
            out.append(eval_record(ex, c, predictions(ex, c, i, fail_every)))
    return out


@cache
def sample_records(candidates: tuple[str, ...] = ("noop", "served", "oracle", "reverter",
                                                  "flaky", "sly")) -> tuple[dict[str, Any], ...]:
    return tuple(records_for(sample_examples(), candidates))
