"""The model clients against the real simulator over real HTTP (no HTTP mocks).

Backoff sleeps are injected (recorded, not slept) so retry tests are fast and can check what
the client *would* have waited; everything else runs on 127.0.0.1 with an ephemeral port.
Fault tests run over both connection pools (``http_transport``: aiohttp, the default, and
httpx's own), so each fails if either maps a failure to another ``ModelError`` reason; a few
faults the simulator cannot make (a truncated body, a reset, a reply that is not HTTP) come
from a raw socket server.
"""

from __future__ import annotations

import asyncio
import email.utils
import gc
import gzip
import random
import socket
import struct
import time
import warnings
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import httpx
import orjson
import pytest

from agents.models import StudentClient, TeacherClient
from agents.models.transport import _default_transport, _retry_after_s
from editstream.simulator.server import RunningSimulator, SimulatorConfig, start_simulator
from streams.formats import (
    JUDGE_SYSTEM,
    TEACHER_SYSTEM,
    build_prompt,
    judge_user_message,
    parse_output,
    teacher_user_message,
)
from streams.models import HTTP_TRANSPORTS, ChatResult, Endpoint, ModelError, RequestEvent

if TYPE_CHECKING:  # a type only: importing the plugin module early would skip its rewrite
    from tests.agents.fixtures import StartSim

pytest_plugins = ("tests.agents.fixtures",)


def example(i: int = 0) -> dict[str, Any]:
    """A small settled example whose last edit added a line inside the editable region."""
    before = "def handle(request):\n    user = request.user\n"
    region = f"    items = load(user, {i})\n    total = 0\n    for item in items:\n"
    after = "    return total\n"
    diff = (
        "--- a/app.py\n+++ b/app.py\n@@ -1,4 +1,5 @@\n def handle(request):\n"
        f"     user = request.user\n+    items = load(user, {i})\n     total = 0\n"
        "     for item in items:\n"
    )
    start = len(before.encode())
    return {
        "path": "app.py",
        "excerpt": before + region + after,
        "editable_range": [start, start + len(region.encode())],
        "cursor": start + len(region.encode()),
        "history": [{"path": "app.py", "diff": diff, "predicted": False, "ts_ms": 0}],
        "settled_region": region + "        total += item.price\n",
    }


PROMPT = build_prompt(example())


