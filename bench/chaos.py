"""Chaos at production shape: many workers, many faults that overlap, one run, nothing lost.

    python -m bench.chaos            # or `make chaos`; --help lists the knobs

What runs: Apache Kafka with 3 KRaft nodes (combined controller + broker; replication factor
3, `min.insync.replicas` 2), 8 partitions, 3 `editstream worker` processes (exactly_once),
the model simulator with latency and a fault rate, and `editstream gateway`. The events of
`editstream generate` (>= 2,000 predictions) are fed at a steady rate for `--feed-s`: the
sessions of half the partitions through the gateway (HTTP), the other half straight to
Kafka, both at once. Meanwhile a seeded schedule injects: `kill -9` of random workers
(restarted after a random delay), `kill -9` of the broker leading a partition of
`edit-events` (restarted), a model outage (503s), a worker paused with SIGSTOP past its
session timeout then resumed (a zombie the group and the transactions must fence), and a
window of the student at 10x latency, during which worker RSS and in-flight examples are
sampled against their bounds.

Then a clean run of the same events (same cluster, its own topics and groups, a simulator
with the same seed and no faults, the same feed paths) and the comparison: settled
examples, training records (id and bytes) and rejections equal; repeats only as the same id
with the same bytes; every prediction accounted for. Exit status 1 on any difference, loss
or bound exceeded.

Why the runs can be compared: the answers of the simulator are pure functions of the request
(and its seed), so a retried request gets the same answer; settling follows event time per
partition, and each partition has exactly one producer writing it in the generated order
(the gateway or the direct producer, never both), so a partition's events arrive in the same
order in both runs, however the two feeds interleave; idle ticks are off (`idle_tick_ms`
10 min) and a control flush ends the feed, as in the reliability tests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import murmur2

from editstream.demo import accounted, collect, expected_predictions
from editstream.infra.broker import free_port
from editstream.infra.cluster import Cluster, start_cluster
from editstream.infra.process import ManagedProcess, http_ok, left_behind, spawn_worker
from editstream.topics.kafka_io import ensure_topics, event_key, send_flush, start_producer
from editstream.topics.offsets import describe_group
from schemas.topics import STAGE_SOURCES, TOPICS, settle_group, stages_group
from streams.settings import Settings, to_env

TOKEN = "chaos-token-0123456789abcdef"


@dataclass(frozen=True)
class ChaosConfig:
    predictions: int = 2000  # at least this many predictions reach the pipeline
    seed: int = 17
    brokers: int = 3
    partitions: int = 8
    workers: int = 3
    feed_s: float = 300.0  # the feed's length; faults are scheduled inside it
    worker_kills: int = 10
    restart_delay_s: tuple[float, float] = (1.0, 8.0)
    broker_kills: int = 1
    broker_down_s: tuple[float, float] = (8.0, 15.0)
    outage_s: float = 20.0  # 0: no model outage
    outage_kills: int = 0  # extra worker kills -9 inside the outage window
    zombies: int = 1  # workers paused past their session timeout
    slow_s: float = 60.0  # 0: no slow window
    slow_factor: float = 10.0
    latency_ms: float = 40.0
    jitter_ms: float = 10.0
    fault_rate: float = 0.03  # of model requests: 500s (2/3) and 429s (1/3)
    session_timeout_s: float = 10.0
    max_examples_in_flight: int = 16
    rss_limit_mb: float = 1024.0  # the bound a worker's RSS must stay under (the run's)
    drain_s: float = 900.0  # how long a run may take to account for every prediction
    samples: int = 4
    out_dir: str = ""

    def sessions(self) -> int:
        # sessions of real history give ~4.4 predictions each (of 6 asked), ~83 % of them
        # pass ingest (privacy, consent): a first guess, `generate` adds sessions if short
        return math.ceil(self.predictions * 1.3 / 4.4)


# --------------------------------------------------------------------------- processes


class WorkerProc:
    """One `editstream worker` slot: restarted after every kill, its peak RSS kept."""

    def __init__(self, slot: int, settings: Settings, log: Path) -> None:
        self.slot, self.settings, self.log = slot, settings, log
        self.proc: ManagedProcess | None = None
        self.stopped = False  # SIGSTOPped
        self.down = False  # killed on purpose, waiting for its restart
        self.peak_rss_kb = 0
        self.starts = 0
        self.exits: list[int | None] = []  # exit codes of exits nobody asked for

    def start(self) -> None:
        with self.log.open("ab") as fh:
            fh.write(f"\n=== start {self.starts} at {time.time():.1f}\n".encode())
        self.proc = spawn_worker(self.settings, self.log)
        self.starts += 1

    def running(self) -> bool:
        return self.proc is not None and self.proc.is_running()

    def status(self) -> dict[str, int]:
        """VmRSS and VmHWM (kB) of the live process; {} once it is gone."""
        if not self.running():
            return {}
        assert self.proc is not None
        out = {}
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith(("VmRSS:", "VmHWM:")):
                    out[line[:5]] = int(line.split()[1])
        self.peak_rss_kb = max(self.peak_rss_kb, out.get("VmHWM", 0))
        return out

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.running():
            self.proc.process.send_signal(sig)
            self.stopped = sig == signal.SIGSTOP

    def _end(self, how: Callable[[ManagedProcess], None]) -> None:
        """`how` (kill or stop) once its peak RSS is read and a paused process resumed
        (a SIGSTOPped process cannot act on SIGTERM)."""
        self.status()  # its peak, before it is gone
        if self.proc is not None and self.running():
            if self.stopped:
                self.signal(signal.SIGCONT)
            how(self.proc)

    def kill(self) -> None:
        self._end(ManagedProcess.kill)

    def stop(self) -> None:
        self._end(ManagedProcess.stop)


def service(args: list[str], log: Path, what: str, url: str,
            env: dict[str, str] | None = None) -> ManagedProcess:
    """An `editstream` command run for the whole run, ready once `url/healthz` answers."""
    proc = ManagedProcess.start(what, [sys.executable, "-m", "editstream.cli", *args],
                                log_file=log, env={**os.environ, **(env or {})})
    proc.wait_ready(http_ok(f"{url}/healthz"), timeout=60, interval=0.2)
    return proc


def simulator(cfg: ChaosConfig, truth: Path, log: Path, faults: bool
              ) -> tuple[str, ManagedProcess]:
    """The simulator: same seed and answer model in both runs; faults only in the chaos run."""
    port = free_port()
    args = ["simulate", "--port", str(port), "--seed", str(cfg.seed), "--ground-truth",
            str(truth)]
    if faults:
        args += ["--admin", "--latency-ms", str(cfg.latency_ms), "--jitter-ms",
                 str(cfg.jitter_ms), "--error-rate", f"{cfg.fault_rate * 2 / 3:.4f}",
                 "--rate-limit-rate", f"{cfg.fault_rate / 3:.4f}", "--retry-after-s", "0.5"]
    url = f"http://127.0.0.1:{port}"
    return url, service(args, log, "simulator", url)


def gateway(settings: Settings, log: Path) -> tuple[str, ManagedProcess]:
    port = free_port()
    env = {**to_env(settings), "EDITSTREAM_GATEWAY_TOKENS": f"chaos:{TOKEN}",
           "EDITSTREAM_GATEWAY_PORT": str(port), "EDITSTREAM_GATEWAY_HOST": "127.0.0.1",
           # a broker restart must not turn into 503s and retried (duplicated) batches
           "EDITSTREAM_GATEWAY_SEND_TIMEOUT_S": "120", "EDITSTREAM_GATEWAY_RATE": "100000",
           "EDITSTREAM_GATEWAY_BURST": "200000"}
    url = f"http://127.0.0.1:{port}"
    return url, service(["gateway"], log, "gateway", url, env)


# --------------------------------------------------------------------------- the feed


def partition_of(raw: bytes, partitions: int) -> int:
    """The partition the default (murmur2) partitioner gives the event's key."""
    key = event_key(raw) or b""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


