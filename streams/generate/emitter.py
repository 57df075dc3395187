"""The event emitter: a session's files, clock and tracked regions, and the wire events.

`_Emitter` holds what one developer session has open and turns each action into wire events
(`edit`, `prediction` with its excerpt and history, client `settled`, `outcome`), keeping the
real file texts so every excerpt is a slice of the replayed file. The behaviours that decide
what the developer does live in `session.py`.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass
from typing import Any

from streams.generate.config import (
    CLIENT_QUIET_MS,
    CLIENT_TTL_MS,
    MAX_REGION_BYTES,
    MODEL_VERSIONS,
    PKG_NAMES,
    WIRE_VERSION,
    GenerateConfig,
)
from streams.generate.sources import SourceFiles, pick_source
from streams.generate.text import (
    _blen,
    _code_mask,
    _donor_starts,
    _line_starts,
    _lines,
    _min_edit,
    _secret_file,
    is_disabled_path,
    unified_diff,
)


@dataclass(frozen=True)
class _Window:
    """Excerpt [xs, xe), editable region [rs, re) and cursor, as char indices in the file."""

    xs: int
    xe: int
    rs: int
    re: int
    cursor: int


@dataclass
class _Group:
    """A burst of edits on one path (one history entry), with the file before and after."""

    path: str
    before: str
    after: str
    ts_ms: int
    predicted: bool
    is_undo: bool = False
    diff: str | None = None


@dataclass
class _Pending:
    """A prediction's region as tracked by a self-settling client (byte offsets in the file)."""

    request_id: str
    path: str
    rs: int
    re: int
    xs: int
    xe: int
    pred_ts: int
    last_touch: int
    quiet_ms: int  # the client's own quiescence window

    @property
    def deadline(self) -> int:
        return min(self.last_touch + self.quiet_ms, self.pred_ts + CLIENT_TTL_MS)


@dataclass(frozen=True)
class _Traits:
    """Per-session choices drawn from the master RNG (so the mix is guaranteed, not hoped)."""

    collect: bool
    open_source: bool
    client_settles: bool
    secret_path: str | None
    leaky_history: bool  # the client does not filter sensitive files out of `history`
    non_ascii: bool
    ttl: bool
    repo: int
    start_ms: int


