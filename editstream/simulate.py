"""A local model SIMULATOR: an HTTP server that imitates model servers. It is not a model.

It exists so the whole pipeline runs offline and so tests exercise the real HTTP protocol
(OpenAI completions and chat, Anthropic Messages) with real faults: dropped connections,
hangs, 429s with ``Retry-After``, 500s and truncated JSON bodies.

Its answers are derived deterministically (blake2b hashes of the seed, the prompt and the
per-sample seed; never Python's randomized ``hash()``) from what the prompt shows, with an
error model calibrated to the pipeline's distance bands:

* student (``/v1/completions``): each example is easy, medium or hard (by a hash of its
  region). Easy samples echo the region or make a tiny edit at the cursor (normalized
  Levenshtein distance < 0.05), medium samples mutate tokens on 10-40% of the lines
  (0.05-0.6), hard samples are unrelated or degenerate text (> 0.6). Samples of one
  example mix difficulties a little, so best-of-N has something to choose from;
* teacher (chat/messages with ``TEACHER_SYSTEM``): answers with the settled region it was
  shown as hindsight, and sometimes errs on purpose: reverts the user's last edit, omits
  the region markers, or drifts. Repair prompts (with feedback) mostly succeed;
* judge (``JUDGE_SYSTEM``): a JSON verdict, mostly confident, that notices reverts.

Faults are drawn per request from a seeded ``random.Random`` owned by the app, so a run's
fault sequence is reproducible (which request gets which fault depends on arrival order).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import itertools
import logging
import random
import re
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import orjson
from aiohttp import web
from rapidfuzz.distance import Levenshtein

from streams.formats import (
    CURSOR,
    FENCE,
    FILE_SEP,
    FIM_MIDDLE,
    JUDGE_SYSTEM,
    REGION_END,
    REGION_START,
    TEACHER_SYSTEM,
    parse_prompt,
)

__all__ = [
    "DESCRIPTION",
    "RunningSimulator",
    "SimulatorConfig",
    "SimulatorStats",
    "add_arguments",
    "build_app",
    "config_from_args",
    "serve",
    "start_simulator",
]

log = logging.getLogger(__name__)

DESCRIPTION = (
    "Run a local model SIMULATOR (not a model): an HTTP server speaking the OpenAI "
    "completions/chat and Anthropic Messages APIs, answering with deterministic, "
    "hash-derived predictions and injecting faults, so the pipeline runs offline."
)
DEFAULT_PORT = 8400

# Distance bands the student error model aims at (the pipeline's trivial/ideal/noise bands).
BAND_LOW = 0.05
BAND_HIGH = 0.6
# Request limits: generous, but bounded so bad input can't make the simulator misbehave.
MAX_N = 128
MAX_TOKENS = 1_000_000


@dataclass(frozen=True)
class SimulatorConfig:
    """Knobs of the simulator: latency, faults (per request), and the prediction error model."""

    seed: int = 0
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    accept_n: bool = True  # False: 400 naming param "n" for n > 1
    n_cap: int = 0  # > 0: answer at most this many choices whatever n asks (llama.cpp: 1)
    slots: int = 0  # > 0: requests worked on at once; the rest wait in the server (llama.cpp)
    error_rate: float = 0.0  # HTTP 500
    rate_limit_rate: float = 0.0  # HTTP 429 with Retry-After
    retry_after_s: float = 1.0
    timeout_rate: float = 0.0  # hang timeout_s before answering
    timeout_s: float = 60.0
    malformed_rate: float = 0.0  # 200 with a truncated JSON body
    drop_rate: float = 0.0  # close the connection without a response
    # Error model of the predictions (fractions of examples, chosen by a hash of the region).
    student_easy: float = 0.35
    student_medium: float = 0.40
    student_hard: float = 0.25
    teacher_revert_rate: float = 0.15
    teacher_malformed_rate: float = 0.08
    teacher_drift_rate: float = 0.07
    repair_success_rate: float = 0.7
    model: str = "editstream-simulator"  # listed by GET /v1/models; requests may name any

    def __post_init__(self) -> None:
        rates = (
            "error_rate",
            "rate_limit_rate",
            "timeout_rate",
            "malformed_rate",
            "drop_rate",
            "teacher_revert_rate",
            "teacher_malformed_rate",
            "teacher_drift_rate",
            "repair_success_rate",
            "student_easy",
            "student_medium",
            "student_hard",
        )
        for name in rates:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        for name in ("latency_ms", "jitter_ms", "retry_after_s", "timeout_s", "n_cap", "slots"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        faults = (
            self.drop_rate
            + self.timeout_rate
            + self.rate_limit_rate
            + self.error_rate
            + self.malformed_rate
        )
        if faults > 1.0 + 1e-9:
            raise ValueError("fault rates must sum to at most 1")
        teacher = self.teacher_revert_rate + self.teacher_malformed_rate + self.teacher_drift_rate
        if teacher > 1.0 + 1e-9:
            raise ValueError("teacher error rates must sum to at most 1")
        if self.student_easy + self.student_medium + self.student_hard <= 0:
            raise ValueError("student difficulty weights must not all be 0")


@dataclass
class SimulatorStats:
    """What the simulator saw: requests by endpoint, faults injected, statuses, concurrency."""

    requests: Counter[str] = field(default_factory=Counter)  # by path
    faults: Counter[str] = field(default_factory=Counter)  # drop/timeout/rate_limit/... /none
    statuses: Counter[int] = field(default_factory=Counter)  # answered statuses
    in_flight: int = 0
    max_in_flight: int = 0
    # with slots: requests waiting for one (in the server's queue), and the longest wait
    queued: int = 0
    max_queued: int = 0
    max_queue_wait_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": dict(self.requests),
            "faults": dict(self.faults),
            "statuses": {str(k): v for k, v in self.statuses.items()},
            "max_in_flight": self.max_in_flight,
            "max_queued": self.max_queued,
            "max_queue_wait_s": round(self.max_queue_wait_s, 3),
        }


_CONFIG = web.AppKey("config", SimulatorConfig)
_STATS = web.AppKey("stats", SimulatorStats)
_RNG = web.AppKey("rng", random.Random)
_SLOTS = web.AppKey("slots", asyncio.Semaphore)


# --------------------------------------------------------------------------------------------
# Deterministic randomness


def _digest(*parts: object) -> bytes:
    h = hashlib.blake2b(digest_size=16, person=b"editstream-sim")
    for part in parts:
        h.update(str(part).encode("utf-8", "surrogatepass"))
        h.update(b"\x1f")  # separator: ("ab", "c") and ("a", "bc") hash differently
    return h.digest()


def _unit(*parts: object) -> float:
    """A uniform float in [0, 1) determined by ``parts``."""
    return int.from_bytes(_digest(*parts)[:8], "big") / 2**64


def _rng(*parts: object) -> random.Random:
    """A Random seeded by ``parts`` (int seeds are stable across processes and versions)."""
    return random.Random(int.from_bytes(_digest(*parts), "big"))


def _pick(u: float, weights: list[tuple[str, float]]) -> str:
    """The label whose cumulative weight interval contains ``u`` (weights are normalized)."""
    total = sum(w for _, w in weights)
    acc = 0.0
    for label, w in weights:
        acc += w / total if total > 0 else 0.0
        if u < acc:
            return label
    return weights[-1][0]


# --------------------------------------------------------------------------------------------
# Text mutations (the error model)

_TOKEN = re.compile(r"\w+|\s+|[^\w\s]")
_IDENTS = (
    "value", "result", "items", "count", "index", "data", "config", "node", "buffer",
    "offset", "total", "name", "key", "other", "ctx", "err", "tmp", "state", "path", "size",
)  # fmt: skip
_COMPLETIONS = ("()", ";", ",", ")", ":", "?", "s", "[0]", " + 1", "_id", " = 0", ".len()")
_KEYWORDS = ("let", "const", "def", "fn", "return", "if", "for", "while", "var", "match")


# Distances steer the error model only; on huge texts compare prefixes so one request can't
# stall the event loop with a quadratic computation.
_DISTANCE_MAX_CHARS = 20_000


def _distance(a: str, b: str) -> float:
    a, b = a[:_DISTANCE_MAX_CHARS], b[:_DISTANCE_MAX_CHARS]
    return float(Levenshtein.normalized_distance(a, b))


def _easy_edit(rng: random.Random, region: str, cursor: int) -> str:
    """Echo the region or make an edit small enough to stay under BAND_LOW."""
    budget = int(0.049 * len(region))  # k inserted chars give k / (len + k) < 0.05
    roll = rng.random()
    if roll < 0.4 or budget < 1:
        return region
    if roll < 0.8:  # complete at the cursor, like finishing the current token
        fitting = [c for c in _COMPLETIONS if len(c) <= budget]
        if not fitting:
            return region
        return region[:cursor] + rng.choice(fitting) + region[cursor:]
    i = rng.randrange(len(region))  # a one-character slip
    return region[:i] + region[i + 1 :]


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
        tokens[i] = tok + rng.choice(_COMPLETIONS)
    return "".join(tokens)


def _medium_edit(rng: random.Random, region: str) -> str:
    """Token mutations on 10-40% of the lines, steered into the [BAND_LOW, BAND_HIGH] band."""
    best, best_gap = region, float("inf")
    for _ in range(8):
        lines = region.split("\n")
        candidates = [i for i, ln in enumerate(lines) if ln.strip()] or list(range(len(lines)))
        k = max(1, round(rng.uniform(0.1, 0.4) * len(lines)))
        for i in rng.sample(candidates, min(k, len(candidates))):
            roll = rng.random()
            if roll < 0.08 and len(lines) > 1:
                lines[i] = lines[i] + "\n" + lines[i]  # duplicated line
            elif roll < 0.16 and len(lines) > 1:
                lines[i] = "\x00"  # deleted line (placeholder, removed below)
            else:
                for _ in range(rng.randint(1, 2)):
                    lines[i] = _mutate_line(rng, lines[i])
        text = "\n".join(ln for ln in lines if ln != "\x00")
        d = _distance(region, text)
        if BAND_LOW <= d <= BAND_HIGH:
            return text
        gap = BAND_LOW - d if d < BAND_LOW else d - BAND_HIGH
        if gap < best_gap:
            best, best_gap = text, gap
    return best


def _unrelated_code(rng: random.Random, n_lines: int, width: int) -> str:
    out = []
    for _ in range(max(1, n_lines)):
        words = [rng.choice(_KEYWORDS), rng.choice(_IDENTS), "=", rng.choice(_IDENTS)]
        while sum(len(w) + 1 for w in words) < width:
            words.append(rng.choice((*_IDENTS, "+", "(", ")", ",", str(rng.randint(0, 99)))))
        out.append(" " * rng.choice((0, 4, 8)) + " ".join(words))
    return "\n".join(out)


def _hard_edit(rng: random.Random, region: str) -> str:
    """Unrelated, truncated or looping text: far (> BAND_HIGH) from the region."""
    lines = region.split("\n")
    width = max(16, len(region) // max(1, len(lines)))
    for _ in range(5):
        roll = rng.random()
        if roll < 0.6:
            text = _unrelated_code(rng, len(lines), width)
        elif roll < 0.85:
            text = region[: int(len(region) * rng.uniform(0.0, 0.25))]  # gave up early
        else:
            line = rng.choice(lines) or rng.choice(_IDENTS)
            text = "\n".join([line] * rng.randint(4, 12))  # a degenerate loop
        if _distance(region, text) > BAND_HIGH:
            return text
    return _unrelated_code(rng, len(lines) + 2, width + 8)


# --------------------------------------------------------------------------------------------
# Student


def _cursor_offset(prompt: str, region: str) -> int:
    """Where the cursor marker sits in the prompt's editable region (end if not found)."""
    pos = prompt.find(CURSOR)
    if pos < 0:
        return len(region)
    if FIM_MIDDLE in prompt:
        head = f"{FILE_SEP}current editable region\n"
        start = prompt.rfind(head, 0, pos)
        base = start + len(head)
    else:
        start = prompt.rfind(REGION_START, 0, pos)
        base = start + len(REGION_START)
    return len(region) if start < 0 else min(max(pos - base, 0), len(region))


