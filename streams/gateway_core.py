"""The pure core of the ingestion gateway (`editstream/gateway/server.py` is the HTTP/Kafka edge).

Everything an HTTP request goes through before it reaches the broker is decided here, without
I/O, so it can be tested in microseconds and reasoned about in one place:

* `decompress`: gzip / zstd bodies, stream-decoded with a hard output cap (decompression
  bombs stop at `cap + 1` bytes, whatever the compression ratio);
* `split_body`: a JSON array or NDJSON into per-event items; one malformed NDJSON line is one
  rejected event, not a failed batch;
* `judge`: one event's fate, which is the worker's too (`streams.ingest.judge_event`: consent →
  disabled paths → secrets → personal data → size → schema → integers → offsets);
* `TokenAuth` (constant-time bearer tokens) and `TokenBucket` (per-client event rate).
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import io
import re
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
import zstandard

from streams.ingest import Rejected, Verdict, judge_event, parse_json
from streams.settings import Settings

ENCODINGS = ("identity", "gzip", "zstd")
MEDIA_TYPES = ("application/json", "application/x-ndjson")


class BodyError(Exception):
    """The request body as a whole cannot be used (answered with `status`, nothing written)."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


# --------------------------------------------------------------------------- body


def decompress(body: bytes, encoding: str, cap: int) -> bytes:
    """`body` decoded per its Content-Encoding, never producing more than `cap` bytes.

    Both decoders are driven as streams asked for `cap + 1` bytes, so memory and CPU are
    bounded by the cap, not by what the compressed data claims to expand to.
    """
    enc = encoding.strip().lower()
    if enc in ("", "identity"):
        data = body
    elif enc in ("gzip", "x-gzip"):
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(body)) as fh:
                data = fh.read(cap + 1)
        except (OSError, EOFError, zlib.error) as exc:
            raise BodyError(400, "bad_encoding", f"invalid gzip data: {exc}"[:200]) from None
    elif enc == "zstd":
        try:
            dctx = zstandard.ZstdDecompressor()
            with dctx.stream_reader(io.BytesIO(body), read_across_frames=True) as reader:
                data = _read_up_to(reader, cap + 1)
            if len(data) <= cap:
                _check_zstd_frames(dctx, body)
        except zstandard.ZstdError as exc:
            raise BodyError(400, "bad_encoding", f"invalid zstd data: {exc}"[:200]) from None
    else:
        raise BodyError(415, "unsupported_encoding",
                        f"Content-Encoding must be one of {', '.join(ENCODINGS)}")
    if len(data) > cap:
        raise BodyError(413, "body_too_large", f"decompressed body exceeds {cap} bytes")
    return data


def _check_zstd_frames(dctx: zstandard.ZstdDecompressor, body: bytes) -> None:
    """Raise on a truncated frame, which the stream reader silently treats as the end.

    Only called once the bounded first pass produced at most the cap, so this second pass
    cannot inflate beyond it either.
    """
    rest = body
    while rest:
        dobj = dctx.decompressobj()
        dobj.decompress(rest)
        if not dobj.eof:
            raise zstandard.ZstdError("truncated zstd frame")
        rest = dobj.unused_data


def _read_up_to(reader: io.RawIOBase | Any, n: int) -> bytes:
    """Read until `n` bytes or EOF (a stream reader may return short reads)."""
    parts: list[bytes] = []
    got = 0
    while got < n:
        chunk = reader.read(min(n - got, 1 << 20))
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


Item = Any  # a parsed JSON value, or a `Rejected` NDJSON line


def split_body(data: bytes, media_type: str, max_events: int) -> list[Item]:
    """The batch as a list of items: parsed JSON values (or `Rejected` NDJSON lines).

    A JSON array must parse as a whole (there is no way to resynchronise inside one); in
    NDJSON each non-blank line is one event, and a bad line only rejects that event.
    """
    if media_type == "application/x-ndjson":
        lines = [ln for ln in data.split(b"\n") if ln.strip()]
        if len(lines) > max_events:
            raise BodyError(413, "too_many_events", f"{len(lines)} events > {max_events}")
        return [parse_json(ln) for ln in lines]
    if media_type != "application/json":
        raise BodyError(415, "unsupported_media_type",
                        f"Content-Type must be one of {', '.join(MEDIA_TYPES)}")
    try:
        batch = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BodyError(400, "invalid_json", str(exc)[:200]) from None
    if not isinstance(batch, list):
        raise BodyError(400, "not_an_array", "the body must be a JSON array of events")
    if len(batch) > max_events:
        raise BodyError(413, "too_many_events", f"{len(batch)} events > {max_events}")
    return batch