class _Emitter:
    """One developer session's state (real file texts, a clock) and the events it emits."""

    def __init__(
        self,
        config: GenerateConfig,
        index: int,
        traits: _Traits,
        sources: SourceFiles | None,
        *,
        files: dict[str, str] | None = None,
        repo_url: str | None = None,
        revision: str | None = None,
    ) -> None:
        self.cfg = config
        self.index = index
        self.traits = traits
        self.rng = random.Random(f"editstream-generate:{config.seed}:session:{index}")
        self.sid = f"sess-{config.seed}-{index + 1}"
        self.clock = traits.start_ms
        self.events: list[tuple[int, int, dict[str, Any]]] = []
        self.seq = 0
        self.n_requests = 0
        self.closed: list[_Group] = []
        self.group: _Group | None = None
        self.pending: list[_Pending] = []
        self.jump = False  # next action moves far away (after an abandoned prediction)
        self.leak_next = False  # next prediction's history carries a sensitive diff
        rng = self.rng
        self.client_quiet_ms = rng.randint(*CLIENT_QUIET_MS)
        self.model_version: str | None = rng.choice(MODEL_VERSIONS)
        if rng.random() < 0.05:
            self.model_version = None  # an old client that does not report it
        self.repo_url: str | None = None
        self.revision: str | None = None
        if traits.open_source and files is not None:
            # real history: the repository and the parent commit the session starts from
            self.repo_url, self.revision = repo_url, revision
        elif traits.open_source:
            self.repo_url = f"https://github.com/example/repo-{traits.repo}"
            self.revision = f"{rng.getrandbits(160):040x}"
        pkg = PKG_NAMES[traits.repo % len(PKG_NAMES)]
        if traits.repo >= len(PKG_NAMES):
            pkg += str(traits.repo // len(PKG_NAMES))
        # One or two real source files, picked by sorted path and the seed (or the files a
        # real commit changes, handed in by the history generator).
        self.files: dict[str, str] = dict(files or {})
        self.py_paths: list[str] = list(self.files)
        used: set[int] = set()
        for _ in range(0 if sources is None else 1 if rng.random() < 0.6 else 2):
            assert sources is not None
            pick = pick_source(rng, sources, used)
            if pick is None:
                break
            rel, text = pick
            path = f"src/{pkg}/{rel}"
            self.files[path] = text
            self.py_paths.append(path)
        if not self.py_paths:
            raise ValueError("no usable source files found")
        if traits.secret_path:
            self.files[traits.secret_path] = _secret_file(rng, traits.secret_path)
        self.initial = dict(self.files)
        self.donors = [_donor_starts(self.files[p]) for p in self.py_paths]
        self.donor_masks = [_code_mask(_lines(self.files[p])) for p in self.py_paths]
        self.focus = {p: rng.randrange(max(1, len(_lines(t)))) for p, t in self.files.items()}

    # -- emitting ------------------------------------------------------------------------------

    def _head(self, kind: str, ts: int) -> dict[str, Any]:
        return {
            "v": WIRE_VERSION,
            "type": kind,
            "session_id": self.sid,
            "ts_ms": ts,
            "can_collect_data": self.traits.collect,
        }

    def _emit(self, event: dict[str, Any]) -> None:
        self.events.append((event["ts_ms"], self.seq, event))
        self.seq += 1

    def _wait(self, lo: int, hi: int) -> None:
        self.clock += self.rng.randint(lo, hi)

    def _flush_settles(self, upto: int) -> None:
        """Emit client `settled` events for regions whose deadline passed by `upto`.

        Called before every file event, so a deadline is always later than the previous
        file event and the session stays chronological.
        """
        due = sorted((p for p in self.pending if p.deadline <= upto), key=lambda p: p.deadline)
        for p in due:
            region = self.files[p.path].encode()[p.rs : p.re].decode()
            event = self._head("settled", p.deadline)
            event.update(request_id=p.request_id, settled_region=region)
            self._emit(event)
        self.pending = [p for p in self.pending if p.deadline > upto]

    def _track(self, path: str, s: int, e: int, n: int) -> None:
        """Move tracked regions through an edit [s, e) -> n bytes, as the server would."""
        delta = n - (e - s)
        kept: list[_Pending] = []
        for p in self.pending:
            if p.path != path:
                kept.append(p)
                continue
            if s <= p.re and e >= p.rs:  # touches the region
                if s < p.xs or e > p.xe:
                    continue  # context lost: the client cannot settle it either
                p.rs, p.re = min(p.rs, s), max(p.re, e) + delta
                p.xe += delta
                p.last_touch = self.clock
            elif e < p.rs:  # before the region
                if e <= p.xs:
                    p.xs += delta
                else:
                    p.xs = min(p.xs, s)
                p.rs += delta
                p.re += delta
                p.xe += delta
            elif s < p.xe:  # after the region, inside the excerpt
                p.xe = p.xe + delta if e <= p.xe else s + n
            kept.append(p)
        self.pending = kept

    def _close_group(self) -> None:
        g = self.group
        self.group = None
        if g is None or g.before == g.after:
            return
        g.diff = unified_diff(g.path, g.before, g.after)
        if self.closed:  # only the newest group can be undone: drop older file snapshots
            self.closed[-1].before = self.closed[-1].after = ""
        self.closed.append(g)

    def edit(self, path: str, start: int, end: int, text: str, *, predicted: bool = False) -> None:
        """Apply [start, end) -> text (char indices) to the file and emit the `edit` event."""
        self._flush_settles(self.clock)
        cur = self.files[path]
        g = self.group
        if g is None or g.path != path or g.predicted != predicted:
            self._close_group()
            self.group = g = _Group(path, cur, cur, self.clock, predicted)
        bs = _blen(cur[:start])
        be = bs + _blen(cur[start:end])
        new = cur[:start] + text + cur[end:]
        self.files[path] = new
        g.after, g.ts_ms = new, self.clock
        event = self._head("edit", self.clock)
        event.update(path=path, start=bs, end=be, text=text, predicted=predicted)
        self._emit(event)
        self._track(path, bs, be, _blen(text))

    def _history(self, path: str) -> list[dict[str, Any]]:
        """The last 1-3 edit groups (the in-progress one included) as unified diffs.

        Edits of sensitive files are kept out of other files' history, as an editor that
        respects the exclusion globs would do; a prediction on such a file sees them. A
        "leaky" client (one session) lets its latest sensitive diff through once, so the
        server's check of history paths has something to catch.
        """
        groups = list(self.closed[-8:])
        g = self.group
        if g is not None and g.before != g.after:
            groups.append(_Group(g.path, g.before, g.after, g.ts_ms, g.predicted))
        leak: _Group | None = None
        if not is_disabled_path(path):
            if self.leak_next:
                leak = next((x for x in reversed(groups) if is_disabled_path(x.path)), None)
            groups = [x for x in groups if not is_disabled_path(x.path)]
        chosen = groups[-self.rng.randint(1, 3) :]
        if leak is not None:
            chosen = sorted([*chosen[-2:], leak], key=lambda x: x.ts_ms)
            self.leak_next = False
        out = []
        for x in chosen:
            diff = x.diff if x.diff is not None else unified_diff(x.path, x.before, x.after)
            out.append({"path": x.path, "diff": diff, "predicted": x.predicted, "ts_ms": x.ts_ms})
        return out

    def window(self, path: str, cursor: int) -> _Window:
        """Excerpt of ~20-60 lines and an editable region of ~3-12 lines around the cursor."""
        rng, text = self.rng, self.files[path]
        starts = _line_starts(text)
        nl = len(_lines(text))

        def line_end(k: int) -> int:  # end of line k including its newline
            return starts[k + 1] if k + 1 < len(starts) else len(text)

        cl = min(bisect.bisect_right(starts, cursor) - 1, nl - 1)
        total = rng.randint(20, 60)
        lo = max(0, cl - rng.randint(total // 3, 2 * total // 3))
        hi = min(nl, lo + total)
        lo = max(0, hi - total)
        size = rng.randint(3, 12)
        rlo = max(lo, cl - rng.randint(0, size - 1))
        rhi = max(min(hi, rlo + size), cl + 1)
        # Keep the region under 4 KiB by dropping the line farthest from the cursor.
        while _blen(text[starts[rlo] : line_end(rhi - 1)]) >= MAX_REGION_BYTES and rhi - rlo > 1:
            if cl - rlo > rhi - 1 - cl:
                rlo += 1
            else:
                rhi -= 1
        return _Window(starts[lo], line_end(hi - 1), starts[rlo], line_end(rhi - 1), cursor)

    def predict(self, path: str, win: _Window, output: str | None) -> tuple[str, int]:
        """Emit a `prediction` for `win` after a short debounce; returns (request_id, ts)."""
        self._wait(50, 300)
        self._flush_settles(self.clock)
        self.n_requests += 1
        rid = f"req-{self.cfg.seed}-{self.index + 1}-{self.n_requests}"
        text = self.files[path]
        event = self._head("prediction", self.clock)
        event.update(request_id=rid, path=path, in_open_source_repo=self.traits.open_source)
        if self.repo_url is not None:
            event.update(repo_url=self.repo_url, revision=self.revision)
        xs_b = _blen(text[: win.xs])
        event.update(
            excerpt=text[win.xs : win.xe],
            excerpt_start=xs_b,
            cursor=_blen(text[win.xs : win.cursor]),
            editable_range=[_blen(text[win.xs : win.rs]), _blen(text[win.xs : win.re])],
            history=self._history(path),
        )
        if self.model_version is not None:
            event["model_version"] = self.model_version
        if output is not None:
            event["output"] = output
        self._emit(event)
        if self.traits.client_settles:
            self.pending.append(
                _Pending(
                    rid,
                    path,
                    xs_b + event["editable_range"][0],
                    xs_b + event["editable_range"][1],
                    xs_b,
                    xs_b + _blen(event["excerpt"]),
                    self.clock,
                    self.clock,
                    self.client_quiet_ms,
                )
            )
        return rid, self.clock

    def outcome(self, rid: str, ts: int, outcome: str, was_shown: bool) -> None:
        """Outcome events are sent asynchronously; they never move the session clock."""
        event = self._head("outcome", ts)
        event.update(request_id=rid, outcome=outcome, was_shown=was_shown)
        self._emit(event)

    def accept(self, path: str, win: _Window, output: str) -> None:
        """Apply an accepted prediction: the region becomes `output` in one predicted edit."""
        region = self.files[path][win.rs : win.re]
        s, e, text = _min_edit(region, output)
        if s != e or text:
            self.edit(path, win.rs + s, win.rs + e, text, predicted=True)