class RecordingSleep:
    """Stands in for asyncio.sleep: records the backoff the client asked for."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


class SpyTransport(httpx.AsyncBaseTransport):
    """A real transport (the client's own for ``http``), recording request headers on the
    way (a spy, not a mock)."""

    def __init__(self, http: str) -> None:
        self._inner = _default_transport(http, 4) or httpx.AsyncHTTPTransport()
        self.headers: list[httpx.Headers] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.headers.append(request.headers)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


both_transports = pytest.mark.parametrize("http", HTTP_TRANSPORTS)


def endpoint(sim: RunningSimulator, **fields: Any) -> Endpoint:
    return Endpoint(base_url=sim.url, model="sim-student", **fields)


# ------------------------------------------------------------------------------------------
# Student: n mode, fallback, determinism


async def test_n_mode_is_deterministic_per_seed(start_sim: StartSim) -> None:
    sim = await start_sim()
    async with StudentClient(endpoint(sim)) as client:
        a = await client.sample(PROMPT, 6, seed=7)
        b = await client.sample(PROMPT, 6, seed=7)
        c = await client.sample(PROMPT, 6, seed=8)
        single = [(await client.sample(PROMPT, 1, seed=7 + i)).texts[0] for i in range(6)]
    assert a.mode == "n" and a.requests == 1 and a.retries == 0
    assert len(a.texts) == 6 and len(a.latencies_ms) == 6
    assert a.texts == b.texts
    assert a.texts != c.texts
    assert len(set(a.texts)) > 1  # samples of one request differ
    assert single == a.texts  # choice i is the sample drawn with seed + i
    assert a.prompt_tokens > 0 and a.completion_tokens > 0
    assert sim.stats.requests["/v1/completions"] == 3 + 6


async def test_parallel_fallback_gives_same_samples_as_n_mode(start_sim: StartSim) -> None:
    with_n = await start_sim(accept_n=True)
    without_n = await start_sim(accept_n=False)
    async with (
        StudentClient(endpoint(with_n)) as n_client,
        StudentClient(endpoint(without_n)) as p_client,
    ):
        expected = await n_client.sample(PROMPT, 5, seed=3)
        first = await p_client.sample(PROMPT, 5, seed=3)
        second = await p_client.sample(PROMPT, 5, seed=3)
    assert first.mode == second.mode == "parallel"
    assert first.texts == expected.texts == second.texts
    assert first.requests == 5 + 1  # the rejected n request counts
    assert second.requests == 5  # n-unsupported is remembered per client
    assert p_client.n_supported is False
    assert without_n.stats.statuses[400] == 1
    assert first.prompt_tokens == 5 * expected.prompt_tokens  # each request pays the prompt


async def test_ignored_n_keeps_the_choice_and_asks_for_the_rest(start_sim: StartSim) -> None:
    """A server that ignores n (llama.cpp: one choice whatever n asks): the first answer's
    choice is sample 0, the rest come one request each; nothing is drawn twice."""
    honest = await start_sim()
    ignores = await start_sim(n_cap=1)
    events: list[RequestEvent] = []
    async with (
        StudentClient(endpoint(honest)) as reference,
        StudentClient(endpoint(ignores), observer=events.append) as client,
    ):
        want = await reference.sample(PROMPT, 5, seed=3)
        first = await client.sample(PROMPT, 5, seed=3)
        second = await client.sample(PROMPT, 5, seed=3)
    assert first.texts == want.texts == second.texts
    assert first.requests == 5 and second.requests == 5  # no request wasted
    assert ignores.stats.requests["/v1/completions"] == 10
    assert (first.mode, first.n_per_request, first.short_responses) == ("parallel", 1, 1)
    assert (second.mode, second.short_responses) == ("parallel", 0)  # learned: n=1 asked
    assert client.n_cap == 1 and client.n_supported is False
    short = [e for e in events if e.choices_returned < e.choices_asked]
    assert [(e.choices_asked, e.choices_returned) for e in short] == [(5, 1)]


async def test_capped_n_is_asked_again_in_chunks_of_the_cap(start_sim: StartSim) -> None:
    honest = await start_sim()
    capped = await start_sim(n_cap=3)
    async with (
        StudentClient(endpoint(honest)) as reference,
        StudentClient(endpoint(capped)) as client,
    ):
        want = await reference.sample(PROMPT, 8, seed=11)
        got = await client.sample(PROMPT, 8, seed=11)
        again = await client.sample(PROMPT, 8, seed=11)
    assert got.texts == want.texts == again.texts
    # 8 asked, 3 came; then samples 3-5 and 6-7 in two requests of at most 3
    assert got.requests == 3 and got.short_responses == 1
    assert (got.mode, got.n_per_request) == ("n_capped", 3)
    assert again.requests == 3 and again.short_responses == 0
    assert client.n_cap == 3
    assert got.completion_tokens > 0 and len(got.latencies_ms) == 8


async def test_temperature_zero_is_greedy(start_sim: StartSim) -> None:
    sim = await start_sim()
    async with StudentClient(endpoint(sim)) as client:
        batch = await client.sample(PROMPT, 4, temperature=0.0)
    assert len(set(batch.texts)) == 1


async def test_concurrency_is_bounded_by_max_in_flight(start_sim: StartSim) -> None:
    sim = await start_sim(accept_n=False, latency_ms=20, jitter_ms=10)
    async with StudentClient(endpoint(sim), max_in_flight=4) as client:
        batches = await asyncio.gather(*(client.sample(PROMPT, 6, seed=s) for s in range(4)))
    assert all(len(b.texts) == 6 for b in batches)
    assert sim.stats.requests["/v1/completions"] >= 24
    assert 1 < sim.stats.max_in_flight <= 4


@both_transports
async def test_base_url_with_v1_suffix_and_bearer_auth(start_sim: StartSim, http: str) -> None:
    sim = await start_sim()
    spy = SpyTransport(http)
    ep = Endpoint(base_url=sim.url + "/v1/", model="m", api_key="secret")
    async with StudentClient(ep, transport=spy) as client:
        await client.sample(PROMPT, 2)
    assert spy.headers[0]["authorization"] == "Bearer secret"
    assert "secret" not in repr(ep)


def test_invalid_configuration_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        StudentClient(Endpoint(base_url="ftp://host", model="m"))
    with pytest.raises(ValueError):
        StudentClient(Endpoint(base_url="http://h", model="m", api="anthropic"))
    with pytest.raises(ValueError):
        Endpoint(base_url="http://h", model="m", api="grpc")
    with pytest.raises(ValueError):
        StudentClient(Endpoint(base_url="http://h", model="m"), http_transport="urllib")


# ------------------------------------------------------------------------------------------
# Faults: retries, backoff, translation into ModelError


async def test_500s_are_retried_until_success(start_sim: StartSim) -> None:
    sim = await start_sim(error_rate=0.5, seed=11)
    clean = await start_sim(seed=11)
    sleep = RecordingSleep()
    events: list[RequestEvent] = []
    ep = endpoint(sim, max_retries=30)
    async with (
        StudentClient(ep, sleep=sleep, observer=events.append) as client,
        StudentClient(endpoint(clean)) as reference,
    ):
        batches = [await client.sample(PROMPT, 3, seed=s) for s in range(8)]
        expected = [await reference.sample(PROMPT, 3, seed=s) for s in range(8)]
    assert [b.texts for b in batches] == [e.texts for e in expected]
    failures = [e for e in events if e.status == "http_500"]
    assert failures, "error_rate=0.5 over 8 calls should produce some 500s"
    assert sum(b.retries for b in batches) == len(failures) == len(sleep.calls)
    assert sim.stats.faults["error"] == len(failures)
    assert [e.retry for e in events].count(True) == len(failures)


@both_transports
async def test_500s_exhaust_the_retry_budget(start_sim: StartSim, http: str) -> None:
    sim = await start_sim(error_rate=1.0)
    sleep = RecordingSleep()
    ep = endpoint(sim, max_retries=3, backoff_base_s=0.5, backoff_max_s=1.0)
    async with StudentClient(ep, sleep=sleep, rng=random.Random(1), http_transport=http) as client:
        with pytest.raises(ModelError) as info:
            await client.sample(PROMPT, 2)
    err = info.value
    assert err.reason == "retry_budget_exhausted" and err.last_reason == "http_500"
    assert err.attempts == 4 and sim.stats.faults["error"] == 4
    # Full jitter: each sleep is within [0, min(max, base * 2**attempt)].
    assert len(sleep.calls) == 3
    for attempt, slept in enumerate(sleep.calls):
        assert 0 <= slept <= min(1.0, 0.5 * 2**attempt)


@both_transports
async def test_429_honours_retry_after(start_sim: StartSim, http: str) -> None:
    sim = await start_sim(rate_limit_rate=1.0, retry_after_s=1.5)
    sleep = RecordingSleep()
    ep = endpoint(sim, max_retries=2, backoff_base_s=0.01, backoff_max_s=0.02)
    async with StudentClient(ep, sleep=sleep, http_transport=http) as client:
        with pytest.raises(ModelError) as info:
            await client.sample(PROMPT, 2)
    assert info.value.reason == "retry_budget_exhausted"
    assert info.value.last_reason == "http_429"
    assert len(sleep.calls) == 2 and all(s >= 1.5 for s in sleep.calls)


async def test_429_then_success(start_sim: StartSim) -> None:
    sim = await start_sim(rate_limit_rate=0.5, retry_after_s=2, seed=5)
    sleep = RecordingSleep()
    async with StudentClient(endpoint(sim, max_retries=30), sleep=sleep) as client:
        for s in range(6):
            await client.sample(PROMPT, 2, seed=s)
    assert sim.stats.faults["rate_limit"] == len(sleep.calls) > 0
    assert all(s >= 2 for s in sleep.calls)


@both_transports
async def test_timeouts_are_retried_then_exhaust_the_budget(start_sim: StartSim, http: str) -> None:
    sim = await start_sim(timeout_rate=1.0, timeout_s=2.0)
    sleep = RecordingSleep()
    events: list[RequestEvent] = []
    ep = endpoint(sim, timeout_s=0.2, max_retries=2)
    t0 = time.monotonic()
    async with StudentClient(
        ep, sleep=sleep, observer=events.append, http_transport=http
    ) as client:
        with pytest.raises(ModelError) as info:
            await client.sample(PROMPT, 2)
    # each attempt gave up after timeout_s, not when the server answered 2 s later
    assert time.monotonic() - t0 < 1.5
    assert all(e.latency_s < 1.0 for e in events)
    assert info.value.reason == "retry_budget_exhausted"
    assert info.value.last_reason == "timeout"
    assert [e.status for e in events] == ["timeout"] * 3
    assert [e.retry for e in events] == [False, True, True]
    assert len(sleep.calls) == 2


@both_transports
@pytest.mark.parametrize(
    ("fault", "reason"),
    [("malformed_rate", "malformed_response"), ("drop_rate", "connection")],
)
async def test_malformed_and_dropped_become_model_errors(
    start_sim: StartSim, fault: str, reason: str, http: str
) -> None:
    sim = await start_sim(**{fault: 1.0})
    sleep = RecordingSleep()
    async with (
        StudentClient(endpoint(sim, max_retries=2), sleep=sleep, http_transport=http) as student,
        TeacherClient(endpoint(sim, max_retries=1), sleep=sleep, http_transport=http) as teacher,
    ):
        with pytest.raises(ModelError) as info:
            await student.sample(PROMPT, 3)
        assert info.value.reason == "retry_budget_exhausted"
        assert info.value.last_reason == reason
        with pytest.raises(ModelError) as info:
            await teacher.chat(TEACHER_SYSTEM, teacher_user_message(example()))
        assert info.value.last_reason == reason


@both_transports
async def test_mixed_faults_recover_with_the_same_answers(start_sim: StartSim, http: str) -> None:
    faulty = await start_sim(
        seed=2, drop_rate=0.15, malformed_rate=0.15, error_rate=0.1, rate_limit_rate=0.1,
        retry_after_s=0,
    )  # fmt: skip
    clean = await start_sim(seed=2)
    events: list[RequestEvent] = []
    async with (
        StudentClient(
            endpoint(faulty, max_retries=40),
            sleep=RecordingSleep(),
            observer=events.append,
            http_transport=http,
        ) as client,
        StudentClient(endpoint(clean)) as reference,
    ):
        got = [(await client.sample(PROMPT, 4, seed=s)).texts for s in range(10)]
        want = [(await reference.sample(PROMPT, 4, seed=s)).texts for s in range(10)]
    assert got == want
    statuses = {e.status for e in events}
    assert {"ok", "connection", "malformed_response"} <= statuses


@both_transports
async def test_non_retryable_400_fails_at_once(start_sim: StartSim, http: str) -> None:
    sim = await start_sim()
    sleep = RecordingSleep()
    async with StudentClient(endpoint(sim), sleep=sleep, http_transport=http) as client:
        with pytest.raises(ModelError) as info:
            await client.sample(PROMPT, 2, temperature=5.0)  # out of range: the server says 400
    err = info.value
    assert err.reason == "http_400" and err.status == 400 and err.attempts == 1
    assert err.detail is not None and "temperature" in err.detail
    assert sleep.calls == [] and sim.stats.requests["/v1/completions"] == 1
    assert client.n_supported  # a 400 about another parameter is not about n


@both_transports
async def test_parallel_failure_surfaces_as_model_error(start_sim: StartSim, http: str) -> None:
    sim = await start_sim(error_rate=1.0)
    ep = endpoint(sim, max_retries=1)
    async with StudentClient(ep, sleep=RecordingSleep(), http_transport=http) as client:
        client.n_supported = False
        with pytest.raises(ModelError) as info:  # not an ExceptionGroup
            await client.sample(PROMPT, 4)
    assert info.value.last_reason == "http_500"


@both_transports
async def test_connection_refused_is_a_connection_error(http: str) -> None:
    sim = await start_simulator(SimulatorConfig())
    url = sim.url
    await sim.stop()  # nothing listens on this port any more
    ep = Endpoint(base_url=url, model="m", max_retries=1)
    async with StudentClient(ep, sleep=RecordingSleep(), http_transport=http) as client:
        with pytest.raises(ModelError) as info:
            await client.sample(PROMPT, 1)
    assert info.value.last_reason == "connection"


async def _read_request(reader: asyncio.StreamReader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)


_OK_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"


async def _truncated(writer: asyncio.StreamWriter) -> bool:
    writer.write(_OK_HEAD + b"Content-Length: 1000\r\n\r\n" + b'{"choices": [')
    await writer.drain()
    return False  # close: the body ends 987 bytes early


async def _not_http(writer: asyncio.StreamWriter) -> bool:
    writer.write(b"SSH-2.0-OpenSSH_9.6\r\nnot an HTTP server\r\n\r\n")
    await writer.drain()
    return False


async def _reset(writer: asyncio.StreamWriter) -> bool:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
    return False


async def _stall_body(writer: asyncio.StreamWriter) -> bool:
    writer.write(_OK_HEAD + b"Content-Length: 1000\r\n\r\n" + b'{"choices": [')
    await writer.drain()
    await asyncio.sleep(5)  # headers came; the body never does
    return False


async def _bad_gzip(writer: asyncio.StreamWriter) -> bool:
    body = b"this is not gzip data"
    writer.write(
        _OK_HEAD + b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    )
    await writer.drain()
    return True  # a complete response: the connection stays open for the next request


@both_transports
@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (_truncated, "connection"),
        (_not_http, "connection"),
        (_reset, "connection"),
        (_stall_body, "timeout"),
        (_bad_gzip, "malformed_response"),
    ],
)
async def test_broken_responses_map_to_the_same_reasons(
    http: str, reply: Callable[[asyncio.StreamWriter], Awaitable[bool]], reason: str
) -> None:
    """A raw socket server for faults the simulator cannot make; every attempt fails.

    ``reply`` answers one request and says whether the connection stays open (keep-alive).
    """
    handlers: list[asyncio.Task[Any]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.append(asyncio.current_task())  # type: ignore[arg-type]
        try:
            while True:
                try:
                    await _read_request(reader)
                except asyncio.IncompleteReadError:  # the client closed the connection
                    return
                if not await reply(writer):
                    return
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    ep = Endpoint(base_url=f"http://127.0.0.1:{port}", model="m", max_retries=1, timeout_s=0.3)
    events: list[RequestEvent] = []
    try:
        async with StudentClient(
            ep, sleep=RecordingSleep(), observer=events.append, http_transport=http
        ) as client:
            with pytest.raises(ModelError) as info:
                await client.sample(PROMPT, 1)
    finally:
        server.close()
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()
    assert info.value.reason == "retry_budget_exhausted"
    assert info.value.last_reason == reason
    assert [e.status for e in events] == [reason, reason]


@both_transports
async def test_request_on_the_wire_is_the_same_on_both_pools(http: str) -> None:
    """aiohttp's pool posts without httpx's client (agents/models/base.py `_post`): the
    request a server sees keeps the client's shape: the path under the base URL's prefix,
    the API key, JSON content type, httpx's user agent, the body as built."""
    seen: list[tuple[bytes, dict[bytes, bytes], bytes]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        line, *fields = head.rstrip(b"\r\n").split(b"\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (f.partition(b":") for f in fields)}
        body = await reader.readexactly(int(headers[b"content-length"]))
        seen.append((line, headers, body))
        answer = orjson.dumps({"choices": [{"index": 0, "text": "x", "finish_reason": "stop"}]})
        writer.write(_OK_HEAD + b"Content-Length: %d\r\n\r\n" % len(answer) + answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    ep = Endpoint(base_url=f"http://127.0.0.1:{port}/proxy/v1", model="m", api_key="k")
    try:
        async with StudentClient(ep, http_transport=http) as client:
            batch = await client.sample(PROMPT, 1, seed=3)
    finally:
        server.close()
        await server.wait_closed()
    assert batch.texts == ["x"]
    line, headers, body = seen[0]
    assert line == b"POST /proxy/v1/completions HTTP/1.1"
    assert headers[b"authorization"] == b"Bearer k"
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"user-agent"].startswith(b"python-httpx/")
    assert headers[b"host"] == f"127.0.0.1:{port}".encode()
    assert orjson.loads(body) == {"model": "m", "prompt": PROMPT, "temperature": 0.8,
                                  "max_tokens": 1024, "n": 1, "seed": 3}


@both_transports
@pytest.mark.parametrize("encoding", [None, "gzip", "identity"])
async def test_encoded_and_plain_bodies_read_the_same(http: str, encoding: str | None) -> None:
    """aiohttp's pool hands a body sent without a content encoding back as it is, and an
    encoded one to httpx to decode (agents/models/transport.py `_Plain`): the samples and
    the token counts are the same either way, on both pools."""
    answer = orjson.dumps({"choices": [{"index": 0, "text": "def f():\n    return 1",
                                        "finish_reason": "length"}],
                           "usage": {"prompt_tokens": 7, "completion_tokens": 5}})
    body = gzip.compress(answer) if encoding == "gzip" else answer
    extra = b"" if encoding is None else b"Content-Encoding: %s\r\n" % encoding.encode()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(_OK_HEAD + extra + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    events: list[RequestEvent] = []
    try:
        async with StudentClient(Endpoint(base_url=f"http://127.0.0.1:{port}", model="m"),
                                 observer=events.append, http_transport=http) as client:
            batch = await client.sample(PROMPT, 1)
    finally:
        server.close()
        await server.wait_closed()
    assert batch.texts == ["def f():\n    return 1"]
    assert batch.finish_reasons == ["length"]
    assert [(e.status, e.prompt_tokens, e.completion_tokens) for e in events] == [("ok", 7, 5)]


async def test_aclose_closes_the_aiohttp_session(start_sim: StartSim) -> None:
    sim = await start_sim()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        client = StudentClient(endpoint(sim))  # the default transport: aiohttp's pool
        await client.sample(PROMPT, 2)
        session = client._client._transport.client  # type: ignore[attr-defined]
        assert not session.closed
        await client.aclose()
        assert session.closed
        del client, session
        gc.collect()
    assert not [w for w in caught if "nclosed" in str(w.message)]


async def test_observer_failure_does_not_fail_the_call(start_sim: StartSim) -> None:
    sim = await start_sim()

    def broken(event: RequestEvent) -> None:
        raise RuntimeError("metrics backend down")

    async with StudentClient(endpoint(sim), observer=broken) as client:
        assert len((await client.sample(PROMPT, 2)).texts) == 2


def test_retry_after_parsing() -> None:
    assert _retry_after_s("3") == 3.0
    assert _retry_after_s("0.5") == 0.5
    assert _retry_after_s("-4") == 0.0
    assert _retry_after_s(None) is None
    assert _retry_after_s("soon") is None
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= (_retry_after_s(future) or 0) <= 31
    past = email.utils.formatdate(time.time() - 30, usegmt=True)
    assert _retry_after_s(past) == 0.0


# ------------------------------------------------------------------------------------------
# Teacher and judge


@both_transports
async def test_teacher_openai_and_anthropic_agree(start_sim: StartSim, http: str) -> None:
    sim = await start_sim()
    spy = SpyTransport(http)
    user = teacher_user_message(example(4))
    events: list[RequestEvent] = []
    async with (
        TeacherClient(endpoint(sim), observer=events.append) as openai,
        TeacherClient(
            Endpoint(base_url=sim.url, model="claude-sim", api="anthropic", api_key="k"),
            transport=spy,
        ) as anthropic,
    ):
        a = await openai.chat(TEACHER_SYSTEM, user)
        b = await anthropic.chat(TEACHER_SYSTEM, user)
    assert isinstance(a, ChatResult) and a.retries == 0
    assert a.text == b.text  # both paths reach the same simulated teacher
    assert a.prompt_tokens > 0 and b.prompt_tokens > 0 and b.completion_tokens > 0
    assert sim.stats.requests["/v1/chat/completions"] == 1
    assert sim.stats.requests["/v1/messages"] == 1
    assert spy.headers[0]["x-api-key"] == "k"
    assert spy.headers[0]["anthropic-version"] == "2023-06-01"
    assert [e.kind for e in events] == ["teacher"]


async def test_anthropic_without_key_is_http_401(start_sim: StartSim) -> None:
    sim = await start_sim()
    ep = Endpoint(base_url=sim.url, model="claude-sim", api="anthropic")
    async with TeacherClient(ep, sleep=RecordingSleep()) as client:
        with pytest.raises(ModelError) as info:
            await client.chat(TEACHER_SYSTEM, teacher_user_message(example()))
    assert info.value.reason == "http_401" and info.value.attempts == 1


async def test_teacher_answers_mostly_parse(start_sim: StartSim) -> None:
    sim = await start_sim()
    async with TeacherClient(endpoint(sim)) as client:
        results = await asyncio.gather(
            *(client.chat(TEACHER_SYSTEM, teacher_user_message(example(i))) for i in range(30))
        )
    parsed = [parse_output(r.text) for r in results]
    assert sum(p is not None for p in parsed) >= 20


@pytest.mark.parametrize("api", ["openai", "anthropic"])
async def test_judge_returns_json_verdicts(start_sim: StartSim, api: str) -> None:
    sim = await start_sim()
    ep = Endpoint(base_url=sim.url, model="judge", api=api, api_key="k")
    ex = example(2)
    user = judge_user_message(ex, ex["settled_region"])
    async with TeacherClient(ep, kind="judge") as judge:
        first = await judge.chat(JUDGE_SYSTEM, user)
        again = await judge.chat(JUDGE_SYSTEM, user)
    verdict = orjson.loads(first.text)
    assert set(verdict) == {"reasoning", "reverts_edits", "confidence"}
    assert isinstance(verdict["reasoning"], str) and isinstance(verdict["reverts_edits"], bool)
    assert verdict["confidence"] in range(1, 6)
    assert first.text == again.text


# ------------------------------------------------------------------------------------------
# Completion protocol: stop sequences, finish_reason per choice, seed only when configured


class BodySpy(httpx.AsyncBaseTransport):
    """A real transport recording the JSON bodies it sends (a spy, not a mock)."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.bodies: list[dict[str, Any]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(orjson.loads(request.content))
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


@pytest.mark.parametrize("accept_n", [True, False])
async def test_finish_reasons_per_sample_and_stop_sent(start_sim: StartSim,
                                                       accept_n: bool) -> None:
    sim = await start_sim(accept_n=accept_n)
    spy = BodySpy()
    async with StudentClient(endpoint(sim), transport=spy) as client:
        full = await client.sample(PROMPT, 3, seed=5, stop=["<|editable_region_end|>"])
        cut = await client.sample(PROMPT, 3, seed=5, max_tokens=2)
    assert all(b.get("stop") == ["<|editable_region_end|>"] for b in spy.bodies[:1])
    assert len(full.finish_reasons) == len(full.texts) == 3
    assert set(full.finish_reasons) <= {"stop", "length"}
    # 2 tokens cannot hold a region: every sample is cut and says so
    assert cut.finish_reasons == ["length"] * 3


async def test_seed_is_sent_only_when_given(start_sim: StartSim) -> None:
    sim = await start_sim(accept_n=False)
    spy = BodySpy()
    async with StudentClient(endpoint(sim), transport=spy) as client:
        await client.sample(PROMPT, 2, seed=None)
        await client.sample(PROMPT, 2, seed=7)
    without, with_seed = spy.bodies[:-2], spy.bodies[-2:]
    assert without and all("seed" not in b for b in without)
    assert sorted(b["seed"] for b in with_seed) == [7, 8]


async def test_chat_reports_finish_reason(start_sim: StartSim) -> None:
    sim = await start_sim()
    spy = BodySpy()
    async with TeacherClient(endpoint(sim), transport=spy) as client:
        done = await client.chat(TEACHER_SYSTEM, teacher_user_message(example()), seed=None)
        cut = await client.chat(TEACHER_SYSTEM, teacher_user_message(example()), max_tokens=1)
    assert done.finish_reason == "stop" and cut.finish_reason == "length"
    assert "seed" not in spy.bodies[0] and "seed" in spy.bodies[1]


def test_model_pools_share_one_tls_context() -> None:
    """Building a TLS context loads the CA bundle (~35 ms of CPU): done once per process,
    before the worker's loop starts, not once per client on the loop at its first request."""
    from agents.models.transport import shared_ssl_context

    ctx = shared_ssl_context()
    pools = [_default_transport("aiohttp", n) for n in (1, 4)]
    assert all(getattr(p, "ssl_context", None) is ctx for p in pools)
    client = StudentClient(Endpoint("http://127.0.0.1:1", "m"), http_transport="httpx")
    pool = client._client._transport._pool  # type: ignore[attr-defined]
    assert pool._ssl_context is ctx
