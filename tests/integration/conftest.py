"""Fixtures for tests on a real broker: Tansu (embedded), the model simulator as a real HTTP
server process, and `editstream worker` processes — the same commands a user runs."""

from __future__ import annotations

import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from editstream.infra.broker import BrokerHandle, start_broker
from editstream.infra.process import ManagedProcess, spawn_worker
from editstream.simulator.server import spawn_simulator
from streams.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def tansu() -> Iterator[BrokerHandle]:
    with start_broker("tansu") as handle:
        yield handle


class Simulator:
    def __init__(self, tmp: Path, *flags: str) -> None:
        # the answer key it was given, for a twin simulator that must answer alike
        self.truth = flags[flags.index("--ground-truth") + 1] if "--ground-truth" in flags else ""
        self.port = free_port()
        self.process = spawn_simulator(*flags, port=self.port,
                                       log_file=tmp / f"simulator-{self.port}.log")
        self.url = self.process.url

    def stop(self) -> None:
        self.process.stop(timeout=10)


# (seed, sessions, predictions per session) of the generated corpora the integration tests
# feed; the shared simulator gets their answer key, as `editstream generate` writes it.
TRUTH_CORPORA = ((11, 8, 4), (5, 6, 3), (23, 6, 3), (21, 5, 3), (21, 10, 4), (33, 8, 3),
                 (44, 6, 3), (55, 8, 3), (66, 8, 3), (77, 6, 3))
# the corpora generated with the stdlib splicer (load-test traces) rather than real history
SPLICED_CORPORA = {(21, 5, 3)}  # kafka_fixtures.live_run: the export tests need several repos


def write_ground_truth(path: Path) -> Path:
    from editstream.sessions.generate import (
        GenerateConfig,
        generate_events,
        ground_truth,
        write_jsonl,
    )

    rows = [row for seed, sessions, per in TRUTH_CORPORA
            for row in ground_truth(generate_events(GenerateConfig(
                seed=seed, sessions=sessions, predictions_per_session=per,
                splice=(seed, sessions, per) in SPLICED_CORPORA)))]
    write_jsonl(rows, path)
    return path


@pytest.fixture(scope="session")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    tmp = tmp_path_factory.mktemp("sim")
    truth = write_ground_truth(tmp / "truth.jsonl")
    sim = Simulator(tmp, "--ground-truth", str(truth))
    yield sim
    sim.stop()


class Worker:
    """An `editstream worker` process with its log kept for the test report."""

    def __init__(self, settings: Settings, log: Path) -> None:
        self.settings = settings
        self.log_path = log
        self.process: ManagedProcess | None = None
        self.proc: subprocess.Popen[bytes] | None = None  # the child, for its pid and state

    def start(self) -> Worker:
        self.process = spawn_worker(self.settings, self.log_path)
        self.proc = self.process.process
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=30)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])


def run_settings(broker: str, sim_url: str, **kw: object) -> Settings:
    """Settings for one isolated run: its own topics and consumer group on a shared broker."""
    run = uuid.uuid4().hex[:8]
    base = dict(broker=broker, topic_prefix=f"t{run}-", app_id=f"editstream-t{run}",
                student_url=sim_url, teacher_url=sim_url, samples=8, idle_tick_ms=500,
                partitions=4, log_level="info")
    base.update(kw)
    return Settings(**base)  # type: ignore[arg-type]


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for w in started:
        w.stop()
