"""`editstream`: the command line. One subcommand per job; settings flags where they matter.

    worker         run the streaming pipeline (Faust worker)
    demo           embedded broker + simulator + worker + bundled sample → demo-output/
    broker         run a local broker (embedded Tansu, or Apache Kafka from Maven Central)
    simulate       run the local model simulator (OpenAI / Anthropic compatible; not a model)
    local-model    serve a real model: llama.cpp's llama-server (`make local-model` builds it)
    generate       write seeded edit traces from real commits of a git repository
    produce        send a JSONL file of events to edit-events
    gateway        HTTP ingestion edge: editors POST /v1/events, accepted events → edit-events
    replay         re-run a range of edit-events / settled-examples in its own namespace
    reset-offsets  move a consumer group's committed offsets (dry run unless --execute)
    export         write training records from the sink topic to dataset files
    report         summarise and plot an export DIR, or render the dashboard from Prometheus
    scorecard      score models on eval records, compare a candidate with a baseline: ship?
    acls           print the kafka-acls commands giving each principal only what it needs
    train          fine-tune a student on an export DIR with TRL (the `train` extra)
    flywheel       the whole loop on real history: pipeline, train, serve, eval, verdict
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from streams import settings as settings_mod

# Every import of a subcommand's module happens inside its `_args_*` / `_cmd_*` function:
# `main` only builds the flags of the subcommand it runs, so `editstream worker` does not pay
# for aiohttp, matplotlib or the admin client.


# --------------------------------------------------------------------------- handlers


def _cmd_worker(ns: argparse.Namespace) -> int:
    s = settings_mod.from_args(ns)
    if not s.broker:
        print("editstream worker: set --broker or EDITSTREAM_BROKER (host:port)", file=sys.stderr)
        return 2
    from editstream.worker import run_worker

    return run_worker(s)


def _cmd_demo(ns: argparse.Namespace) -> int:
    from editstream import demo

    settings = settings_mod.from_args(ns)
    if "eval_all" not in settings_mod.explicit(ns):
        # the demo's eval split would be one or two repositories: evaluate every example
        settings = settings.replace(eval_all=True)
    timeout, limit = ns.timeout, ns.max_predictions
    if ns.models == "local":
        settings = demo.local_settings(settings, settings_mod.explicit(ns))
        timeout = demo.LOCAL_TIMEOUT_S if timeout is None else timeout
        limit = demo.LOCAL_MAX_PREDICTIONS if limit is None else limit
    return demo.run_demo(settings, sample=Path(ns.sample), out=Path(ns.out),
                         timeout_s=170.0 if timeout is None else timeout,
                         models=ns.models, max_predictions=limit or 0,
                         broker_kind=ns.broker_kind, keep_broker=ns.keep_broker)


def _cmd_flywheel(ns: argparse.Namespace) -> int:
    from editstream import flywheel

    return flywheel.run(ns, settings_mod.from_args(ns))


def _cmd_broker(ns: argparse.Namespace) -> int:
    from editstream.infra.broker import main_broker

    return main_broker(ns.kind, ns.port, ns.data_dir, ns.partitions)


def _cmd_simulate(ns: argparse.Namespace) -> int:
    from editstream.simulator.server import config_from_args, serve

    serve(config_from_args(ns), ns.host, ns.port, reuse_port=ns.reuse_port)
    return 0


def _cmd_local_model(ns: argparse.Namespace) -> int:
    from editstream.infra.local_model import serve

    return serve(ns)


def _cmd_generate(ns: argparse.Namespace) -> int:
    from editstream.sessions.generate import (
        GenerateConfig,
        generate_events,
        ground_truth,
        history_summary,
        write_jsonl,
    )
    from editstream.sessions.releases import (
        DEFAULT_PACKAGES,
        build_release_repos,
        cache_root,
    )

    repos = list(ns.from_git or ())
    packages = list(ns.from_pypi or ())
    if ns.release_corpus:
        packages += [p for p in DEFAULT_PACKAGES if p not in packages]
    if (repos or packages) and (ns.splice_stdlib or ns.source_dir):
        raise ValueError("--from-git/--from-pypi and --splice-stdlib/--source-dir are "
                         "exclusive")
    if packages:  # a release-history repository per package, cached (see sessions/releases)
        started = time.monotonic()
        built = build_release_repos(packages, ns.releases, log=print)
        print(f"{len(built)} release-history repositories ready in "
              f"{time.monotonic() - started:.1f}s under {cache_root()}")
        repos += [str(rr.path) for rr in built]
    cfg = GenerateConfig(seed=ns.seed, sessions=ns.sessions,
                         predictions_per_session=ns.predictions_per_session,
                         source_dir=ns.source_dir, git=repos[0] if repos else None,
                         gits=tuple(repos[1:]), revs=ns.revs,
                         paths=tuple(ns.paths or ()), splice=ns.splice_stdlib)
    events = generate_events(cfg)
    n = write_jsonl(events, ns.out)
    if summary := history_summary(cfg):
        print(summary)
    print(f"wrote {n} events to {ns.out}")
    truth = ns.ground_truth or f"{ns.out}.truth.jsonl"
    rows = write_jsonl(ground_truth(events), truth)
    print(f"wrote the ground truth of {rows} predictions to {truth} "
          f"(for `editstream simulate --ground-truth`)")
    return 0


def _cmd_produce(ns: argparse.Namespace) -> int:
    from editstream.topics.kafka_io import ensure_topics, produce_events

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


def _cmd_gateway(ns: argparse.Namespace) -> int:
    from editstream.gateway.server import main_gateway

    return main_gateway(ns)


def _cmd_replay(ns: argparse.Namespace) -> int:
    from editstream.replay import main_replay

    return main_replay(ns)


def _cmd_reset_offsets(ns: argparse.Namespace) -> int:
    from editstream.topics.offsets import main_reset_offsets

    return main_reset_offsets(ns)


def _cmd_export(ns: argparse.Namespace) -> int:
    from editstream.dataset.export import main_export

    return main_export(ns)


def _cmd_report(ns: argparse.Namespace) -> int:
    if ns.prometheus:
        import httpx

        from editstream.dataset.promreport import PrometheusError, render_prometheus
        from editstream.topics.offsets import parse_duration_ms

        lookback_ms = parse_duration_ms(ns.lookback) or 0  # validated by _check_report
        try:
            path = render_prometheus(ns.prometheus, Path(ns.out),
                                     lookback_s=lookback_ms / 1000)
        except (PrometheusError, httpx.HTTPError) as exc:
            print(f"editstream report: Prometheus at {ns.prometheus}: {exc}", file=sys.stderr)
            return 1
        print(f"wrote {path}")
        return 0
    from editstream.dataset.report import main_report

    return main_report(ns)


def _cmd_scorecard(ns: argparse.Namespace) -> int:
    from editstream.evaluation.scorecard import main_scorecard

    return main_scorecard(ns)


def _cmd_acls(ns: argparse.Namespace) -> int:
    from agents.kafka_security import acl_commands, render_commands

    s = settings_mod.from_args(ns)
    commands = acl_commands(s, gateway=ns.principal_gateway, worker=ns.principal_worker,
                            reader=ns.principal_reader or "", command=ns.command,
                            command_config=ns.command_config)
    sys.stdout.write(render_commands(commands))
    return 0


def _check_report(ns: argparse.Namespace) -> str | None:
    """The two forms of `report`: DIR, or --prometheus URL --out FILE."""
    if ns.prometheus:
        if ns.dir:
            return "give either DIR or --prometheus URL, not both"
        if not ns.out:
            return "--prometheus needs --out FILE (the PNG to write)"
        from editstream.topics.offsets import parse_duration_ms

        if not parse_duration_ms(ns.lookback):
            return f"--lookback {ns.lookback!r} is not a duration (30m, 3h, 1d)"
        return None
    if ns.out:
        return "--out goes with --prometheus (a DIR report writes its plots into DIR)"
    if not ns.dir:
        return "give an export directory DIR, or --prometheus URL --out FILE"
    return None


# --------------------------------------------------------------------------- flags


def _args_acls(p: argparse.ArgumentParser) -> None:
    p.add_argument("--principal-gateway", required=True, metavar="P",
                   help="the gateway's principal (User:NAME, or NAME): writes edit-events")
    p.add_argument("--principal-worker", required=True, metavar="P",
                   help="the worker's principal: its topics, groups and transactional ids "
                        "(replay and reset-offsets run as it)")
    p.add_argument("--principal-reader", metavar="P",
                   help="optional read-only principal: the sink topics (export) and the "
                        "group <app_id>-reader (an outside consumer)")
    p.add_argument("--command", default="kafka-acls.sh",
                   help="the kafka-acls command to print (default: kafka-acls.sh)")
    p.add_argument("--command-config", default="admin.properties", metavar="FILE",
                   help="the admin's client properties passed to it")
    settings_mod.add_arguments(p, only=("broker", "app_id", "topic_prefix"))


def _args_worker(p: argparse.ArgumentParser) -> None:
    settings_mod.add_arguments(p)


def _args_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sample", default=str(Path(__file__).resolve().parent.parent / "data" /
                                           "sample-traces.jsonl"))
    p.add_argument("--out", default="demo-output")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds to wait for every example to be accounted for "
                        "(default: 170; 1800 with --models local)")
    p.add_argument("--models", choices=("simulator", "local"), default="simulator",
                   help="simulator: the model simulator (fast, offline); local: a real "
                        "model, SmolLM2-135M on llama.cpp's llama-server, as student, teacher "
                        "and judge (`make local-model` builds it; slow on CPU)")
    p.add_argument("--max-predictions", type=int, default=None,
                   help="feed only the first sessions of the sample, up to this many "
                        "predictions (default: all; 10 with --models local)")
    p.add_argument("--broker-kind", choices=("tansu", "kafka"), default="tansu",
                   help="the broker the demo starts when --broker is not set: tansu, "
                        "embedded (default, needs nothing); kafka, Apache Kafka (needs Java "
                        "17+; librdkafka clients such as kcat can read its topics)")
    p.add_argument("--keep-broker", action="store_true",
                   help="keep the started broker up after the summary, until Ctrl-C, to "
                        "read the demo's topics (e.g. with kcat)")
    settings_mod.add_arguments(p)


def _args_flywheel(p: argparse.ArgumentParser) -> None:
    from editstream.flywheel import add_arguments

    add_arguments(p)
    settings_mod.add_arguments(p)


def _args_broker(p: argparse.ArgumentParser) -> None:
    from editstream.infra.broker import add_arguments

    add_arguments(p)


def _args_simulate(p: argparse.ArgumentParser) -> None:
    from editstream.simulator.server import add_arguments

    add_arguments(p)


def _args_generate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--sessions", type=int, default=20)
    p.add_argument("--predictions-per-session", type=int, default=6)
    p.add_argument("--from-git", action="append", default=None, metavar="PATH",
                   help="a local git repository whose real commits become the sessions "
                        "(default: this repository's own pinned history, the bundled "
                        "sample's source); repeat it for a corpus of several repositories, "
                        "each its own train/eval split unit")
    p.add_argument("--from-pypi", nargs="+", default=None, metavar="NAME",
                   help="PyPI packages whose last --releases sdists become a git history "
                        "each (one commit per release, cached under "
                        "~/.cache/editstream/release-history)")
    p.add_argument("--release-corpus", action="store_true",
                   help="--from-pypi with the default list of well-known pure-Python "
                        "packages (what `make corpus` runs)")
    p.add_argument("--releases", type=int, default=12, metavar="K",
                   help="with --from-pypi/--release-corpus: the last K releases of each")
    p.add_argument("--revs", default=None, metavar="A..B",
                   help="the commits to use, as git rev-list takes them (default: HEAD's "
                        "history); merge commits are skipped")
    p.add_argument("--paths", nargs="+", default=None, metavar="GLOB",
                   help="only files matching one of these globs (e.g. '*.py' 'src/*')")
    p.add_argument("--splice-stdlib", action="store_true",
                   help="load tests only: type lines spliced in from other standard "
                        "library files instead of real commits (no intent to learn)")
    p.add_argument("--source-dir", default=None,
                   help="with --splice-stdlib: the .py files to splice (default: the "
                        "Python standard library)")
    p.add_argument("--ground-truth", default=None,
                   help="side file: request id -> settled region, for the simulator's teacher "
                        "(default: OUT.truth.jsonl)")


def _args_produce(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="JSONL file, or - for stdin")
    p.add_argument("--flush", action="store_true",
                   help="end with a control flush: settle everything (finite input)")
    settings_mod.add_arguments(p)


# The modules below add the settings flags they use themselves (gateway, reset-offsets: a
# subset; replay, export: all of them): adding them here again would register them twice.


def _args_gateway(p: argparse.ArgumentParser) -> None:
    from editstream.gateway.server import add_arguments

    add_arguments(p)


def _args_replay(p: argparse.ArgumentParser) -> None:
    from editstream.replay import add_arguments

    add_arguments(p)


def _args_reset_offsets(p: argparse.ArgumentParser) -> None:
    from editstream.topics.offsets import add_arguments

    add_arguments(p)


def _args_export(p: argparse.ArgumentParser) -> None:
    from editstream.dataset.export import add_arguments

    add_arguments(p)


def _args_report(p: argparse.ArgumentParser) -> None:
    from editstream.dataset.report import add_arguments

    add_arguments(p)
    group = p.add_argument_group("dashboard from Prometheus (instead of DIR)")
    # tolerate report.add_arguments growing these flags itself
    with contextlib.suppress(argparse.ArgumentError):
        group.add_argument("--prometheus", default=None, metavar="URL",
                           help="render the Grafana dashboard's data-quality panels from the "
                                "Prometheus server at URL (e.g. http://localhost:9090)")
    with contextlib.suppress(argparse.ArgumentError):
        group.add_argument("--out", default=None, metavar="FILE",
                           help="the PNG to write (with --prometheus)")
    with contextlib.suppress(argparse.ArgumentError):
        group.add_argument("--lookback", default="3h", metavar="DURATION",
                           help="how far back to look for scored samples (default: 3h)")


def _args_scorecard(p: argparse.ArgumentParser) -> None:
    from editstream.evaluation.scorecard import add_arguments

    add_arguments(p)


def _args_local_model(p: argparse.ArgumentParser) -> None:
    from editstream.infra.local_model import add_serve_arguments

    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    add_serve_arguments(sub.add_parser(
        "serve", help="run llama-server in the foreground (SmolLM2-135M by default)",
        description="run llama.cpp's llama-server in the foreground: parallel slots, "
                    "continuous batching, `n` up to the slot count (Ctrl-C stops it)"))


def _args_train(p: argparse.ArgumentParser) -> None:
    from editstream.train.run import add_arguments

    add_arguments(p)


def _cmd_train(ns: argparse.Namespace) -> int:
    from editstream.train.run import main as main_train

    return main_train(ns)


# --------------------------------------------------------------------------- parser


@dataclass(frozen=True)
class Command:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    check: Callable[[argparse.Namespace], str | None] | None = None


COMMANDS: dict[str, Command] = {
    "worker": Command("run the streaming pipeline", _args_worker, _cmd_worker),
    "demo": Command("run the whole pipeline locally on the bundled sample", _args_demo,
                    _cmd_demo),
    "broker": Command("run a local Kafka-compatible broker", _args_broker, _cmd_broker),
    "simulate": Command(
        "run the local model SIMULATOR (speaks OpenAI completions/chat and Anthropic "
        "Messages; its answers are synthetic, derived from the prompt — not a model)",
        _args_simulate, _cmd_simulate),
    "local-model": Command("serve a real model with llama.cpp's llama-server (`make "
                           "local-model` builds it)", _args_local_model, _cmd_local_model),
    "generate": Command("write seeded edit traces (JSONL) from real commits", _args_generate,
                        _cmd_generate),
    "produce": Command("send a JSONL file of events to edit-events", _args_produce,
                       _cmd_produce),
    "gateway": Command("serve the HTTP ingestion gateway (POST /v1/events → edit-events)",
                       _args_gateway, _cmd_gateway),
    "replay": Command("re-run a time or offset range of edit-events or settled-examples in "
                      "its own topics and consumer group", _args_replay, _cmd_replay),
    "reset-offsets": Command("move a consumer group's committed offsets to WHEN (dry run "
                             "unless --execute; refused while the group is active)",
                             _args_reset_offsets, _cmd_reset_offsets),
    "export": Command("write training records to dataset files (resumable, deduplicated)",
                      _args_export, _cmd_export),
    "report": Command("summarise and plot an export DIR, or render the dashboard's "
                      "data-quality panels from Prometheus", _args_report, _cmd_report,
                      _check_report),
    "scorecard": Command("score each model on eval records (eval-results, or --results "
                         "FILE) and judge a candidate against a baseline: exit 0 ship, 1 do "
                         "not ship, 2 too little data", _args_scorecard, _cmd_scorecard),
    "acls": Command("print the kafka-acls commands that give the gateway, the worker and "
                    "a reader exactly what they use (names from schemas/topics.py)",
                    _args_acls, _cmd_acls),
    "train": Command("fine-tune a student on an export DIR with TRL: sft, dpo or kto, LoRA "
                     "or full; writes the adapter, merged weights and a GGUF (`train` extra)",
                     _args_train, _cmd_train),
    "flywheel": Command("the whole loop: corpus of real history → pipeline → export → train "
                        "→ serve base and fine-tune → shadow eval → scorecard verdict",
                        _args_flywheel, _cmd_flywheel),
}

# Subcommands whose Kafka clients are checked first (login, TLS, and Describe on the topics
# named here) so that a refusal is one line.
KAFKA_TOOLS = {"produce": ("edit-events",), "replay": (), "reset-offsets": (),
               "export": ("training-records",)}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The `editstream` parser. With `only`, just that subcommand gets its flags (the others
    stay listed, with their help line): importing every module would slow every command."""
    parser = argparse.ArgumentParser(prog="editstream", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.help)
        if only is None or only == name:
            cmd.add_arguments(p)
        p.set_defaults(func=cmd.run, check=cmd.check, subparser=p)
    return parser


