"""Async HTTP clients for the model servers: the student (sampling) and the teacher/judge (chat).

The pipeline talks to OpenAI-compatible servers (vLLM, SGLang, the local simulator) and, for
the teacher, optionally to Anthropic's Messages API. Model servers are slow, rate limited and
flaky, so every call here is bounded (an adaptive concurrency limit per endpoint,
``streams/limiter.py``: a one-slot server gets one request at a time, a fleet many), timed
out (from the moment the request holds a slot: the timeout times the server, not our own
queue), retried with exponential backoff and full jitter, and honours ``Retry-After``.
Whatever goes wrong is translated at this boundary into one exception type,
:class:`ModelError`, with a short machine-readable ``reason``; httpx and JSON errors
never reach callers.

Determinism: the student asks for ``n`` samples with one seed. Servers that accept ``n``
derive choice ``i`` from ``seed + index`` (the simulator does; so do servers that seed
per-choice generators that way). Servers that reject ``n`` get ``n`` requests with ``n=1``
and ``seed = seed + i``; servers that ignore or cap it (llama.cpp answers one choice
whatever ``n`` asks) keep what they returned and are asked again for the rest, so every
mode yields the same samples in the same order.

Transport: by default requests go through aiohttp's connection pool (``httpx-aiohttp``'s
transport under the same ``httpx.AsyncClient``), not httpcore's. httpcore 1.0's pool
re-scans every connection each time a request enters or leaves it, ~30 ms of CPU per
request at 64 connections, which held the student to under 0.2 of its in-flight bound
(BENCHMARKS.md, sampling); aiohttp's pool is O(1) per request. ``http_transport="httpx"``
keeps httpx's own pool (it also honours ``HTTP(S)_PROXY``, which the aiohttp one does not).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

import aiohttp
import httpx
import orjson
from httpx_aiohttp import AiohttpTransport

from streams.limiter import AdaptiveLimit
from streams.models import (
    HTTP_TRANSPORTS,
    ChatResult,
    Endpoint,
    ModelError,
    RequestEvent,
    SampleBatch,
)

__all__ = [
    "ChatResult",
    "Endpoint",
    "ModelError",
    "RequestEvent",
    "SampleBatch",
    "StudentClient",
    "TeacherClient",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

ANTHROPIC_VERSION = "2023-06-01"
# A server asking us to wait longer than this is treated as asking for this long: one bad
# header must not park a pipeline stage for an hour.
RETRY_AFTER_CAP_S = 60.0
# Error details are kept for debugging, but bounded so a huge error page can't bloat logs.
_DETAIL_MAX = 500
# Statuses that say "too much load": the concurrency limit shrinks (streams/limiter.py).
_OVERLOAD_STATUSES = (429, 503)
# "n" as a word in an error message, e.g. "n > 1 is not supported" or "'n' must be 1".
_MENTIONS_N = re.compile(r"(?<![\w-])['\"`]?n['\"`]?(?![\w-])")


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


def _retry_after_s(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # HTTP dates are GMT; be lenient with servers that omit it
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_details(content: bytes) -> tuple[str | None, str | None]:
    """(message, param) from an OpenAI- or Anthropic-shaped error body, when it has one."""
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        text = content[:_DETAIL_MAX].decode("utf-8", "replace").strip()
        return (text or None), None
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        message, param = err.get("message"), err.get("param")
        return (
            str(message)[:_DETAIL_MAX] if message is not None else None,
            str(param) if param is not None else None,
        )
    if isinstance(err, str):
        return err[:_DETAIL_MAX], None
    return None, None


def _int_field(obj: Any, key: str) -> int:
    """A token count from a usage object; absent or odd counts read as 0 (usage is advisory)."""
    value = obj.get(key) if isinstance(obj, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _str_field(obj: Any, key: str) -> str:
    value = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(value, str):
        raise _Malformed(f"missing string field {key!r}")
    return value


def _base_url(url: str) -> httpx.URL:
    """The server root as an httpx URL; rejects what httpx could never connect to."""
    try:
        parsed = httpx.URL(url.rstrip("/").removesuffix("/v1"))
    except httpx.InvalidURL as exc:  # translate at the boundary: config errors are ValueErrors
        raise ValueError(f"invalid base_url {url!r}: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"base_url must be an http(s) URL with a host, got {url!r}")
    return parsed


def _as_httpx_error(exc: Exception, request: httpx.Request) -> httpx.TransportError | None:
    """The httpx error httpx's own transport raises for the failure behind ``exc``.

    httpx-aiohttp maps aiohttp's errors by class, and every ``ClientConnectionError`` it
    does not know better becomes ``ConnectTimeout``: a server closing the connection
    (``ServerDisconnectedError``), a reset and even a refused connect would read as
    timeouts. aiohttp errors it does not map at all (a response that is not HTTP, a bare
    ``TimeoutError``) would escape as non-httpx errors. So the cause is classified again
    here, as httpcore would: timeouts are timeouts, a failed connect is ``ConnectError``,
    anything that breaks an established exchange is ``RemoteProtocolError``/``ReadError``.
    None: keep ``exc`` (already the right httpx error, or not a transport failure).
    """
    cause: BaseException = exc
    if isinstance(exc, httpx.TransportError) and exc.__cause__ is not None:
        cause = exc.__cause__
    if not isinstance(cause, aiohttp.ClientError | OSError):  # TimeoutError is an OSError
        return None
    message = str(cause) or type(cause).__name__
    mapped: type[httpx.TransportError]
    if isinstance(cause, aiohttp.ConnectionTimeoutError):
        mapped = httpx.ConnectTimeout
    elif isinstance(cause, TimeoutError):  # SocketTimeoutError, asyncio's TimeoutError
        mapped = httpx.ReadTimeout
    elif isinstance(cause, aiohttp.ClientConnectorError):  # refused, DNS, TLS handshake
        mapped = httpx.ConnectError
    elif isinstance(cause, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
        mapped = httpx.UnsupportedProtocol
    elif isinstance(cause, OSError):  # reset, broken pipe (aiohttp.ClientOSError too)
        mapped = httpx.ReadError
    else:  # disconnected, truncated body, not HTTP at all: the exchange broke
        mapped = httpx.RemoteProtocolError
    if type(exc) is mapped:
        return None
    error = mapped(message, request=request)
    error.__cause__ = cause
    return error


class _MappedStream(httpx.AsyncByteStream):
    """A response body whose read errors are mapped like the request's (see above)."""

    def __init__(self, inner: httpx.AsyncByteStream, request: httpx.Request) -> None:
        self._inner = inner
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                yield chunk
        except Exception as exc:
            if (mapped := _as_httpx_error(exc, self._request)) is None:
                raise
            raise mapped from mapped.__cause__

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        except Exception as exc:
            if (mapped := _as_httpx_error(exc, self._request)) is None:
                raise
            raise mapped from mapped.__cause__


