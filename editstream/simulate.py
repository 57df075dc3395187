"""A local model SIMULATOR: an HTTP server that imitates model servers. It is not a model.

It exists so the whole pipeline runs offline and so tests exercise the real HTTP protocol
(OpenAI completions and chat, Anthropic Messages) with real faults: dropped connections,
hangs, 429s with ``Retry-After``, 500s and truncated JSON bodies.

Its answers come from ``editstream.answers`` (deterministic, blake2b-derived): a student
whose skill follows each example's features, a teacher that answers from the ground-truth
side file ``editstream generate`` writes (``--ground-truth``), erring on purpose in
configurable ways, and a judge. It knows nothing of the pipeline's band thresholds.

Faults are drawn per request from a seeded ``random.Random`` owned by the app, so a run's
fault sequence is reproducible (which request gets which fault depends on arrival order).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import logging
import random
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

from editstream.answers import AnswerConfig, GroundTruth, chat_answer, student_samples
from editstream.answers import digest as _digest

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
    # The answer model (editstream/answers.py): the side file, student skill, error rates.
    ground_truth: str = ""  # JSONL written by `editstream generate`; empty: none known
    student_skill: float = 0.0
    student_noise: float = 1.0
    student_preamble_rate: float = 0.02
    student_garbage_rate: float = 0.02
    student_runaway_rate: float = 0.02
    student_inline_rate: float = 0.05
    teacher_stale_rate: float = 0.06
    teacher_junk_rate: float = 0.08
    teacher_revert_rate: float = 0.05
    teacher_truncation_rate: float = 0.03
    teacher_preamble_rate: float = 0.1
    repair_success_rate: float = 0.7
    model: str = "editstream-simulator"  # listed by GET /v1/models; requests may name any
    admin: bool = False  # serve POST /admin/chaos: outage and slow windows at run time

    def __post_init__(self) -> None:
        rates = (
            "error_rate",
            "rate_limit_rate",
            "timeout_rate",
            "malformed_rate",
            "drop_rate",
            "student_preamble_rate",
            "student_garbage_rate",
            "student_runaway_rate",
            "student_inline_rate",
            "teacher_stale_rate",
            "teacher_junk_rate",
            "teacher_revert_rate",
            "teacher_truncation_rate",
            "teacher_preamble_rate",
            "repair_success_rate",
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
        teacher = (self.teacher_stale_rate + self.teacher_junk_rate + self.teacher_revert_rate
                   + self.teacher_truncation_rate + self.teacher_preamble_rate)
        if teacher > 1.0 + 1e-9:
            raise ValueError("teacher error rates must sum to at most 1")
        student = self.student_preamble_rate + self.student_garbage_rate + self.student_runaway_rate
        if student > 1.0 + 1e-9:
            raise ValueError("student format error rates must sum to at most 1")
        if self.student_noise < 0:
            raise ValueError("student_noise must be >= 0")

    def answers(self) -> AnswerConfig:
        """The answer model's part of the config."""
        names = {f.name for f in dataclasses.fields(AnswerConfig)}
        return AnswerConfig(**{k: getattr(self, k) for k in names})


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
_TRUTH = web.AppKey("truth", GroundTruth)
_STATS = web.AppKey("stats", SimulatorStats)
_RNG = web.AppKey("rng", random.Random)
_SLOTS = web.AppKey("slots", asyncio.Semaphore)


@dataclass
class ChaosWindows:
    """Fault windows set at run time (``POST /admin/chaos``, for chaos runs): until
    ``outage_until`` every model request is answered 503; until ``slow_until`` requests to
    ``slow_paths`` take ``slow_factor`` times the configured latency. Monotonic times."""

    outage_until: float = 0.0
    slow_until: float = 0.0
    slow_factor: float = 1.0
    slow_paths: tuple[str, ...] = ()


_CHAOS = web.AppKey("chaos", ChaosWindows)


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
    # no seed: the choices still differ, but are not reproducible by a seed
    seed = None if body.get("seed") is None else _opt_int(body, "seed", 0, -(2**63), 2**63 - 1)
    temperature = _opt_number(body, "temperature", 1.0, 0.0, 2.0)
    max_tokens = _opt_int(body, "max_tokens", 16_384, 1, MAX_TOKENS)
    stops = _stops(body)
    choices: list[dict[str, Any]] = []
    texts = student_samples(config.answers(), _truth(config), prompt, n, seed, temperature)
    for i, raw in enumerate(texts):
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
    answer = chat_answer(config.answers(), _truth(config), system, user, seed)
    text, truncated = _finish(answer, [], max_tokens)
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
    answer = chat_answer(config.answers(), _truth(config), system, user, 0)
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


