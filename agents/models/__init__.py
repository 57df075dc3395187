"""Async HTTP clients for the model servers: the student (sampling) and the teacher/judge (chat).

The pipeline talks to OpenAI-compatible servers (vLLM, SGLang, the local simulator) and, for
the teacher, optionally to Anthropic's Messages API. Model servers are slow, rate limited and
flaky, so every call here is bounded (an adaptive concurrency limit per endpoint,
``streams/limiter.py``: a one-slot server gets one request at a time, a fleet many), timed
out (from the moment the request holds a slot: the timeout times the server, not our own
queue), retried with exponential backoff and full jitter, and honours ``Retry-After``.
Whatever goes wrong is translated at this boundary into one exception type,
:class:`ModelError`, with a short machine-readable ``reason``; httpx and JSON errors
never reach callers.

    base.py       the shared client: pool, concurrency bound, retry loop, response fields
    transport.py  the HTTP pool (aiohttp's by default) and the mapping of its errors
    student.py    `StudentClient`: n samples of a prompt, whatever the server does with n
    teacher.py    `TeacherClient`: one chat turn with the teacher or the judge
"""

from agents.models.base import ClientOptions
from agents.models.student import StudentClient
from agents.models.teacher import TeacherClient
from streams.models import ChatResult, Endpoint, ModelError, RequestEvent, SampleBatch

__all__ = [
    "ChatResult",
    "ClientOptions",
    "Endpoint",
    "ModelError",
    "RequestEvent",
    "SampleBatch",
    "StudentClient",
    "TeacherClient",
]
