"""Prompt formats: how an example is shown to a model, and how its answer is read back.

Formats are versioned by name; the name and version go on every record and in the export
manifest, so a dataset says exactly which layout its prompts use:

* ``zeta1`` (v1): Zed's first edit-prediction prompt. An instruction preamble, ``### User
  Edits`` (each event ``User edited <path>:`` and a ```` ```diff ```` block), ``### User
  Excerpt`` (a fence opened with the path, ``<|start_of_file|>`` when the excerpt starts at
  byte 0, the region markers on their own lines, the cursor marker) and ``### Response``.
  The answer is the rewritten region between the markers. There is no special no-edit
  token: the no-edit answer is the region unchanged.
* ``zeta2`` (v1): Zed's git-merge-marker prompt (its ``V0120GitMergeMarkers``): an edit
  history of ``--- a/``/``+++ b/`` diffs, then ``<|fim_prefix|>`` before the region,
  ``<|fim_suffix|>`` after it, and ``<|fim_middle|><<<<<<< CURRENT`` with the region and the
  cursor, closed by ``=======``. The answer is the updated region then ``>>>>>>> UPDATED``;
  the no-edit answer is ``NO_EDITS`` then the same terminator.
* ``fim`` (v2): our plain fill-in-the-middle layout; the answer is the region then
  ``<|endoftext|>`` (v1 had no terminator, so a model could not know where to stop).

Editable regions are line-aligned. Where a region ends with a newline, ``zeta1`` shows it as
Zed does (the end marker on the line after the region's last line, the newline not repeated)
and ``zeta2`` adds no newline; reading an answer back puts the request-time region's final
newline back, so a region round-trips byte for byte.

Reading answers is lenient where real models are (a preamble, a markdown fence, a newline
after a marker, a terminator the server cut off as a stop sequence) and strict where it
matters: exactly one region, and an answer cut by ``max_tokens`` never counts.

The teacher sees what the editor saw (edits, excerpt, cursor), as Zed's teacher does; what
the user wrote later is shown only with ``hindsight=True``. On repair it also gets the
judgement of its previous answer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

REGION_START = "<|editable_region_start|>"
REGION_END = "<|editable_region_end|>"
CURSOR = "<|user_cursor_is_here|>"
START_OF_FILE = "<|start_of_file|>"
ZETA2_CURSOR = "<|user_cursor|>"
ZETA2_CURRENT = "<<<<<<< CURRENT\n"
ZETA2_SEPARATOR = "=======\n"
ZETA2_UPDATED = ">>>>>>> UPDATED"
NO_EDITS = "NO_EDITS"
FIM_PREFIX = "<|fim_prefix|>"
FIM_SUFFIX = "<|fim_suffix|>"
FIM_MIDDLE = "<|fim_middle|>"
FILE_SEP = "<|file_sep|>"
FIM_END = "<|endoftext|>"

ZETA1_INSTRUCTION = (
    "### Instruction:\n"
    "You are a code completion assistant and your task is to analyze user edits and then "
    "rewrite an excerpt that the user provides, suggesting the appropriate edits within the "
    "excerpt, taking into account the cursor location.\n\n"
)
EDITS_HEADER = "### User Edits:\n\n"
EXCERPT_HEADER = "\n\n### User Excerpt:\n\n"
RESPONSE_HEADER = "\n\n### Response:\n\n"
HISTORY_HEADER = FILE_SEP + "edit history\n"
ACCEPTED_PREDICTION = "// User accepted prediction:\n"
FENCE = "`````"  # five backticks: code in the excerpt may itself contain ``` fences


@dataclass(frozen=True)
class PromptFormat:
    """A named, versioned layout: its stop sequences and its explicit no-edit answer."""

    name: str
    version: int
    stop: tuple[str, ...]
    no_edit: str | None  # None: the no-edit answer is the unchanged region


FORMATS: dict[str, PromptFormat] = {
    "zeta1": PromptFormat("zeta1", 1, (REGION_END,), None),
    "zeta2": PromptFormat("zeta2", 1, (ZETA2_UPDATED,), NO_EDITS),
    "fim": PromptFormat("fim", 2, (FIM_END,), None),
}
ALIASES = {"marker": "zeta1"}  # the name of zeta1 before formats were versioned


def prompt_format(name: str) -> PromptFormat:
    """The format called ``name`` (or an alias of it); ValueError when unknown."""
    fmt = FORMATS.get(ALIASES.get(name, name))
    if fmt is None:
        raise ValueError(f"unknown prompt format {name!r}; expected one of {sorted(FORMATS)}")
    return fmt


class FormatId(TypedDict):
    """A prompt format as records name it (``prompt_format``, ``prompt_format_version``)."""

    name: str
    version: int


def format_id(name: str) -> FormatId:
    """``{"name", "version"}`` as records and the export manifest carry it."""
    fmt = prompt_format(name)
    return {"name": fmt.name, "version": fmt.version}


def estimate_tokens(text: str) -> int:
    """Zed's estimate for prompt budgets: one token per three UTF-8 bytes."""
    return len(text.encode()) // 3