@dataclass
class FeedStats:
    gateway_events: int = 0
    direct_events: int = 0
    gateway_retries: int = 0  # batches sent again after a non-200 (could be written twice)
    direct_retries: int = 0


async def feed_gateway(url: str, lines: list[bytes], seconds: float, stats: FeedStats) -> None:
    """POST the events in order at a steady rate, a batch at a time, each acknowledged
    before the next (so the partition order is the generated order)."""
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/x-ndjson"}
    async with httpx.AsyncClient(base_url=url, timeout=180) as http:
        async for chunk in paced(lines, seconds):
            body = b"\n".join(chunk)
            while True:
                try:
                    resp = await http.post("/v1/events", content=body, headers=headers)
                    if resp.status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                stats.gateway_retries += 1
                await asyncio.sleep(1)
            stats.gateway_events += len(chunk)


async def feed_direct(settings: Settings, lines: list[bytes], seconds: float,
                      stats: FeedStats) -> None:
    """Produce the events in order at a steady rate (idempotent, acks=all)."""
    topic = settings.topic("edit-events")
    prod = await start_producer(settings)
    try:
        async for chunk in paced(lines, seconds):
            futures = [await prod.send(topic, raw, key=event_key(raw)) for raw in chunk]
            for fut in futures:
                await fut  # the idempotent producer retries through a leader change itself
            stats.direct_events += len(chunk)
    finally:
        await prod.stop()


async def paced(lines: list[bytes], seconds: float) -> Any:
    """Chunks of `lines` such that, at time t, about len * t / seconds have been handed out."""
    t0 = time.monotonic()
    sent = 0
    while sent < len(lines):
        due = len(lines) if seconds <= 0 else min(
            len(lines), int(len(lines) * (time.monotonic() - t0) / seconds) + 1)
        if due > sent:
            chunk = lines[sent:min(due, sent + 1000)]
            sent += len(chunk)
            yield chunk
        else:
            await asyncio.sleep(0.1)


async def feed(settings: Settings, gw_url: str, lines: list[bytes], seconds: float,
               stats: FeedStats) -> None:
    """Half the partitions through the gateway, the other half direct; then a flush."""
    via_gw = [raw for raw in lines if partition_of(raw, settings.partitions) % 2 == 0]
    direct = [raw for raw in lines if partition_of(raw, settings.partitions) % 2 == 1]
    await asyncio.gather(feed_gateway(gw_url, via_gw, seconds, stats),
                         feed_direct(settings, direct, seconds, stats))
    prod = await start_producer(settings)
    try:
        await send_flush(prod, settings.topic("edit-events"), range(settings.partitions))
    finally:
        await prod.stop()


