"""Prompt formats: how an example is shown to a model, and how its answer is read back.

Two student formats exist because training teams use both: the *marker* format (the excerpt
with the editable region delimited in place and the cursor marked, as Zed's edit-prediction
models read it) and a *FIM* format (prefix/suffix around the editable region as the middle).
Both are exact: building a prompt and parsing it back gives the same region text, byte for
byte, because markers are placed without added newlines.

The teacher gets the marker prompt plus what the user ended up writing (hindsight), so it can
produce a clean target; on repair it also gets the judgement of its previous answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

REGION_START = "<|editable_region_start|>"
REGION_END = "<|editable_region_end|>"
CURSOR = "<|user_cursor_is_here|>"
FIM_PREFIX = "<|fim_prefix|>"
FIM_SUFFIX = "<|fim_suffix|>"
FIM_MIDDLE = "<|fim_middle|>"
FILE_SEP = "<|file_sep|>"

FORMATS = ("marker", "fim")

EDITS_HEADER = "### User Edits:\n\n"
EXCERPT_HEADER = "### User Excerpt:\n\n"
RESPONSE_HEADER = "### Response:\n"
SETTLED_HEADER = "### What the user wrote next (settled editable region):\n\n"
FEEDBACK_HEADER = "### Your previous answer was judged bad:\n\n"
FENCE = "`````"  # five backticks: code in the excerpt may itself contain ``` fences

TEACHER_SYSTEM = (
    "You predict the next edit a developer makes. You get their recent edits, an excerpt of "
    "the file with the editable region between " + REGION_START + " and " + REGION_END + ", "
    "the cursor as " + CURSOR + ", and the text the region settled to later. Rewrite the "
    "editable region as the developer's next edit should leave it: continue their intent, "
    "never undo what they just did. Answer with the rewritten region only, between "
    + REGION_START + " and " + REGION_END + ", without the cursor marker."
)

JUDGE_SYSTEM = (
    "You review a predicted edit. Answer with a JSON object "
    '{"reasoning": str, "reverts_edits": bool, "confidence": 1-5} where confidence says how '
    "sure you are that the prediction is a good next edit."
)


@dataclass(frozen=True)
class Excerpt:
    """The excerpt split around its editable region (all str, split at byte offsets)."""

    before: str
    region: str
    after: str
    cursor_in_region: int  # char offset of the cursor inside `region`, clamped to it

    def region_with_cursor(self) -> str:
        return self.region[: self.cursor_in_region] + CURSOR + self.region[self.cursor_in_region :]


def split_excerpt(example: dict[str, Any]) -> Excerpt:
    """Split `excerpt` at the UTF-8 byte offsets of `editable_range` and `cursor`."""
    raw = example["excerpt"].encode()
    start, end = example["editable_range"]
    cursor = min(max(example["cursor"], start), end)
    return Excerpt(
        before=raw[:start].decode(),
        region=raw[start:end].decode(),
        after=raw[end:].decode(),
        cursor_in_region=len(raw[start:cursor].decode()),
    )


def _edits_section(history: list[dict[str, Any]]) -> str:
    parts = [f'User edited "{h["path"]}":\n```diff\n{h["diff"]}```\n\n' for h in history]
    return EDITS_HEADER + ("".join(parts) if parts else "(no recent edits)\n\n")


def marker_prompt(example: dict[str, Any]) -> str:
    ex = split_excerpt(example)
    body = ex.before + REGION_START + ex.region_with_cursor() + REGION_END + ex.after
    return (
        _edits_section(example.get("history") or [])
        + EXCERPT_HEADER
        + f"{FENCE}{example['path']}\n{body}\n{FENCE}\n\n"
        + RESPONSE_HEADER
    )


def fim_prompt(example: dict[str, Any]) -> str:
    ex = split_excerpt(example)
    diffs = "".join(h["diff"] for h in example.get("history") or [])
    return (
        f"{FILE_SEP}edit history\n{diffs}"
        f"{FILE_SEP}current editable region\n{ex.region_with_cursor()}\n"
        f"{FILE_SEP}{example['path']}\n"
        f"{FIM_PREFIX}{ex.before}{FIM_SUFFIX}{ex.after}{FIM_MIDDLE}"
    )


def build_prompt(example: dict[str, Any], fmt: str = "marker") -> str:
    """The student prompt for a settled example (uses the excerpt as it was at request time)."""
    if fmt == "marker":
        return marker_prompt(example)
    if fmt == "fim":
        return fim_prompt(example)
    raise ValueError(f"unknown prompt format {fmt!r}; expected one of {FORMATS}")


def completion_for(region: str, fmt: str = "marker") -> str:
    """The completion a model should produce for `region` in format `fmt`."""
    if fmt == "marker":
        return REGION_START + region + REGION_END
    if fmt == "fim":
        return region
    raise ValueError(f"unknown prompt format {fmt!r}; expected one of {FORMATS}")


def parse_output(text: str, fmt: str = "marker") -> str | None:
    """Read a region back from a model's answer; None when it does not parse.

    Marker answers must contain both markers in order; anything around them (a fence, a
    preamble) is ignored. A stray cursor marker is removed. FIM answers are the region itself.
    """
    if fmt == "fim":
        return text.replace(CURSOR, "")
    start = text.find(REGION_START)
    end = text.find(REGION_END, start + len(REGION_START)) if start >= 0 else -1
    if start < 0 or end < 0:
        return None
    return text[start + len(REGION_START) : end].replace(CURSOR, "")


def teacher_user_message(
    example: dict[str, Any], feedback: str | None = None, previous: str | None = None
) -> str:
    """The teacher's user turn: the marker prompt, hindsight, and on repair the judgement."""
    msg = marker_prompt(example).removesuffix(RESPONSE_HEADER)
    msg += SETTLED_HEADER + f"{FENCE}\n{example['settled_region']}\n{FENCE}\n\n"
    if feedback is not None:
        msg += FEEDBACK_HEADER + f"{feedback}\n\nPrevious answer:\n"
        msg += f"{FENCE}\n{previous or ''}\n{FENCE}\n\n"
    return msg + RESPONSE_HEADER


