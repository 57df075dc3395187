"""Load benchmark of the ingestion gateway against producing straight to Kafka.

Run ``python -m bench.bench_gateway [--events N] [--clients K] [--broker HOST:PORT] [--json]``.

What it measures, on one broker (an embedded Tansu started here unless ``--broker``):

(a) **gateway**: ``editstream gateway`` as its own process (as deployed), fed by K concurrent
    HTTP clients on loopback, each POSTing 100-event JSON batches and waiting for the answer.
    The clients stand for editors on other machines but share this machine's cores with the
    gateway and the broker, so the load generator is aiohttp's client (~7 µs of CPU per event
    here, httpx's ~19 µs: that CPU was taken from the gateway); ``--http-client httpx`` runs
    the earlier one.
    A 200 means every event was acknowledged by the broker (acks=all), so latency is the
    full edge round trip: HTTP, auth, rate limit, privacy + secret scan + schema, produce, ack.
(b) **kafka direct** (aiokafka): the same events, the same K concurrent senders and the same
    batches, produced with aiokafka with the gateway's producer settings (acks=all, 512 KiB
    batches, 2 ms linger) and waiting for every acknowledgement of a batch before the next:
    what an editor that spoke Kafka with the pipeline's own client would see.
(c) **kafka direct (librdkafka)**: the same again with the C client the gateway itself uses
    (`editstream.gateway.sink.LibrdkafkaSink`, same settings): the direct path at its fastest,
    so the reader sees what the HTTP edge and the verdict cost over the same client.

Reported: events/s and p50/p99 batch latency of each, and gateway/direct ratios against both
baselines. The rounds alternate (a), (b), (c) to spread machine noise; the median round is
kept. ``--gateway-producer aiokafka`` runs the gateway with its pure-Python client instead.
Events are realistic traces (``editstream.sessions.generate``) filtered to ones the gateway accepts,
so every path writes exactly the same records. Results go to ``bench/results/gateway.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson

from bench.common import machine
from editstream.gateway.server import start_gateway_producer
from editstream.gateway.sink import LibrdkafkaSink
from editstream.infra.broker import BrokerHandle, acreate_topics, free_port, start_broker
from editstream.sessions.generate import GenerateConfig, generate_events
from streams.gateway_core import judge
from streams.settings import Settings

RESULTS = Path(__file__).resolve().parent / "results" / "gateway.json"
TOKEN = "bench-token-" + "0" * 20
BATCH = 100


def make_events(n: int) -> list[dict[str, Any]]:
    """`n` accepted events: generated traces, repeated under fresh session ids if needed."""
    base = generate_events(GenerateConfig(seed=41, sessions=40))
    ok = [e for e in base if judge(e, Settings()).status == "accepted"]
    out: list[dict[str, Any]] = []
    rep = 0
    while len(out) < n:
        out.extend({**e, "session_id": f"{e['session_id']}-r{rep}"} for e in ok)
        rep += 1
    return out[:n]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(n_events: int, wall_s: float, latencies: list[float]) -> dict[str, float]:
    return {"events_per_s": n_events / wall_s, "wall_s": wall_s,
            "p50_ms": percentile(latencies, 0.50) * 1000,
            "p99_ms": percentile(latencies, 0.99) * 1000, "batches": len(latencies)}


def process_cpu_s(pid: int | None = None) -> float:
    """User + system CPU seconds of a process (all its threads; default: this one)."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def with_cpu(run: Any, n_events: int, gateway_pid: int | None = None
                   ) -> dict[str, float]:
    """`run`'s figures plus the CPU µs per event of this process (the HTTP clients or the
    direct producer) and, for the gateway path, of the gateway process."""
    c0 = process_cpu_s()
    g0 = process_cpu_s(gateway_pid) if gateway_pid else 0.0
    res: dict[str, float] = await run
    res["client_cpu_us_per_event"] = (process_cpu_s() - c0) / n_events * 1e6
    if gateway_pid:
        res["gateway_cpu_us_per_event"] = (process_cpu_s(gateway_pid) - g0) / n_events * 1e6
    return res


def split(batches: list[list[bytes]], k: int) -> list[list[list[bytes]]]:
    return [batches[i::k] for i in range(k)]