class _AiohttpPool(AiohttpTransport):
    """httpx-aiohttp's transport with one aiohttp session sized to the client's bound.

    The session is made on first use, inside the running loop (aiohttp binds a session to
    its loop). It keeps connections alive (``keepalive_expiry`` as httpx's default, 5 s),
    leaves bodies encoded so httpx decodes them (a corrupt gzip body is still a
    ``DecodingError``), keeps no cookies of its own (httpx's client does) and does not read
    proxies or ``.netrc`` from the environment (aiohttp would do so per request, in a
    thread). Timeouts are httpx's, per request: connect and pool wait bound the connect,
    ``read`` bounds each wait for bytes (aiohttp's ``sock_read``), so a server that hangs
    after accepting the request times out after ``timeout_s`` as it does with httpx.
    """

    def __init__(self, max_connections: int) -> None:
        self._max_connections = max_connections
        super().__init__(
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            client=self._session,
        )

    def _session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=self._max_connections,
                limit_per_host=0,
                keepalive_timeout=self.limits.keepalive_expiry,
                ssl=self.ssl_context,
            ),
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            trust_env=False,
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await super().handle_async_request(request)
        except Exception as exc:
            if (mapped := _as_httpx_error(exc, request)) is None:
                raise
            raise mapped from mapped.__cause__
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _MappedStream(response.stream, request)
        return response


