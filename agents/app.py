"""The Faust app: wiring only. Topics and one module per stage. Settle is a plain aiokafka
runner the app starts as a service (agents/settle.py, group `<app_id>-settle`); sample,
score, distill, repair and the retry of model outages run in another (agents/stages.py,
group `<app_id>-stages`), and the eval stage in a third (agents/evaluate.py, group
`<app_id>-eval`: candidates scored on settled examples). Faust consumes no topic any more:
it runs the worker (services, timers for lag and loop lag, signals) and the metrics.

      [settle runner]          [stage runner: sample, score, distill, repair]
    edit-events ─settle─▶ settled-examples ─sample─▶ student-samples ─score─▶ scored-examples
        │                                                                      │
        └▶ edit-events-dlq                          training-records ◀─distill─┤
                                                    rejected-examples ◀────────┤
                                                    repair ◀──────────────────▶ repair
    sample, distill, repair ─(model outage)─▶ model-retry ─retry (stage runner)─▶ their stage
    settle ─▶ scorecard (served model, live)   settled-examples ─eval (own group)─▶ eval-results
"""

from __future__ import annotations

import os
import tempfile
from datetime import timedelta

import faust

from agents import evaluate, faust_fixes, lag, looplag, settle, stages
from agents.kafka_security import faust_credentials
from agents.runtime import Runtime
from schemas.topics import TOPICS
from streams.settings import Settings


def broker_url(bootstrap: str) -> str:
    return ";".join(f"kafka://{h.strip()}" for h in bootstrap.split(",") if h.strip())


def state_dir(settings: Settings) -> str:
    """faust creates `<datadir>/v1/tables` even for memory tables; keep it out of the cwd."""
    path = settings.state_dir or os.path.join(tempfile.gettempdir(), "editstream",
                                              f"{settings.app_id}-data")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)  # faust makes one level
    return path


def create_app(settings: Settings) -> tuple[faust.App, Runtime]:
    faust_fixes.apply()
    app = faust.App(
        settings.app_id,
        broker=broker_url(settings.broker),
        broker_credentials=faust_credentials(settings),  # TLS/SASL: agents/kafka_security.py
        store="memory://",
        datadir=state_dir(settings),
        # Faust moves no record (the runners do, under `settings.processing_guarantee`):
        # its only topic is its assignor's, and exactly_once would only give that one
        # partition a transactional producer with nothing to write
        processing_guarantee="at_least_once",
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        web_enabled=False,
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        broker_commit_every=1000,
        broker_commit_interval=1.0,
        stream_buffer_maxsize=4096,
        broker_request_timeout=timedelta(seconds=90),
        broker_session_timeout=timedelta(seconds=settings.session_timeout_s),
        # a third of the session timeout at most, as Kafka asks
        broker_heartbeat_interval=timedelta(seconds=min(3.0, settings.session_timeout_s / 3)),
        broker_rebalance_timeout=timedelta(seconds=60),
        producer_max_request_size=4 * 1024 * 1024,
        consumer_max_fetch_size=8 * 1024 * 1024,
    )
    rt = Runtime(settings, app)
    for name in TOPICS:
        rt.topics[name] = app.topic(
            settings.topic(name), key_type=bytes, value_type=bytes, key_serializer="raw",
            value_serializer="raw", partitions=settings.partitions)
    if not settings.eval_only:
        settle.register(app, rt)
        stages.register(app, rt)
    if settings.eval_stage or settings.eval_only:
        evaluate.register(app, rt)
    lag.register(app, rt)
    rt.loop_lag = looplag.register(app, rt)

    @app.on_before_shutdown.connect  # type: ignore[arg-type]  # faust's stubs: sync receivers only
    async def close_model_clients(app: faust.App, **kwargs: object) -> None:
        # after faust has waited for the events in flight; aiohttp's pools warn if left open.
        # The stage runner first: its records in flight must not meet closed clients (a
        # record failing on one would be dead-lettered); it cancels them instead.
        for runner in (rt.stages, rt.evaluator):
            if runner is not None:
                await runner.stop()
        await rt.aclose()

    return app, rt