def student_samples(
    config: SimulatorConfig, prompt: str, n: int, seed: int, temperature: float
) -> list[str]:
    """The ``n`` completions for ``prompt``; choice ``i`` derives from ``seed + i``.

    At temperature 0 every choice is the same greedy answer (seed ignored), as with a model.
    """
    parts = parse_prompt(prompt)
    fim = FIM_MIDDLE in prompt
    region = parts.region
    if region is None:  # not one of our prompt formats: answer something unhelpful
        return [_unrelated_code(_rng(config.seed, prompt, seed + i), 3, 30) for i in range(n)]
    cursor = _cursor_offset(prompt, region)
    weights = [
        ("easy", config.student_easy),
        ("medium", config.student_medium),
        ("hard", config.student_hard),
    ]
    difficulty = _pick(_unit(config.seed, "difficulty", region), weights)
    # Samples of one example are mostly of its difficulty, with some spread.
    mix = {
        "easy": [("easy", 0.85), ("medium", 0.15)],
        "medium": [("easy", 0.15), ("medium", 0.7), ("hard", 0.15)],
        "hard": [("medium", 0.2), ("hard", 0.8)],
    }[difficulty]
    out = []
    for i in range(n):
        key = "greedy" if temperature <= 0 else seed + i
        rng = _rng(config.seed, "student", prompt, key)
        kind = _pick(rng.random(), mix)
        if kind == "easy":
            text = _easy_edit(rng, region, cursor)
        elif kind == "medium":
            text = _medium_edit(rng, region)
        else:
            text = _hard_edit(rng, region)
        out.append(text if fim else REGION_START + text + REGION_END)
    return out