# --------------------------------------------------------------------------------------------
# The example, split


@dataclass(frozen=True)
class Excerpt:
    """The excerpt split around its editable region (all str, split at byte offsets)."""

    before: str
    region: str
    after: str
    cursor_in_region: int  # char offset of the cursor inside `region`, clamped to it

    def region_with_cursor(self, marker: str = CURSOR, *, lines: bool = False) -> str:
        """The region with the cursor marker. ``lines``: a region ending in a newline is
        drawn as whole lines, so a cursor after that newline is shown before it."""
        at = self.cursor_in_region
        if lines and self.region.endswith("\n"):
            at = min(at, len(self.region) - 1)
        return self.region[:at] + marker + self.region[at:]


def split_excerpt(example: Mapping[str, Any]) -> Excerpt:
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


def diff_body(diff: str) -> str:
    """A unified diff without its ``---``/``+++`` header lines (the formats write the path)."""
    lines = diff.split("\n")
    while lines and lines[0].startswith(("--- ", "+++ ")):
        lines.pop(0)
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Building prompts


def _zeta1_event(h: Mapping[str, Any]) -> str:
    return f"User edited {h['path']}:\n```diff\n{diff_body(h['diff']).removesuffix(chr(10))}\n```"


def _zeta2_event(h: Mapping[str, Any]) -> str:
    head = ACCEPTED_PREDICTION if h.get("predicted") else ""
    path = h["path"].lstrip("/")
    return f"{head}--- a/{path}\n+++ b/{path}\n{diff_body(h['diff'])}"


def zeta1_excerpt(example: Mapping[str, Any], cursor_marker: str = CURSOR) -> str:
    """The fenced excerpt as Zed's zeta1 writes it (also what the teacher is shown)."""
    ex = split_excerpt(example)
    start = START_OF_FILE + "\n" if example.get("excerpt_start") == 0 else ""
    region = ex.region_with_cursor(cursor_marker, lines=True)
    after = ex.after
    if region.endswith("\n"):  # Zed's regions end at a line end: the newline goes after
        region, after = region[:-1], "\n" + after
    return (f"```{example['path']}\n{start}{ex.before}{REGION_START}\n{region}\n{REGION_END}"
            f"{after}\n```")


def _zeta1(example: Mapping[str, Any], history: Sequence[Mapping[str, Any]]) -> str:
    events = "\n\n".join(_zeta1_event(h) for h in history)
    return (ZETA1_INSTRUCTION + EDITS_HEADER + events + EXCERPT_HEADER + zeta1_excerpt(example)
            + RESPONSE_HEADER)


def _zeta2(example: Mapping[str, Any], history: Sequence[Mapping[str, Any]]) -> str:
    ex = split_excerpt(example)
    out = HISTORY_HEADER + "".join(_zeta2_event(h) for h in history) if history else ""
    out += f"{FILE_SEP}{example['path']}\n{FIM_PREFIX}{ex.before}{FIM_SUFFIX}{ex.after}"
    if not out.endswith("\n"):
        out += "\n"
    region = ex.region_with_cursor(ZETA2_CURSOR, lines=True)
    if not region.endswith("\n"):
        region += "\n"
    return out + FIM_MIDDLE + ZETA2_CURRENT + region + ZETA2_SEPARATOR


