"""`editstream flywheel` / `make flywheel`: the whole loop on this machine, and its verdict.

    corpus    real code history → edit traces (`editstream generate`; default: the release
              history of several PyPI packages, so a repository-disjoint eval split exists)
    pipeline  the traces through the streaming pipeline (broker, worker, model simulator as
              student and teacher, or the servers configured) and `export`
    train     `editstream train` on the export as it is (TRL, LoRA on SmolLM2-135M, CPU)
    serve     llama.cpp's llama-server twice, side by side: the base and the candidate
    eval      the eval stage alone over the run's settled examples (`replay --eval-only`):
              one greedy prediction per model on every example of the eval split
    scorecard the candidate against the base and against `noop`: paired differences with
              bootstrap intervals, and the verdict

Everything lands under one directory (`flywheel-output/`): the corpus, the pipeline's dataset,
the model, `eval-results.jsonl`, the scorecards and `flywheel.json` (the time of each phase
and the verdicts). The base is served from the same dequantized checkpoint as the candidate
was trained from, converted by the same converter at the same precision, so that the
comparison is of the training, not of the quantization.

The simulator stands in for the frontier teacher of the pipeline phase (its teacher answers
from the traces' answer key: what the users' commits made). Every model the verdict is about
is real: SmolLM2 and its fine-tune on llama-server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from streams.settings import Settings

PREFIX = "flywheel-"  # the pipeline run's topics on the flywheel's broker
REPLAY_ID = "eval"  # the eval replay's namespace
BASE, CANDIDATE = "base", "candidate"


@dataclass
class Phases:
    """Wall-clock seconds per phase, in order, printed as they end."""

    seconds: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        print(f"\n== {name}", flush=True)
        t0 = time.monotonic()
        try:
            yield
        finally:
            self.seconds[name] = round(time.monotonic() - t0, 1)
            print(f"== {name}: {self.seconds[name]:.0f} s", flush=True)

    def table(self) -> str:
        total = sum(self.seconds.values())
        rows = [f"  {name:<10} {s / 60:6.1f} min" for name, s in self.seconds.items()]
        return "\n".join([*rows, f"  {'total':<10} {total / 60:6.1f} min"])


def editstream(*args: str, log: Path | None = None) -> None:
    """Run an `editstream` subcommand in a child process (its own imports: torch for train),
    its output to the terminal or to `log`; a failure stops the flywheel with its tail."""
    cmd = [sys.executable, "-m", "editstream.cli", *args]
    print("  $ editstream " + " ".join(args), flush=True)
    if log is None:
        subprocess.run(cmd, check=True)
        return
    with log.open("ab") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False)
    lines = log.read_text(errors="replace").splitlines()
    if proc.returncode:
        raise RuntimeError(f"editstream {args[0]} exited {proc.returncode}:\n"
                           + "\n".join(lines[-30:]))
    print("  " + (lines[-1] if lines else "") + f"  (log: {log})", flush=True)


def settings_args(settings: Settings) -> list[str]:
    return ["--broker", settings.broker, "--topic-prefix", settings.topic_prefix,
            "--app-id", settings.app_id, "--partitions", str(settings.partitions)]


def build_corpus(ns: argparse.Namespace, settings: Settings, out: Path) -> Path:
    if ns.sample:
        return Path(ns.sample)
    corpus = out / "corpus.jsonl"
    if ns.from_git:
        args = [a for path in ns.from_git for a in ("--from-git", path)]
    else:
        args = ["--release-corpus"]
    editstream("generate", *args, "--seed", str(ns.corpus_seed), "--sessions", str(ns.sessions),
               "--out", str(corpus))
    return corpus


async def run_pipeline(settings: Settings, corpus: Path, out: Path, timeout_s: float) -> None:
    from editstream.demo import demo

    code = await demo(settings, corpus, out, timeout_s, own_namespace=False)
    if code:
        raise RuntimeError(f"the pipeline run failed ({code}); see {out / 'worker.log'}")


async def read_eval_results(settings: Settings) -> list[bytes]:
    """The eval replay's `eval-results`, as the raw JSON values."""
    from editstream.replay import namespace
    from editstream.topics.kafka_io import read_to_end

    rs = namespace(settings, REPLAY_ID, settings.partitions)
    return [r.value async for r in read_to_end(rs, rs.topic("eval-results"))]


def verdicts(records: list[dict[str, Any]], settings: Settings, out: Path) -> dict[str, Any]:
    """The candidate against the base, and against `noop` (each scorecard in its own
    directory); the exit codes of `editstream scorecard` (0 ship, 1 do not, 2 too little)."""
    from editstream.evaluation.scorecard import render_scorecard

    found: dict[str, Any] = {}
    for baseline in (BASE, "noop"):
        text, code = render_scorecard(records, baseline, [CANDIDATE], settings,
                                      out / f"scorecard-vs-{baseline}")
        print(text)
        found[baseline] = code
    return found


