"""ManagedProcess: the one start / wait-ready / log-tail / stop path of every child process."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from editstream.infra.process import ManagedProcess, ProcessError, free_port, http_ok
from editstream.simulator.server import spawn_simulator


def test_early_exit_is_reported_with_this_runs_log(tmp_path: Path) -> None:
    log = tmp_path / "child.log"
    log.write_text("an older run's line\n")
    cmd = [sys.executable, "-c", "import sys; print('boom: bad flag'); sys.exit(3)"]
    proc = ManagedProcess.start("child", cmd, log_file=log)
    with pytest.raises(ProcessError) as err:
        proc.wait_ready(lambda: False, timeout=30)
    message = str(err.value)
    assert "child exited with code 3 during startup" in message
    assert "boom: bad flag" in message and "older run" not in message
    assert "older run" in proc.log_tail()  # the whole log is still there


def test_not_ready_in_time_names_the_wait(tmp_path: Path) -> None:
    cmd = [sys.executable, "-c", "import time; time.sleep(60)"]
    with ManagedProcess.start("sleeper", cmd, log_file=tmp_path / "s.log") as proc:
        with pytest.raises(ProcessError, match="sleeper not ready after 0s"):
            proc.wait_ready(lambda: False, timeout=0.3, detail=lambda: " (still asleep)")
        assert proc.is_running()
    assert proc.returncode == -15  # stopped by SIGTERM on leaving the block


def test_stop_escalates_to_kill_and_cleans_up_once(tmp_path: Path) -> None:
    # a child that ignores SIGTERM: stop() must SIGKILL it after the grace period
    code = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('up', flush=True); time.sleep(60)")
    proc = ManagedProcess.start("stubborn", [sys.executable, "-c", code],
                                log_file=tmp_path / "x.log")
    proc.wait_ready(lambda: "up" in proc.log_tail(), timeout=30)
    cleaned: list[int] = []
    proc.cleanup.append(lambda: cleaned.append(1))
    proc.stop(timeout=0.5)
    assert proc.returncode == -9 and cleaned == [1]
    proc.stop()
    assert cleaned == [1]


def test_the_simulator_launcher_serves_until_stopped(tmp_path: Path) -> None:
    sim = spawn_simulator("--latency-ms", "1", log_file=tmp_path / "sim.log")
    try:
        assert http_ok(f"{sim.url}/healthz")()
    finally:
        sim.stop(timeout=10)
    assert not sim.is_running()
    assert not http_ok(f"{sim.url}/healthz")()


def test_the_simulator_launcher_reports_a_bad_flag(tmp_path: Path) -> None:
    with pytest.raises(ProcessError, match="simulator exited with code 2"):
        spawn_simulator("--drop-rate", "2", port=free_port(), log_file=tmp_path / "sim.log")