def _default_transport(kind: str, max_in_flight: int) -> httpx.AsyncBaseTransport | None:
    """The transport for ``http_transport=kind``; None: httpx's own pool."""
    if kind not in HTTP_TRANSPORTS:
        raise ValueError(f"unknown http_transport {kind!r}; expected one of {HTTP_TRANSPORTS}")
    return _AiohttpPool(max_in_flight) if kind == "aiohttp" else None


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
        observer: Callable[[RequestEvent], None] | None,
        sleep: Callable[[float], Awaitable[None]],
        rng: random.Random | None,
        transport: httpx.AsyncBaseTransport | None,
        http_transport: str,
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
        )

    def _auth_headers(self) -> dict[str, str]:
        key = self.endpoint.api_key
        if self.endpoint.api == "anthropic":
            headers = {"anthropic-version": ANTHROPIC_VERSION}
            if key is not None:
                headers["x-api-key"] = key
            return headers
        return {} if key is None else {"Authorization": f"Bearer {key}"}

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
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
        headers = {"content-type": "application/json"}
        started = time.monotonic()
        reason = "connection"
        for attempt in range(ep.max_retries + 1):
            retry_after: float | None = None
            t0 = time.monotonic()
            try:
                async with self.limiter.slot() as slot:
                    # The timeout and latency start once we hold a slot: they time the
                    # server's work (and its own queue), never a wait in this client.
                    t0 = time.monotonic()
                    try:
                        resp = await self._client.post(path, content=content, headers=headers)
                    except httpx.TimeoutException:
                        slot.overload()
                        raise
                    if resp.status_code in _OVERLOAD_STATUSES:
                        slot.overload()
                    elif resp.status_code == 200:
                        slot.ok(time.monotonic() - t0)
            except httpx.TimeoutException:
                reason = "timeout"
            except httpx.DecodingError:  # e.g. a corrupt gzip body: the response is broken
                reason = "malformed_response"
            except httpx.HTTPError:  # TransportError & co: refused, reset, closed early
                reason = "connection"
            else:
                latency = time.monotonic() - t0
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
                            (time.monotonic() - started) * 1000.0,
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
            self._observe(RequestEvent(self.kind, reason, time.monotonic() - t0, attempt > 0, 0, 0))
            if attempt < ep.max_retries:
                await self._sleep(self._backoff_s(attempt, retry_after))
        raise ModelError("retry_budget_exhausted", last_reason=reason, attempts=ep.max_retries + 1)