def _fim(example: Mapping[str, Any], history: Sequence[Mapping[str, Any]]) -> str:
    ex = split_excerpt(example)
    diffs = "".join(h["diff"] for h in history)
    return (
        f"{FILE_SEP}edit history\n{diffs}"
        f"{FILE_SEP}current editable region\n{ex.region_with_cursor()}\n"
        f"{FILE_SEP}{example['path']}\n"
        f"{FIM_PREFIX}{ex.before}{FIM_SUFFIX}{ex.after}{FIM_MIDDLE}"
    )


_BUILDERS = {"zeta1": _zeta1, "zeta2": _zeta2, "fim": _fim}


def history_kept(example: Mapping[str, Any], fmt: str, max_tokens: int | None) -> int:
    """How many of the newest history entries fit the prompt budget (the excerpt always
    stays, so a prompt may exceed a budget too small for its excerpt alone)."""
    history = list(example.get("history") or [])
    build = _BUILDERS[prompt_format(fmt).name]
    keep = len(history)
    if max_tokens is None:
        return keep
    while keep > 0 and estimate_tokens(build(example, history[len(history) - keep :])) > max_tokens:
        keep -= 1  # the oldest entry goes first
    return keep


def build_prompt(example: Mapping[str, Any], fmt: str = "zeta1",
                 max_tokens: int | None = None) -> str:
    """The student prompt for an example (the excerpt as it was at request time), trimmed
    to ``max_tokens`` by dropping the oldest history entries first."""
    name = prompt_format(fmt).name
    history = list(example.get("history") or [])
    keep = history_kept(example, name, max_tokens)
    return _BUILDERS[name](example, history[len(history) - keep :])


def completion_for(region: str, fmt: str = "zeta1", base_region: str | None = None) -> str:
    """What a model should answer for ``region`` in format ``fmt``; when ``region`` equals
    the request-time ``base_region``, the format's explicit no-edit answer."""
    f = prompt_format(fmt)
    if f.name == "zeta1":
        return f"{REGION_START}\n{region.removesuffix(chr(10))}\n{REGION_END}"
    if f.name == "zeta2":
        if base_region is not None and region == base_region:
            return f"{NO_EDITS}\n{ZETA2_UPDATED}\n"
        return (region if region.endswith("\n") else region + "\n") + ZETA2_UPDATED + "\n"
    return region + FIM_END


# --------------------------------------------------------------------------------------------
# Reading answers


@dataclass(frozen=True)
class Parsed:
    """A model answer read back: the region, or why there is none."""

    region: str | None
    error: str | None  # None | "truncated" | "no_region" | "multiple_regions"

    @property
    def ok(self) -> bool:
        return self.region is not None


_FENCE_LINE = re.compile(r"^\s*`{3,}[^\n`]*\n")


def _unfence(text: str) -> str:
    """Drop an opening markdown fence line and a closing fence (lenient on the language)."""
    m = _FENCE_LINE.match(text)
    if m:
        text = text[m.end() :]
        stripped = text.rstrip()
        if stripped.endswith("```"):
            text = stripped.rstrip("`").removesuffix("\n")
    return text


def _parse_zeta1(text: str, base_region: str | None, truncated: bool) -> Parsed:
    text = text.replace(CURSOR, "").replace(ZETA2_CURSOR, "")
    starts, ends = text.count(REGION_START), text.count(REGION_END)
    if starts > 1 or ends > 1:
        return Parsed(None, "multiple_regions")
    if starts == 0:
        return Parsed(None, "truncated" if truncated else "no_region")
    body = text[text.index(REGION_START) + len(REGION_START) :]
    if ends:
        body = body[: body.index(REGION_END)] if REGION_END in body else ""
        if REGION_END not in text[text.index(REGION_START) :]:
            return Parsed(None, "no_region")  # the end marker comes before the start
    elif truncated:
        return Parsed(None, "truncated")
    else:  # the server cut the end marker off as a stop sequence
        body = body.removesuffix("\n```").removesuffix("\n")
    body = body.removeprefix("\n")  # the marker's own line
    body = body.removesuffix("\n")  # the line break before the end marker
    if base_region is not None and base_region.endswith("\n"):
        body += "\n"
    return Parsed(body, None)