# --------------------------------------------------------------------------------------------
# Teacher and judge


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


def _marker(text: str) -> str:
    return REGION_START + text + REGION_END


def teacher_answer(config: SimulatorConfig, user: str, seed: int) -> str:
    """The teacher's reply to a teacher user message (marker format, sometimes wrong)."""
    parts = parse_prompt(user)
    hint, region = parts.settled_hint, parts.region
    if hint is None:  # no hindsight shown: behave like a greedy student
        if region is None:
            return "I can't find an editable region in your message."
        return student_samples(config, user, 1, seed, 0.0)[0]
    errors = [
        ("revert", config.teacher_revert_rate),
        ("malformed", config.teacher_malformed_rate),
        ("drift", config.teacher_drift_rate),
    ]
    u = _unit(config.seed, "teacher", seed, user)
    if parts.has_feedback:
        if _unit(config.seed, "repair", seed, user) < config.repair_success_rate:
            mode = "good"
        else:
            mode = _pick(u, errors) if any(w for _, w in errors) else "malformed"
    else:
        mode = _pick(u, [*errors, ("good", max(0.0, 1.0 - sum(w for _, w in errors)))])
    rng = _rng(config.seed, "teacher-text", seed, user)
    if mode == "revert":
        reverted = revert_edit(hint, parts.history_diffs[-1]) if parts.history_diffs else None
        if reverted is not None:
            return _marker(reverted)
        # Nothing to undo in the hint: answer with the stale region, ignoring the hindsight.
        return _marker(region if region is not None and region != hint else _hard_edit(rng, hint))
    if mode == "malformed":  # no complete marker pair: parse_output gives None
        return rng.choice(
            (
                hint,
                f"```\n{hint}\n```",
                f"Here is the rewritten editable region:\n\n{hint}\n",
                REGION_START + hint,
            )
        )
    if mode == "drift":
        return _marker(_hard_edit(rng, hint))
    cursor = len(hint)
    return _marker(hint if rng.random() < 0.75 else _easy_edit(rng, hint, cursor))


