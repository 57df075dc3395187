"""An adaptive concurrency limit per model endpoint: how many requests to keep in flight.

A model server's capacity is discovered, not configured: llama.cpp's server works one request
at a time and queues the rest, a vLLM fleet batches dozens. Requests beyond what the server
works on wait in *its* queue, so their latency grows with our concurrency while throughput
does not; past the client's timeout they fail and are retried, wasting the work already done.

The limit moves between 1 and ``max_limit`` (AIMD, in the spirit of Netflix's
concurrency-limits and TCP congestion control):

* **latency gradient**: completed requests are grouped in rounds (as many as were in
  flight, sent after the last decision and the burst it released). A round's mean latency
  is compared with the latency seen at lower concurrency (an average per in-flight level,
  so the baseline is never taken from requests that queued). Above ``tolerance`` × that
  baseline the server is queueing: latency grows as ``limit / slots``, so the limit shrinks
  to ``limit / ratio``, the server's estimated slots (by the factor ``backoff`` at most).
  Otherwise it doubles (slow start, until latency rises half way to the tolerance, as
  TCP's HyStart leaves slow start on a delay increase) or grows by one.
* **overload**: a timeout, 429 or 503 halves the limit at once, at most once per round (the
  requests already in flight when it shrank do not count again).

A one-slot server settles between 1 and 2 in flight (the second one keeps it busy between
requests), a k-slot server between k and ``tolerance × k``, a server with room for
everything at ``max_limit``. Latency also varies with request size (prompt length, tokens
generated); averaging per round and per level damps that, and requests of very different
sizes on one endpoint make the limit more cautious, never less.

``latency_budget_s`` (the requests' timeout): the limit does not grow when the step (a
doubling in slow start, else one) could push a request past it, judged on the slowest
request seen at the level (in this round or an earlier one: llama-server answers a request
whose prompt a slot has cached in seconds, an uncached one in a minute and more, so one
round of cached prompts says little about the next). Two ways to get there: a saturated
server's latency grows as target / level (kept within 3/4 of the budget), and a request that
queues behind a full server waits up to a whole request's time for a slot and then takes as
long itself (twice the slowest, kept within the budget; the limiter cannot know whether the
step lands below the slot count). A one-slot server that needs 15 s per request is never
sent a second one that would wait 15 s in its queue and time out at 30 s. Where the server
is too slow for the timeout the budget wins over the slot count: 8 slots on a CPU at ~90 s
a request settle at 7, not 8, and no request times out.

**server-reported service time** (llama-server's ``timings``): when a response says how long
the server worked on it, latency minus that is the time the request waited in the server's
queue for a slot, which latency alone cannot tell from slower work. On a CPU server a
batch of k sequences decodes about k times slower per token, so latency grows with the
requests in flight although none waits: the gradient above would take that for queueing
and settle below the slot count. With service times a round decides on the queue instead:
if more than a sliver of its requests waited (over ``_WAIT_SHARE`` of their service time),
the limit is above the slots by about that share and shrinks by it; if none did, it grows
(slow start, then by one). The limit then moves between the slot count and one above it.
Slow start ends when the service time grows with the level (half way to the
tolerance over the lowest level's): the CPU server's signature, where the work of a batch
is shared by its sequences. Doubling there is blind: the round it decides on is the
cheapest the server ran (llama-server's 8 slots on 2 cores, a round at 8 of cached prompts
doubled to 16, and the 8 requests beyond the slots queued behind uncached ones until they
timed out at 120 s); by one, a step past the slots queues one request, whose wait the next
round sees. A wait over a quarter of the budget is a queue, not the server's own stall (that
is one prompt evaluation, seconds): it shrinks the limit at once, below a level that ran
clear before too.

Not every wait is for a slot: llama-server takes new requests between two batches, so one
that arrives while another slot's long prompt is evaluated waits for that batch with slots
free (seconds for a prompt of 800 tokens on a CPU). Shrinking for that settled 8 slots at
6.9. So the highest limit a full round ran at with no wait is kept (the server has shown
that many slots): a round with waits at or below it holds the limit once, and only a second
in a row shrinks it (the server got smaller, or another client shares it; the level is then
proven anew); a failed probe above it falls back no lower than it.

**Requests of n choices** count as n in flight: llama-server works an ``n=k`` request
(``n_cmpl``) in k slots at once and starts it only when k are free, and a batching server
(vLLM) decodes k sequences for it. The limit counts sequences, so what it learned from
single-choice requests (a teacher, a judge on the same endpoint) holds for ``n`` requests.
A request wider than the limit is sent when nothing else is in flight.

``adaptive=False`` keeps the limit fixed at ``max_limit`` (a plain semaphore).

Pure: asyncio primitives only; callers measure latency and report it on their slot.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

__all__ = ["AdaptiveLimit", "Slot"]

# Weight of a new round in its level's average latency: recent enough to follow a change
# of workload within a few rounds, smooth enough not to chase one odd request.
_LEVEL_WEIGHT = 0.5
# A request "waited" in the server's queue when latency minus the server's own service time
# exceeds this share of the service time (and _WAIT_MIN_S): HTTP and JSON on the way take
# milliseconds against seconds of model work.
_WAIT_SHARE = 0.1
_WAIT_MIN_S = 0.005
# A wait over this share of the budget is a queue, never the server's own stall (that is one
# prompt evaluation, seconds): it shrinks the limit at once, a level proven clear or not.
_LONG_WAIT = 0.25


@dataclass
class Slot:
    """One request's permission to be in flight; tell it how the request went."""

    seq: int
    in_flight: int  # sequences in flight when this one was sent, its own included
    weight: int = 1  # sequences this request asks the server for (``n``)
    outcome: str = "ignored"  # "ok" | "overload" | "ignored" (no load signal: 400, 500, ...)
    latency_s: float = 0.0
    service_s: float | None = None  # the server's own time on the request, when it says

    def ok(self, latency_s: float, service_s: float | None = None) -> None:
        self.outcome, self.latency_s = "ok", latency_s
        if service_s is not None and service_s > 0.0:
            self.service_s = min(service_s, latency_s)

    def overload(self) -> None:
        self.outcome = "overload"


