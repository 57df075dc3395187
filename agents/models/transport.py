"""The HTTP edge of the model clients: the connection pool and the mapping of its errors.

By default requests go through aiohttp's connection pool (``httpx-aiohttp``'s transport),
not httpcore's. httpcore 1.0's pool re-scans every connection each time a request enters or
leaves it, ~30 ms of CPU per request at 64 connections, which held the student to under 0.2
of its in-flight bound (BENCHMARKS.md, sampling); aiohttp's pool is O(1) per request. The
model clients post to it with ``_AiohttpPool.post``, past httpx's client and its request
objects (~0.4-0.5 ms of CPU per request less; bench/ab_notes.md, end to end), its errors
mapped as the transport's are. ``http_transport="httpx"`` keeps httpx's own
pool (it also honours ``HTTP(S)_PROXY``, which the aiohttp one does not). Whatever pool is
used, callers see httpx's errors only; the response helpers here read headers and error
bodies the way every model API shapes them.
"""

from __future__ import annotations

import email.utils
import functools
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Protocol

import aiohttp
import httpx
import orjson
import yarl
from httpx_aiohttp import AiohttpTransport

from streams.models import HTTP_TRANSPORTS

# Error details are kept for debugging, but bounded so a huge error page can't bloat logs.
_DETAIL_MAX = 500


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    """The one TLS context of the process's model clients. Building one loads the CA bundle,
    ~35 ms of CPU: built per client on its first request, it held the worker's event loop
    past the 20 ms bound (issue 15), so the worker builds it before its loop starts
    (`editstream.worker.before_loop`) and every pool shares it."""
    return httpx.create_ssl_context()


class Reply(Protocol):
    """What the retry loop reads of a whole response: `httpx.Response` is one, `_Plain` the
    other."""

    @property
    def status_code(self) -> int: ...

    @property
    def content(self) -> bytes: ...

    @property
    def headers(self) -> Mapping[str, str]: ...  # case-insensitive, as both are


@dataclass(frozen=True, slots=True)
class _Plain:
    """A response read whole from aiohttp whose body needs no decoding: its status, body and
    headers (aiohttp's, case-insensitive) as they are. An `httpx.Response` built instead
    parses the headers again and streams the body into itself, ~12 µs of CPU per request
    (issue 15: about 3 model requests per example)."""

    status_code: int
    content: bytes
    headers: Mapping[str, str]


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
            verify=shared_ssl_context(),
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

    async def post(self, url: yarl.URL, headers: Mapping[str, str], content: bytes,
                   timeout: Mapping[str, float | None]) -> Reply:
        """POST ``content`` and read the whole response, straight through aiohttp: no
        ``httpx.Request``, no URL parsed again, no body stream (~0.15 ms less CPU per request
        than ``handle_async_request``). Timeouts and errors as there. A body sent without a
        content encoding comes back as it is (`_Plain`); an encoded one as an
        ``httpx.Response``, which decodes it as httpx would (a corrupt gzip body raises
        ``httpx.DecodingError``)."""
        if not isinstance(self.client, aiohttp.ClientSession):
            self.client = self.get_client()
        try:
            async with self.client.post(
                url, data=content, headers=headers, allow_redirects=False,
                auto_decompress=False, compress=False,
                timeout=aiohttp.ClientTimeout(sock_connect=timeout.get("connect"),
                                              sock_read=timeout.get("read"),
                                              connect=timeout.get("pool")),
            ) as resp:
                body = await resp.read()
                status, raw_headers = resp.status, resp.raw_headers
        except Exception as exc:
            mapped = _as_httpx_error(exc, httpx.Request("POST", str(url)))
            if mapped is None:
                raise
            raise mapped from mapped.__cause__
        if resp.headers.get("content-encoding", "identity").strip().lower() == "identity":
            return _Plain(status, body, resp.headers)
        return httpx.Response(status, headers=raw_headers, content=body)


def _default_transport(kind: str, max_in_flight: int) -> httpx.AsyncBaseTransport | None:
    """The transport for ``http_transport=kind``; None: httpx's own pool."""
    if kind not in HTTP_TRANSPORTS:
        raise ValueError(f"unknown http_transport {kind!r}; expected one of {HTTP_TRANSPORTS}")
    return _AiohttpPool(max_in_flight) if kind == "aiohttp" else None