# --------------------------------------------------------------------------- monitoring


@dataclass
class Sample:
    t: float
    stages: tuple[str, int]  # the stage runner's group: state, members
    settle: tuple[str, int]
    running: int  # worker processes running and not paused
    stages_lag: int = -1
    settle_lag: int = -1
    retry_lag: int = -1


@dataclass
class Monitor:
    """Samples the groups, lag, RSS and in-flight examples while the run goes on."""

    settings: Settings
    workers: list[WorkerProc]
    t0: float
    samples: list[Sample] = field(default_factory=list)
    rss: list[tuple[float, int, int]] = field(default_factory=list)  # t, slot, kB
    in_flight: list[tuple[float, int, float, float]] = field(default_factory=list)
    errors: int = 0
    supervised: list[tuple[float, int, int | None]] = field(default_factory=list)

    def supervise(self, t: float) -> None:
        """Restart a worker that exited by itself, as systemd or Kubernetes would."""
        for w in self.workers:
            if w.proc is not None and not w.running() and not w.down:
                w.exits.append(w.proc.returncode)
                self.supervised.append((round(t, 1), w.slot, w.proc.returncode))
                print(f"[{t:6.1f}s] worker {w.slot} exited by itself "
                      f"({w.proc.returncode}); restarted", flush=True)
                w.start()

    async def run(self, stop: asyncio.Event) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.broker,
                                    request_timeout_ms=5000)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.broker,
                                    request_timeout_ms=5000)
        await admin.start()
        await consumer.start()
        try:
            while not stop.is_set():
                await self.once(admin, consumer)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
        finally:
            await consumer.stop()
            await admin.close()

    async def once(self, admin: AIOKafkaAdminClient, consumer: AIOKafkaConsumer) -> None:
        t = time.monotonic() - self.t0
        self.supervise(t)
        async with httpx.AsyncClient(timeout=1) as http:
            for w in self.workers:
                st = w.status()
                if "VmRSS" in st:
                    self.rss.append((t, w.slot, st["VmRSS"]))
                if w.running() and not w.stopped:
                    with contextlib.suppress(httpx.HTTPError, ValueError):
                        text = (await http.get(
                            f"http://127.0.0.1:{w.settings.metrics_port}/metrics")).text
                        now = gauge(text, "editstream_examples_in_flight")
                        peak = gauge(text, "editstream_examples_in_flight_peak")
                        if now is not None and peak is not None:
                            self.in_flight.append((t, w.slot, now, peak))
        try:
            stages = await asyncio.wait_for(
                describe_group(admin, stages_group(self.settings)), 5)
            settle = await asyncio.wait_for(
                describe_group(admin, settle_group(self.settings)), 5)
            s = Sample(t, (stages.state, len(stages.members)),
                       (settle.state, len(settle.members)),
                       sum(1 for w in self.workers if w.running() and not w.stopped))
            s.stages_lag, s.retry_lag = await self.lag(
                admin, consumer, stages_group(self.settings), STAGE_SOURCES)
            s.settle_lag, _ = await self.lag(admin, consumer, settle_group(self.settings),
                                             ("edit-events",))
            self.samples.append(s)
        except Exception:  # a broker down or a coordinator moving: skip this sample
            self.errors += 1

    async def lag(self, admin: AIOKafkaAdminClient, consumer: AIOKafkaConsumer, group: str,
                  topics: tuple[str, ...]) -> tuple[int, int]:
        """(total lag over `topics`, lag of model-retry) of `group`."""
        tps = [TopicPartition(self.settings.topic(t), p) for t in topics
               for p in range(self.settings.partitions)]
        committed = await asyncio.wait_for(admin.list_consumer_group_offsets(group), 5)
        ends = await asyncio.wait_for(consumer.end_offsets(tps), 5)
        lags = {tp: max(0, ends[tp] - (committed[tp].offset if tp in committed else 0))
                for tp in tps}
        retry = self.settings.topic("model-retry")
        return sum(lags.values()), sum(v for tp, v in lags.items() if tp.topic == retry)


