"""Worker and app options that are easy to lose: no terminal spinner, producer linger."""

from __future__ import annotations

import logging

from agents.app import create_app
from editstream.worker import build_worker
from streams.settings import Settings

S = Settings(broker="127.0.0.1:9")  # never contacted: nothing here starts the app


def test_worker_has_no_spinner_and_leaves_the_root_logger_level_alone() -> None:
    app, _ = create_app(S)
    worker = build_worker(app, S)
    assert worker.spinner is None
    # what Worker._setup_logging does to the root logger, on a private logger
    logger = logging.Logger("root-stand-in")
    logger.addHandler(logging.NullHandler())
    logger.setLevel(logging.WARNING)
    worker.on_setup_root_logger(logger, logging.WARNING)
    assert logger.level == logging.WARNING and len(logger.handlers) == 1