_PREDICTED_RE = re.compile(
    r"### Predicted editable region:\n\n" + FENCE + r"\n(.*?)\n" + FENCE, re.S
)


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


def judge_answer(config: SimulatorConfig, user: str, seed: int) -> str:
    """A JSON verdict; consistent for the same input, mostly confident, notices reverts."""
    parts = parse_prompt(user)
    m = _PREDICTED_RE.search(user)
    predicted = m.group(1) if m else None
    region = parts.region
    u = _unit(config.seed, "judge", seed, user)
    v = _unit(config.seed, "judge-confidence", seed, user)
    suspect = (
        region is not None
        and predicted is not None
        and _looks_reverted(region, predicted, parts.history_diffs)
    )
    reverts = u < 0.9 if suspect else u < 0.05
    far = region is not None and predicted is not None and _distance(region, predicted) > 0.6
    if reverts:
        confidence, reasoning = 1 + int(v * 2), "The prediction undoes the user's last edit."
    elif far:
        confidence, reasoning = 1 + int(v * 2), "The prediction is unrelated to the excerpt."
    else:
        confidence = int(_pick(v, [("5", 0.5), ("4", 0.3), ("3", 0.12), ("2", 0.05), ("1", 0.03)]))
        reasoning = "The prediction continues the user's edits plausibly."
    verdict = {
        "reasoning": f"(simulated judge) {reasoning}",
        "reverts_edits": reverts,
        "confidence": confidence,
    }
    return orjson.dumps(verdict).decode()


