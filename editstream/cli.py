"""`editstream`: the command line. One subcommand per job; settings flags on every one.

    worker    run the streaming pipeline (Faust worker)
    demo      embedded broker + simulator + worker + bundled sample → demo-output/
    broker    run a local broker (embedded Tansu, or Apache Kafka from Maven Central)
    simulate  run the local model simulator (OpenAI / Anthropic compatible; not a model)
    generate  write seeded, realistic edit traces from real source files
    produce   send a JSONL file of events to edit-events
    export    write training records from the sink topic to dataset files
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from streams import settings as settings_mod


def _cmd_worker(ns: argparse.Namespace) -> int:
    s = settings_mod.from_args(ns)
    if not s.broker:
        print("editstream worker: set --broker or EDITSTREAM_BROKER (host:port)", file=sys.stderr)
        return 2
    from editstream.worker import run_worker

    return run_worker(s)


def _cmd_demo(ns: argparse.Namespace) -> int:
    from editstream.demo import run_demo

    return run_demo(settings_mod.from_args(ns), sample=Path(ns.sample), out=Path(ns.out),
                    timeout_s=ns.timeout)


def _cmd_broker(ns: argparse.Namespace) -> int:
    from editstream.broker import main_broker

    return main_broker(ns.kind, ns.port, ns.data_dir, ns.partitions)


def _cmd_simulate(ns: argparse.Namespace) -> int:
    from editstream.simulate import config_from_args, serve

    serve(config_from_args(ns), ns.host, ns.port)
    return 0


def _cmd_generate(ns: argparse.Namespace) -> int:
    from streams.generate import GenerateConfig, generate_events, write_jsonl

    cfg = GenerateConfig(seed=ns.seed, sessions=ns.sessions,
                         predictions_per_session=ns.predictions_per_session,
                         source_dir=ns.source_dir)
    n = write_jsonl(generate_events(cfg), ns.out)
    print(f"wrote {n} events to {ns.out}")
    return 0


def _cmd_produce(ns: argparse.Namespace) -> int:
    from editstream.kafka_io import ensure_topics, produce_events

    s = settings_mod.from_args(ns)
    if not s.broker:
        print("editstream produce: set --broker or EDITSTREAM_BROKER", file=sys.stderr)
        return 2
    src = sys.stdin.buffer if ns.file == "-" else open(ns.file, "rb")  # noqa: SIM115
    with src:
        lines = [line.rstrip(b"\n") for line in src if line.strip()]

    async def go() -> int:
        await ensure_topics(s)
        return await produce_events(s, lines, flush=ns.flush)

    n = asyncio.run(go())
    print(f"produced {n} events to {s.topic('edit-events')}" + (" + flush" if ns.flush else ""))
    return 0


def _cmd_export(ns: argparse.Namespace) -> int:
    from editstream.export import run_export

    s = settings_mod.from_args(ns)
    if not s.broker:
        print("editstream export: set --broker or EDITSTREAM_BROKER", file=sys.stderr)
        return 2
    return run_export(s, Path(ns.out), include_rejected=ns.rejected)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="editstream", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("worker", help="run the streaming pipeline")
    settings_mod.add_arguments(p)
    p.set_defaults(func=_cmd_worker)

    p = sub.add_parser("demo", help="run the whole pipeline locally on the bundled sample")
    p.add_argument("--sample", default=str(Path(__file__).resolve().parent.parent / "data" /
                                           "sample-traces.jsonl"))
    p.add_argument("--out", default="demo-output")
    p.add_argument("--timeout", type=float, default=170.0,
                   help="seconds to wait for every example to be accounted for")
    settings_mod.add_arguments(p)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("broker", help="run a local Kafka-compatible broker")
    from editstream.broker import add_arguments as broker_args

    broker_args(p)
    p.set_defaults(func=_cmd_broker)

    p = sub.add_parser(
        "simulate",
        help="run the local model SIMULATOR (speaks OpenAI completions/chat and Anthropic "
             "Messages; its answers are synthetic, derived from the prompt — not a model)")
    from editstream.simulate import add_arguments as sim_args

    sim_args(p)
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser("generate", help="write seeded edit traces (JSONL) from real files")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--sessions", type=int, default=20)
    p.add_argument("--predictions-per-session", type=int, default=6)
    p.add_argument("--source-dir", default=None, help="default: the Python standard library")
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("produce", help="send a JSONL file of events to edit-events")
    p.add_argument("file", help="JSONL file, or - for stdin")
    p.add_argument("--flush", action="store_true",
                   help="end with a control flush: settle everything (finite input)")
    settings_mod.add_arguments(p)
    p.set_defaults(func=_cmd_produce)

    p = sub.add_parser("export", help="write training records to dataset files")
    p.add_argument("--out", required=True)
    p.add_argument("--rejected", action="store_true", help="also export rejected-examples")
    settings_mod.add_arguments(p)
    p.set_defaults(func=_cmd_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    try:
        return int(ns.func(ns) or 0)
    except ValueError as exc:  # configuration errors: say what is wrong, no traceback
        print(f"editstream: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
