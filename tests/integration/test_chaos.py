"""The chaos run, shortened to fit `make test` (bench/chaos.py is the full pre-release one).

Three Kafka nodes, three workers, the gateway and a direct producer feeding at once, and the
faults overlapping: two worker kill -9s, a broker kill -9 (the leader of an edit-events
partition), a model outage, a worker paused past its session timeout then resumed (a zombie),
the student slowed 10x. Compared with a clean run of the same events: nothing lost, nothing
changed, repeats only of the same id with the same bytes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pytest

from bench.chaos import ChaosConfig, chaos_run

pytestmark = [pytest.mark.broker, pytest.mark.kafka, pytest.mark.timeout(900)]

SHORT = ChaosConfig(predictions=200, feed_s=40, worker_kills=2, broker_kills=1, outage_s=6,
                    zombies=1, slow_s=10, drain_s=240)


async def test_short_chaos_run_loses_nothing(tmp_path: Path) -> None:
    if os.environ.get("EDITSTREAM_SKIP_KAFKA") == "1":
        pytest.skip("EDITSTREAM_SKIP_KAFKA=1")
    if shutil.which("java") is None:
        pytest.fail("java is not installed: the Apache Kafka tier needs Java 17+")
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # reconnects while a node is down
    cfg = ChaosConfig(**{**SHORT.__dict__, "out_dir": str(tmp_path)})
    problems, figures = await chaos_run(cfg)
    print("\nCHAOS FIGURES", json.dumps(figures, default=str))
    assert problems == [], "\n".join(problems)
    assert figures["predictions"] >= 200
    # every fault of the schedule happened
    assert figures["faults_injected"] == {"worker_kill": 2, "broker_kill": 1,
                                          "model_outage": 1, "zombie": 1, "slow_student": 1}
    assert figures["model_faults"].get("outage", 0) > 0
    assert figures["model_faults"].get("slow", 0) > 0
    zombie = next(f for f in figures["faults"] if f["kind"] == "zombie")
    assert zombie["group_dropped_it"]
    # the bounds held, and were measured (a sampler that saw nothing proves nothing)
    window = figures["slow_window"]
    assert 0 < window["peak_examples_in_flight_run"] <= cfg.max_examples_in_flight
    assert 0 < max(figures["peak_rss_mb_per_worker"].values()) <= cfg.rss_limit_mb
