"""A local model SIMULATOR: an HTTP server that imitates model servers. It is not a model.

It exists so the whole pipeline runs offline and so tests exercise the real HTTP protocol
(OpenAI completions and chat, Anthropic Messages) with real faults: dropped connections,
hangs, 429s with ``Retry-After``, 500s and truncated JSON bodies.

Its answers come from ``editstream.simulator.answers`` (deterministic, blake2b-derived): a student
whose skill follows each example's features, a teacher that answers from the ground-truth
side file ``editstream generate`` writes (``--ground-truth``), erring on purpose in
configurable ways, and a judge. It knows nothing of the pipeline's band thresholds.

Faults are drawn per request from a seeded ``random.Random`` owned by the app, so a run's
fault sequence is reproducible (which request gets which fault depends on arrival order).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import logging
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import orjson
from aiohttp import web

from editstream.infra.process import ManagedProcess, free_port, http_ok, spawn
from editstream.simulator.answers import GroundTruth
from editstream.simulator.api import _anthropic, _BadRequest, _chat, _completions
from editstream.simulator.config import (
    DEFAULT_PORT,
    DESCRIPTION,
    SimulatorConfig,
    SimulatorStats,
    add_arguments,
    config_from_args,
)

__all__ = [
    "DEFAULT_PORT",
    "DESCRIPTION",
    "RunningSimulator",
    "SimulatorConfig",
    "SimulatorProcess",
    "SimulatorStats",
    "add_arguments",
    "build_app",
    "config_from_args",
    "serve",
    "spawn_simulator",
    "start_simulator",
]

log = logging.getLogger(__name__)

_CONFIG = web.AppKey("config", SimulatorConfig)
_TRUTH = web.AppKey("truth", GroundTruth)
_STATS = web.AppKey("stats", SimulatorStats)
_RNG = web.AppKey("rng", random.Random)


class _Slots:
    """The server's slots. A request of ``n`` choices takes n of them at once and waits
    until n are free (llama-server's ``n_cmpl``: one slot per choice), in arrival order."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.free = total
        self._queue: collections.deque[tuple[asyncio.Future[None], int]] = collections.deque()

    async def acquire(self, width: int) -> int:
        width = max(1, min(width, self.total))
        if not self._queue and self.free >= width:
            self.free -= width
            return width
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((fut, width))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release(width)  # handed slots we will not use
            else:
                self._queue.remove((fut, width))
                self._wake()
            raise
        return width

    def release(self, width: int) -> None:
        self.free += width
        self._wake()

    def _wake(self) -> None:
        while self._queue and self._queue[0][1] <= self.free:
            fut, width = self._queue.popleft()
            if not fut.done():
                self.free -= width
                fut.set_result(None)


_SLOTS = web.AppKey("slots", _Slots)


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
            raw = await request.read()
            async with _slot(request, _width(raw)):  # the work (latency) happens in slots
                if delay_ms > 0:
                    await asyncio.sleep(delay_ms / 1000.0)
            if fault == "rate_limit":
                resp = _error(request, 429, "rate limited (simulated)")
                resp.headers["Retry-After"] = f"{config.retry_after_s:g}"
                return resp
            if fault == "error":
                return _error(request, 500, "internal error (simulated)")
            try:
                body = _parse_body(request, raw)
                payload = answer(config, body)
            except _BadRequest as exc:
                return _error(request, exc.status, exc.message, exc.param)
            if config.timings:  # llama-server's: the time worked in the slot, not queued
                payload["timings"] = {"prompt_ms": 0.0, "predicted_ms": max(0.0, delay_ms)}
            data = orjson.dumps(payload)
            stats.statuses[200] += 1
            if fault == "malformed":  # a prefix of a JSON object is never valid JSON
                data = data[: len(data) // 2]
            return web.Response(body=data, content_type="application/json")
        finally:
            stats.in_flight -= 1

    return handler


def _width(raw: bytes) -> int:
    """The slots a request needs: its ``n`` (1 when absent or odd; a bad body is
    answered 400 after its latency, as before)."""
    try:
        n = orjson.loads(raw).get("n", 1)
    except (orjson.JSONDecodeError, AttributeError):
        return 1
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1


@contextlib.asynccontextmanager
async def _slot(request: web.Request, width: int = 1) -> AsyncIterator[None]:
    """Hold ``width`` of the server's slots (``slots``) while working, queueing for them
    like llama.cpp's server does; without slots every request works at once."""
    if not request.app[_CONFIG].slots:
        yield
        return
    slots = request.app[_SLOTS]
    stats = request.app[_STATS]
    stats.queued += 1
    stats.max_queued = max(stats.max_queued, stats.queued)
    t0 = time.monotonic()
    try:
        width = await slots.acquire(width)
    finally:
        stats.queued -= 1
    stats.max_queue_wait_s = max(stats.max_queue_wait_s, time.monotonic() - t0)
    try:
        yield
    finally:
        slots.release(width)


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
    app[_SLOTS] = _Slots(max(1, config.slots))
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


class SimulatorProcess(ManagedProcess):
    """``editstream simulate`` in a process of its own (answers on a core of their own)."""

    def __init__(self, port: int,
                 spawned: tuple[subprocess.Popen[bytes], Path | None, int]) -> None:
        super().__init__("simulator", *spawned)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"


def spawn_simulator(*flags: str, port: int = 0, log_file: Path | None = None,
                    cwd: str | Path | None = None, ready_timeout: float | None = 30.0
                    ) -> SimulatorProcess:
    """Start ``editstream simulate --port PORT FLAGS...`` (a free port when 0) and wait until
    it answers ``/healthz`` (``ready_timeout=None``: do not wait, e.g. for a second process
    joining a ``--reuse-port``)."""
    port = port or free_port()
    cmd = [sys.executable, "-m", "editstream.cli", "simulate", "--port", str(port), *flags]
    sim = SimulatorProcess(port, spawn(cmd, log_file=log_file, cwd=cwd))
    if ready_timeout is not None:
        try:
            sim.wait_ready(http_ok(f"{sim.url}/healthz"), ready_timeout)
        except BaseException:
            sim.stop(timeout=10)
            raise
    return sim


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="python -m editstream.simulator.server")
    add_arguments(_parser)
    _ns = _parser.parse_args()
    serve(config_from_args(_ns), _ns.host, _ns.port, reuse_port=_ns.reuse_port)