class GatewayProcess:
    """`python -m editstream.gateway.server` with its own topic prefix, ready when /readyz is."""

    def __init__(self, broker: str, prefix: str, producer: str = "librdkafka") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "EDITSTREAM_BROKER": broker, "EDITSTREAM_TOPIC_PREFIX": prefix,
               "EDITSTREAM_GATEWAY_TOKENS": f"bench:{TOKEN}",
               "EDITSTREAM_GATEWAY_HOST": "127.0.0.1",
               "EDITSTREAM_GATEWAY_PORT": str(self.port),
               "EDITSTREAM_GATEWAY_PRODUCER": producer,
               # the bench measures capacity, not the rate limit
               "EDITSTREAM_GATEWAY_RATE": "1e9", "EDITSTREAM_GATEWAY_BURST": "1000000000"}
        self.proc = subprocess.Popen([sys.executable, "-m", "editstream.gateway.server"], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited: {self.proc.stderr.read().decode()}"
                                   if self.proc.stderr else "gateway exited")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("gateway not ready in 30 s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def run_gateway(url: str, batches: list[list[bytes]], clients: int,
                      http_client: str = "aiohttp") -> dict[str, float]:
    bodies = [b"[" + b",".join(b) + b"]" for b in batches]
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    latencies: list[float] = []

    async def client_aiohttp(mine: list[bytes]) -> None:
        async with aiohttp.ClientSession(url, headers=headers,
                                         timeout=aiohttp.ClientTimeout(total=60)) as c:
            for body in mine:
                t = time.perf_counter()
                async with c.post("/v1/events", data=body) as resp:
                    raw = await resp.read()
                latencies.append(time.perf_counter() - t)
                if resp.status != 200 or orjson.loads(raw)["accepted"] != BATCH:
                    raise RuntimeError(f"gateway answered {resp.status}: {raw[:300]!r}")

    async def client_httpx(mine: list[bytes]) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60, headers=headers) as c:
            for body in mine:
                t = time.perf_counter()
                resp = await c.post("/v1/events", content=body)
                latencies.append(time.perf_counter() - t)
                if resp.status_code != 200 or resp.json()["accepted"] != BATCH:
                    raise RuntimeError(f"gateway answered {resp.status_code}: {resp.text[:300]}")

    client = client_aiohttp if http_client == "aiohttp" else client_httpx
    t0 = time.perf_counter()
    await asyncio.gather(*(client(bodies[i::clients]) for i in range(clients)))
    return summary(sum(len(b) for b in batches), time.perf_counter() - t0, latencies)


async def _timed_senders(batches: list[list[bytes]], clients: int,
                         send_batch: Callable[[int], Awaitable[None]]) -> dict[str, float]:
    """`clients` concurrent senders sharing the batches, each batch awaited in turn."""
    latencies: list[float] = []

    async def sender(idx: list[int]) -> None:
        for i in idx:
            t = time.perf_counter()
            await send_batch(i)
            latencies.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    order = list(range(len(batches)))
    await asyncio.gather(*(sender(order[c::clients]) for c in range(clients)))
    return summary(sum(len(b) for b in batches), time.perf_counter() - t0, latencies)


async def run_direct(settings: Settings, batches: list[list[bytes]], keys: list[list[bytes]],
                     clients: int) -> dict[str, float]:
    topic = settings.topic("edit-events")
    prod = await start_gateway_producer(settings)

    async def send_batch(i: int) -> None:
        futs = [await prod.send(topic, v, key=k)
                for v, k in zip(batches[i], keys[i], strict=True)]
        await asyncio.gather(*futs)

    try:
        return await _timed_senders(batches, clients, send_batch)
    finally:
        await prod.stop()


async def run_direct_rdkafka(settings: Settings, batches: list[list[bytes]],
                             keys: list[list[bytes]], clients: int) -> dict[str, float]:
    topic = settings.topic("edit-events")
    sink = await LibrdkafkaSink.start(settings.broker)

    async def send_batch(i: int) -> None:
        if not await sink.deliver(topic, list(zip(keys[i], batches[i], strict=True)), 60):
            raise RuntimeError("librdkafka: batch not acknowledged")

    try:
        return await _timed_senders(batches, clients, send_batch)
    finally:
        await sink.stop(30)


