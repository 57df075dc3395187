"""The pipeline on Apache Kafka with a real model: SmolLM2-135M on llama.cpp's llama-server
as student, teacher and judge (the `local-model` tier, built by `make test`).

The server has 4 slots with continuous batching and honours `n` up to its slot count: the
worker sends an example's samples as one request, and its adaptive limit must settle near
what the slots take instead of flooding the server into timeouts. Kept cheap for CI: 2
samples of at most 32 tokens per example, no repairs.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agents.models import StudentClient
from editstream.demo import accounted, expected_predictions
from editstream.infra.broker import BrokerHandle
from editstream.infra.local_model import LocalModel, start_local_model
from editstream.sessions.generate import GenerateConfig, generate_events
from editstream.topics.kafka_io import ensure_topics, produce_events, read_to_end
from streams.models import Endpoint, SampleBatch
from tests.integration.conftest import Worker, free_port, run_settings
from tests.integration.kafka_fixtures import drain, wait_group_stable

pytest_plugins = ("tests.integration.kafka_fixtures",)
pytestmark = [pytest.mark.broker, pytest.mark.kafka, pytest.mark.timeout(1800)]

SAMPLES = 2
MAX_TOKENS = 32
SLOTS = 4
PROMPT = "def fibonacci(n):\n    "


@pytest.fixture(scope="module")
def local_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalModel]:
    with start_local_model(tmp_path_factory.mktemp("llm") / "server.log", slots=SLOTS) as llm:
        yield llm


def _metrics(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def _value(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
           **labels: str) -> float:
    return sum(v for (n, ls), v in metrics.items()
               if n == name and all((k, val) in ls for k, val in labels.items()))


def test_pipeline_on_a_real_model_accounts_for_every_prediction(
        kafka_broker: BrokerHandle, local_model: LocalModel, tmp_path: Path) -> None:
    port = free_port()
    settings = run_settings(
        kafka_broker.bootstrap, local_model.url, judge_url=local_model.url,
        student_model=local_model.model, teacher_model=local_model.model,
        judge_model=local_model.model, samples=SAMPLES, sample_max_tokens=MAX_TOKENS,
        adaptive_sampling=False, band_high=0.95, repair_attempts=0,
        student_timeout_s=120.0, teacher_timeout_s=300.0, metrics_port=port,
        log_level="warn")
    events = generate_events(GenerateConfig(seed=21, sessions=3, predictions_per_session=5))
    lines = [orjson.dumps(e) for e in events]
    expected = expected_predictions(lines, settings)
    assert len(expected) >= 10
    worker = Worker(settings, tmp_path / "worker.log")

    async def run() -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, Any]]]:
        await ensure_topics(settings)
        worker.start()
        await wait_group_stable(settings, worker)
        await produce_events(settings, lines, flush=True)
        outputs = await drain(settings, expected, worker, timeout=1500)
        samples = [orjson.loads(r.value) async for r in
                   read_to_end(settings.broker, settings.topic("student-samples"))]
        return outputs, samples

    try:
        outputs, samples = asyncio.run(run())
        metrics = _metrics(port)
    finally:
        worker.stop()
    # kept for reading (pytest's tmp dir): what a training engineer would look at
    (tmp_path / "student-samples.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n"
                                                             for r in samples))
    for name in ("training-records", "rejected-examples", "scored-examples"):
        (tmp_path / f"{name}.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n"
                                                         for r in outputs[name]))

    # every prediction is a training record or a rejection with its reason
    assert expected <= accounted(outputs)
    rejected = outputs["rejected-examples"]
    assert all(r["reason"] for r in rejected)
    reasons = [r["reason"] for r in rejected]
    # nothing timed out waiting in our own queue, nor in the server's behind our flood
    assert not [r for r in reasons if "timeout" in r or "retry_budget" in r], reasons
    assert _value(metrics, "editstream_model_requests_total", status="timeout") == 0

    # the samples came from the model: its own token counts, all of an example's samples in
    # one response (n honoured)
    assert {r["request_id"] for r in samples} >= {r["request_id"] for r in
                                                    outputs["scored-examples"]}
    assert samples, "nothing was sampled"
    scored = {r["request_id"]: r for r in outputs["scored-examples"]}
    for rec in samples:
        assert len(rec["samples"]) == SAMPLES
        # the server's own finish reasons, and the format's stop sequence was sent
        assert len(rec["finish_reasons"]) == SAMPLES
        assert set(rec["finish_reasons"]) <= {"stop", "length"}
        assert rec["student"]["stop"], "the format's stop sequences go to the server"
        # truncation counted as the training-data rules define it: `length` is truncated
        if rec["request_id"] in scored:
            summary = scored[rec["request_id"]]["summary"]
            assert summary["n_samples"] == SAMPLES
            assert summary["n_truncated"] == rec["finish_reasons"].count("length")
            assert summary["n_truncated"] + summary["n_unparsable"] <= SAMPLES
        assert rec["prompt_tokens"] > 0 and 0 < rec["completion_tokens"] <= SAMPLES * MAX_TOKENS
        assert rec["student"]["n_per_request"] == SAMPLES
        assert rec["student"]["mode"] == "n"
        assert rec["student"]["short_responses"] == 0
        assert rec["requests"] == 1 + rec["retries"]  # one request per example
        assert len(set(rec["samples"])) > 1 or rec["finish_reasons"] == ["length"] * SAMPLES
    assert _value(metrics, "editstream_model_short_responses_total", kind="student") == 0

    # an example with too few valid samples leaves as `unparsable_samples`, never scored
    # into a band on garbage
    for r in rejected:
        if r["reason"] == "unparsable_samples":
            assert r["summary"]["n"] < SAMPLES  # the valid samples
            assert r["summary"]["n_truncated"] + r["summary"]["n_unparsable"] > 0

    # one server, one limit shared by the three roles, settled where the server works: a
    # request holds 1-2 of the 4 slots (samples: n=2; teacher and judge: one each), far
    # below the 64 the limit may use, which is what flooding the server took
    limit = _value(metrics, "editstream_model_concurrency_limit", kind="student")
    assert 1 <= limit <= 2 * SLOTS
    assert _value(metrics, "editstream_model_concurrency_limit", kind="teacher") == limit


def test_stop_sequences_and_finish_reasons_on_the_real_server(local_model: LocalModel) -> None:
    """The protocol pieces the sampling rules rely on, against the real server: a stop
    sequence ends the answer before it (`finish_reason: stop`), `max_tokens` cuts it
    (`length`), and `usage` carries the server's token counts."""
    endpoint = Endpoint(local_model.url, local_model.model, timeout_s=120.0)

    async def run() -> tuple[SampleBatch, SampleBatch]:
        async with StudentClient(endpoint, max_in_flight=1) as client:
            prompt = "Count from one to ten: 1, 2, 3, 4,"
            stopped = await client.sample(prompt, 1, temperature=0.0, max_tokens=48,
                                          seed=1, stop=[" 7"])
            cut = await client.sample(prompt, 1, temperature=0.0, max_tokens=3, seed=1)
            return stopped, cut

    stopped, cut = asyncio.run(run())
    assert stopped.finish_reasons == ["stop"] and " 7" not in stopped.texts[0]
    assert cut.finish_reasons == ["length"] and cut.completion_tokens == 3
    assert stopped.prompt_tokens > 0


