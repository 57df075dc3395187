"""Eval stage and live scorecard: how a model does on a settled example, as one record.

Every settled prediction says what the user really wrote (`settled_region`), so any model can
be scored on it, paired example by example with the others:

* `noop`: the region left as it was (`base_region`): what showing nothing scores;
* `served`: what the editor showed (`output`), read with the same parser as a student's
  answer when it comes as one (Zed sends the model's raw answer, with the region markers),
  else taken as the region it is (the contract's `output`);
* a candidate: one greedy answer (temperature 0, a seed from the request id) of a configured
  OpenAI-compatible endpoint (`streams.settings.Candidate`), read back like a student sample.

Each becomes one record (schemas `eval-results.v1.json`, EVAL-RECORD.md) with the metrics of
`streams.scoring.score_prediction`, the ones the score stage gives student samples. A model
that gives no usable region (an outage after retries, garbage, nothing, an answer cut by
`max_tokens`) gets a *failed* record with the reason, and the metrics of the unchanged region
as `unchanged_metrics`: the editor would have shown nothing, so paired comparisons count it
as `noop` (`effective_metrics`). No example is dropped silently.

The live scorecard (`scorecard` topic, written by settle with the settled example) is the
`served` record plus the prediction's `outcome` and `undone` (accepted, then reverted inside
the settle window: `streams.emit.undone`). Predictions discarded for privacy never settle,
so they never reach either topic.

Which examples are evaluated (`selected`): the eval split of the export
(`streams.emit.split_for`, repository-disjoint, so a candidate trained on the train split is
never scored on it), plus a stable-hash sample of the train split
(`eval_train_fraction`), or every example (`eval_all`, the demo).

Pure: no Kafka, no HTTP (the client is any `streams.models.Student`).
"""

from __future__ import annotations

from typing import cast

from schemas.records import EvalFailure, EvalMetrics, EvalRecord, SettledExample
from streams.emit import split_for, undone
from streams.formats import REGION_START, build_prompt, parse_answer, prompt_format
from streams.ids import stable_fraction, stable_int
from streams.languages import language_of
from streams.models import ModelError, Student
from streams.sample import max_tokens_for
from streams.scoring import score_prediction
from streams.settings import Candidate, Settings

DETAIL_MAX = 300  # characters of a failure's detail (an error, or the head of the answer)
OUTCOMES = ("accepted", "rejected", "ignored", "discarded")


def selected(example: SettledExample, settings: Settings) -> bool:
    """Whether the eval stage evaluates this example (see the module docstring)."""
    if settings.eval_all or split_for(example, settings.eval_fraction) == "eval":
        return True
    fraction = settings.eval_train_fraction
    return fraction > 0 and stable_fraction("eval-train", example["request_id"]) < fraction


def score(example: SettledExample, region: str) -> EvalMetrics:
    """The metrics of `region` as the prediction on `example`."""
    return cast(EvalMetrics, score_prediction(
        example["base_region"], example["settled_region"], region,
        history=example.get("history") or [], path=example["path"]).to_dict())


def effective_metrics(record: EvalRecord) -> EvalMetrics:
    """The metrics a paired comparison uses: the record's own, or for a failed one those of
    the unchanged region (the editor would have shown nothing)."""
    metrics = record["metrics"] if record["metrics"] is not None else record["unchanged_metrics"]
    if metrics is None:
        raise ValueError(f"eval record {record['request_id']}/{record['candidate']} has "
                         "neither metrics nor unchanged_metrics")
    return metrics


def _record(example: SettledExample, settings: Settings, candidate: str, model: str | None,
            region: str | None, failure: EvalFailure | None, *,
            latency_ms: float | None = None, finish_reason: str | None = None,
            prompt_tokens: int | None = None, completion_tokens: int | None = None
            ) -> EvalRecord:
    ok = region is not None
    return {
        "v": 1,
        "pipeline_version": settings.pipeline_version,
        "request_id": example["request_id"],
        "candidate": candidate,
        "model": model,
        "served_model_version": example.get("model_version"),
        "split": "eval" if split_for(example, settings.eval_fraction) == "eval" else "train",
        "language": language_of(example["path"]),
        "ts_ms": example["settled_at_ms"],
        "predicted_region": region,
        "failure": failure,
        "noop": (region == example["base_region"]) if region is not None else None,
        "metrics": score(example, region) if region is not None else None,
        "unchanged_metrics": None if ok else score(example, example["base_region"]),
        "latency_ms": round(latency_ms, 3) if latency_ms is not None else None,
        "finish_reason": finish_reason,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
    }


