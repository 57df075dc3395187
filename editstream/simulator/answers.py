"""The simulator's answer model: what its student, teacher and judge say (not a model).

It does not know the pipeline's answer key. It imports no band threshold and never reads a
hindsight section of a prompt: the teacher answers from a **ground-truth side file** that
``editstream generate`` writes next to its traces (request id → the region as the user left
it, settled by the same rules the pipeline uses), looked up by what the prompt shows (path,
region, cursor), and then errs on purpose in configurable ways:

* ``stale``: the region as it was at request time (a no-op although the user changed it);
* ``junk``: the settled region with something the user never typed (`` + 1``, ``;``, ...);
* ``revert``: undoes the user's last edit;
* ``truncation``: rambles until ``max_tokens`` cuts it (``finish_reason: length``);
* ``preamble``: a correct region after chatty prose and without a fence (must still read).

The student's skill on an example comes from the example's features (how much the user
changed, how much history it sees) plus per-example noise; each sample is then the user's
edit (perhaps with a slip), part of it, nothing (the region echoed) or a wrong rewrite, so
the distances, and the band mix, follow from the examples rather than being set. Students
also make format errors real models make: a preamble, a newline missing after the marker,
prose instead of a region, or an answer that never stops (cut by ``max_tokens``).

Everything is a deterministic function of the request (blake2b hashes, never ``hash()``).
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import math
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from rapidfuzz.distance import Levenshtein

from streams.formats import (
    JUDGE_SYSTEM,
    REGION_END,
    REGION_START,
    completion_for,
    parse_prompt,
    shown_region,
)

# --------------------------------------------------------------------------------------------
# Deterministic randomness


def digest(*parts: object) -> bytes:
    h = hashlib.blake2b(digest_size=16, person=b"editstream-sim")
    for part in parts:
        h.update(str(part).encode("utf-8", "surrogatepass"))
        h.update(b"\x1f")  # separator: ("ab", "c") and ("a", "bc") hash differently
    return h.digest()


def unit(*parts: object) -> float:
    """A uniform float in [0, 1) determined by ``parts``."""
    return int.from_bytes(digest(*parts)[:8], "big") / 2**64


def rng_of(*parts: object) -> random.Random:
    """A Random seeded by ``parts`` (int seeds are stable across processes and versions)."""
    return random.Random(int.from_bytes(digest(*parts), "big"))


def pick(u: float, weights: list[tuple[str, float]]) -> str:
    """The label whose cumulative weight interval contains ``u`` (weights are normalized)."""
    total = sum(w for _, w in weights)
    acc = 0.0
    for label, w in weights:
        acc += w / total if total > 0 else 0.0
        if u < acc:
            return label
    return weights[-1][0]


# --------------------------------------------------------------------------------------------
# Configuration and ground truth


STUDENT_MODES = ("sample", "oracle", "revert")


@dataclass(frozen=True)
class AnswerConfig:
    """The answer model's knobs (the simulator's flags of the same names set them)."""

    seed: int = 0
    student_skill: float = 0.0  # added to every example's skill (logit); + is better
    student_noise: float = 1.0  # spread of the per-example skill noise
    student_preamble_rate: float = 0.02
    student_garbage_rate: float = 0.02
    student_runaway_rate: float = 0.02
    student_inline_rate: float = 0.05  # zeta1: no newline after the start marker
    teacher_stale_rate: float = 0.06
    teacher_junk_rate: float = 0.08
    teacher_revert_rate: float = 0.05
    teacher_truncation_rate: float = 0.03
    teacher_preamble_rate: float = 0.1
    repair_success_rate: float = 0.7
    # sample: the student model above; oracle: every answer is the settled region (needs the
    # side file); revert: every answer undoes the user's last edit in the region (a planted
    # bad checkpoint for the scorecard's tests: issue 24)
    student_mode: str = "sample"

    def __post_init__(self) -> None:
        if self.student_mode not in STUDENT_MODES:
            raise ValueError(f"student_mode must be one of {', '.join(STUDENT_MODES)}")
        for name in ("student_preamble_rate", "student_garbage_rate", "student_runaway_rate",
                     "student_inline_rate", "teacher_stale_rate", "teacher_junk_rate",
                     "teacher_revert_rate", "teacher_truncation_rate", "teacher_preamble_rate",
                     "repair_success_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        teacher = (self.teacher_stale_rate + self.teacher_junk_rate + self.teacher_revert_rate
                   + self.teacher_truncation_rate + self.teacher_preamble_rate)
        if teacher > 1.0 + 1e-9:
            raise ValueError("teacher error rates must sum to at most 1")
        student = self.student_preamble_rate + self.student_garbage_rate + self.student_runaway_rate
        if student > 1.0 + 1e-9:
            raise ValueError("student format error rates must sum to at most 1")
        if self.student_noise < 0:
            raise ValueError("student_noise must be >= 0")


@dataclass(frozen=True)
class Truth:
    request_id: str
    base_region: str
    settled_region: str


class GroundTruth:
    """The side file, indexed by what a prompt shows: (path, region as shown, cursor)."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self._index: dict[tuple[str, str, int], Truth] = {}
        for row in rows:
            truth = Truth(row["request_id"], row["base_region"], row["settled_region"])
            for fmt in ("zeta1", "zeta2", "fim"):
                shown = shown_region(row["base_region"], fmt)
                cursor = min(int(row["cursor_in_region"]), len(shown))
                self._index.setdefault((row["path"], shown, cursor), truth)

    @classmethod
    def load(cls, path: str | Path | None) -> GroundTruth:
        if not path:
            return cls([])
        with open(path, "rb") as fh:
            return cls([orjson.loads(line) for line in fh if line.strip()])

    def __len__(self) -> int:
        return len(self._index)

    def find(self, path: str | None, region: str | None, cursor: int | None) -> Truth | None:
        if path is None or region is None or cursor is None:
            return None
        return self._index.get((path, region, cursor))