async def flywheel(ns: argparse.Namespace, settings: Settings) -> int:
    from editstream.infra.broker import start_broker
    from editstream.infra.local_model import start_local_model

    out = Path(ns.out)
    out.mkdir(parents=True, exist_ok=True)
    phases = Phases()
    with phases.phase("corpus"):
        corpus = build_corpus(ns, settings, out)
    async with contextlib.AsyncExitStack() as stack:
        if not settings.broker:
            broker = await asyncio.to_thread(start_broker, "tansu",
                                             partitions=settings.partitions)
            stack.callback(broker.stop)
            settings = settings.replace(broker=broker.bootstrap)
        settings = settings.replace(topic_prefix=settings.topic_prefix + PREFIX,
                                    app_id=f"{settings.app_id}-flywheel")
        with phases.phase("pipeline"):
            await run_pipeline(settings, corpus, out / "pipeline", ns.pipeline_timeout)
        dataset, model = out / "pipeline" / "dataset", out / "model"
        with phases.phase("train"):
            editstream("train", str(dataset), "--out", str(model), "--seed", str(settings.seed),
                       "--epochs", str(ns.epochs), "--max-steps", str(ns.max_steps),
                       "--max-length", str(ns.max_length), "--lr", str(ns.lr),
                       "--no-progress",
                       *(["--base", ns.base] if ns.base else []), "--base-gguf",
                       log=out / "train.log")
        with phases.phase("serve"):
            base = await asyncio.to_thread(
                start_local_model, out / "base-server.log", slots=ns.slots,
                model=model / "base.gguf")
            stack.callback(base.stop)
            cand = await asyncio.to_thread(
                start_local_model, out / "candidate-server.log", slots=ns.slots,
                model=model / "model.gguf")
            stack.callback(cand.stop)
        with phases.phase("eval"):
            editstream("replay", "--topic", "settled-examples", "--eval-only", "--id",
                       REPLAY_ID, "--timeout", str(ns.eval_timeout),
                       *(["--to", f"offset:{ns.eval_per_partition}"]
                         if ns.eval_per_partition else []),
                       "--candidate", f"{BASE}={base.url}",
                       "--candidate", f"{CANDIDATE}={cand.url}",
                       # a CPU server: a request waits behind the others' prompts
                       "--candidate-timeout-s", str(ns.eval_request_timeout),
                       "--candidate-max-in-flight", str(2 * ns.slots),
                       *settings_args(settings), log=out / "eval.log")
            raw = await read_eval_results(settings)
            (out / "eval-results.jsonl").write_bytes(b"".join(v + b"\n" for v in raw))
        with phases.phase("scorecard"):
            found = verdicts([orjson.loads(v) for v in raw], settings, out)
    print("\nphases:\n" + phases.table())
    (out / "flywheel.json").write_text(json.dumps(
        {"phases_s": phases.seconds, "verdicts": found, "corpus": str(corpus)}, indent=2))
    return found[BASE]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="flywheel-output")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--from-git", action="append", metavar="PATH",
                        help="git repositories whose real commits become the sessions "
                             "(repeatable; default: the release history of several PyPI "
                             "packages, `editstream generate --release-corpus`)")
    source.add_argument("--sample", metavar="FILE", help="a trace file instead of a corpus")
    p.add_argument("--sessions", type=int, default=460,
                   help="sessions of the generated corpus (460: ~1,700 predictions, as `make "
                        "corpus` writes)")
    p.add_argument("--corpus-seed", type=int, default=7, help="the generator's seed")
    p.add_argument("--epochs", type=float, default=1.0, help="passes over the train split")
    p.add_argument("--max-steps", type=int, default=-1,
                   help="> 0: stop after N optimizer steps (of 8 examples each; ~35 s a step "
                        "for SmolLM2-135M with LoRA on 2 CPU cores)")
    p.add_argument("--lr", type=float, default=1e-3,
                   help="learning rate (LoRA SFT; higher than `editstream train`'s 2e-4 for a "
                        "run of ~25 steps: at 2e-4 the fine-tune had not yet learned to open "
                        "the region after 10 steps, at 1e-3 it had after 12)")
    p.add_argument("--max-length", type=int, default=640,
                   help="tokens per training example; longer ones are left out (CPU time "
                        "grows with it: 640 keeps about half of the examples)")
    p.add_argument("--base", default=None, help="the base to fine-tune (default SmolLM2-135M)")
    p.add_argument("--slots", type=int, default=4, help="llama-server slots per model")
    p.add_argument("--pipeline-timeout", type=float, default=1200.0)
    p.add_argument("--eval-timeout", type=float, default=1800.0)
    p.add_argument("--eval-per-partition", type=int, default=120, metavar="N",
                   help="replay only the first N settled examples of each partition into the "
                        "eval stage (0: all); the eval split of those is evaluated (120: "
                        "about 70 examples, ~8 min for both models on 2 CPU cores)")
    p.add_argument("--eval-request-timeout", type=float, default=600.0,
                   help="seconds a candidate request may take on the CPU servers")


def run(ns: argparse.Namespace, settings: Settings) -> int:
    def terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # as Ctrl-C: the broker and the servers it started stop

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        return asyncio.run(flywheel(ns, settings))
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"editstream flywheel: {exc}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous)


__all__: Sequence[str] = ("add_arguments", "run")
