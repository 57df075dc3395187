"""Prototype httpx transports for the StudentClient, to measure a fix for its pool overhead.

httpcore 1.0's connection pool re-scans every connection (``has_expired``, and an O(C^2)
``is_idle`` count) each time a request enters or leaves it; at 64 connections that is
~30 ms of CPU per request, which caps the client far below its in-flight bound.
``ShardedTransport`` keeps httpx's exact semantics (same exceptions, decoding, timeouts)
but spreads the connections over small pools, so each scan is over a few connections.
``StudentClient(..., transport=ShardedTransport(max_in_flight))`` uses it; the bench
compares it with the default pool. The proper home is ``streams/models.py`` (reported).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable

import aiohttp
import httpx


class _Released(httpx.AsyncByteStream):
    """A response stream that frees its shard slot once, when closed."""

    def __init__(self, inner: httpx.AsyncByteStream, release: Callable[[], None]) -> None:
        self._inner = inner
        self._release: Callable[[], None] | None = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            if self._release is not None:
                self._release()
                self._release = None


class ShardedTransport(httpx.AsyncBaseTransport):
    """``max_connections`` split over pools of ``shard_size``; each request goes to the least
    busy pool (the client's semaphore already bounds the total)."""

    def __init__(self, max_connections: int, shard_size: int = 8) -> None:
        shards = max(1, math.ceil(max_connections / shard_size))
        size = math.ceil(max_connections / shards)
        limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
        self._pools = [httpx.AsyncHTTPTransport(limits=limits) for _ in range(shards)]
        self._busy = [0] * shards

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        i = min(range(len(self._pools)), key=self._busy.__getitem__)
        self._busy[i] += 1

        def release() -> None:
            self._busy[i] -= 1

        try:
            response = await self._pools[i].handle_async_request(request)
        except BaseException:
            release()
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _Released(response.stream, release)
        return response

    async def aclose(self) -> None:
        for pool in self._pools:
            await pool.aclose()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """httpx requests sent with aiohttp's connection pool (O(1) per request).

    Exceptions are translated to the httpx ones ``streams.models`` handles; the body is left
    encoded (``auto_decompress=False``) so httpx decodes it and raises ``DecodingError`` on a
    corrupt one, exactly as with its own transport.
    """

    def __init__(self, max_connections: int) -> None:
        self._limit = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:  # created inside the running loop that uses it
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._limit, force_close=False),
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        t = request.extensions.get("timeout", {})
        timeout = aiohttp.ClientTimeout(
            sock_connect=t.get("connect"), sock_read=t.get("read"), connect=t.get("pool")
        )
        body = await request.aread()
        try:
            async with self._client().request(
                request.method, str(request.url), headers=dict(request.headers.items()),
                data=body, timeout=timeout, allow_redirects=False,
            ) as resp:
                content = await resp.read()
                headers = [(k, v) for k, v in resp.raw_headers]
                status = resp.status
        except TimeoutError as exc:
            raise httpx.ReadTimeout(str(exc) or "timeout", request=request) from exc
        except aiohttp.ClientConnectorError as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise httpx.RemoteProtocolError(str(exc), request=request) from exc
        return httpx.Response(status, headers=headers, content=content,
                              extensions={"http_version": b"HTTP/1.1"})

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