def judge(item: Item, settings: Settings) -> Verdict:
    """One item's fate: a line that did not parse is already rejected; anything else gets
    the single ingest verdict (`streams.ingest.judge_event`), as the worker gives it."""
    return item if isinstance(item, Rejected) else judge_event(item, settings)


# --------------------------------------------------------------------------- auth


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MIN_TOKEN_LENGTH = 16


def parse_tokens(spec: str) -> tuple[tuple[str, str], ...]:
    """`name:token` entries separated by commas or newlines (`#` starts a comment line).

    Errors name the client, never the token. Names become metric labels, hence the strict
    charset; tokens must be long enough not to be guessable.
    """
    out: list[tuple[str, str]] = []
    for raw in re.split(r"[,\n]", spec):
        entry = raw.strip()
        if not entry or entry.startswith("#"):
            continue
        name, sep, token = entry.partition(":")
        name, token = name.strip(), token.strip()
        if not sep or not _NAME.fullmatch(name):
            raise ValueError("token entries must be `name:token` with a name of "
                             "letters, digits, `_`, `.`, `-` (at most 64)")
        if len(token) < MIN_TOKEN_LENGTH or any(c.isspace() for c in token):
            raise ValueError(f"token of client {name!r} must be at least {MIN_TOKEN_LENGTH} "
                             "characters without spaces")
        out.append((name, token))
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise ValueError("client names must be unique")
    if len({t for _, t in out}) != len(out):
        raise ValueError("two clients share a token")
    return tuple(out)


class TokenAuth:
    """Bearer tokens → client name, in constant time over all configured tokens.

    Both sides are hashed first, so `compare_digest` sees equal lengths and leaks neither a
    token's length nor how many leading bytes matched; every token is compared on every
    request (no early exit), so timing does not reveal which client matched either.
    """

    def __init__(self, tokens: Iterable[tuple[str, str]]) -> None:
        self._digests = [(name, hashlib.sha256(tok.encode()).digest()) for name, tok in tokens]

    @property
    def clients(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self._digests)

    def client(self, authorization: str | None) -> str | None:
        if not authorization:
            return None
        scheme, _, cred = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not cred.strip():
            return None
        digest = hashlib.sha256(cred.strip().encode("utf-8", "surrogateescape")).digest()
        found: str | None = None
        for name, expected in self._digests:
            if hmac.compare_digest(digest, expected):
                found = name
        return found


# --------------------------------------------------------------------------- rate


class TokenBucket:
    """`rate` events per second, bursts up to `burst`; the clock is passed in (testable)."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def _refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = max(self.stamp, now)

    def wait(self, n: float, now: float) -> float:
        """Seconds until `n` events would pass, consuming nothing (0: they would now)."""
        self._refill(now)
        if n <= self.tokens:
            return 0.0
        return float("inf") if n > self.burst else (n - self.tokens) / self.rate

    def refund(self, n: float) -> None:
        """Give back events charged for a request that was then not taken (503)."""
        self.tokens = min(self.burst, self.tokens + n)

    def take(self, n: float, now: float) -> float:
        """Consume `n` and return 0, or consume nothing and return the seconds until `n`
        would be available (a request larger than the burst can never pass: infinity)."""
        wait = self.wait(n, now)
        if wait == 0.0:
            self.tokens -= n
        return wait


def summarize(verdicts: Sequence[Verdict]) -> dict[str, Any]:
    """The response body: counts, then one result per event in request order."""
    results: list[dict[str, Any]] = []
    counts = {"accepted": 0, "rejected": 0, "discarded": 0}
    for i, v in enumerate(verdicts):
        counts[v.status] += 1
        res: dict[str, Any] = {"index": i, "status": v.status}
        if v.reason is not None:
            res["reason"] = v.reason
        if v.detail is not None:
            res["detail"] = v.detail
        results.append(res)
    return {**counts, "results": results}