def _parse_zeta2(text: str, base_region: str | None, truncated: bool) -> Parsed:
    text = _unfence(text.replace(ZETA2_CURSOR, "").replace(CURSOR, ""))
    if text.count(ZETA2_UPDATED) > 1 or text.count(ZETA2_CURRENT) > 1:
        return Parsed(None, "multiple_regions")
    if ZETA2_CURRENT in text:  # the model repeated the conflict block: keep the update
        _, _, text = text.partition(ZETA2_CURRENT)
        if ZETA2_SEPARATOR not in text:
            return Parsed(None, "truncated" if truncated else "no_region")
        text = text.split(ZETA2_SEPARATOR, 1)[1]
    if ZETA2_UPDATED in text:
        text = text[: text.index(ZETA2_UPDATED)]
    elif truncated:
        return Parsed(None, "truncated")
    if text.strip() == NO_EDITS:
        return Parsed(base_region, None) if base_region is not None else Parsed(None, "no_region")
    if base_region is not None and not base_region.endswith("\n"):
        text = text.removesuffix("\n")
    return Parsed(text, None)


def _parse_fim(text: str, base_region: str | None, truncated: bool) -> Parsed:
    text = text.replace(CURSOR, "")
    if any(tok in text for tok in (FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE, FILE_SEP)):
        return Parsed(None, "no_region")  # it wandered on into another document
    if FIM_END in text:
        return Parsed(text[: text.index(FIM_END)], None)
    if truncated:
        return Parsed(None, "truncated")
    return Parsed(text, None)


_PARSERS = {"zeta1": _parse_zeta1, "zeta2": _parse_zeta2, "fim": _parse_fim}


def parse_answer(text: str, fmt: str = "zeta1", base_region: str | None = None,
                 finish_reason: str = "stop") -> Parsed:
    """Read a region back from a model's answer in format ``fmt``.

    ``base_region`` is the request-time region (it resolves the no-edit answer and the final
    newline); ``finish_reason == "length"`` means the server cut the answer at
    ``max_tokens``: such an answer is never taken, whatever it contains.
    """
    name = prompt_format(fmt).name
    truncated = finish_reason == "length"
    parsed = _PARSERS[name](text, base_region, truncated)
    if truncated and parsed.ok:
        return Parsed(None, "truncated")
    return parsed


def parse_output(text: str, fmt: str = "zeta1", base_region: str | None = None,
                 finish_reason: str = "stop") -> str | None:
    """The region of an answer, or None when it does not parse (see ``parse_answer``)."""
    return parse_answer(text, fmt, base_region, finish_reason).region


# --------------------------------------------------------------------------------------------
# Teacher and judge

TEACHER_SYSTEM = (
    "You predict the next edit a developer makes in a code editor. You get their recent "
    "edits (oldest first) and an excerpt of the file they are in, with the editable region "
    "between " + REGION_START + " and " + REGION_END + " and their cursor as " + CURSOR + ". "
    "Infer what they are doing from the edits and continue it: finish what they started, "
    "never undo or delete what they just typed, prefer a small correct edit to a large "
    "speculative one, and change nothing if nothing needs changing. Briefly state the "
    "developer's intent, then give the whole editable region with your edit applied in one "
    "code block that starts with " + REGION_START + " and ends with " + REGION_END + ", "
    "without the cursor marker."
)

JUDGE_SYSTEM = (
    "You review a predicted edit. Answer with a JSON object "
    '{"reasoning": str, "reverts_edits": bool, "confidence": 1-5} where confidence says how '
    "sure you are that the prediction is a good next edit."
)