async def bench(broker: str, n_events: int, clients: int, rounds: int,
                max_seconds: float, producer: str = "librdkafka",
                http_client: str = "aiohttp") -> dict[str, Any]:
    events = make_events(n_events)
    values = [orjson.dumps(e) for e in events]
    keys = [e["session_id"].encode() for e in events]
    batches = [values[i:i + BATCH] for i in range(0, len(values), BATCH)]
    key_batches = [keys[i:i + BATCH] for i in range(0, len(keys), BATCH)]
    run = uuid.uuid4().hex[:6]
    gw_settings = Settings(broker=broker, topic_prefix=f"bench{run}-gw-")
    direct = Settings(broker=broker, topic_prefix=f"bench{run}-direct-")
    direct_c = Settings(broker=broker, topic_prefix=f"bench{run}-directc-")
    for s in (gw_settings, direct, direct_c):
        await acreate_topics(broker, [s.topic("edit-events")], partitions=s.partitions)

    gw = await asyncio.to_thread(GatewayProcess, broker, gw_settings.topic_prefix, producer)
    results: dict[str, list[dict[str, float]]] = {"gateway": [], "kafka_direct": [],
                                                  "kafka_direct_librdkafka": []}
    t_start = time.monotonic()
    try:
        # warm-up: connections, metadata, JIT-free but cache-warm paths
        await run_gateway(gw.url, batches[:clients * 2], clients, http_client)
        await run_direct(direct, batches[:clients * 2], key_batches[:clients * 2], clients)
        await run_direct_rdkafka(direct_c, batches[:clients * 2], key_batches[:clients * 2],
                                 clients)
        n = len(values)
        for _ in range(rounds):
            results["gateway"].append(await with_cpu(
                run_gateway(gw.url, batches, clients, http_client), n, gw.proc.pid))
            results["kafka_direct"].append(await with_cpu(
                run_direct(direct, batches, key_batches, clients), n))
            results["kafka_direct_librdkafka"].append(await with_cpu(
                run_direct_rdkafka(direct_c, batches, key_batches, clients), n))
            if time.monotonic() - t_start > max_seconds:
                break
    finally:
        await asyncio.to_thread(gw.stop)

    def med(kind: str) -> dict[str, float]:
        rows = results[kind]
        return {k: statistics.median(r[k] for r in rows) for k in rows[0]}

    g, d, c = med("gateway"), med("kafka_direct"), med("kafka_direct_librdkafka")
    return {
        "benchmark": "gateway",
        "machine": machine(),
        "config": {"events": len(values), "batch": BATCH, "clients": clients,
                   "rounds": len(results["gateway"]), "broker": broker,
                   "gateway_producer": producer, "http_client": http_client,
                   "event_bytes_mean": sum(map(len, values)) / len(values)},
        "gateway": g,
        "kafka_direct": d,
        "kafka_direct_librdkafka": c,
        # against aiokafka (the pipeline's client, the goal's baseline) and against the C
        # client the gateway itself uses
        "ratio": {"throughput_gateway_over_direct": g["events_per_s"] / d["events_per_s"],
                  "p50_gateway_over_direct": g["p50_ms"] / d["p50_ms"],
                  "p99_gateway_over_direct": g["p99_ms"] / d["p99_ms"],
                  "throughput_gateway_over_direct_librdkafka":
                      g["events_per_s"] / c["events_per_s"],
                  "p99_gateway_over_direct_librdkafka": g["p99_ms"] / c["p99_ms"]},
        "rounds": results,
    }


def table(res: dict[str, Any]) -> str:
    cfg = res["config"]
    lines = [f"gateway bench: {cfg['events']} events, batches of {cfg['batch']}, "
             f"{cfg['clients']} clients, {cfg['rounds']} rounds (median), "
             f"{res['machine']['nproc']} cores, gateway producer {cfg['gateway_producer']}, "
             f"{cfg['http_client']} clients",
             f"{'path':<26}{'events/s':>12}{'p50 ms':>10}{'p99 ms':>10}"
             f"{'client CPU µs/ev':>18}{'gateway CPU µs/ev':>19}"]
    for kind in ("gateway", "kafka_direct", "kafka_direct_librdkafka"):
        r = res[kind]
        gw_cpu = f"{r['gateway_cpu_us_per_event']:>19.1f}" if kind == "gateway" else ""
        lines.append(f"{kind:<26}{r['events_per_s']:>12.0f}{r['p50_ms']:>10.1f}"
                     f"{r['p99_ms']:>10.1f}{r['client_cpu_us_per_event']:>18.1f}{gw_cpu}")
    ratio = res["ratio"]
    lines.append(f"{'ratio gw/aiokafka direct':<26}"
                 f"{ratio['throughput_gateway_over_direct']:>12.2f}"
                 f"{ratio['p50_gateway_over_direct']:>10.2f}"
                 f"{ratio['p99_gateway_over_direct']:>10.2f}")
    lines.append(f"{'ratio gw/librdkafka direct':<26}"
                 f"{ratio['throughput_gateway_over_direct_librdkafka']:>12.2f}{'':>10}"
                 f"{ratio['p99_gateway_over_direct_librdkafka']:>10.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_gateway")
    parser.add_argument("--events", type=int, default=20_000, help="events per round")
    parser.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-seconds", type=float, default=120,
                        help="stop starting rounds after this long")
    parser.add_argument("--broker", default="", help="bootstrap servers (default: start an "
                        "embedded Tansu)")
    parser.add_argument("--gateway-producer", default="librdkafka",
                        choices=("librdkafka", "aiokafka"), help="the gateway's Kafka client")
    parser.add_argument("--http-client", default="aiohttp", choices=("aiohttp", "httpx"),
                        help="the load generator's HTTP client")
    parser.add_argument("--json", action="store_true", help="print the JSON, not the table")
    parser.add_argument("--no-save", action="store_true",
                        help="do not write bench/results/gateway.json")
    ns = parser.parse_args(argv)

    handle: BrokerHandle | None = None
    broker = ns.broker
    if not broker:
        handle = start_broker("tansu")
        broker = handle.bootstrap
    try:
        res = asyncio.run(bench(broker, ns.events, ns.clients, ns.rounds, ns.max_seconds,
                                ns.gateway_producer, ns.http_client))
    finally:
        if handle is not None:
            handle.kill()
    if handle is not None:
        res["config"]["broker"] = "embedded tansu"
    if not ns.no_save:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(res, indent=2, sort_keys=True) + "\n")
    print(json.dumps(res, indent=2, sort_keys=True) if ns.json else table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
