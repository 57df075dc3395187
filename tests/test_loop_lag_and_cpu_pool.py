"""The event-loop lag probe sees a callback that holds the loop, and the CPU pool scores a
record in another process exactly as the loop would."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import orjson

from agents.cpu import CpuPool
from agents.looplag import LoopLagProbe
from agents.score import score_bytes
from streams.settings import Settings


async def test_probe_measures_a_blocking_call() -> None:
    probe = LoopLagProbe(0.01)
    task = asyncio.create_task(probe.run())
    await asyncio.sleep(0.05)
    quiet = max(probe.recent)
    time.sleep(0.12)  # CPU work on the loop, as a synchronous scoring call would be
    await asyncio.sleep(0.05)
    task.cancel()
    assert max(probe.recent) >= 0.1 > quiet


def _record() -> bytes:
    base, settled = "x = 1\ny = 2\n", "x = 10\ny = 2\n"
    example = {"request_id": "r", "path": "a.py", "history": [], "base_region": base,
               "settled_region": settled}
    return orjson.dumps({"request_id": "r", "example": example,
                         "student": {"prompt_format": "fim"},
                         "samples": [settled, base, "x = 11\ny = 2\n", settled]})


def _pid() -> int:
    return os.getpid()


async def test_pool_scores_in_another_process_as_the_loop_does() -> None:
    settings = Settings()
    inline = await CpuPool(0).run(score_bytes, _record(), settings)
    pool = CpuPool(1)
    try:
        assert await pool.run(_pid) != os.getpid()
        assert await pool.run(score_bytes, _record(), settings) == inline
    finally:
        pool.close()
    assert inline["summary"]["n_metrics"] == 2 and inline["summary"]["n"] == 4


POOL_SCRIPT = """
import asyncio, os, sys, time
from agents.cpu import CpuPool

def slow_pid():
    time.sleep(0.3)
    return os.getpid()

async def main():
    pool = CpuPool(2)
    pids = await asyncio.gather(*(pool.run(slow_pid) for _ in range(4)))
    print(" ".join(map(str, sorted(set(pids)))), flush=True)
    await asyncio.sleep(600)

if __name__ == "__main__":
    asyncio.run(main())
"""


def _children(pid: int) -> set[int]:
    """Processes whose parent is `pid` (from /proc)."""
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                out.add(int(entry))
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_pool_processes_end_when_their_worker_is_killed_9(tmp_path: Path) -> None:
    """A worker killed with -9 shuts nothing down: its pool processes must still end, not
    live on with parent 1 (they used to, ~60 MB each, one pool per crash)."""
    import signal
    import subprocess
    import sys

    script = tmp_path / "worker.py"  # a file: spawned processes import its functions
    script.write_text(POOL_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        pool_pids = {int(p) for p in proc.stdout.readline().split()}
        children = _children(proc.pid)
        assert len(pool_pids) == 2 and pool_pids <= children, (pool_pids, children)
        assert all(_alive(p) for p in children)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [p for p in children if _alive(p)] == []
