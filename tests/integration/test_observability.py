"""The dashboard and the alerts against a real Prometheus scraping a real pipeline run.

A worker (metrics on a free port) and the ingestion gateway run on the embedded Tansu broker;
Debian's `prometheus` scrapes both every second with the repository's alert rules loaded.
After a generated run (plus poison lines, so dead-letter series exist), every PromQL
expression of every dashboard panel and of every alert rule is evaluated through the HTTP API
and must return data: no panel shows "No data", every alert's series exist. `promtool` checks
the repository's config and rules, and the data-quality panels are rendered to a PNG.

Prometheus comes from Debian (`apt-get install prometheus`, 2.42 on bookworm); a machine
without it installs it here, once, under a lock (CI runs as root on a fresh machine).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml

from editstream.dataset.promreport import render_prometheus
from editstream.demo import accounted, expected_predictions
from editstream.gateway.server import GatewayConfig, GatewayHandle, start_gateway
from editstream.infra.broker import BrokerHandle
from editstream.sessions.generate import GenerateConfig, generate_events
from editstream.topics.kafka_io import ensure_topics, produce_events, read_to_end, start_producer
from tests.integration.conftest import Simulator, Worker, free_port, run_settings
from tests.integration.test_pipeline import POISON

pytestmark = [pytest.mark.broker, pytest.mark.timeout(900)]  # includes a first apt install

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "editstream.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
APT_LOCK = Path("/tmp/editstream-apt-prometheus.lock")
GATEWAY_TOKEN = ("observability", "obs-token-0123456789abcdef")
# `<expr> > 1000`, `... == 0`, `... > bool 0.1`: the comparisons of an alert condition
COMPARISON = re.compile(r"\s*(?:>=|<=|==|!=|>|<)\s*(?:bool\s+)?[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


# --------------------------------------------------------------------------- Prometheus


def ensure_prometheus() -> None:
    """Debian's prometheus + promtool, installed when missing (root, apt-get, one at a time)."""
    if shutil.which("prometheus") and shutil.which("promtool"):
        return
    if os.geteuid() != 0:
        pytest.fail("prometheus is not installed and this user cannot apt-get install it: "
                    "run `apt-get install -y prometheus` as root")
    with APT_LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel sessions: one installs, the others wait
        if shutil.which("prometheus") and shutil.which("promtool"):
            return
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        apt = ["apt-get", "-o", "DPkg::Lock::Timeout=300", "-q"]
        subprocess.run([*apt, "update"], env=env, check=False, timeout=600,
                       capture_output=True)
        proc = subprocess.run([*apt, "install", "-y", "--no-install-recommends", "prometheus"],
                              env=env, timeout=900, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert shutil.which("prometheus") and shutil.which("promtool")


def promtool(*args: str) -> str:
    proc = subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


class PrometheusServer:
    """`prometheus` on a free loopback port, scraping the given targets every second."""

    def __init__(self, tmp: Path, targets: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = tmp / "prometheus.yml"
        self.config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ALERTS)],
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [target]}]}
                               for job, target in targets.items()],
        }))
        promtool("check", "config", str(self.config))
        self.log = (tmp / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={self.config}",
             f"--storage.tsdb.path={tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{self.port}",
             "--log.level=warn"], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_tail()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError("prometheus did not become ready\n" + self.log_tail())

    def log_tail(self) -> str:
        return (self.config.parent / "prometheus.log").read_text(errors="replace")[-3000:]

    def api(self, path: str, **params: Any) -> Any:
        body = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=30).json()
        assert body["status"] == "success", (params, body)
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr, time=time.time())
        result = data["result"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": result}]
        return list(result)

    async def wait_scraped(self, timeout: float = 30) -> None:
        """Until every target has been scraped once: counters seen from their first
        increment on, so rates and quantiles cover the whole run."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            targets = self.api("targets")["activeTargets"]
            if targets and all(t["health"] == "up" for t in targets):
                return
            await asyncio.sleep(0.5)
        raise AssertionError(f"targets not up: {self.api('targets')}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def prometheus_installed() -> None:
    ensure_prometheus()


# --------------------------------------------------------------------------- dashboard


def dashboard_targets() -> list[tuple[str, str]]:
    """(panel title, expr) of every target of every panel, rows included."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    panels = panels + [p for row in panels for p in row.get("panels", [])]
    return [(p["title"], t["expr"]) for p in panels for t in p.get("targets", [])]


def grafana_to_promql(expr: str, window: str) -> str:
    """Substitute the Grafana variables the dashboard uses with concrete values."""
    for var, value in (("$__rate_interval", window), ("$__interval", "5s"),
                       ("$__range", window), ("${topic}", ".*"), ("$topic", ".*")):
        expr = expr.replace(var, value)
    assert "$" not in expr, f"unsubstituted Grafana variable in {expr}"
    return expr


def without_comparisons(expr: str) -> str:
    """An alert condition's underlying series: `a > 1000 and b > 0` → `a and b`."""
    return COMPARISON.sub("", expr)


def has_data(result: list[dict[str, Any]]) -> bool:
    """Non-empty and at least one real number (not only NaN from 0/0)."""
    return any(math.isfinite(float(r["value"][1])) for r in result)


# --------------------------------------------------------------------------- gateway


@contextlib.asynccontextmanager
async def gateway(settings: Any) -> AsyncIterator[GatewayHandle]:
    handle = await start_gateway(settings, GatewayConfig(tokens=(GATEWAY_TOKEN,),
                                                         host="127.0.0.1", port=0))
    try:
        yield handle
    finally:
        await handle.stop()


async def post_through_gateway(url: str, lines: list[bytes]) -> list[bytes]:
    """Send `lines` as NDJSON batches; return the lines the gateway accepted (it judges
    privacy and secrets itself, so only those can become predictions downstream)."""
    auth = {"Authorization": f"Bearer {GATEWAY_TOKEN[1]}",
            "Content-Type": "application/x-ndjson"}
    accepted: list[bytes] = []
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        for i in range(0, len(lines), 25):
            batch = lines[i:i + 25]
            resp = await client.post("/v1/events", content=b"\n".join(batch), headers=auth)
            assert resp.status_code == 200, resp.text
            results = resp.json()["results"]
            accepted += [batch[r["index"]] for r in results if r["status"] == "accepted"]
        # a malformed line (rejected event) and a request without a token (401)
        resp = await client.post("/v1/events", content=b"{not json\n", headers=auth)
        assert resp.status_code == 200 and resp.json()["rejected"] == 1
        resp = await client.post("/v1/events", content=b"",
                                 headers={"Content-Type": "application/x-ndjson"})
        assert resp.status_code == 401
    return accepted


def split_sessions(events: list[dict[str, Any]], n: int) -> tuple[list[bytes], list[bytes]]:
    """Whole sessions, in order: the first `n` sessions for the gateway, the rest direct."""
    sessions = list(dict.fromkeys(e["session_id"] for e in events))
    via_gateway = set(sessions[:n])
    gw = [orjson.dumps(e) for e in events if e["session_id"] in via_gateway]
    direct = [orjson.dumps(e) for e in events if e["session_id"] not in via_gateway]
    return gw, direct


# --------------------------------------------------------------------------- waiting

TERMINAL = ("training-records", "rejected-examples", "edit-events-dlq", "pipeline-dlq")
FENCE = b'{"__observability_fence__": true}'


async def wait_accounted(settings: Any, expected: set[str], worker: Worker,
                         timeout: float) -> None:
    """Until every expected prediction has a record, a rejection or a dead letter.

    The terminal topics are read after a one-record fence batch per partition: Tansu answers
    ListOffsets(latest) with the last batch's base offset + 1, so a plain read to the end
    can stop short of the tail of a multi-record batch (see tests/integration/
    test_gateway.py). Nothing consumes these topics, so the fences disturb no one."""
    producer = await start_producer(settings)
    deadline = time.monotonic() + timeout
    try:
        while True:
            outputs: dict[str, list[dict[str, Any]]] = {}
            for name in TERMINAL:
                topic = settings.topic(name)
                for partition in sorted(await producer.partitions_for(topic)):
                    await producer.send_and_wait(topic, FENCE, partition=partition)
                outputs[name] = [orjson.loads(r.value) async for r in
                                 read_to_end(settings.broker, topic) if r.value != FENCE]
            missing = expected - accounted(outputs)
            if not missing:
                return
            assert worker.proc is not None and worker.proc.poll() is None, worker.log_tail()
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(missing)} unaccounted, e.g. {sorted(missing)[:3]}"
                                     "\n" + worker.log_tail())
            await asyncio.sleep(1)
    finally:
        await producer.stop()


