"""The verdict of a stage's record handling on a handler that raises (agents/stage.py).

A record the handler cannot process is dead-lettered and the stage goes on. An error of the
Kafka client is not the record's fault: the chaos run (bench/chaos.py) found a resumed zombie
worker, its transactional producers fenced, dead-lettering records it could no longer send
(`internal_error: IllegalOperation`), records the clean run processed. The worker now exits
at once instead, neither dead-lettering nor acknowledging the record.

`handle_one` runs in a child process (it must be able to exit) on one stand-in message; the
Kafka side of this is exercised for real by tests/integration/test_chaos.py.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from faust.exceptions import ProducerSendError

from agents.stage import EXIT_CLIENT_FAILURE, is_client_failure

SCRIPT = textwrap.dedent("""
    import asyncio, sys
    import orjson
    from aiokafka import errors
    from agents.inflight import InFlight
    from agents.stage import handle_one

    class Message:
        value, topic, partition, offset = b'{"request_id": "r1"}', "t", 0, 5

    class Runtime:
        examples = InFlight(1)

        async def dead_letter(self, topic, stage, reason, detail, msg, **kw):
            print("DEAD_LETTER", stage, reason, detail, flush=True)

    async def handle(record):
        raise getattr(errors, sys.argv[1])("raised by the handler")

    asyncio.run(handle_one(Runtime(), "sample", handle, orjson.loads, Message()))
    print("STREAM_WENT_ON", flush=True)
""")


def run_loop(error: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", SCRIPT, error], capture_output=True,
                          text=True, timeout=60, check=False)


@pytest.mark.parametrize("error", ["IllegalOperation", "ProducerFenced", "KafkaTimeoutError"])
def test_a_kafka_client_failure_exits_without_a_dead_letter(error: str) -> None:
    done = run_loop(error)
    assert done.returncode == EXIT_CLIENT_FAILURE, done.stderr
    assert "DEAD_LETTER" not in done.stdout
    assert "STREAM_WENT_ON" not in done.stdout
    assert "Kafka client failure" in done.stderr


@pytest.mark.parametrize("error", ["RecordTooLargeError", "MessageSizeTooLargeError"])
def test_a_record_too_large_stays_a_dead_letter(error: str) -> None:
    done = run_loop(error)
    assert done.returncode == 0, done.stderr
    assert f"DEAD_LETTER sample internal_error {error}" in done.stdout
    assert "STREAM_WENT_ON" in done.stdout


def test_a_bug_on_the_record_is_a_dead_letter_and_the_stream_goes_on() -> None:
    assert not is_client_failure(ValueError("bad record"))
    assert is_client_failure(ProducerSendError("no transaction producer for the partition"))
    done = subprocess.run([sys.executable, "-c", SCRIPT.replace(
        'raise getattr(errors, sys.argv[1])("raised by the handler")',
        'raise KeyError("region")'), "unused"],
        capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "DEAD_LETTER sample internal_error KeyError" in done.stdout
    assert "STREAM_WENT_ON" in done.stdout