TEACHER_EDITS_HEADER = "# 1. User edits (oldest first)\n\n"
TEACHER_FILE_HEADER = "# 2. Current file\n\n"
SETTLED_HEADER = "# Hindsight: what the user wrote next (the settled editable region)\n\n"
FEEDBACK_HEADER = "# Your previous answer was judged bad\n\n"
TEACHER_TASK = "Predict the developer's next edit within the editable region.\n"


def teacher_user_message(
    example: Mapping[str, Any],
    feedback: str | None = None,
    previous: str | None = None,
    *,
    hindsight: bool = False,
) -> str:
    """The teacher's user turn: what the editor saw (edits, excerpt, cursor); with
    ``hindsight`` also the settled region; on repair the judgement and previous answer."""
    history = example.get("history") or []
    edits = "\n".join(_zeta2_event(h) for h in history) or "(no recent edits)\n"
    msg = (TEACHER_EDITS_HEADER + f"{FENCE}\n{edits}{FENCE}\n\n"
           + TEACHER_FILE_HEADER + zeta1_excerpt(example) + "\n\n")
    if hindsight:
        msg += SETTLED_HEADER + f"{FENCE}\n{example['settled_region']}\n{FENCE}\n\n"
    if feedback is not None:
        msg += FEEDBACK_HEADER + f"{feedback}\n\nPrevious answer:\n"
        msg += f"{FENCE}\n{previous or ''}\n{FENCE}\n\n"
    return msg + TEACHER_TASK


def judge_user_message(example: Mapping[str, Any], predicted: str) -> str:
    history = example.get("history") or []
    edits = "\n".join(_zeta2_event(h) for h in history) or "(no recent edits)\n"
    return (TEACHER_EDITS_HEADER + f"{FENCE}\n{edits}{FENCE}\n\n" + TEACHER_FILE_HEADER
            + zeta1_excerpt(example) + "\n\n"
            + f"### Predicted editable region:\n\n{FENCE}\n{predicted}\n{FENCE}\n")


# --------------------------------------------------------------------------------------------
# Reading prompts back


@dataclass(frozen=True)
class PromptParts:
    """What a prompt shows, read back from its text (round-trip checks and the simulator).

    ``region`` is as the format shows it (zeta1 without a final newline, zeta2 with one);
    ``history`` holds ``{path, diff, predicted}`` with diffs as shown (header-less for zeta1
    and zeta2, whose headers are rewritten from the path).
    """

    format: str | None
    path: str | None
    before: str | None
    region: str | None
    after: str | None
    cursor_in_region: int | None
    history: list[dict[str, Any]]
    settled_hint: str | None
    has_feedback: bool

    @property
    def history_diffs(self) -> list[str]:
        return [h["diff"] for h in self.history]


def _between(text: str, start: str, end: str) -> str | None:
    i = text.find(start)
    if i < 0:
        return None
    j = text.find(end, i + len(start))
    return None if j < 0 else text[i + len(start) : j]


_ZETA1_EVENT = re.compile(r"User edited (.*?):\n```diff\n(.*?)\n```(?=\n\n|$)", re.S)
_ZETA2_EVENT = re.compile(
    r"(// User accepted prediction:\n)?--- a/(.*?)\n\+\+\+ b/(.*?)\n(.*?)(?=(?:// User accepted "
    r"prediction:\n)?--- a/|\Z)", re.S)


def _zeta2_history(blob: str) -> list[dict[str, Any]]:
    return [{"path": m.group(3), "diff": m.group(4), "predicted": bool(m.group(1))}
            for m in _ZETA2_EVENT.finditer(blob)]


