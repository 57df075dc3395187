"""Run the Faust worker for the configured pipeline (topics are created first).

Metrics: with `metrics_port` set, `/metrics` is served on that port. Several workers on one
host share it through prometheus_client's multiprocess mode: set `PROMETHEUS_MULTIPROC_DIR`
(`PROMETHEUS_MULTIPROCESS_DIR` is accepted as an alias) to an empty directory that all of
them can write; the first worker to bind the port serves the registry aggregated over every
process, the others only write their values into the directory.
"""

from __future__ import annotations

import asyncio
import atexit
import errno
import logging
import os
import sys
import time
import traceback
from collections.abc import Awaitable, Callable

import faust
import mode
from aiokafka.errors import KafkaError

from agents.stage import EXIT_CLIENT_FAILURE
from streams.settings import Settings

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own name
MULTIPROC_ALIAS = "PROMETHEUS_MULTIPROCESS_DIR"
START_PATIENCE_S = 90.0  # a restarted broker is back within this (chaos: 8-15 s down)
log = logging.getLogger(__name__)


def multiprocess_dir() -> str | None:
    """The multiprocess directory, exported under prometheus_client's name.

    Must run before `agents.metrics.register()`, which picks the value store it names."""
    path = os.environ.get(MULTIPROC_ENV) or os.environ.get(MULTIPROC_ALIAS)
    if not path:
        return None
    os.environ[MULTIPROC_ENV] = path
    os.makedirs(path, exist_ok=True)
    return path


def start_metrics_server(port: int, mp_dir: str | None) -> bool:
    """Serve /metrics; False when another worker of this host already serves the port."""
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    if mp_dir is None:
        try:
            start_http_server(port, addr="0.0.0.0")
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise SystemExit(f"editstream worker: metrics port {port} is in use; several "
                             f"workers on one host share it with {MULTIPROC_ENV}=<dir>, "
                             "or give each its own EDITSTREAM_METRICS_PORT") from None
        return True
    # live gauges of a stopped worker must not be summed any more
    atexit.register(multiprocess.mark_process_dead, os.getpid(), mp_dir)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=mp_dir)
    try:
        start_http_server(port, addr="0.0.0.0", registry=registry)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        log.warning("metrics port %d in use: another worker serves this host's metrics", port)
        return False
    return True


def run_worker(settings: Settings) -> int:
    mp_dir = multiprocess_dir()
    from agents import metrics
    from agents.app import create_app

    metrics.register()  # with the value store multiprocess_dir() named (import order is free)

    refused: list[str] = []

    async def check() -> None:
        if (why := await check_cluster(settings)) is not None:
            refused.append(why)

    # a refusal (password, certificate, ACL) is final; a broker not back yet is waited for
    asyncio.run(patiently(check, "the cluster"))
    if refused:
        print(f"editstream worker: {refused[0]}", file=sys.stderr, flush=True)
        return 2
    if settings.metrics_port:
        start_metrics_server(settings.metrics_port, mp_dir)
    app, _ = create_app(settings)
    worker = build_worker(app, settings)
    before_loop()
    execute(worker)
    return 0


async def patiently(step: Callable[[], Awaitable[None]], what: str,
                    patience_s: float = START_PATIENCE_S) -> None:
    """Run a start-up step against the cluster, again while it fails on a Kafka client error
    for up to `patience_s`: a worker restarted while a broker is down (the chaos run) must
    not die at start because the node it asked first is not back yet. Past that, exit with
    the client-failure status and one line that says why."""
    deadline = time.monotonic() + patience_s
    delay = 0.5
    while True:
        try:
            await step()
            return
        except (KafkaError, OSError, TimeoutError) as exc:  # not a refusal: not there yet
            if time.monotonic() + delay > deadline:
                log.critical("worker: %s not reachable after %.0f s (%s); exiting", what,
                             patience_s, type(exc).__name__)
                raise SystemExit(EXIT_CLIENT_FAILURE) from None
            log.warning("worker: %s not reachable yet (%s); again in %.1f s", what,
                        type(exc).__name__, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def execute(worker: mode.Worker) -> None:
    """Run the worker until it stops; a failure status always comes with its reason, and a
    Kafka client error is the client-failure status (75: run it again), not mode's 1."""
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        say_why(exc)
        if exc.code not in (0, None) and isinstance(exc.__context__, KafkaError):
            raise SystemExit(EXIT_CLIENT_FAILURE) from None
        raise


def say_why(exc: SystemExit) -> None:
    """Log why the worker is leaving with a failure status, if nothing did.

    mode's `execute_from_commandline` turns any exception that escapes the worker's start or
    stop into `sys.exit(1)` without printing it (mode.worker.exiting), so a worker could
    exit 1 with no line in its log (seen in the chaos run, bench/chaos.py). The exception is
    the exit's `__context__`: its type and where it was raised are logged (not its message,
    which may quote a record)."""
    if exc.code in (0, None):
        return
    cause = exc.__context__
    if cause is None:
        log.critical("worker exiting with status %s", exc.code)
    else:
        where = "".join(traceback.format_tb(cause.__traceback__)[-6:])
        log.critical("worker exiting with status %s: %s escaped the worker's start or stop, "
                     "raised at\n%s", exc.code, type(cause).__name__, where.rstrip())
    for handler in logging.getLogger().handlers:
        handler.flush()


async def check_cluster(settings: Settings) -> str | None:
    """Log in, create the missing topics, and check the worker may use its topics, groups
    and transactional ids (agents/kafka_security.py): a refusal is one line to exit with,
    now, not a consumer that retries a login or an ACL it will never get."""
    from agents.kafka_security import (
        KafkaAccessError,
        check_access,
        describe_failure,
        worker_resources,
    )
    from editstream.topics.kafka_io import ensure_topics

    topics, groups, tids = worker_resources(settings)
    try:
        # the broker answers TOPIC_AUTHORIZATION_FAILED whether the topic exists or not:
        # checking before creating keeps a refused worker from waiting on topics it cannot see
        await check_access(settings, topics=topics, groups=groups, transactional_ids=tids)
        await ensure_topics(settings)
    except (KafkaAccessError, KafkaError) as exc:
        if (refused := describe_failure(exc, settings)) is None:
            raise
        return refused
    return None


def before_loop() -> None:
    """One-off CPU work done before the event loop starts, so none of it holds the loop past
    the 20 ms bound (issue 15): the model clients' TLS context (a CA bundle load, ~35 ms) and
    a first collection and freeze of the import-time heap (a full pass over it took ~50 ms
    on the loop; the loop's own freeze, `agents.looplag`, then walks only what start-up
    added since)."""
    from agents.looplag import freeze_start_up_heap
    from agents.models.transport import shared_ssl_context

    shared_ssl_context()
    freeze_start_up_heap()


def build_worker(app: faust.App, settings: Settings) -> faust.Worker:
    """The Faust worker of `app`, without its terminal progress spinner.

    faust.Worker has no option for it: the constructor always makes one, and only a log level
    below WARN drops it again. At WARN and above (the default) the spinner lowers the root
    logger to DEBUG for the worker's whole life, so that every debug record of every library
    (aiokafka's per-request ones included) is built and handed to its handler, and it writes
    terminal escapes to stdout even when that is not a terminal."""
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True)
    worker.spinner = None
    return worker
