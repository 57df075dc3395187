"""The machinery every model client shares: one pooled httpx client, the retry loop.

Model servers are slow, rate limited and flaky, so every call here is bounded (an adaptive
concurrency limit per endpoint, ``streams/limiter.py``: a one-slot server gets one request
at a time, a fleet many), timed out (from the moment the request holds a slot: the timeout
times the server, not our own queue), retried with exponential backoff and full jitter, and
honours ``Retry-After``. Whatever goes wrong is translated here into one exception type,
:class:`ModelError`, with a short machine-readable ``reason``; httpx and JSON errors never
reach callers.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, Self, TypedDict, TypeVar

import httpx
import orjson
import yarl

from agents.models.transport import (
    Reply,
    _AiohttpPool,
    _base_url,
    _default_transport,
    _error_details,
    _retry_after_s,
    shared_ssl_context,
)
from streams.limiter import AdaptiveLimit
from streams.models import Endpoint, ModelError, RequestEvent

log = logging.getLogger(__name__)

T = TypeVar("T")

ANTHROPIC_VERSION = "2023-06-01"
# A server asking us to wait longer than this is treated as asking for this long: one bad
# header must not park a pipeline stage for an hour.
RETRY_AFTER_CAP_S = 60.0
# Statuses that say "too much load": the concurrency limit shrinks (streams/limiter.py).
_OVERLOAD_STATUSES = (429, 503)


class ClientOptions(TypedDict, total=False):
    """The keyword options every client takes (defaults: `_ModelClient`'s, and each client's
    own ``max_in_flight``)."""

    max_in_flight: int
    observer: Callable[[RequestEvent], None] | None
    sleep: Callable[[float], Awaitable[None]]
    rng: random.Random | None
    transport: httpx.AsyncBaseTransport | None
    http_transport: str
    limiter: AdaptiveLimit | None


@dataclass(frozen=True)
class _Outcome(Generic[T]):
    """A successful call: the parsed value plus accounting across its attempts."""

    value: T
    latency_ms: float
    attempts: int
    prompt_tokens: int
    completion_tokens: int


class _Malformed(Exception):
    """A 200 response whose body is not what the API promises."""


@dataclass(frozen=True)
class _Usage:
    prompt_tokens: int
    completion_tokens: int


def _int_field(obj: Any, key: str) -> int:
    """A token count from a usage object; absent or odd counts read as 0 (usage is advisory)."""
    value = obj.get(key) if isinstance(obj, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _str_field(obj: Any, key: str) -> str:
    value = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(value, str):
        raise _Malformed(f"missing string field {key!r}")
    return value



def _seed(seed: int | None) -> dict[str, int]:
    """The ``seed`` field of a request body, or nothing when no seed is to be sent."""
    return {} if seed is None else {"seed": seed}


def _service_s(content: bytes) -> float | None:
    """The server's own time on a request, when its body says (llama-server's ``timings``:
    prompt evaluation plus generation, in ms; the time queued for a slot is not in it), for
    the adaptive limit. None when the body does not say, or says it oddly."""
    if b'"timings"' not in content:
        return None
    try:
        timings = orjson.loads(content).get("timings")
        total = float(timings["prompt_ms"]) + float(timings["predicted_ms"])
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
        return None
    return total / 1000.0 if total > 0 else None


def _finish_reason(choice: Any) -> str:
    """A choice's ``finish_reason`` as sent (``stop``/``length``/...); ``unknown`` if absent."""
    value = choice.get("finish_reason") if isinstance(choice, dict) else None
    return value if isinstance(value, str) and value else "unknown"