# --------------------------------------------------------------------------------------------
# Text edits

_TOKEN = re.compile(r"\w+|\s+|[^\w\s]")
_IDENTS = (
    "value", "result", "items", "count", "index", "data", "config", "node", "buffer",
    "offset", "total", "name", "key", "other", "ctx", "err", "tmp", "state", "path", "size",
)  # fmt: skip
JUNK = (" + 1", ";", "?", "s", "_tmp", "()", "[0]", " = 0")
_KEYWORDS = ("let", "const", "def", "fn", "return", "if", "for", "while", "var", "match")
_DISTANCE_MAX_CHARS = 20_000


def distance(a: str, b: str) -> float:
    a, b = a[:_DISTANCE_MAX_CHARS], b[:_DISTANCE_MAX_CHARS]
    return float(Levenshtein.normalized_distance(a, b))


def _mutate_line(rng: random.Random, line: str) -> str:
    """One token-level mutation: rename, delete, duplicate, renumber or insert a token."""
    tokens = _TOKEN.findall(line)
    solid = [i for i, t in enumerate(tokens) if not t.isspace()]
    if not solid:
        return line + rng.choice(_IDENTS)
    i = rng.choice(solid)
    op = rng.randrange(5)
    tok = tokens[i]
    if op == 0 and tok[0].isalpha():
        tokens[i] = rng.choice(_IDENTS) if rng.random() < 0.5 else tok + "_" + rng.choice(_IDENTS)
    elif op == 1 and len(solid) > 1:
        tokens[i] = ""
    elif op == 2:
        tokens[i] = tok + tok
    elif op == 3 and tok.isdigit():
        tokens[i] = str(int(tok) + rng.randint(1, 9))
    else:
        tokens[i] = tok + rng.choice(JUNK)
    return "".join(tokens)


def mutate(rng: random.Random, text: str, fraction: float) -> str:
    """Token mutations on about ``fraction`` of the non-blank lines."""
    lines = text.split("\n")
    candidates = [i for i, ln in enumerate(lines) if ln.strip()] or list(range(len(lines)))
    k = max(1, round(fraction * len(candidates)))
    for i in rng.sample(candidates, min(k, len(candidates))):
        lines[i] = _mutate_line(rng, lines[i])
    return "\n".join(lines)


