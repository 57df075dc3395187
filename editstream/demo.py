"""`editstream demo` / `make demo`: the whole pipeline on one machine, start to finish.

Starts what is not configured (the embedded Tansu broker, or Apache Kafka with
`--broker-kind kafka`; the model simulator), runs a worker, feeds the bundled sample with a
final flush, shows how many predictions are accounted for (training record, rejection or dead
letter) until all are, exports the dataset to `<out>/dataset/` (the one directory a newcomer
reads: dataset card, train/eval splits, rejections) and prints a summary.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import orjson

from editstream.infra.process import spawn_worker
from editstream.topics.kafka_io import ensure_topics, produce_events, read_to_end
from streams.ingest import Accepted, Discarded, decode_event
from streams.settings import Settings

# `--models local`: settings fit for SmolLM2-135M on llama-server (4 slots, `n` honoured: the
# 4 samples of an example are one request) on 2 CPU cores, applied
# where neither a flag nor an EDITSTREAM_* variable says otherwise. A 135M model is far from
# any settled region (median distance ~0.8): the ideal band is widened so the teacher and the
# judge run on real output too, instead of every example ending in `noise`.
LOCAL_DEFAULTS: dict[str, Any] = {
    "samples": 4,
    "sample_max_tokens": 64,
    "student_timeout_s": 120.0,
    "teacher_timeout_s": 300.0,
    "band_high": 0.95,
    "repair_attempts": 1,
    "student_max_in_flight": 8,
    "teacher_max_in_flight": 8,
}
LOCAL_MAX_PREDICTIONS = 10  # the bundled sample's first sessions, up to this many predictions
LOCAL_TIMEOUT_S = 1800.0

DEMO_CANDIDATE = "student"  # the run's own student, as a candidate of the demo's scorecard
VERDICTS = {0: "ship", 1: "do not ship", 2: "too little data"}

OUTPUT_TOPICS = ("training-records", "rejected-examples", "edit-events-dlq", "pipeline-dlq",
                 "settled-examples", "scored-examples", "repair")


def expected_predictions(lines: list[bytes], settings: Settings) -> set[str]:
    """Request ids of the predictions ingest will forward (privacy and schema applied)."""
    out = set()
    for raw in lines:
        v = decode_event(raw, settings)
        if isinstance(v, Accepted) and v.event["type"] == "prediction":
            out.add(v.event["request_id"])
    return out


def ingest_discards(lines: list[bytes], settings: Settings) -> Counter[str]:
    """Events ingest discards for privacy, by reason (the worker's own verdict)."""
    return Counter(v.reason for raw in lines
                   if isinstance(v := decode_event(raw, settings), Discarded))


def _request_id_of_dead_letter(rec: dict[str, Any]) -> str | None:
    try:
        original = orjson.loads(base64.b64decode(rec["original_b64"]))
    except (orjson.JSONDecodeError, ValueError, KeyError):
        return None
    if isinstance(original, dict) and isinstance(original.get("request_id"), str):
        rid: str = original["request_id"]
        # an orphan `settled` or a late `outcome` does not account for its prediction
        return rid if original.get("type") in ("prediction", None) else None
    if isinstance(original, dict) and isinstance(original.get("example"), dict):
        return str(original["example"].get("request_id"))
    return None


async def collect(settings: Settings) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for name in OUTPUT_TOPICS:
        out[name] = [orjson.loads(r.value) async for r in
                     read_to_end(settings, settings.topic(name))]
    return out


def accounted(outputs: dict[str, list[dict[str, Any]]]) -> set[str]:
    ids = {r["request_id"] for r in outputs["training-records"]}
    ids |= {r["request_id"] for r in outputs["rejected-examples"]}
    for name in ("edit-events-dlq", "pipeline-dlq"):
        ids |= {rid for r in outputs[name] if (rid := _request_id_of_dead_letter(r))}
    return ids


def settled_examples(outputs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Every settled example by request id: those on `settled-examples` and those the settle
    stage rejected (their rejection carries the example)."""
    out = {r["request_id"]: r for r in outputs.get("settled-examples", [])}
    for r in outputs.get("rejected-examples", []):
        if r["stage"] == "settle" and r.get("example"):
            out[r["request_id"]] = r["example"]
    return out


async def export_dataset(settings: Settings, out: Path) -> dict[str, Any]:
    """`editstream export --rejected` of this run, with the unfiltered eval set: the
    directory a training team gets (dataset card, splits, near-duplicates handled). Its
    manifest is returned for the summary."""
    from editstream.dataset.export import export

    result = await export(settings.replace(eval_unfiltered=True), out, include_rejected=True,
                          restart=True, progress=False)
    return result.manifest or {}


class Progress:
    """Accounted / expected predictions while the demo waits: one line rewritten in place on
    a terminal, otherwise a line every `every_s` seconds (and the last one), so a log or CI
    shows that the pipeline moves without filling up."""

    def __init__(self, expected: int, stream: TextIO | None = None, every_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.expected, self.every_s, self.clock = expected, every_s, clock
        self.stream = stream if stream is not None else sys.stdout
        self.tty = self.stream.isatty()
        self.t0 = clock()
        self.last_line = -every_s  # the first update prints
        self.done = -1
        self.closed = False
        self.width = 0  # of the last in-place line, so a shorter one blanks its tail

    def update(self, done: int, waiting: str = "") -> None:
        """`waiting`: what the pipeline is waiting for, while nothing is accounted for yet
        (`waiting_for`), so a first minute of "0/98" says why."""
        now = self.clock() - self.t0
        line = f"  accounted for {done}/{self.expected} predictions ({now:.0f} s)"
        if waiting:
            line += f": {waiting}"
        if self.tty:
            line = line.ljust(self.width)
            self.width = len(line)
        if self.tty:
            self.stream.write("\r" + line)
            self.stream.flush()
        elif now - self.last_line >= self.every_s or done >= self.expected > self.done:
            self.stream.write(line + "\n")
            self.stream.flush()
            self.last_line = now
        self.done = done

    def close(self) -> None:
        """End the in-place line (once) before anything else is printed."""
        if self.tty and not self.closed and self.done >= 0:
            self.stream.write("\n")
            self.stream.flush()
        self.closed = True


def waiting_for(metrics_text: str, expected: int) -> str:
    """What the demo waits for while no prediction is accounted for, from the worker's
    /metrics: its runners' consumer groups joining (each join takes seconds on a fresh
    broker), then the quiet windows of the predictions still open."""
    from prometheus_client.parser import text_string_to_metric_families

    assigned: dict[str, float] = {}
    open_now = 0.0
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "editstream_assigned_partitions":
                assigned[sample.labels.get("runner", "")] = sample.value
            elif sample.name == "editstream_settle_open_predictions":
                open_now += sample.value
    joined = sum(assigned.get(runner, 0) > 0 for runner in ("settle", "stages"))
    if joined < 2:
        return f"worker joining its consumer groups ({joined}/2 assigned)"
    if open_now:
        return f"settling ({open_now:.0f} of {expected} predictions still open)"
    return "in the stages after settle"


async def worker_metrics(port: int) -> str:
    """The demo worker's /metrics text ("" until it serves them)."""
    import httpx

    try:
        async with httpx.AsyncClient(timeout=2.0) as client:
            return (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    except httpx.HTTPError:
        return ""


async def scorecard(settings: Settings, outputs: dict[str, list[dict[str, Any]]], out: Path,
                    deadline: float) -> None:
    """Wait for the eval stage's records of every settled example (its own consumer group,
    behind the training stages or ahead of them), keep them as `eval-results.jsonl`, and
    print the scorecard of every candidate against `served` (`scorecard.md`, `.json`, `.png`)
    and the verdicts against `noop` (`scorecard-vs-noop/`)."""
    from editstream.evaluation.scorecard import render_scorecard

    wanted = {r["request_id"] for r in outputs["settled-examples"]}
    raw: list[bytes] = []
    while True:
        raw = [r.value async for r in read_to_end(settings, settings.topic("eval-results"))]
        records = [orjson.loads(v) for v in raw]
        done = {r["request_id"] for r in records if r.get("candidate") == "noop"}
        if wanted <= done or time.monotonic() > deadline:
            break
        print(f"  eval records for {len(done & wanted)}/{len(wanted)} settled examples…",
              flush=True)
        await asyncio.sleep(2)
    (out / "eval-results.jsonl").write_bytes(b"".join(v + b"\n" for v in raw))
    if not records:
        print("scorecard: no eval records (see worker.log)")
        return
    missing = len(wanted - done)
    print(f"\nscorecard ({len(done & wanted)} settled examples"
          + (f", {missing} without eval records by the deadline" if missing else "") + "):")
    try:
        text, _ = render_scorecard(records, "served", None, settings, out)
        print(text)
        _, code = render_scorecard(records, "noop", None, settings, out / "scorecard-vs-noop",
                                   plot=False)
    except ValueError as exc:  # e.g. no served output in the sample
        print(f"scorecard: {exc}")
        return
    print(f"against noop: {VERDICTS.get(code, code)} (scorecard-vs-noop/scorecard.md); "
          f"files: {out / 'scorecard.md'}, {out / 'eval-results.jsonl'}")


def summary(lines: int, outputs: dict[str, list[dict[str, Any]]], expected: set[str],
            manifest: dict[str, Any], dataset: Path, seconds: float,
            discards: Counter[str] | None = None) -> str:
    reasons_settled = Counter(r["settle_reason"] for r in settled_examples(outputs).values())
    bands = Counter(r["band"] for r in outputs["scored-examples"])
    kinds = Counter(r["format"] for r in
                    {r["id"]: r for r in outputs["training-records"]}.values())
    repaired = {r["request_id"] for r in outputs["training-records"]
                if r["provenance"]["repair_attempts"] > 0}
    reasons = Counter(f"{r['stage']}:{r['reason']}" for r in outputs["rejected-examples"])
    dlq = Counter(r["reason"] for n in ("edit-events-dlq", "pipeline-dlq") for r in outputs[n])
    fmt = lambda c: ", ".join(f"{k}={v}" for k, v in sorted(c.items())) or "-"  # noqa: E731
    c, nd = manifest.get("counts", {}), manifest.get("near_duplicates", {})
    split = lambda kind: fmt(c.get(kind) or {})  # noqa: E731
    return "\n".join([
        f"editstream demo finished in {seconds:.1f} s",
        f"  events in:        {lines}",
        f"  discarded:        {fmt(discards or Counter())} (privacy, at ingest; their "
        "predictions' later events follow them)",
        f"  predictions:      {len(expected)} forwarded past ingest, "
        f"{len(accounted(outputs) & expected)} accounted for",
        f"  settled by reason: {fmt(reasons_settled)}",
        f"  bands:            {fmt(bands)}",
        f"  repair requests:  {len(outputs['repair'])}, repaired examples: {len(repaired)}",
        f"  records streamed: {fmt(kinds)}",
        f"  rejected:         {fmt(reasons)}",
        f"  dead letters:     {fmt(dlq)}",
        f"  dataset:          {dataset}/ (README.md is its card; "
        f"load_dataset({str(dataset)!r}, 'sft'))",
        f"    sft:            {split('sft')}, eval_unfiltered={c.get('eval_unfiltered')}",
        f"    preference:     {split('preference')}",
        f"    rejected:       {c.get('rejected')}",
        f"    near-duplicates: {nd.get('groups')} groups, "
        f"{nd.get('dropped_examples')} examples dropped",
    ])


def local_settings(settings: Settings, explicit: set[str]) -> Settings:
    """`settings` with LOCAL_DEFAULTS for the fields not in `explicit` (set by flag or env)."""
    changes = {k: v for k, v in LOCAL_DEFAULTS.items() if k not in explicit}
    return settings.replace(**changes)


def first_predictions(lines: list[bytes], limit: int, settings: Settings) -> list[bytes]:
    """`lines` cut to their first `limit` predictions that ingest forwards: later predictions
    (with their `settled`/`outcome` events) and sessions left without one are dropped; the
    edits of the kept sessions stay, since they settle the kept predictions."""
    kept: set[str] = set()
    sessions: set[str] = set()
    out: list[tuple[bytes, str | None, str]] = []
    for raw in lines:
        v = decode_event(raw, settings)
        if not isinstance(v, Accepted):
            out.append((raw, None, ""))  # ingest's business (dead letters, discards)
            continue
        ev = v.event
        if ev["type"] == "prediction":
            if len(kept) >= limit:
                continue
            kept.add(ev["request_id"])
            sessions.add(ev["session_id"])
        elif ev["type"] in ("settled", "outcome") and ev["request_id"] not in kept:
            continue
        out.append((raw, ev["session_id"], ev["type"]))
    return [raw for raw, sid, _ in out if sid is None or sid in sessions]


def run_demo(settings: Settings, *, sample: Path, out: Path, timeout_s: float = 170,
             models: str = "simulator", max_predictions: int = 0,
             broker_kind: str = "tansu", keep_broker: bool = False) -> int:
    def terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # as Ctrl-C: the started broker, simulator and worker stop

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        return asyncio.run(demo(settings, sample, out, timeout_s, models, max_predictions,
                                broker_kind, keep_broker))
    finally:
        signal.signal(signal.SIGTERM, previous)


def kcat_line(bootstrap: str, topic: str = "training-records") -> str:
    """The command that reads the demo's first records with librdkafka's kcat."""
    return f"kcat -b {bootstrap} -C -t {topic} -c 3 -e"


async def _start_broker(kind: str, partitions: int, out: Path) -> Any:
    """The demo's own broker: embedded Tansu, or Apache Kafka (which librdkafka clients such
    as kcat can read; Tansu fails their ApiVersion request). Raises BrokerError with a
    message fit for the user (Java missing, Maven failing, ...)."""
    from editstream.infra.broker import start_broker

    if kind == "kafka":
        print("starting Apache Kafka (Java 17+; the first run fetches its jars with Maven)…",
              flush=True)
        return await asyncio.to_thread(start_broker, "kafka", partitions=partitions,
                                       log_file=out.resolve() / "kafka.log")
    return await asyncio.to_thread(start_broker, "tansu", partitions=partitions)


async def _hold(bootstrap: str) -> None:
    """Keep the demo's broker up until Ctrl-C, for reading its topics."""
    print(f"broker {bootstrap} stays up until Ctrl-C; read the records with\n"
          f"  {kcat_line(bootstrap)}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def demo(settings: Settings, sample: Path, out: Path, timeout_s: float,
               models: str = "simulator", max_predictions: int = 0,
               broker_kind: str = "tansu", keep_broker: bool = False, *,
               own_namespace: bool = True) -> int:
    """The demo's run (see the module docstring). On a configured broker the run's topics
    get a fresh prefix, unless `own_namespace` is False: then `settings` name them (the
    flywheel reads them again after the run)."""
    from editstream.infra.broker import BrokerError

    t0 = time.monotonic()
    lines = [ln for ln in sample.read_bytes().splitlines() if ln.strip()]
    if max_predictions:
        lines = first_predictions(lines, max_predictions, settings)
    out.mkdir(parents=True, exist_ok=True)
    async with contextlib.AsyncExitStack() as stack:
        started_broker = False
        if not settings.broker:
            try:
                broker = await _start_broker(broker_kind, settings.partitions, out)
            except BrokerError as exc:
                print(f"editstream demo: cannot start the {broker_kind} broker: {exc}",
                      file=sys.stderr)
                if broker_kind == "kafka":
                    print("  (install Java 17+, or run `make demo` for the embedded Tansu "
                          "broker, which needs nothing)", file=sys.stderr)
                return 1
            stack.callback(broker.stop)
            settings = settings.replace(broker=broker.bootstrap)
            started_broker = True
            name = "Apache Kafka" if broker_kind == "kafka" else "embedded Tansu broker"
            print(f"started {name} on {broker.bootstrap}")
        elif own_namespace:  # a shared broker: keep this run's topics apart
            run = time.strftime("%Y%m%d%H%M%S")
            settings = settings.replace(topic_prefix=f"{settings.topic_prefix}demo-{run}-",
                                        app_id=f"{settings.app_id}-demo-{run}")
        if models == "local":
            from editstream.infra.local_model import start_local_model

            print("starting llama.cpp's llama-server with SmolLM2-135M-Instruct…")
            llm = await asyncio.to_thread(start_local_model, out / "local-model.log")
            stack.callback(llm.stop)
            settings = settings.replace(
                student_url=settings.student_url or llm.url,
                teacher_url=settings.teacher_url or llm.url,
                judge_url=settings.judge_url or llm.url)
            print(f"started local model {llm.model} on {llm.url}, {llm.slots} slots "
                  "(student, teacher, judge)")
        if not settings.student_url or not settings.teacher_url:
            from editstream.sessions.generate import ground_truth, write_jsonl
            from editstream.simulator.server import SimulatorConfig, start_simulator

            # The simulator's teacher answers from the sample's answer key (what the users
            # left, settled offline by the pipeline's rules), never from the prompt.
            out.mkdir(parents=True, exist_ok=True)
            truth = out / "ground-truth.jsonl"
            write_jsonl(ground_truth(orjson.loads(ln) for ln in lines), truth)
            sim = await start_simulator(SimulatorConfig(seed=settings.seed,
                                                        ground_truth=str(truth)))
            stack.push_async_callback(sim.stop)
            settings = settings.replace(student_url=settings.student_url or sim.url,
                                        teacher_url=settings.teacher_url or sim.url)
            print(f"started model simulator on {sim.url}")
        if not settings.candidates and not settings.candidates_json:
            # the scorecard at the end: the run's own student, greedy, against noop and served
            settings = settings.replace(candidates=(f"{DEMO_CANDIDATE}={settings.student_url}",),
                                        candidate_models=(
                                            f"{DEMO_CANDIDATE}={settings.student_model}",))
        await ensure_topics(settings)
        if not settings.metrics_port:  # the progress line reads the worker's /metrics
            from editstream.infra.process import free_port

            settings = settings.replace(metrics_port=free_port())
        (out / "worker.log").unlink(missing_ok=True)  # this run's log only
        worker = spawn_worker(settings, out / "worker.log")
        stack.callback(worker.stop, 20)
        expected = expected_predictions(lines, settings)
        await produce_events(settings, lines, flush=True)
        print(f"produced {len(lines)} events ({len(expected)} predictions past ingest); "
              "waiting for the pipeline…", flush=True)
        deadline = time.monotonic() + timeout_s
        outputs: dict[str, list[dict[str, Any]]] = {}
        progress = Progress(len(expected))
        try:
            while time.monotonic() < deadline:
                if not worker.is_running():
                    progress.close()
                    print(f"worker exited with {worker.returncode}; see {out / 'worker.log'}")
                    return 1
                outputs = await collect(settings)
                done = len(accounted(outputs) & expected)
                waiting = ""
                if not done and (text := await worker_metrics(settings.metrics_port)):
                    waiting = waiting_for(text, len(expected))
                progress.update(done, waiting)
                if done == len(expected):
                    break
                await asyncio.sleep(2)
            else:
                progress.close()
                print(f"timed out: {len(expected - accounted(outputs))} predictions "
                      "unaccounted")
                return 1
        finally:
            progress.close()
        outputs = await collect(settings)  # settle stragglers such as preference records
        dataset = out / "dataset"
        manifest = await export_dataset(settings, dataset)
        print(summary(len(lines), outputs, expected, manifest, dataset,
                      time.monotonic() - t0, ingest_discards(lines, settings)))
        if settings.eval_all:
            await scorecard(settings, outputs, out, max(deadline, time.monotonic() + 120))
        if keep_broker and started_broker:
            worker.stop(20)
            await _hold(settings.broker)
    return 0