def _read_zeta1_excerpt(text: str) -> tuple[str | None, str, str, str, int] | None:
    """(path, before, region, after, cursor) from a fenced zeta1 excerpt; region as shown."""
    m = re.search(r"```([^\n`]*)\n", text)
    if m is None:
        return None
    body_start = m.end()
    start = text.find(REGION_START + "\n", body_start)
    end = text.find("\n" + REGION_END, start)
    close = text.find("\n```", end + len(REGION_END) + 1) if end >= 0 else -1
    if start < 0 or end < 0 or close < 0:
        return None
    before = text[body_start:start].removeprefix(START_OF_FILE + "\n")
    shown = text[start + len(REGION_START) + 1 : end]
    cursor = shown.find(CURSOR)
    region = shown.replace(CURSOR, "")
    after = text[end + 1 + len(REGION_END) : close]
    return m.group(1), before, region, after, (len(region) if cursor < 0 else cursor)


def parse_prompt(prompt: str) -> PromptParts:
    """Recover what a zeta1, zeta2, fim or teacher prompt shows."""
    hint = _between(prompt, SETTLED_HEADER + FENCE + "\n", "\n" + FENCE)
    feedback = FEEDBACK_HEADER in prompt
    if ZETA2_SEPARATOR in prompt and FIM_MIDDLE + ZETA2_CURRENT in prompt:
        blob = _between(prompt, HISTORY_HEADER, FILE_SEP) or ""
        tail = prompt[prompt.rfind(FILE_SEP) + len(FILE_SEP) :]
        path, _, rest = tail.partition("\n")
        before = _between(rest, FIM_PREFIX, FIM_SUFFIX)
        after = _between(rest, FIM_SUFFIX, FIM_MIDDLE)
        shown = _between(rest, ZETA2_CURRENT, ZETA2_SEPARATOR) or ""
        cursor = shown.find(ZETA2_CURSOR)
        region = shown.replace(ZETA2_CURSOR, "")
        return PromptParts("zeta2", path, before, region, after,
                           len(region) if cursor < 0 else cursor, _zeta2_history(blob),
                           hint, feedback)
    if prompt.endswith(FIM_MIDDLE) and FILE_SEP + "current editable region\n" in prompt:
        shown = _between(prompt, f"{FILE_SEP}current editable region\n", f"\n{FILE_SEP}") or ""
        diffs_blob = _between(prompt, f"{FILE_SEP}edit history\n", FILE_SEP) or ""
        diffs = [d for d in re.split(r"(?=^--- )", diffs_blob, flags=re.M) if d.strip()]
        head = prompt.rfind(FILE_SEP)
        path = prompt[head + len(FILE_SEP) : prompt.index("\n", head)]
        cursor = shown.find(CURSOR)
        region = shown.replace(CURSOR, "")
        return PromptParts("fim", path, _between(prompt, FIM_PREFIX, FIM_SUFFIX), region,
                           _between(prompt, FIM_SUFFIX, FIM_MIDDLE),
                           len(region) if cursor < 0 else cursor,
                           [{"path": path, "diff": d, "predicted": False} for d in diffs],
                           hint, feedback)
    if prompt.startswith(ZETA1_INSTRUCTION):
        edits = _between(prompt, EDITS_HEADER, EXCERPT_HEADER) or ""
        history = [{"path": m.group(1), "diff": m.group(2) + "\n", "predicted": False}
                   for m in _ZETA1_EVENT.finditer(edits)]
        excerpt = _read_zeta1_excerpt(prompt.split(EXCERPT_HEADER, 1)[-1])
        fmt = "zeta1"
    else:  # the teacher's or the judge's message
        edits = _between(prompt, TEACHER_EDITS_HEADER + FENCE + "\n", FENCE + "\n") or ""
        history = _zeta2_history(edits)
        excerpt = _read_zeta1_excerpt(prompt.split(TEACHER_FILE_HEADER, 1)[-1])
        fmt = "teacher"
    if excerpt is None:
        return PromptParts(None, None, None, None, None, None, history, hint, feedback)
    return PromptParts(fmt, *excerpt, history, hint, feedback)


def shown_region(region: str, fmt: str) -> str:
    """``region`` as format ``fmt`` draws it in a prompt (see the module docstring)."""
    name = prompt_format(fmt).name if fmt != "teacher" else "zeta1"
    if name == "zeta1":
        return region.removesuffix("\n")
    if name == "zeta2":
        return region if region.endswith("\n") else region + "\n"
    return region
