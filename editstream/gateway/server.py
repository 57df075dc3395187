"""`editstream gateway`: the HTTPS ingestion edge for editors that do not speak Kafka.

Editors POST batches of contract events (a JSON array or NDJSON, optionally gzip/zstd) to
`/v1/events`; the gateway authenticates the client, enforces its rate and size limits, judges
every event on its own (privacy, secrets, schema: `streams.gateway_core.judge`) and writes the
accepted ones to `edit-events`, keyed by `session_id`. It answers 200 only once the broker has
acknowledged every accepted event (acks=all), so an editor that got a 200 may forget the
batch; on any broker trouble it answers 503 and the editor retries (at-least-once: a retried
batch may be written twice, the usual Kafka producer contract).

Rejected events are reported back to the editor in the response, not written to the DLQ: the
DLQ exists for producers that get no answer, and the gateway always answers.

Run it behind a TLS-terminating proxy or load balancer (HTTPS is the deployment's job);
`/readyz` tells the balancer whether the broker is reachable.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import math
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from agents.kafka_security import KafkaAccessError, check_access, describe_failure
from editstream.gateway.sink import (
    PRODUCERS,
    AiokafkaSink,
    EventSink,
    start_sink,
)
from streams import settings as settings_mod
from streams.gateway_core import (
    BodyError,
    TokenAuth,
    TokenBucket,
    decompress,
    judge,
    parse_tokens,
    split_body,
    summarize,
)
from streams.ingest import DISCARD_REASONS, REJECT_REASONS, Accepted, Verdict
from streams.settings import Settings

log = logging.getLogger("editstream.gateway.server")

OPENAPI_PATH = Path(__file__).resolve().parents[2] / "deploy" / "openapi.yaml"
ENV_PREFIX = "EDITSTREAM_GATEWAY_"
MiB = 1024 * 1024
# The shared settings that matter to the gateway (the rest are the worker's business).
SETTINGS_FIELDS = ("broker", "topic_prefix", "partitions", "disabled_globs",
                   "require_open_source", "max_event_bytes", "max_region_bytes", "pii_policy",
                   "log_level", *settings_mod.KAFKA_FIELDS)


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class GatewayConfig:
    """Gateway-only knobs. Env `EDITSTREAM_GATEWAY_<FIELD>`, flags `--<field>` win.

    Tokens come from `EDITSTREAM_GATEWAY_TOKENS` (`name:token,...`) and/or a file
    (`EDITSTREAM_GATEWAY_TOKENS_FILE` / `--tokens-file`, one `name:token` a line), never from a
    flag: command lines are visible to every user of the machine.
    """

    tokens: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    rate: float = field(default=2000.0, metadata={
        "help": "events per second per client (token bucket refill)"})
    burst: int = field(default=20_000, metadata={
        "help": "events a client may send at once (bucket size; >= max_events)"})
    max_body_bytes: int = field(default=4 * MiB, metadata={"help": "request body as sent"})
    max_decompressed_bytes: int = field(default=4 * MiB, metadata={
        "help": "request body after gzip/zstd decoding (decompression-bomb cap)"})
    max_events: int = field(default=1000, metadata={"help": "events per request"})
    host: str = field(default="0.0.0.0", metadata={"help": "listen address"})
    port: int = field(default=8080, metadata={"help": "listen port"})
    send_timeout_s: float = field(default=10.0, metadata={
        "help": "time for the broker to acknowledge a batch before answering 503"})
    ready_interval_s: float = field(default=1.0, metadata={
        "help": "broker metadata probe period behind /readyz"})
    producer: str = field(default="librdkafka", metadata={
        "help": "Kafka client: librdkafka (C, confluent-kafka) or aiokafka (pure Python)"})

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < self.max_events:
            # A request of max_events must be able to pass a full bucket.
            raise ValueError("rate must be > 0 and burst >= max_events")
        if (min(self.max_body_bytes, self.max_decompressed_bytes, self.max_events) <= 0
                or self.send_timeout_s <= 0):
            raise ValueError("limits and timeouts must be positive")
        if self.producer not in PRODUCERS:
            raise ValueError(f"producer must be one of {', '.join(PRODUCERS)}")

    def replace(self, **changes: Any) -> GatewayConfig:
        return dataclasses.replace(self, **changes)


_TUNABLE = tuple(f for f in fields(GatewayConfig) if f.name != "tokens")


def config_from_env(environ: Mapping[str, str] | None = None, *,
                    tokens_file: str | None = None, **overrides: Any) -> GatewayConfig:
    """`GatewayConfig` from `EDITSTREAM_GATEWAY_*` variables, then explicit overrides."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in _TUNABLE:
        key = ENV_PREFIX + f.name.upper()
        if key in env:
            default: Any = f.default
            try:
                values[f.name] = type(default)(env[key])
            except ValueError as exc:
                raise ValueError(f"{key}: {exc}") from None
    spec = env.get(ENV_PREFIX + "TOKENS", "")
    path = tokens_file or env.get(ENV_PREFIX + "TOKENS_FILE")
    if path:
        spec += "\n" + Path(path).read_text(encoding="utf-8")
    values["tokens"] = parse_tokens(spec)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return GatewayConfig(**values)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `editstream gateway`: its own knobs plus the shared settings it uses."""
    group = parser.add_argument_group("gateway (also EDITSTREAM_GATEWAY_<NAME> env vars)")
    for f in _TUNABLE:
        group.add_argument("--" + f.name.replace("_", "-"), dest=f"gateway_{f.name}",
                           type=type(f.default), default=None, metavar="V",
                           help=f"{f.metadata.get('help', '')} (default: {f.default!r})")
    group.add_argument("--tokens-file", dest="gateway_tokens_file", default=None, metavar="F",
                       help="file of `name:token` lines (also EDITSTREAM_GATEWAY_TOKENS_FILE; "
                            "EDITSTREAM_GATEWAY_TOKENS=name:token,... adds more)")
    # The CLI may already have added every settings flag to this parser: then keep those.
    with contextlib.suppress(argparse.ArgumentError):
        settings_mod.add_arguments(parser, only=SETTINGS_FIELDS)


def config_from_args(ns: argparse.Namespace,
                     environ: Mapping[str, str] | None = None) -> GatewayConfig:
    overrides = {k.removeprefix("gateway_"): v for k, v in vars(ns).items()
                 if k.startswith("gateway_") and k != "gateway_tokens_file"}
    return config_from_env(environ, tokens_file=getattr(ns, "gateway_tokens_file", None),
                           **overrides)


# --------------------------------------------------------------------------- metrics


class GatewayMetrics:
    """Prometheus metrics of one gateway, on its own registry (several apps may share a
    process in tests). Labels are bounded: client names come from configuration, statuses
    and reasons from fixed vocabularies; never a path, session or request id."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter("editstream_gateway_requests_total",
                                "Requests to /v1/events by client and HTTP status",
                                ["client", "status"], registry=r)
        self.events = Counter("editstream_gateway_events_total",
                              "Events by client and result (accepted, rejected, discarded)",
                              ["client", "result"], registry=r)
        self.rejected = Counter("editstream_gateway_rejected_events_total",
                                "Events rejected, by reason", ["reason"], registry=r)
        self.discarded = Counter("editstream_gateway_privacy_discarded_total",
                                 "Events discarded for privacy, by reason", ["reason"],
                                 registry=r)
        self.broker_errors = Counter("editstream_gateway_broker_errors_total",
                                     "Batches not acknowledged by the broker in time",
                                     registry=r)
        self.duration = Histogram("editstream_gateway_request_duration_seconds",
                                  "Time to answer a /v1/events request", registry=r,
                                  buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                           0.5, 1, 2.5, 5, 10, 30))
        self.ack = Histogram("editstream_gateway_broker_ack_seconds",
                             "Time from the first send to the broker's last acknowledgement",
                             registry=r, buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                  0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.body = Histogram("editstream_gateway_request_body_bytes",
                              "Request body size as received", registry=r,
                              buckets=(256, 1024, 4096, 16384, 65536, 262144, MiB, 4 * MiB))
        self.ready = Gauge("editstream_gateway_broker_ready",
                           "1 when the last broker metadata probe succeeded", registry=r)
        for reason in REJECT_REASONS:  # export zeros so rates work from the first scrape
            self.rejected.labels(reason)
        for reason in DISCARD_REASONS:
            self.discarded.labels(reason)


# --------------------------------------------------------------------------- app


class Gateway:
    """Per-app state: auth, buckets, Kafka sink, readiness. Handlers are its methods."""

    def __init__(self, settings: Settings, config: GatewayConfig, sink: EventSink,
                 metrics: GatewayMetrics) -> None:
        self.settings = settings
        self.config = config
        self.sink = sink
        self.metrics = metrics
        self.topic = settings.topic("edit-events")
        self.auth = TokenAuth(config.tokens)
        now = time.monotonic()
        self.buckets = {c: TokenBucket(config.rate, config.burst, now) for c in self.auth.clients}
        self.last_probe_ok: float | None = None
        self.openapi = OPENAPI_PATH.read_bytes() if OPENAPI_PATH.exists() else None

    # ---- readiness --------------------------------------------------------------------
    def ready(self) -> bool:
        """The broker answered a metadata request within the last few probe periods."""
        stale = max(3 * self.config.ready_interval_s, 2.0)
        return (self.last_probe_ok is not None and self.refusal() is None
                and time.monotonic() - self.last_probe_ok <= stale)

    def refusal(self) -> str | None:
        """The cluster's refusal (login, TLS, a missing ACL) the sink last met, as one line."""
        refusal: str | None = getattr(self.sink, "refusal", None)
        return refusal

    async def probe_once(self) -> bool:
        if await self.sink.probe(max(2 * self.config.ready_interval_s, 1.0)):
            self.last_probe_ok = time.monotonic()
        else:
            self.last_probe_ok = None
        self.metrics.ready.set(1 if self.ready() else 0)
        return self.ready()

    async def probe_loop(self) -> None:
        while True:
            await self.probe_once()
            await asyncio.sleep(self.config.ready_interval_s)

    # ---- handlers ---------------------------------------------------------------------
    async def healthz(self, request: web.Request) -> web.Response:
        return _json(200, {"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        if self.ready():
            return _json(200, {"status": "ready"})
        detail = self.refusal() or "broker unreachable"
        return _json(503, {"status": "not_ready", "detail": detail},
                     {"Retry-After": "1"})

    async def metrics_view(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.metrics.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def openapi_view(self, request: web.Request) -> web.Response:
        if self.openapi is None:
            return _json(404, {"error": "not_found", "detail": "no OpenAPI document"})
        return web.Response(body=self.openapi, content_type="application/yaml")

    async def post_events(self, request: web.Request) -> web.Response:
        t0 = time.perf_counter()
        client = self.auth.client(request.headers.get("Authorization"))
        if client is None:
            resp = _error(401, "unauthorized", "a valid bearer token is required",
                          {"WWW-Authenticate": 'Bearer realm="editstream"'})
        else:
            try:
                resp = await self._ingest(request, client)
            except BodyError as exc:
                resp = _error(exc.status, exc.code, exc.detail)
        self.metrics.requests.labels(client or "unauthenticated", str(resp.status)).inc()
        self.metrics.duration.observe(time.perf_counter() - t0)
        return resp

    async def _ingest(self, request: web.Request, client: str) -> web.Response:
        cfg = self.config
        bucket = self.buckets[client]
        # Cheap refusal before reading anything when the client's bucket is already empty.
        wait = bucket.wait(1, time.monotonic())
        if wait:
            return _too_many(wait)
        media = request.content_type
        if media not in ("application/json", "application/x-ndjson"):
            raise BodyError(415, "unsupported_media_type",
                            "Content-Type must be application/json or application/x-ndjson")
        encoding = request.headers.get("Content-Encoding", "identity")
        if encoding.strip().lower() not in ("", "identity", "gzip", "x-gzip", "zstd"):
            raise BodyError(415, "unsupported_encoding",
                            "Content-Encoding must be identity, gzip or zstd")
        body = await _read_body(request, cfg.max_body_bytes)
        self.metrics.body.observe(len(body))
        data = decompress(body, encoding, cfg.max_decompressed_bytes)
        items = split_body(data, media, cfg.max_events)
        wait = bucket.take(len(items), time.monotonic())
        if wait:
            return _too_many(wait)
        verdicts = [judge(it, self.settings) for it in items]
        if not await self._deliver([v for v in verdicts if isinstance(v, Accepted)]):
            self.metrics.broker_errors.inc()
            # The client's events were charged but not taken: give them back for the retry.
            bucket.refund(len(items))
            return _error(503, "broker_unavailable",
                          "the broker did not acknowledge the batch; retry it",
                          {"Retry-After": "1"})
        self._count(client, verdicts)
        return _json(200, summarize(verdicts))

    def _count(self, client: str, verdicts: Sequence[Verdict]) -> None:
        tally: dict[tuple[str, str | None], int] = {}
        for v in verdicts:
            tally[(v.status, v.reason)] = tally.get((v.status, v.reason), 0) + 1
        for (status, reason), n in tally.items():
            self.metrics.events.labels(client, status).inc(n)
            if status == "rejected" and reason:
                self.metrics.rejected.labels(reason).inc(n)
            elif status == "discarded" and reason:
                self.metrics.discarded.labels(reason).inc(n)
        log.debug("client %s: %s", client, {f"{s}/{r}": n for (s, r), n in tally.items()})

    async def _deliver(self, accepted: Sequence[Accepted]) -> bool:
        """Send and wait for every acknowledgement within `send_timeout_s` (the sink's
        contract: nothing answered 200 is left unacknowledged)."""
        if not accepted:
            return True
        t0 = time.perf_counter()
        ok = await self.sink.deliver(self.topic, [(v.key, v.value) for v in accepted],
                                     self.config.send_timeout_s)
        if ok:
            self.metrics.ack.observe(time.perf_counter() - t0)
        return ok


async def _read_body(request: web.Request, cap: int) -> bytes:
    """The raw (still encoded) body, refusing more than `cap` bytes without buffering them."""
    if request.content_length is not None and request.content_length > cap:
        raise BodyError(413, "body_too_large", f"body exceeds {cap} bytes")
    buf = bytearray()
    async for chunk in request.content.iter_chunked(1 << 16):
        buf += chunk
        if len(buf) > cap:
            raise BodyError(413, "body_too_large", f"body exceeds {cap} bytes")
    return bytes(buf)


def _json(status: int, body: Any, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body),
                        content_type="application/json", headers=headers)


def _error(status: int, code: str, detail: str,
           headers: Mapping[str, str] | None = None) -> web.Response:
    return _json(status, {"error": code, "detail": detail}, headers)


def _too_many(wait: float) -> web.Response:
    # Retry-After takes whole seconds; round up so a client that obeys it succeeds.
    seconds = 1 if math.isinf(wait) else max(1, math.ceil(wait))
    return _error(429, "rate_limited", "too many events for this client; slow down",
                  {"Retry-After": str(seconds)})


GATEWAY = web.AppKey("gateway", Gateway)


def build_app(settings: Settings, config: GatewayConfig, sink: EventSink, *,
              metrics: GatewayMetrics | None = None) -> web.Application:
    """The aiohttp app. Serve it with `auto_decompress=False` (as `start_gateway` does):
    the gateway decodes bodies itself, with its caps, and must see them still encoded."""
    gw = Gateway(settings, config, sink, metrics or GatewayMetrics())
    app = web.Application(client_max_size=config.max_body_bytes)
    app[GATEWAY] = gw
    app.router.add_post("/v1/events", gw.post_events)
    app.router.add_get("/healthz", gw.healthz)
    app.router.add_get("/readyz", gw.readyz)
    app.router.add_get("/metrics", gw.metrics_view)
    app.router.add_get("/openapi.yaml", gw.openapi_view)

    async def probe(app: web.Application) -> AsyncIterator[None]:
        await gw.probe_once()  # ready from the first request when the broker is up
        task = asyncio.create_task(gw.probe_loop())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(probe)
    return app


# --------------------------------------------------------------------------- running


@dataclass
class GatewayHandle:
    """A running gateway (from `start_gateway`); `await handle.stop()` releases it."""

    url: str
    app: web.Application
    runner: web.AppRunner
    sink: EventSink
    owns_sink: bool

    @property
    def gateway(self) -> Gateway:
        return self.app[GATEWAY]

    async def stop(self) -> None:
        await self.runner.cleanup()
        if self.owns_sink:
            await self.sink.stop(self.gateway.config.send_timeout_s)


async def start_gateway_producer(settings: Settings) -> AIOKafkaProducer:
    """An aiokafka producer with the gateway's settings (acks=all, idempotent where the
    broker supports it, batches sized for whole requests): the bench's direct baseline."""
    return (await AiokafkaSink.start(settings)).producer


async def ensure_topic(settings: Settings) -> None:
    """Create `edit-events` if missing, best effort: a managed cluster may forbid it and
    already have the topic, in which case the sends tell the truth soon enough."""
    from editstream.infra.broker import acreate_topics

    try:
        await acreate_topics(settings, [settings.topic("edit-events")],
                             partitions=settings.partitions)
    except (KafkaError, OSError) as exc:
        log.warning("could not create topic %s: %r", settings.topic("edit-events"), exc)


async def start_gateway(settings: Settings, config: GatewayConfig,
                        sink: EventSink | None = None, *,
                        metrics: GatewayMetrics | None = None) -> GatewayHandle:
    """Serve the gateway on `config.host:config.port` (port 0: a free one, see `.url`).

    Without a sink one is started (`config.producer`) with the pipeline's settings
    (acks=all, idempotent where the broker supports it) and stopped with the gateway.
    """
    owns = sink is None
    if sink is None:
        await ensure_topic(settings)
        sink = await start_sink(config.producer, settings)
    app = build_app(settings, config, sink, metrics=metrics)
    runner = web.AppRunner(app, auto_decompress=False, access_log=None)
    await runner.setup()
    sock = socket.socket(socket.AF_INET6 if ":" in config.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((config.host, config.port))
    site = web.SockSite(runner, sock)
    await site.start()
    host, port = sock.getsockname()[:2]
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return GatewayHandle(f"http://{shown}:{port}", app, runner, sink, owns)


def main_gateway(ns: argparse.Namespace) -> int:
    """`editstream gateway`: serve until SIGINT/SIGTERM. Exit 2 on bad configuration."""
    try:
        settings = settings_mod.from_args(ns)
        config = config_from_args(ns)
    except (ValueError, OSError) as exc:
        print(f"editstream gateway: {exc}", file=sys.stderr)
        return 2
    if not settings.broker:
        print("editstream gateway: set --broker or EDITSTREAM_BROKER", file=sys.stderr)
        return 2
    if not config.tokens:
        # Fail closed: a gateway without clients would only ever answer 401.
        print("editstream gateway: no client tokens; set EDITSTREAM_GATEWAY_TOKENS or "
              "--tokens-file", file=sys.stderr)
        return 2
    level = settings.log_level.upper()
    logging.basicConfig(level="WARNING" if level == "WARN" else level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return asyncio.run(_serve(settings, config))


async def _serve(settings: Settings, config: GatewayConfig) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # The broker may come up after the gateway (orchestrators start both at once): retry.
    # A refusal (wrong password, unknown CA, no ACL for edit-events) is not retried: one line
    # and exit 2, in the bounded time of one connection.
    delay = 0.5
    while True:
        try:
            await check_access(settings, topics=[settings.topic("edit-events")])
            await ensure_topic(settings)
            sink = await start_sink(config.producer, settings)
            break
        except (KafkaError, OSError, KafkaAccessError) as exc:
            if (refused := describe_failure(exc, settings)) is not None and not (
                    isinstance(exc, KafkaAccessError) and exc.kind == "unreachable"):
                print(f"editstream gateway: {refused}", file=sys.stderr)
                return 2
            log.warning("broker %s not reachable yet (%s); retrying", settings.broker, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                return 1
            delay = min(delay * 2, 10.0)
    handle = await start_gateway(settings, config, sink)
    print(f"editstream gateway on {config.host}:{handle.url.rsplit(':', 1)[1]} → "
          f"{settings.topic('edit-events')} at {settings.broker} "
          f"({len(config.tokens)} clients)", file=sys.stderr, flush=True)
    try:
        await stop.wait()
    finally:
        await handle.stop()
        await sink.stop(config.send_timeout_s)
    return 0


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="python -m editstream.gateway.server")
    add_arguments(_parser)
    sys.exit(main_gateway(_parser.parse_args()))