def chat_answer(config: SimulatorConfig, system: str, user: str, seed: int) -> str:
    """Dispatch on the system prompt: the judge's gets a verdict, anything else the teacher."""
    if system.strip() == JUDGE_SYSTEM.strip():
        return judge_answer(config, user, seed)
    if system.strip() != TEACHER_SYSTEM.strip():
        log.debug("unknown system prompt; answering as the teacher")
    return teacher_answer(config, user, seed)


# --------------------------------------------------------------------------------------------
# HTTP: validation


class _BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message, self.param, self.status = message, param, status


def _tokens(text: str) -> int:
    return len(text) // 4 + 1


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _opt_int(body: dict[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    v = body.get(key, default)
    if v is None:
        return default
    if not _is_int(v) or not lo <= v <= hi:
        raise _BadRequest(f"{key} must be an integer in [{lo}, {hi}]", key)
    return int(v)


def _opt_number(body: dict[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    v = body.get(key, default)
    if v is None:
        return default
    if not _is_number(v) or not lo <= v <= hi:
        raise _BadRequest(f"{key} must be a number in [{lo}, {hi}]", key)
    return float(v)


def _model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _BadRequest("model must be a non-empty string", "model")
    return model


def _stops(body: dict[str, Any]) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    if isinstance(stop, str):
        return [stop] if stop else []
    if isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) for s in stop):
        return [s for s in stop if s]
    raise _BadRequest("stop must be a string or a list of at most 4 strings", "stop")


def _text_content(content: Any, param: str) -> str:
    """Text of a message content: a string or a list of text blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
        for b in content
    ):
        return "".join(b["text"] for b in content)
    raise _BadRequest(f"{param} must be a string or a list of text blocks", param)


def _messages(body: dict[str, Any], roles: tuple[str, ...]) -> list[tuple[str, str]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _BadRequest("messages must be a non-empty list", "messages")
    out = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or msg.get("role") not in roles:
            raise _BadRequest(f"messages[{i}] needs a role in {list(roles)}", "messages")
        out.append((msg["role"], _text_content(msg.get("content"), f"messages[{i}].content")))
    if out[-1][0] != "user":
        raise _BadRequest("the last message must be from the user", "messages")
    return out


def _finish(text: str, stops: list[str], max_tokens: int) -> tuple[str, bool]:
    """Apply stop sequences (excluded from the text) and max_tokens; (text, truncated)."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    if cut >= 0:
        text = text[:cut]
    if _tokens(text) > max_tokens:
        return text[: max(0, (max_tokens - 1) * 4)], True
    return text, False


# --------------------------------------------------------------------------------------------
# HTTP: endpoint bodies


def _completions(config: SimulatorConfig, body: dict[str, Any]) -> dict[str, Any]:
    model = _model(body)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise _BadRequest("prompt must be a string (or a list of one string)", "prompt")
    n = _opt_int(body, "n", 1, 1, MAX_N)
    if n > 1 and not config.accept_n:
        raise _BadRequest("n > 1 is not supported", "n")
    if config.n_cap:
        n = min(n, config.n_cap)  # silently, as llama.cpp ignores n
    seed = _opt_int(body, "seed", 0, -(2**63), 2**63 - 1)
    temperature = _opt_number(body, "temperature", 1.0, 0.0, 2.0)
    max_tokens = _opt_int(body, "max_tokens", 16_384, 1, MAX_TOKENS)
    stops = _stops(body)
    choices = []
    for i, raw in enumerate(student_samples(config, prompt, n, seed, temperature)):
        text, truncated = _finish(raw, stops, max_tokens)
        choices.append(
            {
                "index": i,
                "text": text,
                "finish_reason": "length" if truncated else "stop",
                "logprobs": None,
            }
        )
    prompt_tokens = _tokens(prompt)
    completion_tokens = sum(_tokens(c["text"]) for c in choices)
    return {
        "id": "cmpl-sim-" + _digest(prompt, seed, n).hex()[:24],
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def _chat(config: SimulatorConfig, body: dict[str, Any]) -> dict[str, Any]:
    model = _model(body)
    messages = _messages(body, ("system", "developer", "user", "assistant"))
    seed = _opt_int(body, "seed", 0, -(2**63), 2**63 - 1)
    _opt_number(body, "temperature", 1.0, 0.0, 2.0)
    max_tokens = _opt_int(body, "max_tokens", 16_384, 1, MAX_TOKENS)
    system = "\n".join(t for r, t in messages if r in ("system", "developer"))
    user = messages[-1][1]
    text, truncated = _finish(chat_answer(config, system, user, seed), [], max_tokens)
    prompt_tokens = sum(_tokens(t) for _, t in messages)
    completion_tokens = _tokens(text)
    return {
        "id": "chatcmpl-sim-" + _digest(system, user, seed).hex()[:24],
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "length" if truncated else "stop",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def _anthropic(config: SimulatorConfig, body: dict[str, Any]) -> dict[str, Any]:
    model = _model(body)
    if not _is_int(body.get("max_tokens")):
        raise _BadRequest("max_tokens: field required (integer)", "max_tokens")
    max_tokens = _opt_int(body, "max_tokens", 1, 1, MAX_TOKENS)
    messages = _messages(body, ("user", "assistant"))
    system = _text_content(body.get("system", ""), "system")
    _opt_number(body, "temperature", 1.0, 0.0, 1.0)
    user = messages[-1][1]
    text, truncated = _finish(chat_answer(config, system, user, 0), [], max_tokens)
    return {
        "id": "msg_sim_" + _digest(system, user).hex()[:24],
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "max_tokens" if truncated else "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": _tokens(system) + sum(_tokens(t) for _, t in messages),
            "output_tokens": _tokens(text),
        },
    }


# --------------------------------------------------------------------------------------------
# HTTP: handlers, faults, errors

_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
}
_OPENAI_ERROR_TYPES = {429: "rate_limit_error", 500: "server_error"}


def _error(
    request: web.Request, status: int, message: str, param: str | None = None
) -> web.Response:
    """An error in the API's own shape (Anthropic's for /v1/messages, OpenAI's otherwise)."""
    request.app[_STATS].statuses[status] += 1
    if request.path == "/v1/messages":
        kind = _ANTHROPIC_ERROR_TYPES.get(status, "invalid_request_error")
        body: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": message}}
    else:
        kind = _OPENAI_ERROR_TYPES.get(status, "invalid_request_error")
        body = {"error": {"message": message, "type": kind, "param": param, "code": None}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def _draw_fault(config: SimulatorConfig, rng: random.Random) -> str:
    u = rng.random()
    acc = 0.0
    for name, rate in (
        ("drop", config.drop_rate),
        ("timeout", config.timeout_rate),
        ("rate_limit", config.rate_limit_rate),
        ("error", config.error_rate),
        ("malformed", config.malformed_rate),
    ):
        acc += rate
        if u < acc:
            return name
    return "none"


Answer = Callable[[SimulatorConfig, dict[str, Any]], dict[str, Any]]


def _model_endpoint(answer: Answer) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Wrap an endpoint body with stats, latency, fault injection and input validation."""

    async def handler(request: web.Request) -> web.StreamResponse:
        config, stats, rng = request.app[_CONFIG], request.app[_STATS], request.app[_RNG]
        stats.requests[request.path] += 1
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        try:
            fault = _draw_fault(config, rng)
            stats.faults[fault] += 1
            if fault == "drop":
                # Close without a response; ending the handler as cancelled keeps aiohttp
                # from trying to answer on the dead transport.
                if request.transport is not None:
                    request.transport.close()
                raise asyncio.CancelledError
            if fault == "timeout":
                await asyncio.sleep(config.timeout_s)
            delay_ms = config.latency_ms + rng.uniform(-config.jitter_ms, config.jitter_ms)
            async with _slot(request):  # the work (latency) happens in a slot, if limited
                if delay_ms > 0:
                    await asyncio.sleep(delay_ms / 1000.0)
            if fault == "rate_limit":
                resp = _error(request, 429, "rate limited (simulated)")
                resp.headers["Retry-After"] = f"{config.retry_after_s:g}"
                return resp
            if fault == "error":
                return _error(request, 500, "internal error (simulated)")
            try:
                body = _parse_body(request, await request.read())
                payload = answer(config, body)
            except _BadRequest as exc:
                return _error(request, exc.status, exc.message, exc.param)
            data = orjson.dumps(payload)
            stats.statuses[200] += 1
            if fault == "malformed":  # a prefix of a JSON object is never valid JSON
                data = data[: len(data) // 2]
            return web.Response(body=data, content_type="application/json")
        finally:
            stats.in_flight -= 1

    return handler


@contextlib.asynccontextmanager
async def _slot(request: web.Request) -> AsyncIterator[None]:
    """Hold one of the server's slots (``slots``) while working, queueing for it like
    llama.cpp's server does; without slots every request works at once."""
    if not request.app[_CONFIG].slots:
        yield
        return
    semaphore = request.app[_SLOTS]
    stats = request.app[_STATS]
    stats.queued += 1
    stats.max_queued = max(stats.max_queued, stats.queued)
    t0 = time.monotonic()
    try:
        await semaphore.acquire()
    finally:
        stats.queued -= 1
    stats.max_queue_wait_s = max(stats.max_queue_wait_s, time.monotonic() - t0)
    try:
        yield
    finally:
        semaphore.release()


def _parse_body(request: web.Request, raw: bytes) -> dict[str, Any]:
    if request.path == "/v1/messages":
        if not request.headers.get("x-api-key"):
            raise _BadRequest("x-api-key header is required", status=401)
        if not request.headers.get("anthropic-version"):
            raise _BadRequest("anthropic-version header is required")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise _BadRequest("request body must be a JSON object")
    return body


async def _models(request: web.Request) -> web.Response:
    model = request.app[_CONFIG].model
    data = [{"id": model, "object": "model", "created": 0, "owned_by": "editstream-simulator"}]
    return web.json_response({"object": "list", "data": data})


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "simulator": True})


async def _stats(request: web.Request) -> web.Response:
    """What was asked and which faults were injected, so fault tests can check their premise."""
    return web.json_response(request.app[_STATS].as_dict())


@web.middleware
async def _json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Routing errors (404, 405, 413) as JSON; a bug answers 500 but is logged loudly."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(request, exc.status, exc.reason)
    except Exception:
        log.exception("simulator bug while handling %s %s", request.method, request.path)
        return _error(request, 500, "simulator bug")


def build_app(config: SimulatorConfig) -> web.Application:
    """The simulator as an aiohttp application (state: config, stats, seeded fault RNG)."""
    app = web.Application(middlewares=[_json_errors])
    app[_CONFIG] = config
    app[_STATS] = SimulatorStats()
    app[_RNG] = random.Random(config.seed)
    app[_SLOTS] = asyncio.Semaphore(max(1, config.slots))
    app.router.add_post("/v1/completions", _model_endpoint(_completions))
    app.router.add_post("/v1/chat/completions", _model_endpoint(_chat))
    app.router.add_post("/v1/messages", _model_endpoint(_anthropic))
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/stats", _stats)
    return app


# --------------------------------------------------------------------------------------------
# Running it


@dataclass
class RunningSimulator:
    """A started simulator; ``url`` is its root (``http://127.0.0.1:<port>``)."""

    url: str
    port: int
    config: SimulatorConfig
    stats: SimulatorStats
    _runner: web.AppRunner

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


async def start_simulator(
    config: SimulatorConfig, host: str = "127.0.0.1", port: int = 0, *, access_log: bool = False,
    reuse_port: bool = False,
) -> RunningSimulator:
    """Start serving on ``host:port`` (0 picks a free port) in the running event loop.

    ``reuse_port``: several processes may bind the same port (SO_REUSEPORT) and the kernel
    spreads new connections over them. Answers are pure functions of the request, so N
    processes answer exactly as one does, with N cores; only faults and /stats are per
    process."""
    app = build_app(config)
    runner = web.AppRunner(
        app,
        # A client that gave up (timeout, drop) cancels its handler instead of leaving it hanging.
        handler_cancellation=True,
        shutdown_timeout=1.0,
        access_log=logging.getLogger("aiohttp.access") if access_log else None,
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, reuse_port=reuse_port or None).start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0][1]
    shown = f"[{host}]" if ":" in host else host
    return RunningSimulator(f"http://{shown}:{bound}", bound, config, app[_STATS], runner)


