"""agents/metrics.py registers explicitly (or on first use), so import order does not matter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# prometheus_client and the metrics module imported first, the multiprocess directory named
# afterwards: the worker's values must still land in the directory, summed by a collector.
LATE_DIRECTORY = """
import os, sys
import prometheus_client
from agents import metrics
from prometheus_client import REGISTRY, CollectorRegistry, multiprocess

names = {getattr(c, "_name", "") for c in REGISTRY._collector_to_names}
assert not any(n.startswith("editstream_") for n in names), names  # nothing at import
os.environ["PROMETHEUS_MULTIPROC_DIR"] = sys.argv[1]
metrics.DLQ.labels("settle", "bad_json").inc(3)  # the first use registers
metrics.register()  # explicit and idempotent (and it checks every metric is exported)
metrics.E2E_LAG.observe(1.5)
metrics.observe_request(metrics.RequestEvent("student", "ok", 0.2, False, 5, 7))
registry = CollectorRegistry()
multiprocess.MultiProcessCollector(registry, path=sys.argv[1])
print(registry.get_sample_value("editstream_dlq_records_total",
                                {"stage": "settle", "reason": "bad_json"}))
print(registry.get_sample_value("editstream_model_tokens_total",
                                {"kind": "student", "direction": "completion"}))
print(registry.get_sample_value("editstream_settled_total", {"reason": "quiescence"}))
"""


def test_metrics_written_to_a_directory_named_after_the_import(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", LATE_DIRECTORY, str(tmp_path)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    # 3 dead letters, 7 completion tokens, and a zero series created up front
    assert out.stdout.split() == ["3.0", "7.0", "0.0"]
    assert list(tmp_path.glob("counter_*.db"))


def test_version_labels_are_the_busiest_versions_and_other() -> None:
    from agents.metrics import VersionLabels

    labels = VersionLabels(2)
    assert [labels.label(v) for v in ("a", "b", "c", None)] == ["a", "b", "other", "unknown"]
    # "c" overtakes the quietest named version and takes its place from then on
    assert [labels.label("c") for _ in range(2)] == ["c", "c"]
    assert labels.label("a") == "a" and labels.label("b") == "other"
    assert len(labels.named) == 2
    many = VersionLabels(3)
    assert len({many.label(f"v{i}") for i in range(1000)}) == 4  # three names and other