@functools.lru_cache(maxsize=4)
def _truth(config: SimulatorConfig) -> GroundTruth:
    """The ground-truth side file of a config, read once per process."""
    return GroundTruth.load(config.ground_truth or None)


def _model_endpoint(answer: Answer) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Wrap an endpoint body with stats, latency, fault injection and input validation."""

    async def handler(request: web.Request) -> web.StreamResponse:
        config, stats, rng = request.app[_CONFIG], request.app[_STATS], request.app[_RNG]
        stats.requests[request.path] += 1
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        try:
            chaos, now = request.app[_CHAOS], time.monotonic()
            if now < chaos.outage_until:  # a model outage: every request 503, nothing drawn
                stats.faults["outage"] += 1
                resp = _error(request, 503, "model unavailable (simulated outage)")
                resp.headers["Retry-After"] = "1"
                return resp
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
            if now < chaos.slow_until and request.path in chaos.slow_paths:
                delay_ms *= chaos.slow_factor
                stats.faults["slow"] += 1
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


async def _admin_chaos(request: web.Request) -> web.Response:
    """Open fault windows from now: ``{"outage_s": 20}`` (503 for every model request),
    ``{"slow_s": 60, "slow_factor": 10, "slow_paths": ["/v1/completions"]}``. Answers the
    windows' remaining seconds."""
    try:
        body = orjson.loads(await request.read())
        if not isinstance(body, dict):
            raise ValueError("a JSON object")
        outage_s = float(body.get("outage_s", 0))
        slow_s = float(body.get("slow_s", 0))
        factor = float(body.get("slow_factor", 1))
        paths = body.get("slow_paths", ["/v1/completions"])
        if min(outage_s, slow_s) < 0 or factor <= 0 or not isinstance(paths, list):
            raise ValueError("non-negative windows, a positive factor, a list of paths")
    except (ValueError, TypeError, orjson.JSONDecodeError) as exc:
        return _error(request, 400, f"bad chaos request: {exc}")
    chaos, now = request.app[_CHAOS], time.monotonic()
    if outage_s:
        chaos.outage_until = now + outage_s
    if slow_s:
        chaos.slow_until, chaos.slow_factor = now + slow_s, factor
        chaos.slow_paths = tuple(str(p) for p in paths)
    return web.json_response({"outage_s": max(0.0, chaos.outage_until - now),
                              "slow_s": max(0.0, chaos.slow_until - now),
                              "slow_factor": chaos.slow_factor,
                              "slow_paths": list(chaos.slow_paths)})


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
    app[_CHAOS] = ChaosWindows()
    if config.admin:
        app.router.add_post("/admin/chaos", _admin_chaos)
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
    "ground_truth": "JSONL side file of `editstream generate` (request id -> settled region) "
                    "the teacher answers from; empty: none",
    "student_skill": "added to every example's student skill (logit; + is a better student)",
    "student_noise": "spread of the per-example noise on the student's skill",
    "student_preamble_rate": "fraction of student answers with prose and a fence around them",
    "student_garbage_rate": "fraction of student answers that are prose without a region",
    "student_runaway_rate": "fraction of student answers that never stop (max_tokens cuts them)",
    "student_inline_rate": "fraction of zeta1 answers without a newline after the marker",
    "teacher_stale_rate": "fraction of teacher answers that are the request-time region",
    "teacher_junk_rate": "fraction of teacher answers with junk the user never typed",
    "teacher_revert_rate": "fraction of teacher answers that revert the user's last edit",
    "teacher_truncation_rate": "fraction of teacher answers cut by max_tokens",
    "teacher_preamble_rate": "fraction of teacher answers with chatty prose and no fence",
    "repair_success_rate": "fraction of repair attempts (prompts with feedback) answered well",
    "model": "model id listed by GET /v1/models",
    "admin": "serve POST /admin/chaos to open outage (503) and slow-latency windows at run "
             "time (chaos runs: bench/chaos.py)",
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
            kind = _fraction if f.name.endswith("_rate") else (
                float if f.name == "student_skill" else None)
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