def failure(reason: str, detail: str = "") -> EvalFailure:
    return {"reason": reason, "detail": detail[:DETAIL_MAX]}


def noop_record(example: SettledExample, settings: Settings) -> EvalRecord:
    """The `noop` baseline: the region unchanged."""
    return _record(example, settings, "noop", None, example["base_region"], None)


def served_region(example: SettledExample) -> tuple[str | None, EvalFailure | None]:
    """What the editor showed, as a region: (region, None), or (None, why not).

    An `output` with the region markers is a raw model answer (Zed's zeta format): it is
    read with the student's parser; one without is the region itself, as the contract
    words `output`. No output: `no_output` (an editor that does not send it)."""
    output = example.get("output")
    if not isinstance(output, str):
        return None, failure("no_output", "the prediction carries no output")
    if REGION_START not in output:
        return output, None
    parsed = parse_answer(output, "zeta1", example["base_region"])
    if parsed.region is None:
        return None, failure("unparsable", f"served output: {parsed.error}")
    return parsed.region, None


def served_record(example: SettledExample, settings: Settings) -> EvalRecord:
    """The `served` baseline: what the editor showed (`model`: its `model_version`)."""
    region, why = served_region(example)
    return _record(example, settings, "served", example.get("model_version"), region, why)


def scorecard_record(example: SettledExample, settings: Settings) -> EvalRecord | None:
    """The live scorecard record of a settled prediction, or None when its served output is
    not known (nothing to score)."""
    if not isinstance(example.get("output"), str):
        return None
    record = served_record(example, settings)
    outcome = example.get("outcome")
    record["outcome"] = outcome if outcome in OUTCOMES else None
    region = record["predicted_region"]
    record["undone"] = region is not None and undone(
        cast(SettledExample, {**example, "output": region}))
    return record


def eval_seed(example: SettledExample, settings: Settings) -> int:
    """The seed of a candidate's greedy request: a replay asks exactly the same question."""
    return stable_int("eval", settings.seed, example["request_id"])


def error_failure(exc: ModelError) -> EvalFailure:
    """A model call that failed for good, as a failure reason: `timeout`, `connection`,
    `malformed_response` (a 200 whose body is not the API's) or `http_error`."""
    last = exc.last_reason or exc.reason
    if last.startswith("http_"):
        reason = "http_error"
    elif last in ("timeout", "connection", "malformed_response"):
        reason = last
    else:
        reason = "model_error"
    return failure(reason, str(exc))


async def candidate_record(example: SettledExample, candidate: Candidate, client: Student,
                           settings: Settings) -> EvalRecord:
    """One greedy prediction of `candidate` on `example`, scored; raises `ModelError` when
    the call fails (the caller waits an outage out, then records it: `failed_record`)."""
    fmt = candidate.prompt_format
    batch = await client.sample(
        build_prompt(example, fmt, candidate.prompt_max_tokens), 1, temperature=0.0,
        max_tokens=max_tokens_for(example, fmt, candidate.max_tokens),
        seed=eval_seed(example, settings), stop=list(prompt_format(fmt).stop))
    text = batch.texts[0] if batch.texts else ""
    finish = batch.finish_reasons[0] if batch.finish_reasons else "unknown"
    why: EvalFailure | None = None
    region: str | None = None
    if not text.strip() and not (prompt_format(fmt).name == "fim" and finish == "stop"):
        # (a fim answer that stops at once is the empty region: a deletion, not nothing)
        why = failure("empty", f"finish_reason {finish}")
    else:
        parsed = parse_answer(text, fmt, example["base_region"], finish)
        region = parsed.region
        if region is None:
            why = failure("truncated" if parsed.error == "truncated" else "unparsable",
                          f"{parsed.error}: {text[:80]!r}")
    latency = batch.latencies_ms[0] if batch.latencies_ms and settings.eval_latency else None
    return _record(example, settings, candidate.name, candidate.model, region, why,
                   latency_ms=latency, finish_reason=finish,
                   prompt_tokens=batch.prompt_tokens, completion_tokens=batch.completion_tokens)


def failed_record(example: SettledExample, candidate: Candidate, why: EvalFailure,
                  settings: Settings) -> EvalRecord:
    """`candidate` gave no prediction on `example` (its server failed for good)."""
    return _record(example, settings, candidate.name, candidate.model, None, why)
