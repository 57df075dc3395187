"""Adaptive sampling: student samples saved, and band decisions changed, vs. always drawing N.

Run ``python -m bench.bench_adaptive [--sessions 400] [--seed 8] [--json]``. Offline (no HTTP):
a generated corpus (editstream.sessions.generate -> settle), N = ``settings.samples`` simulator
samples per example from ``editstream.simulator.server.student_samples`` with the seeds the live
sampler uses, distances as the score stage computes them. For each example the stopping rule is
replayed over the first samples of the full run (batch seeds line up with the full run, so this
is exactly what the live adaptive sampler would draw), and its band compared with the band of
the median of all N samples.

A decision is what the score stage makes of an example's valid samples: its band, or
``unparsable`` with fewer than ``min_valid`` valid ones (an invalid sample is left out, as live).

Goal: >= 50% fewer samples with <= 2% changed decisions. The defaults in streams/settings.py
were picked on the seed-7 corpus; the report uses seed 8 (held out) unless told otherwise.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from typing import Any

from bench.common import events, machine, settled_examples
from editstream.simulator.answers import AnswerConfig, GroundTruth, student_samples
from streams.adaptive import AdaptivePolicy, current_decision, replay
from streams.formats import build_prompt
from streams.sample import policy_for, sample_distance, sample_seed
from streams.score import min_valid
from streams.settings import Settings

# Variants shown beside the default: (rule, min_samples, batch, confidence)
SWEEP = (("predictive", 10, 10, 0.99), ("predictive", 8, 8, 0.99), ("predictive", 5, 5, 0.99),
         ("predictive", 8, 8, 0.95), ("interval", 10, 10, 0.95), ("interval", 10, 5, 0.95),
         ("interval", 10, 10, 0.8))


def corpus(sessions: int, seed: int, settings: Settings) -> list[list[float | None]]:
    """Per example: the N distances of a full run, in seed order (None: invalid)."""
    config, truth = AnswerConfig(), GroundTruth([])
    out = []
    for example in settled_examples(events(sessions, seed)):
        prompt = build_prompt(example, settings.prompt_format)
        texts = student_samples(
            config, truth, prompt, settings.samples, sample_seed(example, settings),
            settings.sample_temperature,
        )
        out.append([sample_distance(example, t, settings.prompt_format) for t in texts])
    return out


def full_band(distances: list[float | None], settings: Settings) -> str:
    """What the score stage decides from these samples (median rounded as in summarise)."""
    valid = [d for d in distances if d is not None]
    return current_decision(valid, settings.band_low, settings.band_high, min_valid(settings))


def evaluate(runs: list[list[float | None]], policy: AdaptivePolicy, settings: Settings
             ) -> dict[str, Any]:
    drawn_total = 0
    changed = 0
    undecided = 0
    drawn_hist: Counter[int] = Counter()
    for distances in runs:
        full = full_band(distances, settings)
        drawn, decided = replay(distances, policy)
        # the score stage bands the drawn samples; equal to `decided` when one was made
        final = full_band(distances[:drawn], settings) if drawn < policy.cap else full
        assert decided is None or decided == final, (decided, final)
        drawn_total += drawn
        drawn_hist[drawn] += 1
        changed += final != full
        undecided += decided is None
    n = len(runs)
    full_total = n * policy.cap
    return {
        "rule": policy.rule,
        "min_samples": policy.min_samples,
        "batch": policy.batch,
        "confidence": policy.confidence,
        "examples": n,
        "samples_full": full_total,
        "samples_adaptive": drawn_total,
        "saved_fraction": 1 - drawn_total / full_total,
        "mean_drawn": drawn_total / n,
        "changed_decisions": changed,
        "changed_fraction": changed / n,
        "reached_cap_undecided": undecided,
        "drawn_histogram": {str(k): v for k, v in sorted(drawn_hist.items())},
        "mean_requests": sum(
            sum(1 for start, _ in policy.batches() if start < d) * c for d, c in drawn_hist.items()
        ) / n,
    }


def run(sessions: int = 400, seed: int = 8) -> dict[str, Any]:
    settings = Settings()
    t0 = time.perf_counter()
    runs = corpus(sessions, seed, settings)
    built = time.perf_counter() - t0
    bands = Counter(full_band(d, settings) for d in runs)
    default = evaluate(runs, policy_for(settings), settings)
    sweep = [
        evaluate(runs, AdaptivePolicy(settings.samples, settings.band_low, settings.band_high,
                                      m, b, c, rule, min_valid(settings)), settings)
        for rule, m, b, c in SWEEP
    ]
    return {
        "machine": machine(),
        "corpus_seed": seed,
        "sessions": sessions,
        "examples": len(runs),
        "cap": settings.samples,
        "full_bands": dict(bands),
        "corpus_build_s": built,
        "default": default,
        "sweep": sweep,
        "goal_saved_fraction": 0.5,
        "goal_changed_fraction": 0.02,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=400)
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    figures = run(args.sessions, args.seed)
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"{figures['examples']} examples (seed {figures['corpus_seed']}), "
          f"bands {figures['full_bands']}, built in {figures['corpus_build_s']:.1f}s")
    for row in [figures["default"], *figures["sweep"]]:
        print(f"{row['rule']:10} min {row['min_samples']:3} batch {row['batch']:3} "
              f"conf {row['confidence']:.2f}: "
              f"saved {row['saved_fraction']:.1%}  changed {row['changed_fraction']:.2%} "
              f"({row['changed_decisions']})  mean drawn {row['mean_drawn']:.1f}  "
              f"requests {row['mean_requests']:.2f}  undecided {row['reached_cap_undecided']}")


if __name__ == "__main__":
    main()
