"""Shared bench helpers: machine description, medians, generated inputs, result files."""

from __future__ import annotations

import functools
import json
import os
import platform
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from editstream.sessions.generate import GenerateConfig, generate_events
from streams.settle import settle_events

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    """nproc, CPU model, Python and platform: printed beside every figure."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def spread(values: Sequence[float]) -> str:
    """'min-max' of the runs, to show how noisy a median is."""
    return f"{min(values):.3g}-{max(values):.3g}"


@functools.lru_cache(maxsize=4)
def events(sessions: int, seed: int = 7) -> list[dict[str, Any]]:
    """Edit traces of real commits (streams.generate.history, this repository's pinned
    history), ~110 events and ~4 predictions per session; cached, so callers must not
    mutate them. (Figures in BENCHMARKS.md before issue 23 were measured on the old
    stdlib-splice corpus, ~77 events and 6 predictions per session.)"""
    return generate_events(GenerateConfig(seed=seed, sessions=sessions))


def settled_examples(evs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Settled examples the sample stage would see (ttl / context_lost are rejected there)."""
    by_session: dict[str, list[dict[str, Any]]] = {}
    for ev in evs:  # one machine per session keeps memory small; order within it is kept
        by_session.setdefault(ev["session_id"], []).append(ev)
    out = []
    for sess in by_session.values():
        out.extend(settle_events(sess))
    return [r for r in out if r["settle_reason"] not in ("ttl", "context_lost")]


def save(name: str, figures: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    return path


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data
