"""Student model client: samples ``n`` completions of a prompt (``/v1/completions``).

Determinism: the student asks for ``n`` samples with one seed. Servers that accept ``n``
derive choice ``i`` from ``seed + index`` (the simulator does; so does llama.cpp's
llama-server, whose extra choices are child tasks seeded ``seed + i``). Servers that reject
``n`` get ``n`` requests with ``n=1`` and ``seed = seed + i``; servers that reject an ``n``
above a maximum they name (llama-server: at most its slot count) are asked in chunks of that
maximum; servers that ignore or cap it (llama-cpp-python's server answers one choice
whatever ``n`` asks) keep what they returned and are asked again for the rest, so every
mode yields the same samples in the same order.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from typing import Any, Unpack

from agents.models.base import (
    ClientOptions,
    _finish_reason,
    _int_field,
    _Malformed,
    _ModelClient,
    _Outcome,
    _seed,
    _str_field,
    _Usage,
)
from streams.models import Endpoint, ModelError, SampleBatch

log = logging.getLogger(__name__)

# "n" as a word in an error message, e.g. "n > 1 is not supported" or "'n' must be 1".
_MENTIONS_N = re.compile(r"(?<![\w-])['\"`]?n['\"`]?(?![\w-])")
# The largest n a rejection allows, when it says: llama-server's "Field 'n': Value must be
# between 1 <= value <= 4, but got 10", or "at most 4", "maximum is 4", "<= 4".
_STATED_MAX = re.compile(r"(?:<=|at most|maximum(?: is| of)?|max(?: is| of)?)\s*(\d+)",
                         re.IGNORECASE)


class StudentClient(_ModelClient):
    """Samples completions from the student model (OpenAI-compatible ``/v1/completions``)."""

    def __init__(self, endpoint: Endpoint, *, kind: str = "student",
                 **options: Unpack[ClientOptions]) -> None:
        if endpoint.api != "openai":
            raise ValueError("the student speaks the OpenAI completions API only")
        options.setdefault("max_in_flight", 64)
        # kind: the metrics' label (`candidate` for the eval stage's candidates)
        super().__init__(endpoint, kind=kind, **options)
        # Learned per client: the most choices one response carries (None: n is honoured
        # so far; 1: the server ignores or rejects n, one request per sample).
        self.n_cap: int | None = None

    @property
    def n_supported(self) -> bool:
        return self.n_cap != 1

    @n_supported.setter
    def n_supported(self, value: bool) -> None:
        self.n_cap = None if value else 1

    async def sample(
        self,
        prompt: str,
        n: int,
        *,
        temperature: float = 0.8,
        max_tokens: int = 1024,
        seed: int | None = 0,
        stop: list[str] | None = None,
    ) -> SampleBatch:
        """``n`` samples of ``prompt``; sample ``i`` is the one drawn with ``seed + i``.

        Requests ask for up to ``n_cap`` choices each (all ``n`` at first), the one for
        samples ``j..j+k`` with ``n=k`` and ``seed + j``, concurrently under the endpoint's
        limit. A response with fewer choices than asked (llama.cpp ignores ``n``; some
        servers cap it) keeps what it carries (choice ``i`` is seed ``+ i``), lowers
        ``n_cap`` to what came back, and the rest is asked for again. A 400 naming ``n``
        sets ``n_cap`` to the maximum it states (llama-server: its slot count), or to 1.
        Either way no sample is drawn twice.

        ``seed=None`` sends no seed (for servers that do not honour one: the samples are then
        not reproducible, and claiming otherwise would be wrong). ``stop`` is passed as the
        completions API's stop sequences.
        """
        if n < 1:
            raise ValueError("n must be >= 1")
        base: dict[str, Any] = {
            "model": self.endpoint.model,
            "prompt": prompt,
            "temperature": temperature,
            "max_tokens": max_tokens,
        }
        if stop is not None:
            base["stop"] = stop
        texts: dict[int, str] = {}
        finish: dict[int, str] = {}
        latencies: dict[int, float] = {}
        acc = {"requests": 0, "retries": 0, "prompt": 0, "completion": 0, "short": 0}
        widest = 0
        while len(texts) < n:
            cap = self.n_cap or n
            missing = [i for i in range(n) if i not in texts]
            chunks = _chunks(missing, cap)
            results = await self._draw_chunks(base, seed, chunks)
            progress = False
            for (start, count), result in zip(chunks, results, strict=True):
                if isinstance(result, ModelError):
                    acc["requests"] += result.attempts
                    acc["retries"] += result.attempts - 1
                    continue
                acc["requests"] += result.attempts
                acc["retries"] += result.attempts - 1
                acc["prompt"] += result.prompt_tokens
                acc["completion"] += result.completion_tokens
                got = result.value
                widest = max(widest, len(got))
                for i, (text, reason) in enumerate(got):
                    texts[start + i] = text
                    finish[start + i] = reason
                    latencies[start + i] = result.latency_ms
                progress = progress or bool(got)
                if len(got) < count:
                    acc["short"] += 1
                    self._learn_cap(len(got))
            stated = [_stated_max(r, count) for r, (_, count) in zip(results, chunks, strict=True)
                      if isinstance(r, ModelError)]  # only ever a rejected n
            if stated:
                self._learn_cap(min(stated))
            elif not progress:  # asked for samples and got none at all
                raise ModelError("malformed_response", detail="no choices returned")
        if widest >= n:
            mode = "n"
        elif widest <= 1 and n > 1:
            mode = "parallel"
        else:
            mode = "n_capped" if n > 1 else "n"
        return SampleBatch(
            texts=[texts[i] for i in range(n)],
            latencies_ms=[latencies[i] for i in range(n)],
            mode=mode,
            requests=acc["requests"],
            retries=acc["retries"],
            prompt_tokens=acc["prompt"],
            completion_tokens=acc["completion"],
            n_per_request=max(1, widest),
            short_responses=acc["short"],
            finish_reasons=[finish[i] for i in range(n)],
        )

    def _learn_cap(self, returned: int) -> None:
        cap = max(1, returned)
        if self.n_cap is None or cap < self.n_cap:
            if cap == 1:
                log.info("server at %s ignores n; one request per sample", self.endpoint.base_url)
            else:
                log.info("server at %s caps n at %d", self.endpoint.base_url, cap)
            self.n_cap = cap

    async def _draw_chunks(
        self, base: dict[str, Any], seed: int | None, chunks: list[tuple[int, int]]
    ) -> list[_Outcome[list[tuple[str, str]]] | ModelError]:
        """One request per chunk, concurrently; a ModelError is returned, not raised, so
        the samples other chunks brought are kept (a rejected ``n`` is a lesson, not a loss).
        The first error that is not about ``n`` cancels the rest."""

        async def one(start: int, count: int) -> _Outcome[list[tuple[str, str]]] | ModelError:
            body = {**base, "n": count, **_seed(None if seed is None else seed + start)}
            try:
                return await self._call(
                    "/v1/completions", body, self._choices_parser(count), count
                )
            except ModelError as exc:
                if not self._rejects_n(exc, count):
                    raise
                return exc

        if len(chunks) == 1:  # the usual case: no task group to wait on (~15 µs of CPU)
            return [await one(*chunks[0])]
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(one(start, count)) for start, count in chunks]
        except BaseExceptionGroup as group:
            # The first failure cancels the siblings; surface it as the plain ModelError.
            errors = [e for e in group.exceptions if isinstance(e, ModelError)]
            if errors:
                raise errors[0] from None
            raise
        return [t.result() for t in tasks]

    @staticmethod
    def _rejects_n(exc: ModelError, n: int) -> bool:
        if exc.status != 400 or n == 1:
            return False
        return exc.param == "n" or bool(exc.detail and _MENTIONS_N.search(exc.detail))

    @staticmethod
    def _choices_parser(n: int) -> Callable[[Any], tuple[list[tuple[str, str]], _Usage]]:
        """Parse a completions body into (text, finish_reason) pairs ordered by ``index``:
        choices ``0..k-1``, ``k <= n`` (fewer when the server ignores or caps ``n``)."""

        def parse(body: Any) -> tuple[list[tuple[str, str]], _Usage]:
            choices = body["choices"]
            if not isinstance(choices, list):
                raise _Malformed("choices is not a list")
            indexed: dict[int, tuple[str, str]] = {}
            for pos, choice in enumerate(choices):
                index = choice.get("index", pos) if isinstance(choice, dict) else pos
                if not isinstance(index, int) or index in indexed:
                    raise _Malformed("bad or duplicate choice index")
                indexed[index] = (_str_field(choice, "text"), _finish_reason(choice))
            usage = body.get("usage")
            counts = _Usage(
                _int_field(usage, "prompt_tokens"), _int_field(usage, "completion_tokens")
            )
            if sorted(indexed) != list(range(len(indexed))) or len(indexed) > n:
                raise _Malformed("choice indexes do not match n")
            return [indexed[i] for i in range(len(indexed))], counts

        return parse


def _stated_max(exc: ModelError, asked: int) -> int:
    """The most choices a rejection of ``n=asked`` says one request may ask for (1 when it
    names no usable number: one request per sample is always safe)."""
    numbers = [int(m) for m in _STATED_MAX.findall(exc.detail or "")]
    usable = [k for k in numbers if 1 <= k < asked]
    return max(usable) if usable else 1


def _chunks(indexes: list[int], cap: int) -> list[tuple[int, int]]:
    """(start, count) requests covering ``indexes`` (ascending): runs of consecutive
    indexes, split so no request asks for more than ``cap`` choices."""
    out: list[tuple[int, int]] = []
    for i in indexes:
        if out and out[-1][0] + out[-1][1] == i and out[-1][1] < cap:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((i, 1))
    return out

