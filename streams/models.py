"""What the stages know of the model servers: the request and answer types, the one error
type, and the two client interfaces (a student that samples, a teacher/judge that chats).

Pure: no HTTP library is imported here. The HTTP clients that implement these interfaces
(bounded, timed out, retried, errors mapped at the boundary) live at the edge, in
``agents/models.py``; tests and offline tools can pass any object with the same methods.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

__all__ = [
    "APIS",
    "HTTP_TRANSPORTS",
    "ChatResult",
    "Endpoint",
    "ModelError",
    "RequestEvent",
    "SampleBatch",
    "Student",
    "Teacher",
]

# The HTTP connection pools the clients can use (settings' `http_transport`).
HTTP_TRANSPORTS = ("aiohttp", "httpx")
APIS = ("openai", "anthropic")


class ModelError(Exception):
    """A model call failed; ``reason`` says how, in a form fit for metrics labels.

    Reasons: ``"timeout"``, ``"connection"``, ``"http_<status>"``, ``"malformed_response"``
    and ``"retry_budget_exhausted"`` (then ``last_reason`` holds the reason of the last
    attempt). ``status`` and ``detail`` carry the HTTP status and the server's error message
    when there was one; neither ever contains prompt text we sent.
    """

    def __init__(
        self,
        reason: str,
        *,
        last_reason: str | None = None,
        status: int | None = None,
        detail: str | None = None,
        param: str | None = None,
        attempts: int = 1,
    ) -> None:
        self.reason = reason
        self.last_reason = last_reason
        self.status = status
        self.detail = detail
        self.param = param
        self.attempts = attempts
        msg = reason if last_reason is None else f"{reason} (last: {last_reason})"
        if detail:
            msg += f": {detail}"
        super().__init__(msg)


@dataclass(frozen=True)
class Endpoint:
    """Where a model is served and how patiently to talk to it.

    ``base_url`` is the server root (``http://host:8000``); a trailing ``/v1`` is tolerated
    because OpenAI-style configs usually include it. ``max_retries`` counts retries after
    the first attempt. ``timeout_s`` applies to each phase of an attempt (connect, write,
    wait for bytes), as httpx timeouts do; with the aiohttp pool (the default) to the connect
    and to each wait for bytes (aiohttp has no write timeout; requests are a few KB).
    """

    base_url: str
    model: str
    api: str = "openai"  # "openai" | "anthropic" (teacher only)
    api_key: str | None = None
    timeout_s: float = 30.0
    max_retries: int = 4
    backoff_base_s: float = 0.25
    backoff_max_s: float = 8.0

    def __post_init__(self) -> None:
        if self.api not in APIS:
            raise ValueError(f"unknown api {self.api!r}; expected one of {APIS}")
        if self.timeout_s <= 0 or self.max_retries < 0:
            raise ValueError("timeout_s must be > 0 and max_retries >= 0")
        if self.backoff_base_s < 0 or self.backoff_max_s < 0:
            raise ValueError("backoff times must be >= 0")

    def __repr__(self) -> str:
        # Never print the key (configs end up in logs).
        key = None if self.api_key is None else "***"
        return (
            f"Endpoint(base_url={self.base_url!r}, model={self.model!r}, api={self.api!r}, "
            f"api_key={key}, timeout_s={self.timeout_s}, max_retries={self.max_retries})"
        )


@dataclass(frozen=True)
class RequestEvent:
    """One HTTP attempt, as the metrics observer sees it (never any prompt or answer text)."""

    kind: str  # "student" | "teacher" | "judge"
    status: str  # "ok" | "timeout" | "connection" | "http_<status>" | "malformed_response"
    latency_s: float
    retry: bool  # this attempt is a retry of an earlier one
    prompt_tokens: int
    completion_tokens: int
    # completions only: choices asked (n) and returned; fewer returned means the server
    # ignores or caps n and the client asks again for the rest
    choices_asked: int = 0
    choices_returned: int = 0


@dataclass(frozen=True)
class SampleBatch:
    """``n`` student samples in seed order, with what it cost to get them.

    ``latencies_ms[i]`` is the wall time of the call that produced sample ``i``, retries,
    backoff and waits for a slot under the endpoint's limit included (in ``"n"`` mode all
    samples share one call; per-attempt server latency is in the metrics). ``requests`` counts
    every HTTP attempt, including a rejected ``n`` request before falling back.

    How the samples were drawn: ``mode`` is ``"n"`` (one request with ``n``),
    ``"parallel"`` (one sample per request) or ``"n_capped"`` (several requests, each
    with up to ``n_per_request`` choices, because the server returns fewer than asked);
    ``n_per_request`` is the most choices one response carried; ``short_responses``
    counts responses with fewer choices than asked (their samples are kept).
    ``finish_reasons[i]`` is the server's ``finish_reason`` for sample ``i`` (``"stop"``,
    ``"length"``: cut by ``max_tokens``, so the answer is truncated; ``"unknown"`` when the
    server sent none).
    """

    texts: list[str]
    latencies_ms: list[float]
    mode: str  # "n" | "parallel" | "n_capped"
    requests: int
    retries: int
    prompt_tokens: int
    completion_tokens: int
    n_per_request: int = 1
    short_responses: int = 0
    finish_reasons: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ChatResult:
    """A teacher/judge answer; ``latency_ms`` includes retries and backoff."""

    text: str
    latency_ms: float
    retries: int
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str = "unknown"  # "stop" | "length" (truncated by max_tokens) | "unknown"


class Student(Protocol):
    """Samples ``n`` completions of a prompt (``agents.models.StudentClient``)."""

    async def sample(
        self,
        prompt: str,
        n: int,
        *,
        temperature: float = ...,
        max_tokens: int = ...,
        seed: int | None = ...,
        stop: list[str] | None = ...,
    ) -> SampleBatch: ...


class Teacher(Protocol):
    """Answers one system + user turn (``agents.models.TeacherClient``, teacher or judge)."""

    async def chat(
        self,
        system: str,
        user: str,
        *,
        temperature: float = ...,
        max_tokens: int = ...,
        seed: int | None = ...,
    ) -> ChatResult: ...