def unrelated_code(rng: random.Random, n_lines: int, width: int) -> str:
    out = []
    for _ in range(max(1, n_lines)):
        words = [rng.choice(_KEYWORDS), rng.choice(_IDENTS), "=", rng.choice(_IDENTS)]
        while sum(len(w) + 1 for w in words) < width:
            words.append(rng.choice((*_IDENTS, "+", "(", ")", ",", str(rng.randint(0, 99)))))
        out.append(" " * rng.choice((0, 4, 8)) + " ".join(words))
    return "\n".join(out) + "\n"


def partial_edit(rng: random.Random, base: str, settled: str, keep: float) -> str:
    """Apply about ``keep`` of the user's line changes (base → settled), in order."""
    a, b = base.splitlines(keepends=True), settled.splitlines(keepends=True)
    out: list[str] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        take = tag == "equal" or rng.random() < keep
        out.extend(b[j1:j2] if take else a[i1:i2])
    return "".join(out)


def add_junk(rng: random.Random, settled: str, base: str) -> str:
    """The settled region with junk appended to a line the user changed (else any line)."""
    lines = settled.split("\n")
    old = set(base.split("\n"))
    changed = [i for i, ln in enumerate(lines) if ln.strip() and ln not in old]
    options = changed or [i for i, ln in enumerate(lines) if ln.strip()] or [0]
    for i in rng.sample(options, min(len(options), rng.randint(1, 3))):
        lines[i] = lines[i].rstrip() + rng.choice(JUNK)
    return "\n".join(lines)


def _diff_hunks(diff: str) -> list[list[tuple[str, str]]]:
    """Hunks of a unified diff as (tag, line) pairs, tag in " -+"."""
    hunks: list[list[tuple[str, str]]] = []
    for line in diff.split("\n"):
        if line.startswith("@@"):
            hunks.append([])
        elif hunks and line[:1] in (" ", "-", "+") and not line.startswith(("--- ", "+++ ")):
            hunks[-1].append((line[0], line[1:]))
    return hunks


def revert_edit(text: str, diff: str) -> str | None:
    """Undo ``diff`` in ``text`` where its lines are found; None if nothing could be undone.

    A hunk found whole is swapped back; otherwise added lines are removed and deleted lines
    re-inserted where the added ones were (or after the hunk's leading context).
    """
    lines = text.split("\n")
    for hunk in reversed(_diff_hunks(diff)):
        new = [c for t, c in hunk if t in " +"]
        old = [c for t, c in hunk if t in " -"]
        at = next(
            (i for i in range(len(lines) - len(new) + 1) if new and lines[i : i + len(new)] == new),
            None,
        )
        if at is not None:
            lines[at : at + len(new)] = old
            continue
        anchor: int | None = None
        for tag, content in hunk:
            if tag == "+" and content.strip() and content in lines:
                i = lines.index(content)
                del lines[i]
                anchor = i if anchor is None else min(anchor, i)
        removed = [c for t, c in hunk if t == "-"]
        if anchor is None:
            leading = list(itertools.takewhile(lambda tc: tc[0] == " ", hunk))
            found = [lines.index(c) for _, c in leading if c.strip() and c in lines]
            anchor = found[-1] + 1 if found else None
        if anchor is not None and removed:
            lines[anchor:anchor] = removed
    reverted = "\n".join(lines)
    return None if reverted == text else reverted


# --------------------------------------------------------------------------------------------
# Student


def _skill(config: AnswerConfig, truth: Truth, history_len: int) -> float:
    """P(a sample is the user's edit): from the example's features plus per-example noise.

    Bigger edits are harder, more history helps a little; the noise is a logistic draw per
    request id, so two examples with the same features still differ."""
    edit = distance(truth.base_region, truth.settled_region)
    u = min(max(unit(config.seed, "skill", truth.request_id), 1e-6), 1 - 1e-6)
    noise = config.student_noise * math.log(u / (1 - u)) * 0.6
    logit = -0.5 + config.student_skill - 5.0 * edit + 0.25 * min(history_len, 4) + noise
    return 1.0 / (1.0 + math.exp(-logit))