def test_llama_server_batches_slots_and_honours_n(local_model: LocalModel) -> None:
    """What makes llama-server production-shaped, seen through the production client: the
    slots it reports, `n` answered in one response (choice i is the sample of seed + i, as
    the parallel requests the client falls back to ask), and an `n` above the slot count
    rejected with its maximum, which the client learns instead of falling back to one
    request per sample."""
    assert local_model.props()["total_slots"] == SLOTS
    endpoint = Endpoint(local_model.url, local_model.model, timeout_s=120.0)

    async def run() -> tuple[SampleBatch, list[SampleBatch], SampleBatch, StudentClient]:
        async with StudentClient(endpoint) as client:
            both = await client.sample(PROMPT, 3, max_tokens=16, seed=5)
            singles = [await client.sample(PROMPT, 1, max_tokens=16, seed=5 + i)
                       for i in range(3)]
            wide = await client.sample(PROMPT, SLOTS + 2, max_tokens=8, seed=9)
            return both, singles, wide, client

    both, singles, wide, client = asyncio.run(run())
    assert (both.mode, both.requests, both.n_per_request) == ("n", 1, 3)
    assert len(set(both.texts)) > 1  # the choices are different samples
    # same seed, same sample, whether it came as choice i of one request or on its own
    assert both.texts == [s.texts[0] for s in singles]
    # n = slots + 2: a 400 naming the maximum, then chunks of SLOTS choices: no sample lost
    assert client.n_cap == SLOTS
    assert (wide.mode, wide.n_per_request, len(wide.texts)) == ("n_capped", SLOTS, SLOTS + 2)
    assert wide.requests == 1 + 2  # the rejected request, then samples 0-3 and 4-5


def test_local_model_serve_runs_llama_server_in_the_foreground(tmp_path: Path) -> None:
    """`editstream local-model serve` is llama-server itself (exec'd): it answers on the
    port asked with the slots asked, and SIGTERM stops it."""
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "editstream.cli", "local-model", "serve",
                             "--slots", "2", "--port", str(port)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "llama-server did not come up"
            time.sleep(0.3)
        props = httpx.get(f"http://127.0.0.1:{port}/props", timeout=10).json()
        assert props["total_slots"] == 2
    finally:
        proc.terminate()
        rc = proc.wait(timeout=30)
        log.close()
    assert rc in (0, -signal.SIGTERM)


def test_local_model_serve_says_what_is_missing(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    out = subprocess.run([sys.executable, "-m", "editstream.cli", "local-model", "serve",
                          "--model", str(missing)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert f"--model {missing}: no such file" in out.stderr