def gauge(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


# --------------------------------------------------------------------------- faults


@dataclass
class Fault:
    kind: str  # worker_kill | broker_kill | model_outage | zombie | slow_student
    start: float  # seconds from the feed's start
    end: float = 0.0  # the fault's own end: restart, SIGCONT, window closed
    recovered_s: float | None = None  # from start until the system was whole again
    detail: dict[str, Any] = field(default_factory=dict)


class Chaos:
    """The seeded fault schedule, run against the live processes."""

    def __init__(self, cfg: ChaosConfig, cluster: Cluster, workers: list[WorkerProc],
                 sim_url: str, settings: Settings, t0: float) -> None:
        self.cfg, self.cluster, self.workers = cfg, cluster, workers
        self.sim_url, self.settings, self.t0 = sim_url, settings, t0
        self.rng = random.Random(cfg.seed)
        self.faults: list[Fault] = []
        self.log: list[str] = []

    def now(self) -> float:
        return time.monotonic() - self.t0

    def say(self, text: str) -> None:
        line = f"[{self.now():6.1f}s] {text}"
        self.log.append(line)
        print(line, flush=True)

    async def at(self, t: float) -> None:
        await asyncio.sleep(max(0.0, t - self.now()))

    def schedule(self) -> list[Callable[[], Any]]:
        """Each fault's coroutine, its time and parameters drawn from the seed."""
        cfg, rng, T = self.cfg, self.rng, self.cfg.feed_s
        jobs: list[Callable[[], Any]] = []
        for k in range(cfg.worker_kills):  # spread over the feed, jittered
            at = T * (0.05 + 0.9 * (k + rng.random()) / max(1, cfg.worker_kills))
            delay = rng.uniform(*cfg.restart_delay_s)
            jobs.append(lambda at=at, delay=delay: self.worker_kill(at, delay))
        for k in range(cfg.broker_kills):
            at = T * rng.uniform(0.2, 0.3) + k * 40
            down = rng.uniform(*cfg.broker_down_s)
            jobs.append(lambda at=at, down=down: self.broker_kill(at, down))
        outage_at = None
        if cfg.outage_s:
            at = outage_at = T * rng.uniform(0.38, 0.45)
            jobs.append(lambda at=at: self.outage(at))
        for k in range(cfg.zombies):
            at = T * rng.uniform(0.52, 0.58) + k * 30
            paused = cfg.session_timeout_s + rng.uniform(5, 10)
            jobs.append(lambda at=at, paused=paused: self.zombie(at, paused))
        if cfg.slow_s:
            at = T * rng.uniform(0.66, 0.7)
            jobs.append(lambda at=at: self.slow(at))
        # drawn last, so that the schedules without them stay what they were for a seed
        for _ in range(cfg.outage_kills if outage_at is not None else 0):
            at = outage_at + rng.uniform(0, cfg.outage_s)
            delay = rng.uniform(*cfg.restart_delay_s)
            jobs.append(lambda at=at, delay=delay: self.worker_kill(at, delay))
        return jobs

    def victim(self) -> WorkerProc | None:
        alive = [w for w in self.workers if w.running() and not w.stopped]
        return self.rng.choice(alive) if alive else None

    async def worker_kill(self, at: float, delay: float) -> None:
        await self.at(at)
        w = self.victim()
        if w is None:
            self.say("worker kill skipped: no worker running")
            return
        f = Fault("worker_kill", self.now(), detail={"worker": w.slot,
                                                      "restart_after_s": round(delay, 1)})
        self.faults.append(f)
        w.down = True
        w.kill()
        self.say(f"kill -9 worker {w.slot}; restart in {delay:.1f}s")
        await asyncio.sleep(delay)
        w.start()
        w.down = False
        f.end = self.now()

    async def broker_kill(self, at: float, down: float) -> None:
        await self.at(at)
        topic = self.settings.topic("edit-events")
        leaders = await self.cluster.leaders(topic)
        part = self.rng.randrange(self.cfg.partitions)
        node = leaders[part]
        f = Fault("broker_kill", self.now(), detail={"node": node, "leader_of": f"{topic}/{part}",
                                                      "leads": sorted(p for p, n in
                                                                      leaders.items()
                                                                      if n == node)})
        self.faults.append(f)
        self.cluster.kill(node)
        self.say(f"kill -9 broker {node} (leader of edit-events/{part}); restart in {down:.1f}s")
        await asyncio.sleep(down)
        await asyncio.to_thread(self.cluster.restart, node)
        f.end = self.now()
        self.say(f"broker {node} back")
        topics = [self.settings.topic(t) for t in TOPICS]
        while True:  # recovered: every partition has all its replicas in sync again
            with contextlib.suppress(Exception):
                if await self.cluster.under_replicated(topics) == 0:
                    break
            if self.now() - f.start > 600:
                return
            await asyncio.sleep(1)
        f.recovered_s = round(self.now() - f.start, 1)
        self.say(f"broker {node}: all replicas in sync ({f.recovered_s}s after the kill)")

    async def chaos_call(self, body: dict[str, Any]) -> None:
        async with httpx.AsyncClient(base_url=self.sim_url, timeout=10) as http:
            (await http.post("/admin/chaos", json=body)).raise_for_status()

    async def outage(self, at: float) -> None:
        await self.at(at)
        f = Fault("model_outage", self.now(), detail={"seconds": self.cfg.outage_s})
        self.faults.append(f)
        refused = await self.outage_refusals()
        await self.chaos_call({"outage_s": self.cfg.outage_s})
        self.say(f"model outage for {self.cfg.outage_s:.0f}s (every request 503)")
        await asyncio.sleep(self.cfg.outage_s)
        # An outage no request met tests nothing: a broker or worker fault can stall every
        # stage right then (seen in the short run). Keep it open until one has been refused.
        deadline = self.now() + 60
        while await self.outage_refusals() == refused and self.now() < deadline:
            await self.chaos_call({"outage_s": 2})
            await asyncio.sleep(2)
        f.end = self.now()
        f.detail["seconds"] = round(f.end - f.start, 1)
        if f.detail["seconds"] > self.cfg.outage_s + 1:
            self.say(f"model outage extended to {f.detail['seconds']:.0f}s: no request had "
                     "met it")

    async def outage_refusals(self) -> int:
        """Model requests the simulator has refused with its outage 503 so far."""
        return await self.model_faults("outage")

    async def model_faults(self, kind: str) -> int:
        """Model requests the simulator has met with fault `kind` so far."""
        async with httpx.AsyncClient(base_url=self.sim_url, timeout=10) as http:
            stats = (await http.get("/stats")).json()
        return int(stats["faults"].get(kind, 0))

    async def zombie(self, at: float, paused: float) -> None:
        await self.at(at)
        w = self.victim()
        if w is None:
            return
        f = Fault("zombie", self.now(), detail={"worker": w.slot, "paused_s": round(paused, 1)})
        self.faults.append(f)
        start_line = len(w.log.read_bytes())
        w.signal(signal.SIGSTOP)
        self.say(f"SIGSTOP worker {w.slot} for {paused:.1f}s "
                 f"(session timeout {self.cfg.session_timeout_s:.0f}s)")
        await asyncio.sleep(paused)
        w.signal(signal.SIGCONT)
        f.end = self.now()
        self.say(f"SIGCONT worker {w.slot}")
        await asyncio.sleep(20)
        tail = w.log.read_bytes()[start_line:].decode(errors="replace")
        f.detail["fenced_log_lines"] = sum(
            1 for line in tail.splitlines()
            if any(k in line for k in ("Fenced", "fenced", "CommitFailed", "UnknownMemberId",
                                       "IllegalGeneration", "RebalanceInProgress")))

    async def slow(self, at: float) -> None:
        await self.at(at)
        f = Fault("slow_student", self.now(), detail={"seconds": self.cfg.slow_s,
                                                       "factor": self.cfg.slow_factor})
        self.faults.append(f)
        slowed = await self.model_faults("slow")
        window = {"slow_factor": self.cfg.slow_factor, "slow_paths": ["/v1/completions"]}
        await self.chaos_call({"slow_s": self.cfg.slow_s, **window})
        self.say(f"student at {self.cfg.slow_factor:g}x latency for {self.cfg.slow_s:.0f}s")
        await asyncio.sleep(self.cfg.slow_s)
        # As the outage: a window no student request met tests nothing (other faults can
        # hold every stage right then). Keep it open until one has been slowed.
        deadline = self.now() + 60
        while await self.model_faults("slow") == slowed and self.now() < deadline:
            await self.chaos_call({"slow_s": 2, **window})
            await asyncio.sleep(2)
        f.end = self.now()
        f.detail["seconds"] = round(f.end - f.start, 1)


def whole(s: Sample, workers: int) -> bool:
    return (s.stages == ("Stable", workers) and s.settle == ("Stable", workers)
            and s.running == workers)


def recovery(faults: list[Fault], samples: list[Sample], workers: int, partitions: int
             ) -> None:
    """Fill in `recovered_s` from the monitor's samples, per fault kind."""
    for f in faults:
        if f.recovered_s is not None:
            continue
        after = [s for s in samples if s.t >= max(f.end, f.start)]
        if f.kind in ("worker_kill", "zombie"):
            # both groups Stable with every worker a member again
            hit = next((s for s in after if whole(s, workers)), None)
        elif f.kind == "model_outage":
            # every example re-queued during the outage retried (model-retry drained; under
            # exactly_once a partition's last commit marker stays behind its committed offset)
            hit = next((s for s in after if 0 <= s.retry_lag <= partitions),
                       None)
        else:  # slow_student: the backlog it built is worked off
            before = [s.stages_lag for s in samples if f.start - 5 <= s.t <= f.start
                      and s.stages_lag >= 0]
            base = max(before, default=0) + 20
            hit = next((s for s in after if 0 <= s.stages_lag <= base), None)
        if hit is not None:
            f.recovered_s = round(hit.t - f.start, 1)


def overlaps(faults: list[Fault], samples: list[Sample]) -> list[list[str]]:
    """Pairs of faults whose disturbance (start to recovery) overlapped in time."""
    end_of = {id(f): f.start + (f.recovered_s if f.recovered_s is not None
                                else max(0.0, f.end - f.start)) for f in faults}
    names = {id(f): f"{f.kind}@{f.start:.0f}s" for f in faults}
    out = []
    for i, a in enumerate(faults):
        for b in faults[i + 1:]:
            if a.start < end_of[id(b)] and b.start < end_of[id(a)]:
                out.append([names[id(a)], names[id(b)]])
    return out


# --------------------------------------------------------------------------- a run


@dataclass
class Run:
    outputs: dict[str, list[dict[str, Any]]]
    seconds: float
    feed: FeedStats
    monitor: Monitor | None = None
    chaos: Chaos | None = None
    workers: list[WorkerProc] = field(default_factory=list)
    model_faults: dict[str, int] = field(default_factory=dict)
    settings: Settings | None = None


def run_settings(cfg: ChaosConfig, broker: str, sim_url: str, tag: str) -> Settings:
    run = f"{tag}{uuid.uuid4().hex[:6]}"
    return Settings(broker=broker, topic_prefix=f"{run}-", app_id=f"editstream-{run}",
                    partitions=cfg.partitions, replication_factor=min(cfg.brokers, 3),
                    processing_guarantee="exactly_once", student_url=sim_url,
                    teacher_url=sim_url, samples=cfg.samples, idle_tick_ms=600_000,
                    session_timeout_s=cfg.session_timeout_s,
                    max_examples_in_flight=cfg.max_examples_in_flight,
                    # enough retry budget to ride out the outage: 5+10+20+40 s of re-queues
                    retry_attempts=4, retry_delay_ms=5000, log_level="warn")


async def wait_whole(settings: Settings, workers: list[WorkerProc], timeout: float = 240
                     ) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.broker)
    await admin.start()
    try:
        deadline = time.monotonic() + timeout
        while True:
            stages = await describe_group(admin, stages_group(settings))
            settle = await describe_group(admin, settle_group(settings))
            if (stages.state, len(stages.members), settle.state, len(settle.members)) == (
                    "Stable", len(workers), "Stable", len(workers)):
                return
            for w in workers:
                if not w.running():
                    raise RuntimeError(f"worker {w.slot} died at start; log {w.log}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"groups never had {len(workers)} members: {stages} {settle}")
            await asyncio.sleep(1)
    finally:
        await admin.close()


async def drain(settings: Settings, expected: set[str], timeout: float
                ) -> dict[str, list[dict[str, Any]]]:
    """Outputs once every prediction is accounted for and nothing more arrives for 5 s."""
    deadline = time.monotonic() + timeout
    last: dict[str, int] | None = None
    shown = 0.0
    while True:
        out = await collect(settings)
        done = expected & accounted(out)
        sizes = {name: len(recs) for name, recs in out.items()}
        if len(done) == len(expected):
            if sizes == last:
                return out
            last = sizes
            await asyncio.sleep(5)
            continue
        if time.monotonic() > deadline:
            return out  # the comparison names what is missing
        if time.monotonic() - shown > 20:
            print(f"  draining: {len(done)}/{len(expected)} predictions accounted", flush=True)
            shown = time.monotonic()
        await asyncio.sleep(3)


async def one_run(cfg: ChaosConfig, cluster: Cluster, lines: list[bytes], expected: set[str],
                  truth: Path, out: Path, chaos: bool) -> Run:
    tag = "chaos" if chaos else "clean"
    sim_url, sim = simulator(cfg, truth, out / f"simulator-{tag}.log", faults=chaos)
    settings = run_settings(cfg, cluster.bootstrap, sim_url, tag)
    await ensure_topics(settings)
    gw_url, gw = gateway(settings, out / f"gateway-{tag}.log")
    workers = [WorkerProc(i, settings.replace(metrics_port=free_port()),
                          out / f"worker-{tag}-{i}.log") for i in range(cfg.workers)]
    stop = asyncio.Event()
    try:
        for w in workers:
            w.start()
        await wait_whole(settings, workers)
        t0 = time.monotonic()
        stats = FeedStats()
        monitor = Monitor(settings, workers, t0)
        mon = asyncio.create_task(monitor.run(stop))
        runner = Chaos(cfg, cluster, workers, sim_url, settings, t0) if chaos else None
        jobs = [asyncio.create_task(job()) for job in runner.schedule()] if runner else []
        print(f"{tag} run: feeding {len(lines)} events over "
              f"{cfg.feed_s if chaos else 0:.0f}s", flush=True)
        await feed(settings, gw_url, lines, cfg.feed_s if chaos else 0.0, stats)
        print(f"{tag} run: fed at {time.monotonic() - t0:.0f}s (gateway retries "
              f"{stats.gateway_retries}); draining", flush=True)
        await asyncio.gather(*jobs)
        outputs = await drain(settings, expected, timeout=cfg.drain_s)
        seconds = time.monotonic() - t0
        stop.set()
        await mon
        faults = httpx.get(f"{sim_url}/stats", timeout=10).json()["faults"]
        return Run(outputs, seconds, stats, monitor, runner, workers,
                   {k: n for k, n in faults.items() if k != "none" and n}, settings)
    finally:
        stop.set()
        for w in workers:
            w.stop()
        gw.stop(timeout=15)
        sim.stop(timeout=15)


# --------------------------------------------------------------------------- comparing


def outcome(out: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Each output as id → every distinct byte string seen (repeats collapse)."""
    def by(key: Callable[[dict[str, Any]], Any], recs: list[dict[str, Any]]
           ) -> dict[Any, set[bytes]]:
        got: dict[Any, set[bytes]] = {}
        for r in recs:
            got.setdefault(key(r), set()).add(orjson.dumps(r, option=orjson.OPT_SORT_KEYS))
        return got

    return {
        "settled": by(lambda r: r["request_id"], out["settled-examples"]),
        "training": by(lambda r: r["id"], out["training-records"]),
        "rejected": by(lambda r: (r["request_id"], r["stage"], r["reason"]),
                       out["rejected-examples"]),
        "edit_dlq": by(lambda r: r["original_b64"], out["edit-events-dlq"]),
        "pipeline_dlq": by(lambda r: (r["stage"], r["reason"], r.get("original_b64")),
                           out["pipeline-dlq"]),
    }


def compare(chaos: dict[str, list[dict[str, Any]]], clean: dict[str, list[dict[str, Any]]],
            expected: set[str]) -> tuple[list[str], dict[str, Any]]:
    """(problems, figures): problems empty when nothing was lost, changed or invented."""
    a, b = outcome(chaos), outcome(clean)
    problems: list[str] = []
    for name in ("settled", "training", "rejected", "edit_dlq", "pipeline_dlq"):
        mixed = [k for k, v in a[name].items() if len(v) > 1]
        if mixed:
            problems.append(f"{name}: {len(mixed)} ids repeated with other bytes, "
                            f"e.g. {str(mixed[0])[:80]}")
        lost = b[name].keys() - a[name].keys()
        extra = a[name].keys() - b[name].keys()
        if lost:
            problems.append(f"{name}: {len(lost)} of the clean run's missing, "
                            f"e.g. {str(sorted(map(str, lost))[0])[:80]}")
        if extra:
            problems.append(f"{name}: {len(extra)} not in the clean run, "
                            f"e.g. {str(sorted(map(str, extra))[0])[:80]}")
        differ = [k for k in a[name].keys() & b[name].keys() if a[name][k] != b[name][k]]
        if differ and name in ("settled", "training"):  # same content, byte for byte
            problems.append(f"{name}: {len(differ)} differ in bytes from the clean run, "
                            f"e.g. {str(differ[0])[:80]}")
    extra_dlq = [(r["stage"], r["reason"], r.get("detail")) for r in chaos["pipeline-dlq"]
                 if (r["stage"], r["reason"], r.get("original_b64"))
                 not in b["pipeline_dlq"]]
    if extra_dlq:
        problems.append(f"pipeline-dlq records the clean run has not: "
                        f"{sorted(set(extra_dlq))}")
    for label, out in (("chaos", chaos), ("clean", clean)):
        missing = expected - accounted(out)
        if missing:
            problems.append(f"{label} run: {len(missing)} predictions unaccounted, "
                            f"e.g. {sorted(missing)[:3]}")
    figures = {
        "predictions": len(expected),
        "settled": len(a["settled"]),
        "training_records": len(a["training"]),
        "rejected": len(a["rejected"]),
        "dead_letters": len(a["edit_dlq"]) + len(a["pipeline_dlq"]),
        "repeats_removed": {
            "settled": len(chaos["settled-examples"]) - len(a["settled"]),
            "training": len(chaos["training-records"]) - len(a["training"]),
            "rejected": len(chaos["rejected-examples"]) - len(a["rejected"]),
        },
        "clean_repeats": len(clean["training-records"]) - len(b["training"]),
    }
    return problems, figures


# --------------------------------------------------------------------------- main


def generate(cfg: ChaosConfig, out: Path) -> tuple[list[bytes], Path]:
    """`editstream generate`'s events (and answer key) with at least `cfg.predictions`
    predictions passing ingest: more sessions while short of them."""
    events = out / "events.jsonl"
    sessions = cfg.sessions()
    for _ in range(4):
        subprocess.run([sys.executable, "-m", "editstream.cli", "generate", "--out",
                        str(events), "--seed", str(cfg.seed), "--sessions", str(sessions),
                        "--predictions-per-session", "6"], check=True,
                       stdout=subprocess.DEVNULL)
        lines = events.read_bytes().splitlines()
        got = len(expected_predictions(lines, Settings()))
        if got >= cfg.predictions:
            break
        sessions = math.ceil(sessions * cfg.predictions / max(1, got) * 1.05)
    return lines, Path(f"{events}.truth.jsonl")


async def chaos_run(cfg: ChaosConfig) -> tuple[list[str], dict[str, Any]]:
    """The chaos run, the clean run, the comparison: (problems, figures)."""
    out = Path(cfg.out_dir or tempfile.mkdtemp(prefix="editstream-chaos-"))
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    lines, truth = generate(cfg, out)
    expected = expected_predictions(lines, Settings())
    print(f"chaos: {len(lines)} events, {len(expected)} predictions; logs in {out}", flush=True)
    cluster = await asyncio.to_thread(start_cluster, out / "kafka", cfg.brokers,
                                      partitions=cfg.partitions)
    try:
        print(f"chaos: {cfg.brokers} Kafka nodes at {cluster.bootstrap}", flush=True)
        chaos = await one_run(cfg, cluster, lines, expected, truth, out, chaos=True)
        clean = await one_run(cfg, cluster, lines, expected, truth, out, chaos=False)
    finally:
        await asyncio.to_thread(cluster.stop)
    problems, figures = compare(chaos.outputs, clean.outputs, expected)
    # every process of the runs ended with its worker (CPU pool processes of killed ones too)
    orphans = {run.settings.app_id: left_behind(run.settings)
               for run in (chaos, clean) if run.settings is not None}
    for app_id, pids in orphans.items():
        if pids:
            problems.append(f"{len(pids)} processes of {app_id} left running after its "
                            f"workers ended: {pids[:5]}")
    assert chaos.monitor is not None and chaos.chaos is not None
    faults = chaos.chaos.faults
    recovery(faults, chaos.monitor.samples, cfg.workers, cfg.partitions)
    slow = next((f for f in faults if f.kind == "slow_student"), None)
    in_window = (lambda t: slow.start <= t <= slow.end) if slow else (lambda t: False)
    peak_in_flight = max((p for _, _, _, p in chaos.monitor.in_flight), default=0.0)
    slow_rss = max((kb for t, _, kb in chaos.monitor.rss if in_window(t)), default=0)
    slow_in_flight = max((n for t, _, n, _ in chaos.monitor.in_flight if in_window(t)),
                         default=0.0)
    peak_rss = {w.slot: round(w.peak_rss_kb / 1024, 1) for w in chaos.workers}
    if peak_in_flight > cfg.max_examples_in_flight:
        problems.append(f"in-flight examples reached {peak_in_flight:g} > "
                        f"{cfg.max_examples_in_flight}")
    if max(peak_rss.values(), default=0) > cfg.rss_limit_mb:
        problems.append(f"worker RSS reached {max(peak_rss.values())} MB > {cfg.rss_limit_mb}")
    zombie = next((f for f in faults if f.kind == "zombie"), None)
    if zombie is not None:
        # fenced: the group went on without the paused worker
        dropped = [s for s in chaos.monitor.samples if zombie.start <= s.t <= zombie.end
                   and s.stages[1] < cfg.workers and s.settle[1] < cfg.workers]
        zombie.detail["group_dropped_it"] = bool(dropped)
        if not dropped:
            problems.append("the paused worker was never dropped from its groups")
    counts: dict[str, int] = {}
    for f in faults:
        counts[f.kind] = counts.get(f.kind, 0) + 1
    lags = [(s.stages_lag, s.settle_lag) for s in chaos.monitor.samples]
    figures.update({
        "config": {k: v for k, v in asdict(cfg).items() if k != "out_dir"},
        "events": len(lines),
        "faults_injected": counts,
        "faults": [{"kind": f.kind, "start_s": round(f.start, 1),
                    "end_s": round(f.end, 1), "recovered_s": f.recovered_s, **f.detail}
                   for f in faults],
        "overlapping": overlaps(faults, chaos.monitor.samples),
        "model_faults": chaos.model_faults,
        "peak_rss_mb_per_worker": peak_rss,
        "rss_limit_mb": cfg.rss_limit_mb,
        "slow_window": {"max_rss_mb": round(slow_rss / 1024, 1),
                        "max_examples_in_flight": slow_in_flight,
                        "peak_examples_in_flight_run": peak_in_flight,
                        "limit": cfg.max_examples_in_flight},
        "max_consumer_lag": {"settle": max((s for _, s in lags), default=-1),
                             "stages": max((a for a, _ in lags), default=-1)},
        "feed": asdict(chaos.feed),
        "chaos_run_s": round(chaos.seconds, 1),
        "clean_run_s": round(clean.seconds, 1),
        "total_s": round(time.monotonic() - t_start, 1),
        "monitor_skipped_samples": chaos.monitor.errors,
        "worker_exits_restarted": chaos.monitor.supervised,
        "processes_left_behind": sum(len(p) for p in orphans.values()),
        "logs": str(out),
        "problems": problems,
    })
    (out / "figures.json").write_text(json.dumps(figures, indent=2, default=str) + "\n")
    (out / "samples.json").write_text(json.dumps(
        [asdict(s) for s in chaos.monitor.samples]) + "\n")  # the timeline, to look into
    return problems, figures


def parse_args(argv: list[str] | None = None) -> ChaosConfig:
    p = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    defaults = ChaosConfig()
    for name, value in asdict(defaults).items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, tuple):
            p.add_argument(flag, type=float, nargs=2, default=value, metavar=("MIN", "MAX"))
        else:
            p.add_argument(flag, type=type(value), default=value)
    ns = p.parse_args(argv)
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in vars(ns).items()}
    return ChaosConfig(**values)


def report(problems: list[str], figures: dict[str, Any]) -> None:
    print("\nCHAOS FIGURES " + json.dumps(figures, default=str))
    f = figures
    print(f"\npredictions {f['predictions']}, settled {f['settled']}, training records "
          f"{f['training_records']}, rejected {f['rejected']}, dead letters "
          f"{f['dead_letters']}")
    print(f"faults injected: {f['faults_injected']}; repeats removed: {f['repeats_removed']}")
    for fault in f["faults"]:
        print(f"  {fault['kind']:<13} at {fault['start_s']:>6}s  recovered after "
              f"{fault['recovered_s']}s")
    print(f"overlapping: {len(f['overlapping'])} pairs; model faults: {f['model_faults']}")
    exits = f["worker_exits_restarted"]
    print(f"workers that exited by themselves (restarted, as a supervisor would): "
          f"{len(exits)} {[code for _, _, code in exits]}")
    print(f"peak RSS per worker (MB): {f['peak_rss_mb_per_worker']}; slow window: "
          f"{f['slow_window']}; max consumer lag: {f['max_consumer_lag']}")
    print(f"chaos run {f['chaos_run_s']}s, clean run {f['clean_run_s']}s, total "
          f"{f['total_s']}s")
    print("RESULT: " + ("nothing lost, identical to the clean run" if not problems
                        else "FAILED\n  " + "\n  ".join(problems)))


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    # a broker down makes every client log each reconnect at ERROR: that is the fault injected
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # unwinds through the runs' cleanup: no orphan processes

    signal.signal(signal.SIGTERM, stop)
    problems, figures = asyncio.run(chaos_run(cfg))
    report(problems, figures)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