def _student_region(config: AnswerConfig, rng: random.Random, region: str,
                    truth: Truth | None, history_len: int) -> str:
    if truth is None:  # an example the side file does not know: echo or fumble
        return region if rng.random() < 0.5 else mutate(rng, region, rng.uniform(0.1, 0.4))
    p = _skill(config, truth, history_len)
    # Now and then a student cannot read an example at all (per example, not per sample).
    if unit(config.seed, "lost", truth.request_id) < 0.06 and rng.random() < 0.8:
        lines = truth.base_region.count("\n") + 1
        return unrelated_code(rng, lines, max(16, len(truth.base_region) // lines))
    roll = rng.random()
    if roll < p:  # the user's edit, sometimes with a one-character slip
        out = truth.settled_region
        if out and rng.random() < 0.2:
            i = rng.randrange(len(out))
            out = out[:i] + out[i + 1 :]
        return out
    roll = rng.random()
    if roll < 0.35:
        return partial_edit(rng, truth.base_region, truth.settled_region, rng.uniform(0.2, 0.8))
    if roll < 0.6:
        return truth.base_region  # no edit at all
    if roll < 0.9:
        return mutate(rng, partial_edit(rng, truth.base_region, truth.settled_region, 0.5),
                      rng.uniform(0.1, 0.5))
    lines = truth.base_region.count("\n") + 1
    return unrelated_code(rng, lines, max(16, len(truth.base_region) // lines))


def _render(config: AnswerConfig, rng: random.Random, fmt: str, region: str,
            base: str) -> str:
    """The answer in the prompt's format, with the format errors real models make."""
    roll = rng.random()
    if roll < config.student_garbage_rate:
        return "I am not sure what the user wants to do here. Could you share more context?"
    roll -= config.student_garbage_rate
    if roll < config.student_runaway_rate:  # never stops: max_tokens will cut it
        body = REGION_START + "\n" if fmt == "zeta1" else ""
        return body + (region or "x\n") * 40
    roll -= config.student_runaway_rate
    text = completion_for(region, fmt, base)
    if fmt == "zeta1" and rng.random() < config.student_inline_rate:
        text = text.replace(REGION_START + "\n", REGION_START, 1)
    if roll < config.student_preamble_rate:
        text = "Here is the updated code:\n```\n" + text + "\n```\n"
    return text


def student_samples(
    config: AnswerConfig, truth: GroundTruth, prompt: str, n: int, seed: int | None,
    temperature: float,
) -> list[str]:
    """The ``n`` completions for ``prompt``; choice ``i`` derives from ``seed + i``.

    At temperature 0 every choice is the same greedy answer (seed ignored), as with a model.
    Without a seed the choices still differ, by their index (a server that draws its own)."""
    parts = parse_prompt(prompt)
    if parts.region is None or parts.format not in ("zeta1", "zeta2", "fim"):
        return [unrelated_code(rng_of(config.seed, prompt, seed, i), 3, 30) for i in range(n)]
    fmt = parts.format
    found = truth.find(parts.path, parts.region, parts.cursor_in_region)
    base = found.base_region if found is not None else parts.region
    if config.student_mode != "sample":
        mine = [h["diff"] for h in parts.history
                if h.get("path") == parts.path and not h.get("predicted")]
        return [completion_for(_planted(config, found, base, mine), fmt, base)] * n
    out = []
    for i in range(n):
        key = "greedy" if temperature <= 0 else (f"noseed-{i}" if seed is None else seed + i)
        rng = rng_of(config.seed, "student", prompt, key)
        region = _student_region(config, rng, base, found, len(parts.history))
        out.append(_render(config, rng, fmt, region, base))
    return out


def _planted(config: AnswerConfig, found: Truth | None, base: str, diffs: list[str]) -> str:
    """The answer of a planted student: the oracle's (what the user wrote) or the
    reverter's (the region with the user's last own edit of this file, ``diffs[-1]``,
    undone; unchanged when it cannot)."""
    if config.student_mode == "oracle":
        return found.settled_region if found is not None else base
    reverted = revert_edit(base, diffs[-1]) if diffs else None
    return reverted if reverted is not None else base


# --------------------------------------------------------------------------------------------
# Teacher and judge


def _fenced(region: str) -> str:
    return f"`````\n{REGION_START}\n{region.removesuffix(chr(10))}\n{REGION_END}\n`````"


def teacher_answer(config: AnswerConfig, truth: GroundTruth, user: str, seed: int) -> str:
    """The teacher's reply (Zed's teacher style: a sentence of intent, then the region)."""
    parts = parse_prompt(user)
    found = truth.find(parts.path, parts.region, parts.cursor_in_region)
    rng = rng_of(config.seed, "teacher-text", seed, user)
    intent = "The developer is in the middle of an edit; I continue it.\n\n"
    if found is None:  # nothing known: a greedy student's guess
        if parts.region is None:
            return "I can't find an editable region in your message."
        guess = parts.region if rng.random() < 0.5 else mutate(rng, parts.region, 0.2)
        return intent + _fenced(guess)
    errors = [
        ("stale", config.teacher_stale_rate),
        ("junk", config.teacher_junk_rate),
        ("revert", config.teacher_revert_rate),
        ("truncation", config.teacher_truncation_rate),
        ("preamble", config.teacher_preamble_rate),
    ]
    u = unit(config.seed, "teacher", seed, user)
    if parts.has_feedback and unit(config.seed, "repair", seed, user) < config.repair_success_rate:
        mode = "good"
    else:
        mode = pick(u, [*errors, ("good", max(0.0, 1.0 - sum(w for _, w in errors)))])
    settled, base = found.settled_region, found.base_region
    if mode == "stale":
        return intent + _fenced(base)
    if mode == "junk":
        return intent + _fenced(add_junk(rng, settled, base))
    if mode == "revert":
        diffs = parts.history_diffs
        reverted = revert_edit(settled, diffs[-1]) if diffs else None
        return intent + _fenced(reverted if reverted is not None else base)
    if mode == "truncation":  # explains at such length that max_tokens cuts it
        line = "Let me think about every line of this file once more. "
        musing = line * ((34_000 + 4 * len(settled)) // len(line))  # past any sane max_tokens
        return musing + "\n\n" + _fenced(settled)
    if mode == "preamble":
        return ("Sure! Looking at the edit history, the developer is clearly working on this "
                "function, so here is the region:\n\n" + REGION_START + "\n"
                + settled.removesuffix("\n") + "\n" + REGION_END
                + "\nLet me know if you need more.")
    return intent + _fenced(settled)


_PREDICTED_RE = re.compile(r"### Predicted editable region:\n\n`````\n(.*?)\n`````", re.S)


def _looks_reverted(region: str, predicted: str, diffs: list[str]) -> bool:
    """Whether ``predicted`` drops lines the last edit added (or restores ones it removed)."""
    if not diffs:
        return False
    have, got = set(region.split("\n")), set(predicted.split("\n"))
    for hunk in _diff_hunks(diffs[-1]):
        for tag, content in hunk:
            if not content.strip():
                continue
            if tag == "+" and content in have and content not in got:
                return True
            if tag == "-" and content not in have and content in got:
                return True
    return False


def judge_answer(config: AnswerConfig, user: str, seed: int) -> str:
    """A JSON verdict; consistent for the same input, mostly confident, notices reverts."""
    parts = parse_prompt(user)
    m = _PREDICTED_RE.search(user)
    predicted = m.group(1) if m else None
    region = parts.region
    u = unit(config.seed, "judge", seed, user)
    v = unit(config.seed, "judge-confidence", seed, user)
    suspect = (
        region is not None
        and predicted is not None
        and _looks_reverted(region, predicted, parts.history_diffs)
    )
    reverts = u < 0.9 if suspect else u < 0.05
    far = region is not None and predicted is not None and distance(region, predicted) > 0.6
    if reverts:
        confidence, reasoning = 1 + int(v * 2), "The prediction undoes the user's last edit."
    elif far:
        confidence, reasoning = 1 + int(v * 2), "The prediction is unrelated to the excerpt."
    else:
        confidence = int(pick(v, [("5", 0.5), ("4", 0.3), ("3", 0.12), ("2", 0.05), ("1", 0.03)]))
        reasoning = "The prediction continues the user's edits plausibly."
    verdict = {
        "reasoning": f"(simulated judge) {reasoning}",
        "reverts_edits": reverts,
        "confidence": confidence,
    }
    return orjson.dumps(verdict).decode()


def chat_answer(config: AnswerConfig, truth: GroundTruth, system: str, user: str,
                seed: int) -> str:
    """Dispatch on the system prompt: the judge's gets a verdict, any other the teacher's."""
    if system.strip() == JUDGE_SYSTEM.strip():
        return judge_answer(config, user, seed)
    return teacher_answer(config, truth, user, seed)