def _command_in(argv: Sequence[str]) -> str | None:
    """The subcommand `argv` names: the first word (the top level has no other options)."""
    word = next((a for a in argv if not a.startswith("-")), None)
    return word if word in COMMANDS else None


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    ns = build_parser(_command_in(args)).parse_args(args)
    if ns.check is not None and (problem := ns.check(ns)):
        ns.subparser.error(problem)  # usage + message, exit 2 (as argparse's own errors)
    try:
        if ns.command in KAFKA_TOOLS and (refused := _refused(ns)) is not None:
            print(f"editstream {ns.command}: {refused}", file=sys.stderr)
            return 2
        return int(ns.func(ns) or 0)
    except Exception as exc:
        from agents.kafka_security import describe_failure

        # the cluster refused us mid-way (an ACL): one line, no traceback
        if (refused := describe_failure(exc)) is not None:
            print(f"editstream {ns.command}: {refused}", file=sys.stderr)
            return 2
        if isinstance(exc, ValueError):  # configuration errors: what is wrong, no traceback
            print(f"editstream: {exc}", file=sys.stderr)
            return 2
        raise


def _refused(ns: argparse.Namespace) -> str | None:
    """The cluster's refusal of this tool's login, TLS handshake or topics as one line
    (aiokafka's own bootstrap only says "unable to bootstrap"); None when it lets us in, no
    broker is set or it does not answer (the tool's own checks and messages come first)."""
    from agents.kafka_security import KafkaAccessError, check_access

    s = settings_mod.from_args(ns)
    if not s.broker:
        return None  # the tool's own message says to set it
    try:
        asyncio.run(check_access(s, topics=[s.topic(t) for t in KAFKA_TOOLS[ns.command]]))
    except KafkaAccessError as exc:
        return None if exc.kind == "unreachable" else str(exc)
    return None


if __name__ == "__main__":
    raise SystemExit(main())