def serve(config: SimulatorConfig, host: str, port: int, *, reuse_port: bool = False) -> None:
    """Serve until SIGINT/SIGTERM (blocking; for the CLI)."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):  # not on Windows
                loop.add_signal_handler(sig, stop.set)
        sim = await start_simulator(config, host, port, access_log=True, reuse_port=reuse_port)
        print(f"editstream model SIMULATOR (not a model) on {sim.url}", file=sys.stderr, flush=True)
        try:
            await stop.wait()
        finally:
            await sim.stop()
            print(f"simulator stopped: {sim.stats.as_dict()}", file=sys.stderr, flush=True)

    asyncio.run(main())


# --------------------------------------------------------------------------------------------
# CLI arguments

_HELP = {
    "seed": "seed of the fault sequence and of all hash-derived answers",
    "latency_ms": "added latency per model request (ms)",
    "jitter_ms": "uniform jitter around --latency-ms (ms)",
    "accept_n": "accept n > 1 in /v1/completions (--no-accept-n answers 400 naming 'n')",
    "n_cap": "answer at most this many choices whatever n asks, silently (0: honour n; "
             "llama.cpp's server behaves like 1)",
    "slots": "requests worked on at once; more wait in the server's queue, their latency "
             "growing (0: unlimited; llama.cpp's server behaves like 1)",
    "error_rate": "fraction of requests answered with HTTP 500",
    "rate_limit_rate": "fraction of requests answered with HTTP 429 and Retry-After",
    "retry_after_s": "Retry-After seconds sent with 429s",
    "timeout_rate": "fraction of requests that hang --timeout-s before answering",
    "timeout_s": "how long a hanging request hangs (s)",
    "malformed_rate": "fraction of requests answered 200 with a truncated JSON body",
    "drop_rate": "fraction of requests whose connection is closed without an answer",
    "student_easy": "weight of easy examples (student echoes or makes a tiny edit)",
    "student_medium": "weight of medium examples (token mutations on 10-40%% of lines)",
    "student_hard": "weight of hard examples (unrelated or degenerate text)",
    "teacher_revert_rate": "fraction of teacher answers that revert the user's last edit",
    "teacher_malformed_rate": "fraction of teacher answers without region markers",
    "teacher_drift_rate": "fraction of teacher answers that drift far from the hindsight",
    "repair_success_rate": "fraction of repair attempts (prompts with feedback) answered well",
    "model": "model id listed by GET /v1/models",
}


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not in [0, 1]")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags for every SimulatorConfig field, plus --host and --port."""
    if parser.description is None:
        parser.description = DESCRIPTION
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (0: any free)")
    parser.add_argument("--reuse-port", action="store_true",
                        help="let several simulator processes serve one port (SO_REUSEPORT), "
                             "for load that needs more than one core of answers")
    defaults = SimulatorConfig()
    for f in dataclasses.fields(SimulatorConfig):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        help_text = f"{_HELP[f.name]} (default: %(default)s)"
        if isinstance(default, bool):
            parser.add_argument(
                flag, dest=f.name, action=argparse.BooleanOptionalAction, default=default,
                help=help_text,
            )  # fmt: skip
        elif isinstance(default, int):
            parser.add_argument(flag, dest=f.name, type=int, default=default, help=help_text)
        elif isinstance(default, str):
            parser.add_argument(flag, dest=f.name, default=default, help=help_text)
        else:
            kind = _fraction if f.name.endswith(("_rate", "easy", "medium", "hard")) else None
            parser.add_argument(
                flag, dest=f.name, type=kind or _non_negative, default=default, help=help_text
            )


def config_from_args(ns: argparse.Namespace) -> SimulatorConfig:
    """The config the flags describe (ValueError if they are inconsistent, e.g. rates > 1)."""
    return SimulatorConfig(
        **{f.name: getattr(ns, f.name) for f in dataclasses.fields(SimulatorConfig)}
    )


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="python -m editstream.simulate")
    add_arguments(_parser)
    _ns = _parser.parse_args()
    serve(config_from_args(_ns), _ns.host, _ns.port, reuse_port=_ns.reuse_port)