def judge_user_message(example: dict[str, Any], predicted: str) -> str:
    return (
        marker_prompt(example).removesuffix(RESPONSE_HEADER)
        + f"### Predicted editable region:\n\n{FENCE}\n{predicted}\n{FENCE}\n"
    )


@dataclass(frozen=True)
class PromptParts:
    """What a prompt shows, read back from its text (the simulator uses this)."""

    region: str | None
    history_diffs: list[str]
    settled_hint: str | None
    has_feedback: bool


_DIFF_RE = re.compile(r"```diff\n(.*?)```\n", re.S)


def _between(text: str, start: str, end: str) -> str | None:
    i = text.find(start)
    if i < 0:
        return None
    j = text.find(end, i + len(start))
    return None if j < 0 else text[i + len(start) : j]


def parse_prompt(prompt: str) -> PromptParts:
    """Recover region, history diffs and hindsight from a marker or FIM prompt."""
    if FIM_MIDDLE in prompt:
        region = _between(prompt, f"{FILE_SEP}current editable region\n", f"\n{FILE_SEP}")
        diffs_blob = _between(prompt, f"{FILE_SEP}edit history\n", FILE_SEP) or ""
        diffs = [d for d in re.split(r"(?=^--- )", diffs_blob, flags=re.M) if d.strip()]
        hint = None
    else:
        region = _between(prompt, REGION_START, REGION_END)
        diffs = _DIFF_RE.findall(prompt.split(EXCERPT_HEADER, 1)[0])
        hint = _between(prompt, SETTLED_HEADER + FENCE + "\n", "\n" + FENCE)
    if region is not None:
        region = region.replace(CURSOR, "")
    return PromptParts(region, diffs, hint, FEEDBACK_HEADER in prompt)