# --------------------------------------------------------------------------- the test


@pytest.fixture
def tmp_prometheus(tmp_path: Path) -> Iterator[list[PrometheusServer]]:
    started: list[PrometheusServer] = []
    yield started
    for server in started:
        server.stop()


def test_promtool_accepts_the_repository_config_and_rules(prometheus_installed: None) -> None:
    out = promtool("check", "config", str(PROMETHEUS_CONFIG))
    assert "1 rule files found" in out
    out = promtool("check", "rules", str(ALERTS))
    assert re.search(r"SUCCESS: \d+ rules found", out)


async def test_every_dashboard_and_alert_expression_has_data(
        prometheus_installed: None, tansu: BrokerHandle, simulator: Simulator,
        workers: list[Worker], tmp_prometheus: list[PrometheusServer], tmp_path: Path,
        request: pytest.FixtureRequest) -> None:
    t0 = time.monotonic()
    # a teacher whose first answers are all stale, so the repair panels have data on a small
    # corpus (and a weaker student, so more examples reach the teacher)
    sim = Simulator(tmp_path, "--ground-truth", simulator.truth, "--student-skill", "-1",
                    "--teacher-stale-rate", "1", "--teacher-junk-rate", "0",
                    "--teacher-revert-rate", "0", "--teacher-truncation-rate", "0",
                    "--teacher-preamble-rate", "0")
    request.addfinalizer(sim.stop)
    settings = run_settings(tansu.bootstrap, sim.url, metrics_port=free_port())
    events = generate_events(GenerateConfig(seed=23, sessions=6, predictions_per_session=3))
    gw_lines, direct_lines = split_sessions(events, 2)
    await ensure_topics(settings)
    async with gateway(settings) as gw:
        worker = Worker(settings, tmp_path / "worker.log").start()
        workers.append(worker)
        gw_target = gw.url.removeprefix("http://")
        prom = PrometheusServer(tmp_path, {"worker": f"127.0.0.1:{settings.metrics_port}",
                                           "gateway": gw_target})
        tmp_prometheus.append(prom)
        await prom.wait_scraped()

        accepted = await post_through_gateway(gw.url, gw_lines)
        await produce_events(settings, direct_lines + POISON, flush=True)
        expected = expected_predictions(accepted + direct_lines, settings)
        assert expected
        await wait_accounted(settings, expected, worker, timeout=120)

        # A second wave once the live scorecard's series are scraped: those series are born
        # per served model version with its first settled prediction, and a counter born at
        # its final value has no rate in a window; traffic that goes on gives the panels data.
        deadline = time.monotonic() + 30
        while not prom.query("editstream_scorecard_predictions_total"):
            if time.monotonic() > deadline:
                pytest.fail("the live scorecard was never scraped\n" + worker.log_tail())
            await asyncio.sleep(1)
        await asyncio.sleep(3)  # a few scrapes at the first wave's values
        more = generate_events(GenerateConfig(seed=31, sessions=2, predictions_per_session=3))
        # accepted predictions among them, so the rate of acceptance (and of undoing) is known
        assert any(e.get("outcome") == "accepted" for e in more)
        wave = [orjson.dumps(e) for e in more]
        await produce_events(settings, wave, flush=True)
        second = expected_predictions(wave, settings)
        assert second and not second & expected
        await wait_accounted(settings, expected | second, worker, timeout=120)

        # the last values scraped: lag measured after the run, records counted
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            lag = prom.query("editstream_consumer_lag_messages")
            records = prom.query("sum(editstream_training_records_total)")
            if lag and records and float(records[0]["value"][1]) > 0:
                break
            await asyncio.sleep(1)
        else:
            pytest.fail("lag or training records never scraped\n" + worker.log_tail())
        window = f"{int(time.monotonic() - t0) + 30}s"  # the whole run

        # every target of every panel (gateway panels included) returns numbers
        no_data = []
        for title, expr in dashboard_targets():
            promql = grafana_to_promql(expr, window)
            if not has_data(prom.query(promql)):
                no_data.append(f"{title}: {promql}")
        assert no_data == [], "panels without data:\n" + "\n".join(no_data)

        # the topic variable lists the pipeline's source topics
        topics = set(prom.api("label/topic/values",
                              **{"match[]": "editstream_consumer_lag_messages"}))
        assert settings.topic("edit-events") in topics

        # every alert: its series exist, and the rule evaluates without error
        rules = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
        missing = []
        for rule in rules:
            series = without_comparisons(rule["expr"])
            assert series != rule["expr"].strip(), f"{rule['alert']}: no comparison found"
            if not prom.query(series):
                missing.append(f"{rule['alert']}: {series}")
        assert missing == [], "alerts without series:\n" + "\n".join(missing)
        loaded = [r for g in prom.api("rules")["groups"] for r in g["rules"]]
        assert {r["name"] for r in loaded} == {r["alert"] for r in rules}
        assert all(r["health"] == "ok" for r in loaded), [
            (r["name"], r.get("lastError")) for r in loaded if r["health"] != "ok"]
        firing = {r["name"] for r in loaded if r["state"] == "firing"}
        assert "EditstreamWorkerDown" not in firing

        # the data-quality panels as a picture, from the same Prometheus
        png = render_prometheus(prom.url, tmp_path / "dashboard.png")
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.stat().st_size > 40_000
        if target := os.environ.get("EDITSTREAM_DASHBOARD_PNG"):  # refresh docs/dashboard.png
            shutil.copyfile(png, target)
    assert time.monotonic() - t0 < 150


