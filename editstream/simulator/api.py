"""The simulator's wire: requests of the OpenAI completions/chat and Anthropic Messages APIs
validated as those servers do (a `_BadRequest` names the bad field), and answers in each API's
own response shape. The answers themselves come from ``editstream.simulator.answers``."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

from editstream.simulator.answers import GroundTruth, chat_answer, student_samples
from editstream.simulator.answers import digest as _digest
from editstream.simulator.config import SimulatorConfig

# Request limits: generous, but bounded so bad input can't make the simulator misbehave.
MAX_N = 128
MAX_TOKENS = 1_000_000


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
    return int(_opt(body, key, default, lo, hi, _is_int, "an integer"))


def _opt_number(body: dict[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    return float(_opt(body, key, default, lo, hi, _is_number, "a number"))


def _opt(body: dict[str, Any], key: str, default: float, lo: float, hi: float,
         valid: Callable[[Any], bool], what: str) -> Any:
    """``body[key]`` (absent or null: ``default``) if ``valid`` and in [lo, hi]."""
    v = body.get(key, default)
    if v is None:
        return default
    if not valid(v) or not lo <= v <= hi:
        raise _BadRequest(f"{key} must be {what} in [{lo}, {hi}]", key)
    return v


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
    # no seed: the choices still differ, but are not reproducible by a seed
    seed = None if body.get("seed") is None else _opt_int(body, "seed", 0, -(2**63), 2**63 - 1)
    temperature = _opt_number(body, "temperature", 1.0, 0.0, 2.0)
    max_tokens = _opt_int(body, "max_tokens", 16_384, 1, MAX_TOKENS)
    stops = _stops(body)
    texts = student_samples(config.answer_model(), _truth(config), prompt, n, seed, temperature)
    choices = [{"index": i, "text": text, **_finished(truncated)}
               for i, (text, truncated) in enumerate(_finish(t, stops, max_tokens) for t in texts)]
    completion_tokens = sum(_tokens(c["text"]) for c in choices)
    return _openai_body("cmpl-sim-" + _digest(prompt, seed, n).hex()[:24], "text_completion",
                        model, choices, _tokens(prompt), completion_tokens)


def _chat(config: SimulatorConfig, body: dict[str, Any]) -> dict[str, Any]:
    model = _model(body)
    messages = _messages(body, ("system", "developer", "user", "assistant"))
    seed = _opt_int(body, "seed", 0, -(2**63), 2**63 - 1)
    _opt_number(body, "temperature", 1.0, 0.0, 2.0)
    max_tokens = _opt_int(body, "max_tokens", 16_384, 1, MAX_TOKENS)
    system = "\n".join(t for r, t in messages if r in ("system", "developer"))
    user = messages[-1][1]
    answer = chat_answer(config.answer_model(), _truth(config), system, user, seed)
    text, truncated = _finish(answer, [], max_tokens)
    choice = {"index": 0, "message": {"role": "assistant", "content": text}, **_finished(truncated)}
    return _openai_body("chatcmpl-sim-" + _digest(system, user, seed).hex()[:24],
                        "chat.completion", model, [choice],
                        sum(_tokens(t) for _, t in messages), _tokens(text))


def _anthropic(config: SimulatorConfig, body: dict[str, Any]) -> dict[str, Any]:
    model = _model(body)
    if not _is_int(body.get("max_tokens")):
        raise _BadRequest("max_tokens: field required (integer)", "max_tokens")
    max_tokens = _opt_int(body, "max_tokens", 1, 1, MAX_TOKENS)
    messages = _messages(body, ("user", "assistant"))
    system = _text_content(body.get("system", ""), "system")
    _opt_number(body, "temperature", 1.0, 0.0, 1.0)
    user = messages[-1][1]
    answer = chat_answer(config.answer_model(), _truth(config), system, user, 0)
    text, truncated = _finish(answer, [], max_tokens)
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


def _finished(truncated: bool) -> dict[str, Any]:
    """An OpenAI choice's ending: cut by max_tokens or stopped."""
    return {"finish_reason": "length" if truncated else "stop", "logprobs": None}


def _openai_body(id_: str, kind: str, model: str, choices: list[dict[str, Any]],
                 prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    """An OpenAI response (completions or chat) with its usage counts."""
    return {
        "id": id_,
        "object": kind,
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


@functools.lru_cache(maxsize=4)
def _truth(config: SimulatorConfig) -> GroundTruth:
    """The ground-truth side file of a config, read once per process."""
    return GroundTruth.load(config.ground_truth or None)