class StudentClient(_ModelClient):
    """Samples completions from the student model (OpenAI-compatible ``/v1/completions``)."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        max_in_flight: int = 64,
        observer: Callable[[RequestEvent], None] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        http_transport: str = "aiohttp",
        limiter: AdaptiveLimit | None = None,
    ) -> None:
        if endpoint.api != "openai":
            raise ValueError("the student speaks the OpenAI completions API only")
        super().__init__(
            endpoint,
            kind="student",
            max_in_flight=max_in_flight,
            observer=observer,
            sleep=sleep,
            rng=rng,
            transport=transport,
            http_transport=http_transport,
            limiter=limiter,
        )
        # Learned per client: the most choices one response carries (None: n is honoured
        # so far; 1: the server ignores or rejects n, one request per sample).
        self.n_cap: int | None = None

    @property
    def n_supported(self) -> bool:
        return self.n_cap != 1

    @n_supported.setter
    def n_supported(self, value: bool) -> None:
        self.n_cap = None if value else 1

    async def sample(
        self,
        prompt: str,
        n: int,
        *,
        temperature: float = 0.8,
        max_tokens: int = 1024,
        seed: int | None = 0,
        stop: list[str] | None = None,
    ) -> SampleBatch:
        """``n`` samples of ``prompt``; sample ``i`` is the one drawn with ``seed + i``.

        Requests ask for up to ``n_cap`` choices each (all ``n`` at first), the one for
        samples ``j..j+k`` with ``n=k`` and ``seed + j``, concurrently under the endpoint's
        limit. A response with fewer choices than asked (llama.cpp ignores ``n``; some
        servers cap it) keeps what it carries (choice ``i`` is seed ``+ i``), lowers
        ``n_cap`` to what came back, and the rest is asked for again. A 400 naming ``n``
        sets ``n_cap`` to 1. Either way no sample is drawn twice.

        ``seed=None`` sends no seed (for servers that do not honour one: the samples are then
        not reproducible, and claiming otherwise would be wrong). ``stop`` is passed as the
        completions API's stop sequences.
        """
        if n < 1:
            raise ValueError("n must be >= 1")
        base: dict[str, Any] = {
            "model": self.endpoint.model,
            "prompt": prompt,
            "temperature": temperature,
            "max_tokens": max_tokens,
        }
        if stop is not None:
            base["stop"] = stop
        texts: dict[int, str] = {}
        finish: dict[int, str] = {}
        latencies: dict[int, float] = {}
        acc = {"requests": 0, "retries": 0, "prompt": 0, "completion": 0, "short": 0}
        widest = 0
        while len(texts) < n:
            cap = self.n_cap or n
            missing = [i for i in range(n) if i not in texts]
            chunks = _chunks(missing, cap)
            results = await self._draw_chunks(base, seed, chunks)
            progress = False
            for (start, count), result in zip(chunks, results, strict=True):
                if isinstance(result, ModelError):
                    acc["requests"] += result.attempts
                    acc["retries"] += result.attempts - 1
                    continue
                acc["requests"] += result.attempts
                acc["retries"] += result.attempts - 1
                acc["prompt"] += result.prompt_tokens
                acc["completion"] += result.completion_tokens
                got = result.value
                widest = max(widest, len(got))
                for i, (text, reason) in enumerate(got):
                    texts[start + i] = text
                    finish[start + i] = reason
                    latencies[start + i] = result.latency_ms
                progress = progress or bool(got)
                if len(got) < count:
                    acc["short"] += 1
                    self._learn_cap(len(got))
            if any(isinstance(r, ModelError) for r in results):  # only ever a rejected n
                self._learn_cap(1)
            elif not progress:  # asked for samples and got none at all
                raise ModelError("malformed_response", detail="no choices returned")
        if widest >= n:
            mode = "n"
        elif widest <= 1 and n > 1:
            mode = "parallel"
        else:
            mode = "n_capped" if n > 1 else "n"
        return SampleBatch(
            texts=[texts[i] for i in range(n)],
            latencies_ms=[latencies[i] for i in range(n)],
            mode=mode,
            requests=acc["requests"],
            retries=acc["retries"],
            prompt_tokens=acc["prompt"],
            completion_tokens=acc["completion"],
            n_per_request=max(1, widest),
            short_responses=acc["short"],
            finish_reasons=[finish[i] for i in range(n)],
        )

    def _learn_cap(self, returned: int) -> None:
        cap = max(1, returned)
        if self.n_cap is None or cap < self.n_cap:
            if cap == 1:
                log.info("server at %s ignores n; one request per sample", self.endpoint.base_url)
            else:
                log.info("server at %s caps n at %d", self.endpoint.base_url, cap)
            self.n_cap = cap

    async def _draw_chunks(
        self, base: dict[str, Any], seed: int | None, chunks: list[tuple[int, int]]
    ) -> list[_Outcome[list[tuple[str, str]]] | ModelError]:
        """One request per chunk, concurrently; a ModelError is returned, not raised, so
        the samples other chunks brought are kept (a rejected ``n`` is a lesson, not a loss).
        The first error that is not about ``n`` cancels the rest."""

        async def one(start: int, count: int) -> _Outcome[list[tuple[str, str]]] | ModelError:
            body = {**base, "n": count, **_seed(None if seed is None else seed + start)}
            try:
                return await self._call(
                    "/v1/completions", body, self._choices_parser(count), count
                )
            except ModelError as exc:
                if not self._rejects_n(exc, count):
                    raise
                return exc

        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(one(start, count)) for start, count in chunks]
        except BaseExceptionGroup as group:
            # The first failure cancels the siblings; surface it as the plain ModelError.
            errors = [e for e in group.exceptions if isinstance(e, ModelError)]
            if errors:
                raise errors[0] from None
            raise
        return [t.result() for t in tasks]

    @staticmethod
    def _rejects_n(exc: ModelError, n: int) -> bool:
        if exc.status != 400 or n == 1:
            return False
        return exc.param == "n" or bool(exc.detail and _MENTIONS_N.search(exc.detail))

    @staticmethod
    def _choices_parser(n: int) -> Callable[[Any], tuple[list[tuple[str, str]], _Usage]]:
        """Parse a completions body into (text, finish_reason) pairs ordered by ``index``:
        choices ``0..k-1``, ``k <= n`` (fewer when the server ignores or caps ``n``)."""

        def parse(body: Any) -> tuple[list[tuple[str, str]], _Usage]:
            choices = body["choices"]
            if not isinstance(choices, list):
                raise _Malformed("choices is not a list")
            indexed: dict[int, tuple[str, str]] = {}
            for pos, choice in enumerate(choices):
                index = choice.get("index", pos) if isinstance(choice, dict) else pos
                if not isinstance(index, int) or index in indexed:
                    raise _Malformed("bad or duplicate choice index")
                indexed[index] = (_str_field(choice, "text"), _finish_reason(choice))
            usage = body.get("usage")
            counts = _Usage(
                _int_field(usage, "prompt_tokens"), _int_field(usage, "completion_tokens")
            )
            if sorted(indexed) != list(range(len(indexed))) or len(indexed) > n:
                raise _Malformed("choice indexes do not match n")
            return [indexed[i] for i in range(len(indexed))], counts

        return parse


def _chunks(indexes: list[int], cap: int) -> list[tuple[int, int]]:
    """(start, count) requests covering ``indexes`` (ascending): runs of consecutive
    indexes, split so no request asks for more than ``cap`` choices."""
    out: list[tuple[int, int]] = []
    for i in indexes:
        if out and out[-1][0] + out[-1][1] == i and out[-1][1] < cap:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((i, 1))
    return out


class TeacherClient(_ModelClient):
    """Chats with the teacher or judge model (OpenAI chat or Anthropic Messages)."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        kind: str = "teacher",
        max_in_flight: int = 16,
        observer: Callable[[RequestEvent], None] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        http_transport: str = "aiohttp",
        limiter: AdaptiveLimit | None = None,
    ) -> None:
        super().__init__(
            endpoint,
            kind=kind,
            max_in_flight=max_in_flight,
            observer=observer,
            sleep=sleep,
            rng=rng,
            transport=transport,
            http_transport=http_transport,
            limiter=limiter,
        )

    async def chat(
        self,
        system: str,
        user: str,
        *,
        temperature: float = 0.0,
        max_tokens: int = 2048,
        seed: int | None = 0,
    ) -> ChatResult:
        """One system + user turn; returns the assistant's text.

        ``seed`` is sent to OpenAI-compatible servers only (Anthropic has no such field),
        and not at all when None.
        """
        if self.endpoint.api == "anthropic":
            path = "/v1/messages"
            body: dict[str, Any] = {
                "model": self.endpoint.model,
                "max_tokens": max_tokens,
                "system": system,
                "messages": [{"role": "user", "content": user}],
                "temperature": temperature,
            }
            parse = _parse_anthropic
        else:
            path = "/v1/chat/completions"
            body = {
                "model": self.endpoint.model,
                "messages": [
                    {"role": "system", "content": system},
                    {"role": "user", "content": user},
                ],
                "temperature": temperature,
                "max_tokens": max_tokens,
                **_seed(seed),
            }
            parse = _parse_openai_chat
        out = await self._call(path, body, parse)
        text, finish = out.value
        return ChatResult(
            text=text,
            latency_ms=out.latency_ms,
            retries=out.attempts - 1,
            prompt_tokens=out.prompt_tokens,
            completion_tokens=out.completion_tokens,
            finish_reason=finish,
        )


