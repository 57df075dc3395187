"""`editstream demo`'s own parts that need no broker: the progress line and the message when
Apache Kafka cannot start. The whole demo runs against a real broker in
tests/integration/test_pipeline.py."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from editstream import demo
from streams.settings import Settings


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_rewrites_one_line_on_a_terminal() -> None:
    out, clock = Tty(), Clock()
    p = demo.Progress(5, out, clock=clock)
    for done in (0, 2, 5):
        clock.now += 2
        p.update(done)
    p.close()
    p.close()  # once only
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")
    assert text.split("\r")[-1] == "  accounted for 5/5 predictions (6 s)\n"


def test_progress_prints_periodic_lines_and_the_last_one_otherwise() -> None:
    out, clock = io.StringIO(), Clock()
    p = demo.Progress(98, out, every_s=10, clock=clock)
    for done in (0, 10, 20, 40, 60, 98):  # every 4 s
        clock.now += 4
        p.update(done)
    p.close()
    lines = out.getvalue().splitlines()
    # the first at 4 s, then one 10 s or more later, then the end
    assert lines == ["  accounted for 0/98 predictions (4 s)",
                     "  accounted for 40/98 predictions (16 s)",
                     "  accounted for 98/98 predictions (24 s)"]


def test_kcat_line_reads_the_training_records() -> None:
    assert demo.kcat_line("127.0.0.1:9092") == \
        "kcat -b 127.0.0.1:9092 -C -t training-records -c 3 -e"


def test_kafka_demo_without_java_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no java here
    sample = tmp_path / "sample.jsonl"
    sample.write_bytes(b"")
    code = demo.run_demo(Settings(), sample=sample, out=tmp_path / "out", timeout_s=5,
                         broker_kind="kafka")
    err = capsys.readouterr().err
    assert code == 1
    assert "cannot start the kafka broker" in err and "Java 17+" in err
    assert "make demo" in err


def test_the_progress_line_says_what_the_pipeline_waits_for() -> None:
    """While nothing is accounted for, the line names the phase from the worker's /metrics."""
    from prometheus_client import CollectorRegistry, Gauge, generate_latest

    registry = CollectorRegistry()
    assigned = Gauge("editstream_assigned_partitions", "", ["runner"], registry=registry)
    open_now = Gauge("editstream_settle_open_predictions", "", registry=registry)

    def phase() -> str:
        return demo.waiting_for(generate_latest(registry).decode(), 98)

    assert phase() == "worker joining its consumer groups (0/2 assigned)"
    assigned.labels("settle").set(4)
    open_now.set(40)
    assert phase() == "worker joining its consumer groups (1/2 assigned)"
    assigned.labels("stages").set(4)
    assert phase() == "settling (40 of 98 predictions still open)"
    open_now.set(0)
    assert phase() == "in the stages after settle"


def test_the_progress_line_carries_the_phase_and_blanks_a_longer_one() -> None:
    stream = io.StringIO()
    stream.isatty = lambda: True  # type: ignore[method-assign]
    progress = demo.Progress(98, stream=stream, clock=lambda: 0.0)
    progress.update(0, "worker joining its consumer groups (0/2 assigned)")
    progress.update(3)
    lines = stream.getvalue().split("\r")[1:]
    assert lines[0].endswith(": worker joining its consumer groups (0/2 assigned)")
    assert lines[1].startswith("  accounted for 3/98 predictions (0 s)")
    assert len(lines[1]) == len(lines[0])  # padded: the old phase does not show through