@dataclass
class _Round:
    latencies: list[float] = field(default_factory=list)
    levels: list[int] = field(default_factory=list)
    weights: list[int] = field(default_factory=list)
    waited: list[bool | None] = field(default_factory=list)  # None: service time unknown
    services: list[float] = field(default_factory=list)  # each request's, when all are known
    long_wait: bool = False  # a request waited in the server's queue past _LONG_WAIT
    peak: int = 0  # most requests in flight since the round started


class AdaptiveLimit:
    """A concurrency limit that follows the server (see the module docstring).

    ``observer`` is called with the new limit whenever it changes (metrics).
    """

    def __init__(
        self,
        max_limit: int,
        *,
        adaptive: bool = True,
        initial: int = 1,
        tolerance: float = 1.5,
        backoff: float = 0.5,
        observer: Callable[[float], None] | None = None,
        latency_budget_s: float | None = None,
    ) -> None:
        if max_limit < 1:
            raise ValueError("max_limit must be >= 1")
        if tolerance <= 1.0 or not 0.0 < backoff < 1.0:
            raise ValueError("tolerance must be > 1 and backoff in (0, 1)")
        self.max_limit = max_limit
        self.adaptive = adaptive
        self.tolerance = tolerance
        self.backoff = backoff
        self._observer = observer
        self.latency_budget_s = latency_budget_s
        self.limit = float(min(max(1, initial), max_limit) if adaptive else max_limit)
        self.in_flight = 0
        self.peak_limit = self.limit
        self._slow_start = True
        self._seq = 0  # sequence number of the last slot handed out
        self._decided_at = 0  # slots up to this one belong to rounds already decided
        self._changed_at = 0  # the last slot handed out before the last decision
        self._round = _Round()
        self._levels: dict[int, float] = {}  # in-flight level → average latency (s)
        # Service times: the highest limit a round ran at with no request waiting for a
        # slot (the server has shown that many slots), and the rounds in a row that saw
        # waits at or below it (one is the server's own stall, two say it has fewer now).
        self._clear_level = 0
        self._strikes = 0
        # Service time (a round's mean), averaged per in-flight level (as ``_levels``), and the
        # slowest request seen at each level (the budget is judged on it: see ``_grow``).
        self._service_levels: dict[int, float] = {}
        self._slowest: dict[int, float] = {}
        self._waiters: deque[tuple[asyncio.Future[None], int]] = deque()
        self._notify()

    # --- admission -----------------------------------------------------------------------
    @asynccontextmanager
    async def slot(self, weight: int = 1) -> AsyncIterator[Slot]:
        """Wait for room under the limit (FIFO), then hold it for one request that asks
        for ``weight`` sequences (an ``n=k`` request: llama-server works its k choices in
        k slots at once, and starts it only when k are free; vLLM batches k sequences). A
        request wider than the limit is sent when nothing else is in flight."""
        weight = max(1, weight)
        await self._acquire(weight)  # counts us in flight
        self._seq += weight
        if self._seq > self._decided_at:
            self._round.peak = max(self._round.peak, self.in_flight)
        slot = Slot(self._seq, self.in_flight, weight)
        try:
            yield slot
        finally:
            self.in_flight -= weight
            self._record(slot)
            self._wake()

    def _fits(self, weight: int) -> bool:
        return self.in_flight + weight <= int(self.limit) or self.in_flight == 0

    async def _acquire(self, weight: int) -> None:
        if not self._waiters and self._fits(weight):
            self.in_flight += weight
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((fut, weight))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.in_flight -= weight  # we were handed room we will not use: pass it on
                self._wake()
            else:
                self._waiters.remove((fut, weight))
            raise

    def _wake(self) -> None:
        # strictly FIFO: a wide request at the head is not overtaken by narrow ones
        while self._waiters:
            fut, weight = self._waiters[0]
            if fut.done():
                self._waiters.popleft()
                continue
            if not self._fits(weight):
                return
            self._waiters.popleft()
            self.in_flight += weight  # reserved for the waiter until it runs
            fut.set_result(None)

    # --- feedback ------------------------------------------------------------------------
    def _record(self, slot: Slot) -> None:
        if not self.adaptive or slot.outcome == "ignored":
            return
        if slot.outcome == "overload":
            if slot.seq > self._changed_at:  # once per round: in-flight peers don't count
                self._clear_level = 0  # the server is not what it was: prove levels anew
                self._set(self.limit * self.backoff, decrease=True)
            return
        if slot.seq <= self._decided_at:
            return  # sent under an older limit: says nothing about this one
        r = self._round
        r.latencies.append(slot.latency_s)
        r.levels.append(slot.in_flight)
        r.weights.append(slot.weight)
        if slot.service_s is None:
            r.waited.append(None)
        else:
            wait = slot.latency_s - slot.service_s
            r.waited.append(wait > max(_WAIT_MIN_S, _WAIT_SHARE * slot.service_s))
            r.services.append(slot.service_s)
            if self.latency_budget_s is not None and wait > _LONG_WAIT * self.latency_budget_s:
                r.long_wait = True
        if sum(r.weights) >= max(1, min(int(self.limit), r.peak)):
            self._decide()

    def _decide(self) -> None:
        r = self._round
        latency = sum(lat * w for lat, w in zip(r.latencies, r.weights, strict=True)) / sum(
            r.weights)
        if None not in r.waited:
            self._decide_on_queue(latency)
            return
        level = max(1, round(sum(r.levels) / len(r.levels)))
        old = self._levels.get(level)
        self._levels[level] = latency if old is None else old + _LEVEL_WEIGHT * (latency - old)
        baseline = min(v for k, v in self._levels.items() if k <= level)
        ratio = latency / baseline if baseline > 0 else 1.0
        if self._slow_start and ratio > 1.0 + (self.tolerance - 1.0) / 2:
            self._slow_start = False  # latency starts to rise: grow by one from here
        if ratio > self.tolerance:
            # saturated, latency grows as limit / slots: limit / ratio estimates the slots
            self._set(self.limit * max(self.backoff, 1.0 / ratio), decrease=True)
        elif r.peak < int(self.limit):
            self._set(self.limit, decrease=False)  # unused: hold
        else:
            self._grow(max(r.latencies))

    def _decide_on_queue(self, latency: float) -> None:
        """A round whose every response carried the server's service time: shrink by the
        share of sequences that waited for a slot, else grow (see the module docstring)."""
        r = self._round
        share = sum(w for w, waited in zip(r.weights, r.waited, strict=True) if waited) / sum(
            r.weights)
        level = int(self.limit)
        if share > 0:
            if r.long_wait:
                self._clear_level = min(self._clear_level, level - 1)  # it did not run clear
            if level <= self._clear_level and self._strikes == 0:
                # a level the server ran clear before: one round with waits is its own
                # stall (a request arriving during another slot's prompt evaluation waits
                # for that batch, free slots or not); a second in a row is a smaller server
                self._strikes = 1
                self._set(self.limit, decrease=False)
                return
            self._strikes = 0
            shrunk = self.limit * max(self.backoff, 1.0 - share)
            if self._clear_level < level:
                # above every level that ran clear: fall back at most to the last one
                shrunk = max(shrunk, float(self._clear_level))
            else:
                self._clear_level = 0  # waits twice at a proven level: prove levels anew
            self._set(shrunk, decrease=True)
            return
        self._strikes = 0
        if r.peak < level:
            self._set(self.limit, decrease=False)
            return
        self._clear_level = max(self._clear_level, level)
        service = sum(s * w for s, w in zip(r.services, r.weights, strict=True)) / sum(r.weights)
        old = self._service_levels.get(level)
        self._service_levels[level] = service if old is None else old + _LEVEL_WEIGHT * (
            service - old)
        lower = [v for k, v in self._service_levels.items() if k < level]
        if self._slow_start and lower and service > (1.0 + (self.tolerance - 1.0) / 2) * min(
                lower):
            self._slow_start = False  # the work grows with the batch: grow by one from here
        self._grow(max(r.latencies))

    def _grow(self, slowest: float) -> None:
        """Double in slow start, else add one; a step that could push a queued request
        past the budget is made smaller (one), or not at all (hold). ``latency``: the
        round's slowest request (the budget is about the slowest timing out, and on
        llama-server a request whose prompt is cached takes seconds, one whose prompt is
        not, a minute and more: the mean let 8 in flight double to 16 and 14 time out), or
        the slowest seen at this level before, if slower (a round of cached prompts says
        little about the next uncached one)."""
        level = max(1, int(self.limit))
        latency = self._slowest[level] = max(slowest, self._slowest.get(level, 0.0))
        for target in ((self.limit * 2, self.limit + 1) if self._slow_start
                       else (self.limit + 1,)):
            if self._room_to_grow(latency, target):
                self._set(target, decrease=False)
                return
        self._set(self.limit, decrease=False)  # no headroom left: hold

    def _room_to_grow(self, latency: float, target: float) -> bool:
        """Whether ``target`` in flight keeps a saturated server's latency, which grows as
        target / level, within 3/4 of the budget (the requests' timeout), and a request
        that queues behind a full server, which can wait a whole request's time for a slot
        and then take as long itself, within the budget. Doubling 8 in flight on
        llama-server's 8 slots at ~90 s a request queued 8 for another ~90 s, and they
        timed out at 120 s."""
        if self.latency_budget_s is None:
            return True
        level = max(1, int(self.limit))
        return (latency * int(target) / level < 0.75 * self.latency_budget_s
                and 2 * latency < self.latency_budget_s)

    def _set(self, value: float, *, decrease: bool) -> None:
        if decrease:
            self._slow_start = False
        value = min(float(self.max_limit), max(1.0, value))
        # The next round starts after the requests sent in the change itself: after a
        # decrease, those sent while the server still worked the old level's; after an
        # increase, the burst it released (they went out together). It measures the new level.
        self._changed_at = self._seq
        skip = int(value) - int(self.limit) if int(value) > int(self.limit) else (
            int(value) if int(value) < int(self.limit) else 0)
        self._decided_at = self._seq + skip
        self._round = _Round()
        if value != self.limit:
            self.limit = value
            self.peak_limit = max(self.peak_limit, value)
            self._notify()
            self._wake()

    def _notify(self) -> None:
        if self._observer is not None:
            self._observer(self.limit)

    @property
    def current(self) -> int:
        """Requests allowed in flight now."""
        return max(1, int(self.limit))

    def __repr__(self) -> str:
        mode = "adaptive" if self.adaptive else "fixed"
        return (
            f"AdaptiveLimit({mode}, limit={self.limit:.2f}, max={self.max_limit}, "
            f"in_flight={self.in_flight})"
        )