def _seed(seed: int | None) -> dict[str, int]:
    """The ``seed`` field of a request body, or nothing when no seed is to be sent."""
    return {} if seed is None else {"seed": seed}


def _finish_reason(choice: Any) -> str:
    """A choice's ``finish_reason`` as sent (``stop``/``length``/...); ``unknown`` if absent."""
    value = choice.get("finish_reason") if isinstance(choice, dict) else None
    return value if isinstance(value, str) and value else "unknown"


def _parse_openai_chat(body: Any) -> tuple[tuple[str, str], _Usage]:
    choice = body["choices"][0]
    message = choice["message"]
    usage = body.get("usage")
    return (
        (_str_field(message, "content"), _finish_reason(choice)),
        _Usage(_int_field(usage, "prompt_tokens"), _int_field(usage, "completion_tokens")),
    )


# Anthropic's stop_reason, in the OpenAI vocabulary the rest of the pipeline reads.
_ANTHROPIC_FINISH = {"max_tokens": "length", "end_turn": "stop", "stop_sequence": "stop"}


def _parse_anthropic(body: Any) -> tuple[tuple[str, str], _Usage]:
    blocks = body["content"]
    if not isinstance(blocks, list):
        raise _Malformed("content is not a list")
    # Concatenate text blocks; other block types (thinking, tool use) are not the answer.
    texts = [
        _str_field(b, "text") for b in blocks if isinstance(b, dict) and b.get("type") == "text"
    ]
    if not texts:
        raise _Malformed("no text block in content")
    usage = body.get("usage")
    stop_reason = body.get("stop_reason")
    finish = _ANTHROPIC_FINISH.get(stop_reason, "unknown") if isinstance(stop_reason, str) else (
        "unknown")
    return (
        ("".join(texts), finish),
        _Usage(_int_field(usage, "input_tokens"), _int_field(usage, "output_tokens")),
    )