# --------------------------------------------------------------------------- multiprocess

MULTIPROCESS_WORKER = """
import sys
from editstream.worker import multiprocess_dir, start_metrics_server
mp_dir = multiprocess_dir()  # before prometheus_client is imported, as run_worker does
from agents import metrics
serving = start_metrics_server(int(sys.argv[1]), mp_dir)
n = int(sys.argv[2])
metrics.EVENTS_IN.labels("edit", "accepted").inc(n)
metrics.OPEN_PREDICTIONS.set(n)
metrics.CONSUMER_LAG.labels("edit-events", sys.argv[3]).set(10 * n)
print("serving" if serving else "writing", flush=True)
sys.stdin.read()  # run until the test closes stdin, then exit normally (atexit runs)
"""


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_workers_on_one_host_share_the_metrics_port_in_multiprocess_mode(
        tmp_path: Path) -> None:
    """Two processes, one PROMETHEUS_MULTIPROCESS_DIR: the first serves the sum of both;
    when one stops, its counters stay and its live gauges leave the sum."""
    port = free_port()
    env = {**os.environ, "PROMETHEUS_MULTIPROCESS_DIR": str(tmp_path / "prom")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    procs: list[subprocess.Popen[str]] = []
    try:
        for n, partition in ((3, "0"), (4, "1")):
            p = subprocess.Popen([sys.executable, "-c", MULTIPROCESS_WORKER, str(port), str(n),
                                  partition], env=env, cwd=ROOT, stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
            procs.append(p)
            assert p.stdout is not None
            assert p.stdout.readline().strip() == ("writing" if procs[1:] else "serving")
        events = ("editstream_events_in_total", (("result", "accepted"), ("type", "edit")))
        lag1 = ("editstream_consumer_lag_messages", (("partition", "1"),
                                                      ("topic", "edit-events")))
        both = scrape(port)
        assert both[events] == 7
        assert both[("editstream_settle_open_predictions", ())] == 7
        assert both[lag1] == 40
        assert procs[1].stdin is not None
        procs[1].stdin.close()
        assert procs[1].wait(timeout=10) == 0
        one = scrape(port)
        assert one[events] == 7  # counters of a stopped process still count
        assert one[("editstream_settle_open_predictions", ())] == 3
        assert lag1 not in one
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
