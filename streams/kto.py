"""KTO records from live outcomes: what the editor showed, and whether the user kept it.

TRL's KTO format is unpaired: `prompt`, `completion`, `label` (desirable or not). The editor's
own verdicts are exactly that, and need no teacher: a settled example that carries the served
model's `output` and an `outcome` (`streams/settle`) says what was shown for the request and
what the user did with it.

- label true: `accepted`, and the edit survived the settle window (`streams.emit.undone` is
  false: at least half of it is still in the settled region);
- label false: `rejected`, or accepted and undone inside the window;
- no record: not shown (`was_shown` false, or `discarded`), `ignored` (no verdict either way),
  no output, or an output that changes nothing (nothing was proposed).

The prompt is the student's prompt in the record format and the completion the shown output in
that format's answer layout, so a KTO record and an SFT record of the same example share their
prompt byte for byte. Ids hash the pipeline version, the request id, `kto` and the format, as
the other records' ids do (`streams.emit.record_id`). Pure: the export (`editstream export
--export-kto`) reads `settled-examples` and applies the same split and near-duplicate rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streams.emit import record_id, split_for, undone
from streams.formats import build_prompt, completion_for, format_id
from streams.repo import repo_key
from streams.scoring import kept_rate
from streams.settings import Settings

# why a settled example gives no KTO record (counted by the export)
SKIPS = ("not_shown", "no_verdict", "no_output", "no_edit_shown")


def outcome_label(example: Mapping[str, Any]) -> bool | str:
    """The example's label, or (a string) the reason it has none (one of `SKIPS`)."""
    output = example.get("output")
    if example.get("was_shown") is not True or example.get("outcome") == "discarded":
        return "not_shown"
    if example.get("outcome") not in ("accepted", "rejected"):
        return "no_verdict"
    if not isinstance(output, str):
        return "no_output"
    if output == example.get("base_region"):
        return "no_edit_shown"
    if example["outcome"] == "rejected":
        return False
    return not undone(example)  # type: ignore[arg-type]


def kto_record(example: Mapping[str, Any], settings: Settings) -> dict[str, Any] | str:
    """A KTO record of one settled example, or the reason there is none."""
    label = outcome_label(example)
    if isinstance(label, str):
        return label
    output, base = str(example["output"]), str(example["base_region"])
    fmt = format_id(settings.record_format)
    kept = kept_rate(base, output, str(example["settled_region"])).kept_rate
    return {
        "v": 1,
        "id": record_id(settings, example["request_id"], "kto"),
        "format": "kto",
        "pipeline_version": settings.pipeline_version,
        "prompt_format": fmt["name"],
        "prompt_format_version": fmt["version"],
        "split": split_for(example, settings.eval_fraction),  # type: ignore[arg-type]
        "request_id": example["request_id"],
        "prompt": build_prompt(example, settings.record_format, settings.prompt_max_tokens),
        "completion": completion_for(output, settings.record_format, base),
        "label": label,
        "outcome": example["outcome"],
        "undone": example["outcome"] == "accepted" and not label,
        "provenance": {
            "session_id": example.get("session_id"),
            "path": example.get("path"),
            "repo": repo_key(example.get("repo_url")),  # never the URL as written
            "revision": example.get("revision"),
            "served_model_version": example.get("model_version"),
            "settle_reason": example.get("settle_reason"),
            "settled_at_ms": example.get("settled_at_ms"),
            "outcome": example.get("outcome"),
            "was_shown": example.get("was_shown"),
            # how much of the shown edit is in what the user kept (the undo test's figure)
            "kept_rate": round(kept, 4),
            "base_region": base,
            "settled_region": example.get("settled_region"),
        },
    }