class _ModelClient:
    """Shared machinery: one pooled httpx client, a concurrency bound, the retry loop.

    ``transport`` (tests inject one) wins over ``http_transport``, which picks the pool:
    ``"aiohttp"`` (default, see the module docstring for why) or ``"httpx"``.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        kind: str,
        max_in_flight: int,
        observer: Callable[[RequestEvent], None] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        http_transport: str = "aiohttp",
        limiter: AdaptiveLimit | None = None,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be >= 1")
        # One limit per endpoint: clients of one server (student, teacher and judge on one
        # llama.cpp) share theirs, since they share its slots.
        self.limiter = limiter if limiter is not None else AdaptiveLimit(
            max_in_flight, latency_budget_s=endpoint.timeout_s)
        pool = max(max_in_flight, self.limiter.max_limit)
        if transport is None:
            transport = _default_transport(http_transport, pool)
        # Posts go straight to the transport when there is one (aiohttp's pool, the default,
        # or one a test injects): httpx's client adds ~0.5 ms of CPU per request (URL merge,
        # cookie jar, redirect and auth loops; BENCHMARKS.md, end to end) for nothing a model
        # API needs. httpx's own pool (``http_transport="httpx"``) keeps the full client,
        # which also honours proxy settings from the environment.
        self._transport = transport
        self.endpoint = endpoint
        self.kind = kind
        self._observer = observer
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()
        self._client = httpx.AsyncClient(
            base_url=_base_url(endpoint.base_url),
            headers=self._auth_headers(),
            timeout=httpx.Timeout(endpoint.timeout_s),
            # The limiter already bounds attempts; size the pool so it never queues them
            # (a request's timeout must time the server, not a wait for a connection).
            limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
            transport=transport,
            verify=shared_ssl_context(),  # httpx's own pool: not one CA bundle load each
        )
        # what the client would send on every request, computed once for the direct path
        self._headers = {**self._client.headers, "content-type": "application/json"}
        self._timeout = self._client.timeout.as_dict()
        self._urls: dict[str, httpx.URL] = {}
        self._yarl_urls: dict[str, yarl.URL] = {}

    def _auth_headers(self) -> dict[str, str]:
        key = self.endpoint.api_key
        if self.endpoint.api == "anthropic":
            headers = {"anthropic-version": ANTHROPIC_VERSION}
            if key is not None:
                headers["x-api-key"] = key
            return headers
        return {} if key is None else {"Authorization": f"Bearer {key}"}

    async def aclose(self) -> None:
        await self._client.aclose()  # closes the transport too

    async def _post(self, path: str, content: bytes) -> Reply:
        """POST ``content`` to ``path`` and read the whole response. Without a transport of
        our own, through httpx's client; with aiohttp's pool, straight through aiohttp
        (``_AiohttpPool.post``); with another transport (a test's), straight to it. Either
        way with the client's headers and timeouts, no cookies kept and no redirects
        followed (the client follows none either)."""
        if self._transport is None:
            return await self._client.post(path, content=content, headers=self._headers)
        if isinstance(self._transport, _AiohttpPool):  # the default: aiohttp without httpx
            target = self._yarl_urls.get(path)
            if target is None:
                target = self._yarl_urls[path] = yarl.URL(
                    str(self._client.base_url.join(path.lstrip("/"))), encoded=True)
            return await self._transport.post(target, self._headers, content, self._timeout)
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = self._client.base_url.join(path.lstrip("/"))
        request = httpx.Request("POST", url, headers=self._headers, content=content,
                                extensions={"timeout": self._timeout})
        response = await self._transport.handle_async_request(request)
        try:
            await response.aread()
        finally:
            await response.aclose()
        return response

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _observe(self, event: RequestEvent) -> None:
        if self._observer is None:
            return
        try:
            self._observer(event)
        except Exception:  # a metrics hook must never fail a model call
            log.exception("model request observer failed")

    def _backoff_s(self, attempt: int, retry_after: float | None) -> float:
        """Full-jitter exponential backoff, stretched to honour the server's Retry-After."""
        ep = self.endpoint
        delay = self._rng.uniform(0.0, min(ep.backoff_max_s, ep.backoff_base_s * 2**attempt))
        if retry_after is not None:
            delay = max(delay, min(retry_after, RETRY_AFTER_CAP_S))
        return delay

    async def _call(
        self,
        path: str,
        body: dict[str, Any],
        parse: Callable[[Any], tuple[T, _Usage]],
        choices: int = 0,
    ) -> _Outcome[T]:
        """POST ``body`` until it succeeds, fails for good, or the retry budget runs out.

        Retried: timeouts, connection failures (the server closing the connection
        included), 429, 5xx, and 200s whose body does not parse. Any other status fails at
        once with ``http_<status>``.
        """
        ep = self.endpoint
        content = orjson.dumps(body)
        # Timed on the event loop's clock (the monotonic clock, unless a test runs the loop
        # on a virtual one: tests/agents/virtual_clock.py).
        clock = asyncio.get_running_loop().time
        started = clock()
        reason = "connection"
        for attempt in range(ep.max_retries + 1):
            retry_after: float | None = None
            t0 = clock()
            try:
                # an n-choice request holds n of the server's slots (llama-server's n_cmpl)
                async with self.limiter.slot(max(1, choices)) as slot:
                    # The timeout and latency start once we hold a slot: they time the
                    # server's work (and its own queue), never a wait in this client.
                    t0 = clock()
                    try:
                        resp = await self._post(path, content)
                    except httpx.TimeoutException:
                        slot.overload()
                        raise
                    if resp.status_code in _OVERLOAD_STATUSES:
                        slot.overload()
                    elif resp.status_code == 200:
                        slot.ok(clock() - t0, _service_s(resp.content))
            except httpx.TimeoutException:
                reason = "timeout"
            except httpx.DecodingError:  # e.g. a corrupt gzip body: the response is broken
                reason = "malformed_response"
            except httpx.HTTPError:  # TransportError & co: refused, reset, closed early
                reason = "connection"
            else:
                latency = clock() - t0
                status = resp.status_code
                if status == 200:
                    try:
                        value, usage = parse(orjson.loads(resp.content))
                    except (_Malformed, orjson.JSONDecodeError, KeyError, IndexError, TypeError):
                        reason = "malformed_response"
                    else:
                        returned = len(value) if choices and isinstance(value, list) else 0
                        self._observe(
                            RequestEvent(
                                self.kind,
                                "ok",
                                latency,
                                attempt > 0,
                                usage.prompt_tokens,
                                usage.completion_tokens,
                                choices,
                                returned,
                            )
                        )
                        return _Outcome(
                            value,
                            (clock() - started) * 1000.0,
                            attempt + 1,
                            usage.prompt_tokens,
                            usage.completion_tokens,
                        )
                else:
                    reason = f"http_{status}"
                    if status != 429 and status < 500:
                        self._observe(RequestEvent(self.kind, reason, latency, attempt > 0, 0, 0))
                        detail, param = _error_details(resp.content)
                        raise ModelError(
                            reason, status=status, detail=detail, param=param, attempts=attempt + 1
                        )
                    retry_after = _retry_after_s(resp.headers.get("retry-after"))
            self._observe(RequestEvent(self.kind, reason, clock() - t0, attempt > 0, 0, 0))
            if attempt < ep.max_retries:
                await self._sleep(self._backoff_s(attempt, retry_after))
        raise ModelError("retry_budget_exhausted", last_reason=reason, attempts=ep.max_retries + 1)

