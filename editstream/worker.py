"""Run the Faust worker for the configured pipeline (topics are created first)."""

from __future__ import annotations

import asyncio

import faust
from prometheus_client import start_http_server

from agents.app import create_app
from editstream.kafka_io import ensure_topics
from streams.settings import Settings


def run_worker(settings: Settings) -> int:
    asyncio.run(ensure_topics(settings))
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr="0.0.0.0")
    app, _ = create_app(settings)
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True)
    worker.execute_from_commandline()
    return 0
