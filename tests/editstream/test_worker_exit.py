"""A worker that exits on its own says why in its log (editstream/worker.py).

The chaos run restarted workers while a broker was down: they died at start with status 1,
a NodeNotReadyError from the first node they asked (in the topic check, or in Faust's topic
declaration, whose exception mode turns into `sys.exit(1)`). A start-up step against the
cluster is now tried again for a while; a Kafka error that still escapes the worker exits
with the client-failure status (75, "run it again") and one critical line naming it.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap

import pytest
from aiokafka.errors import NodeNotReadyError

from agents.stage import EXIT_CLIENT_FAILURE
from editstream.worker import patiently

SCRIPT = textwrap.dedent("""
    import logging
    import mode
    from aiokafka.errors import NodeNotReadyError
    from editstream.worker import execute

    class Broken(mode.Service):
        async def on_start(self):
            raise NodeNotReadyError("node 2 is not ready: request r-secret")

    logging.basicConfig(level=logging.WARNING)
    execute(mode.Worker(Broken(), loglevel="warn", quiet=True))
""")


def test_a_kafka_error_escaping_the_worker_exits_75_and_is_named() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == EXIT_CLIENT_FAILURE, done.stderr
    log = done.stdout + done.stderr
    ours = log[log.index("worker exiting with status 1: NodeNotReadyError escaped"):]
    assert "in on_start" in ours  # where it was raised
    assert "r-secret" not in ours  # not its message: it may quote a record


async def test_a_start_step_is_tried_again_while_a_broker_is_down(
        caplog: pytest.LogCaptureFixture) -> None:
    calls = 0

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise NodeNotReadyError("node 1")

    with caplog.at_level(logging.WARNING):
        await patiently(flaky, "the topics", patience_s=10)
    assert calls == 3
    assert caplog.text.count("the topics not reachable yet (NodeNotReadyError)") == 2


def test_a_start_step_that_keeps_failing_exits_75_with_one_line(
        caplog: pytest.LogCaptureFixture) -> None:
    async def down() -> None:
        raise NodeNotReadyError("node 1")

    with caplog.at_level(logging.CRITICAL), pytest.raises(SystemExit) as exc:
        asyncio.run(patiently(down, "the topics", patience_s=1.0))
    assert exc.value.code == EXIT_CLIENT_FAILURE
    assert "the topics not reachable after 1 s (NodeNotReadyError); exiting" in caplog.text
