"""Seeded generator of realistic editor edit traces, in the binding wire format.

Why: the pipeline (settling, privacy filtering, training-example building) needs input that
looks like what an editor such as Zed sends, with every awkward case present: byte offsets
that differ from char offsets, typos fixed with backspaces, undos, renames, predictions that
are accepted, rejected, ignored or discarded, regions that settle by quiescence, TTL, a client
`settled` event or lost context, and privacy cases the server must drop. Real traces cannot be
committed, so we simulate a developer editing copies of real Python standard-library files.

Every event is consistent by construction: the simulator keeps the real text of each file,
applies every `edit` to it, and cuts excerpts from that text, so a consumer that replays the
edits over `initial_files(config)` sees exactly the excerpts the predictions carry.

Offsets on the wire are UTF-8 byte offsets. Internally the simulator works in Python char
indices (code points, hence always on UTF-8 char boundaries) and converts when emitting.
"""

from __future__ import annotations

import bisect
import builtins
import difflib
import fnmatch
import functools
import json
import keyword
import os
import random
import re
import sys
import sysconfig
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WIRE_VERSION = 1
QUIESCENCE_MS = 10_000  # server settles a region after this much quiet since its last edit
TTL_MS = 300_000  # ... or this long after the prediction, whatever happens
# A self-settling client uses shorter timers than the server, so its `settled` usually wins.
CLIENT_QUIET_MS = (2_000, 6_000)
CLIENT_TTL_MS = 240_000
MAX_REGION_BYTES = 4096  # editable regions stay under 4 KiB
OUTCOMES = ("accepted", "rejected", "discarded", "ignored")
EVENT_TYPES = ("prediction", "edit", "settled", "outcome")
# Globs the server uses to drop events on sensitive paths (mirrored here to pick test paths).
DISABLED_GLOBS = ("**/.env*", "**/*.pem", "**/*.key", "**/id_rsa*", "**/*secret*")
SECRET_PATHS = ("config/.env.local", "certs/server.pem", "config/client_secret.json")
# Mostly the current student; an older client still on the previous model now and then.
MODEL_VERSIONS = ("student-0.3", "student-0.3", "student-0.3", "student-0.2")
PKG_NAMES = ("acme", "orbit", "quill", "ledger", "harbor", "sprout", "tandem", "vertex")

# Lines the typist writes in some sessions so that byte offsets and char offsets differ
# (2-, 3- and 4-byte UTF-8 sequences; every emoji here is a single code point).
NON_ASCII_LINES = (
    "# TODO: gérer le cas où la clé est absente",
    "# 日本語のコメント: キャッシュを更新する",
    'label = "Größe: 日本語 ✨"',
    "# ship it 🚀 (déjà testé)",
    'greeting = "héllo, wörld 👋"',
    "# naïve café fix — voilà",
)

# Source files we draw from: moderate size so excerpts, diffs and the sample stay small.
_MIN_SOURCE_BYTES = 3_000
_MAX_SOURCE_BYTES = 40_000
_MIN_SOURCE_LINES = 80
_SKIP_DIRS = frozenset(
    {
        "site-packages",
        "dist-packages",
        "test",
        "tests",
        "idle_test",
        "__pycache__",
        "idlelib",
        "lib2to3",
        "turtledemo",
        "ensurepip",
        "encodings",  # codec tables: data, not code anyone types
        "lib-dynload",
    }
)
# Chars that str.splitlines() treats as line breaks besides "\n": files containing them would
# make "line" ambiguous for consumers, so we skip such files (and tabs, for simple indents).
_BAD_CHARS = re.compile("[\r\t\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
_TOKEN = re.compile(r"\w+|\s+|[^\w\s]")  # covers every char, so "".join(tokens) == line
# An identifier; not right after a backslash, so the "n" of a "\n" escape is not a name.
_IDENT = re.compile(r"(?<![\w\\])[A-Za-z_][A-Za-z0-9_]*(?![\w])")
_NOT_RENAMEABLE = frozenset({*keyword.kwlist, *keyword.softkwlist, *dir(builtins), "self", "cls"})

# Outcome plans for a prediction, with weights. "none" = no outcome event at all (the region
# settles by quiescence); "context_lost" = a big paste reaching outside the excerpt follows;
# "ttl" (chosen separately) = the user keeps touching the region for more than TTL_MS.
_PLAN_WEIGHTS = {
    "accepted": 34,
    "rejected": 18,
    "ignored": 16,
    "discarded": 14,
    "none": 10,
    "context_lost": 6,
}


@dataclass(frozen=True)
class GenerateConfig:
    """What to generate. The same config always yields the same events (on one stdlib)."""

    seed: int = 7
    sessions: int = 20
    predictions_per_session: int = 6
    source_dir: str | None = None  # default: the stdlib dir
    start_ms: int = 1_764_000_000_000  # fixed epoch start so output is reproducible
    repos: int = 8  # distinct fake repo urls, so train/eval splits by repo have something to split


def generate_events(config: GenerateConfig) -> list[dict[str, Any]]:
    """Events in the order an editor would send them; deterministic for a given config.

    Each session is chronological; sessions are interleaved by `ts_ms` (ties broken by
    session, then by the order the session emitted them).
    """
    return _simulate(config)[0]


def initial_files(config: GenerateConfig) -> dict[tuple[str, str], str]:
    """The text of every file before its session's first edit, keyed by (session_id, path).

    Replaying the `edit` events of `generate_events(config)` in order over these texts
    reproduces the file every prediction's excerpt was cut from.
    """
    return _simulate(config)[1]


def ground_truth(events: Iterable[dict[str, Any]], *, quiescence_ms: int = QUIESCENCE_MS,
                 ttl_ms: int = TTL_MS) -> list[dict[str, Any]]:
    """The answer key of generated traces: per prediction, the region as the user left it.

    Settled offline by the pipeline's own rules (``streams.settle``), per session in event
    order, so the model simulator's teacher can answer from it without reading any hindsight
    from a prompt. Rows: ``request_id``, ``path``, ``base_region`` (at request time),
    ``cursor_in_region`` (chars), ``settled_region``.
    """
    from streams.settle import settle_events  # the pure core; imported here, not at load

    by_session: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_session.setdefault(event["session_id"], []).append(event)
    rows = []
    for session_events in by_session.values():
        for rec in settle_events(session_events, quiescence_ms=quiescence_ms, ttl_ms=ttl_ms):
            raw = rec["excerpt"].encode()
            start, end = rec["editable_range"]
            cursor = min(max(rec["cursor"], start), end)
            rows.append({"request_id": rec["request_id"], "path": rec["path"],
                         "base_region": rec["base_region"],
                         "cursor_in_region": len(raw[start:cursor].decode()),
                         "settled_region": rec["settled_region"]})
    return sorted(rows, key=lambda r: r["request_id"])


def write_jsonl(events: Iterable[dict[str, Any]], path: str | Path) -> int:
    """Write one compact UTF-8 JSON object per line; returns the number of events written.

    Written to a temp file and renamed, so a reader never sees a half-written file.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            for event in events:
                fh.write(json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n")
                count += 1
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; this is a shareable data file
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return count


def apply_edit(text: str, start: int, end: int, replacement: str) -> str:
    """Apply a wire `edit` ([start, end) UTF-8 byte offsets) to `text`.

    Raises ValueError when the offsets are out of range or split a UTF-8 character, which is
    exactly what a consumer replaying traces must reject.
    """
    raw = text.encode()
    if not 0 <= start <= end <= len(raw):
        raise ValueError(f"edit [{start}, {end}) out of range for {len(raw)} bytes")
    try:
        head, tail = raw[:start].decode(), raw[end:].decode()
        raw[start:end].decode()
    except UnicodeDecodeError as exc:
        raise ValueError(f"edit [{start}, {end}) is not on UTF-8 char boundaries") from exc
    return head + replacement + tail


def is_disabled_path(path: str) -> bool:
    """Whether the server discards events on `path` (matches one of DISABLED_GLOBS)."""
    # "**/x" must also match "x" at the repo root, which fnmatch alone would not do.
    candidates = (path, "/" + path)
    return any(fnmatch.fnmatchcase(c, g) for g in DISABLED_GLOBS for c in candidates)


def unified_diff(path: str, before: str, after: str) -> str:
    """A real unified diff (`--- a/<path>` / `+++ b/<path>`, 3 lines of context).

    Lines are split on "\\n" only (not str.splitlines, which also breaks on form feeds etc.),
    and a missing final newline is marked the way `diff` does.
    """
    out: list[str] = []
    for line in difflib.unified_diff(
        _split_keepends(before), _split_keepends(after), f"a/{path}", f"b/{path}", n=3
    ):
        out.append(line)
        if not line.endswith("\n"):
            out.append("\n\\ No newline at end of file\n")
    return "".join(out)


# --------------------------------------------------------------------------------------------
# Helpers on text


def _split_keepends(text: str) -> list[str]:
    parts = text.split("\n")
    lines = [p + "\n" for p in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def _blen(text: str) -> int:
    return len(text.encode())


def _line_starts(text: str) -> list[int]:
    """Char index where each line starts (plus len(text) when text ends with a newline)."""
    return [0, *(m.end() for m in re.finditer("\n", text))]


def _lines(text: str) -> list[str]:
    """Lines without their newline; no phantom empty line after a final newline."""
    parts = text.split("\n")
    return parts[:-1] if parts and parts[-1] == "" else parts


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" "))]


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _min_edit(old: str, new: str) -> tuple[int, int, str]:
    """Smallest single replacement turning `old` into `new`: (start, end, text) in chars."""
    p = _common_prefix(old, new)
    s = 0
    limit = min(len(old), len(new)) - p
    while s < limit and old[-1 - s] == new[-1 - s]:
        s += 1
    return p, len(old) - s, new[p : len(new) - s]


def _chunks(rng: random.Random, line: str) -> list[str]:
    """Split a line into typing bursts of 1-3 tokens (an editor batches fast keystrokes)."""
    tokens = _TOKEN.findall(line)
    out: list[str] = []
    i = 0
    while i < len(tokens):
        n = rng.choice((1, 1, 2, 2, 3))
        out.append("".join(tokens[i : i + n]))
        i += n
    return out


def _typo(rng: random.Random, word: str) -> str:
    """A plausible mistyping of `word` near its end (so fixing it takes few backspaces)."""
    i = len(word) - rng.randint(1, 2)
    kind = rng.randrange(3)
    if kind == 0 and i + 1 < len(word) and word[i] != word[i + 1]:
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]  # swapped letters
    if kind == 1:
        return word[: i + 1] + word[i] + word[i + 1 :]  # doubled letter
    return word[:i] + ("x" if word[i] != "x" else "z") + word[i + 1 :]  # wrong key


def _new_name(rng: random.Random, name: str) -> str:
    if name[:1].isupper():
        return rng.choice((f"{name}Impl", f"Base{name}", f"{name}V2"))
    stem = name.strip("_")
    lead = name[: len(name) - len(name.lstrip("_"))]
    return lead + rng.choice(
        (f"{stem}_value", f"cur_{stem}", f"{stem}s", f"new_{stem}", f"{stem}_obj")
    )


@functools.lru_cache(maxsize=8)
def _candidates(source_dir: str) -> tuple[tuple[str, str], ...]:
    """(relative posix path, absolute path) of usable .py files, sorted by relative path."""
    found: list[tuple[str, str]] = []
    for root, dirs, files in os.walk(source_dir):
        dirs[:] = sorted(
            d for d in dirs if d not in _SKIP_DIRS and not d.startswith((".", "config-"))
        )
        for name in files:
            if not name.endswith(".py"):
                continue
            full = os.path.join(root, name)
            try:
                size = os.stat(full).st_size
            except OSError:
                continue
            if _MIN_SOURCE_BYTES <= size <= _MAX_SOURCE_BYTES:
                found.append((Path(full).relative_to(source_dir).as_posix(), full))
    return tuple(sorted(found))


@functools.lru_cache(maxsize=256)
def _load_source(full: str) -> str | None:
    """The file's text if it is plain enough to simulate on, else None."""
    try:
        text = Path(full).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    if _BAD_CHARS.search(text) or text.count("\n") < _MIN_SOURCE_LINES:
        return None
    if len(re.findall(r"^\s*def ", text, re.M)) < 3:
        return None  # mostly data or docs: not what an edit-prediction model sees typed
    return text if text.endswith("\n") else text + "\n"


def _secret_file(rng: random.Random, path: str) -> str:
    """Synthetic content for a sensitive file (obviously fake values; never real secrets)."""
    if path.endswith(".pem"):
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
        body = ["".join(rng.choice(alphabet) for _ in range(64)) for _ in range(rng.randint(6, 12))]
        return "-----BEGIN CERTIFICATE-----\n" + "\n".join(body) + "\n-----END CERTIFICATE-----\n"
    if path.endswith(".json"):
        keys = ("client_id", "client_secret", "project_id", "token_uri", "auth_uri")
        rows = [f'  "{k}": "example-{rng.getrandbits(48):012x}",' for k in keys]
        rows[-1] = rows[-1].rstrip(",")
        return "{\n" + "\n".join(rows) + "\n}\n"
    names = ("DATABASE_URL", "API_KEY", "SENTRY_DSN", "REDIS_URL", "DEBUG", "CACHE_TTL")
    return "".join(f"{n}=example-{rng.getrandbits(40):010x}\n" for n in names)


def _secret_line(rng: random.Random, path: str) -> str:
    if path.endswith(".pem"):
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
        return "".join(rng.choice(alphabet) for _ in range(64))
    if path.endswith(".json"):
        return f'  "refresh_token": "example-{rng.getrandbits(48):012x}",'
    name = rng.choice(("STRIPE_KEY", "S3_BUCKET", "FEATURE_FLAGS", "SMTP_PASSWORD"))
    return f"{name}=example-{rng.getrandbits(40):010x}"


# --------------------------------------------------------------------------------------------
# Simulation


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


class _Session:
    """One developer session: real file texts, a clock, and the events it emits."""

    def __init__(
        self,
        config: GenerateConfig,
        index: int,
        traits: _Traits,
        candidates: tuple[tuple[str, str], ...],
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
        if traits.open_source:
            self.repo_url = f"https://github.com/example/repo-{traits.repo}"
            self.revision = f"{rng.getrandbits(160):040x}"
        pkg = PKG_NAMES[traits.repo % len(PKG_NAMES)]
        if traits.repo >= len(PKG_NAMES):
            pkg += str(traits.repo // len(PKG_NAMES))
        # One or two real source files, picked by sorted path and the seed.
        self.files: dict[str, str] = {}
        self.py_paths: list[str] = []
        used: set[int] = set()
        for _ in range(1 if rng.random() < 0.6 else 2):
            pick = _pick_source(rng, candidates, used)
            if pick is None:
                break
            rel, text = pick
            path = f"src/{pkg}/{rel}"
            self.files[path] = text
            self.py_paths.append(path)
        if not self.py_paths:
            raise ValueError("no usable .py source files found")
        if traits.secret_path:
            self.files[traits.secret_path] = _secret_file(rng, traits.secret_path)
        self.initial = dict(self.files)
        self.donors = [_donor_starts(self.files[p]) for p in self.py_paths]
        self.donor_masks = [_code_mask(_lines(self.files[p])) for p in self.py_paths]
        self.focus = {p: rng.randrange(len(_lines(t))) for p, t in self.files.items()}

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

    # -- behaviours ----------------------------------------------------------------------------

    def run(self) -> None:
        rng = self.rng
        n_pred = self.cfg.predictions_per_session
        n_actions = n_pred + rng.randint(max(1, n_pred // 2), n_pred + 2)
        flagged = set(rng.sample(range(n_actions), n_pred))
        secret_at = ttl_at = -1
        non_ascii: set[int] = set()
        if self.traits.secret_path:
            # not the last prediction, so a later one can carry a leaked history entry
            options = sorted(flagged)[:-1] or sorted(flagged) or list(range(n_actions))
            secret_at = rng.choice(options)
        if self.traits.ttl and flagged - {secret_at}:
            ttl_at = rng.choice(sorted(flagged - {secret_at}))
        if self.traits.non_ascii:
            # One line typed under a prediction (so excerpts carry it), sometimes one more.
            typed = sorted(flagged - {secret_at, ttl_at}) or sorted(set(range(n_actions)))
            non_ascii.add(rng.choice(typed))
            if rng.random() < 0.5:
                non_ascii.add(rng.randrange(n_actions))
        for i in range(n_actions):
            path = self.py_paths[0]
            if len(self.py_paths) > 1 and rng.random() < 0.3:
                path = self.py_paths[1]
            self._move_focus(path)
            if i == secret_at:
                self._pause()
                plan = self._plan(allow_context_lost=False) if i in flagged else None
                self.act_type(self.traits.secret_path or path, plan)
                self.leak_next = self.traits.leaky_history
            elif i in flagged:
                self._pause()
                plan = "ttl" if i == ttl_at else self._plan()
                if plan in ("accepted", "rejected", "ignored", "discarded") and rng.random() < 0.2:
                    self.act_rename(path, plan)
                else:
                    self.act_type(path, plan, non_ascii=i in non_ascii)
            else:
                kind = rng.choices(("type", "delete", "undo", "rename"), (50, 15, 20, 15))[0]
                if kind == "undo" and self._can_undo():
                    self._wait(300, 2500)
                    self.act_undo()
                    continue
                self._pause()
                if kind == "delete":
                    self.act_delete(path)
                elif kind == "rename":
                    self.act_rename(path, None)
                else:
                    self.act_type(path, None, non_ascii=i in non_ascii)
        self._close_group()
        self._flush_settles(sys.maxsize)  # the client settles what is still open at the end

    def _pause(self) -> None:
        """Thinking time between bursts: mostly short, sometimes past the quiescence window."""
        if self.rng.random() < 0.3:
            self._wait(QUIESCENCE_MS + 500, 20_000)
        else:
            self._wait(1_000, 9_000)

    def _plan(self, *, allow_context_lost: bool = True) -> str:
        plans = [p for p in _PLAN_WEIGHTS if allow_context_lost or p != "context_lost"]
        return self.rng.choices(plans, [_PLAN_WEIGHTS[p] for p in plans])[0]

    def _move_focus(self, path: str) -> None:
        """Developers work locally: drift near the last spot, sometimes jump elsewhere."""
        n = len(_lines(self.files[path]))
        f = self.focus[path]
        if self.jump or self.rng.random() < 0.15:
            f = (f + n // 3 + self.rng.randrange(max(1, n // 3))) % n
            self.jump = False
        else:
            f += self.rng.randint(-12, 25)
        self.focus[path] = min(max(f, 0), n - 1)

    def _donor_block(self) -> list[str]:
        """1-3 consecutive real lines from this session's sources, dedented."""
        rng = self.rng
        k = rng.randrange(len(self.py_paths))
        lines = _lines(self.initial[self.py_paths[k]])
        starts = self.donors[k]
        if not starts:
            return ["pass"]
        i = rng.choice(starts)
        base = len(_indent(lines[i]))
        block = [lines[i]]
        mask = self.donor_masks[k]
        for d, line in enumerate(lines[i + 1 : i + rng.choice((1, 1, 1, 2, 2, 3))], i + 1):
            if not mask[d] or not _good_code_line(line) or len(_indent(line)) < base:
                break
            block.append(line)
        while len(block) > 1 and block[-1].rstrip().endswith(":"):
            block.pop()  # do not leave an empty block header behind
        return [line[base:] for line in block]

    def _insertion_line(self, path: str) -> int:
        """A line near the focus after which new code can be typed."""
        lines = _lines(self.files[path])
        n = len(lines)
        f = min(max(self.focus[path], 0), max(n - 2, 0))
        if is_disabled_path(path):
            return f
        mask = _code_mask(lines)
        for d in range(60):
            for j in (f + d, f - d):
                if 0 <= j < n - 1 and mask[j] and mask[j + 1] and _good_code_line(lines[j]):
                    nxt = lines[j + 1]
                    opens = lines[j].rstrip().endswith(":")
                    # a more indented next line means a continuation, unless we open a block
                    if opens or len(_indent(nxt)) <= len(_indent(lines[j])) or not nxt.strip():
                        return j
        return f

    def _typed_lines(self, path: str, indent: str, non_ascii: bool) -> list[str]:
        if is_disabled_path(path):
            return [indent + _secret_line(self.rng, path)]
        if non_ascii:
            return [indent + self.rng.choice(NON_ASCII_LINES)]
        return [indent + line for line in self._donor_block()]

    def type_pieces(self, path: str, pos: int, pieces: list[str]) -> int:
        """Type `pieces` at `pos` (chars) with human spacing and the odd fixed typo."""
        rng = self.rng
        for piece in pieces:
            if piece.startswith("\n"):
                self._wait(200, 1_200)  # Enter (the editor auto-indents in the same edit)
            else:
                self._wait(50, 400)
            if piece.isascii() and piece.isalpha() and len(piece) >= 3 and rng.random() < 0.08:
                wrong = _typo(rng, piece)
                self.edit(path, pos, pos, wrong)
                pos += len(wrong)
                self._wait(150, 900)  # notices the typo
                keep = _common_prefix(wrong, piece)
                for _ in range(len(wrong) - keep):
                    self.edit(path, pos - 1, pos, "")  # backspace
                    pos -= 1
                    self._wait(60, 160)
                piece = piece[keep:]
            if piece:
                self.edit(path, pos, pos, piece)
                pos += len(piece)
        return pos

    def act_type(self, path: str, plan: str | None, *, non_ascii: bool = False) -> None:
        """Type 1-3 new lines after a nearby line, maybe with a prediction partway through."""
        rng = self.rng
        text = self.files[path]
        lines = _lines(text)
        j = self._insertion_line(path)
        indent = _indent(lines[j])
        if lines[j].rstrip().endswith(":") and not is_disabled_path(path):
            indent += "    "
        pieces: list[str] = []
        for line in self._typed_lines(path, indent, non_ascii):
            pieces.append("\n" + _indent(line))
            pieces.extend(_chunks(rng, line.lstrip(" ")))
        pos = _line_starts(text)[j] + len(lines[j])  # end of line j, before its newline
        self.focus[path] = j + 1
        if plan is None or len(pieces) < 2:
            self.type_pieces(path, pos, pieces)
            self._close_group()
            return
        k = rng.randint(1, min(3, len(pieces) - 1))
        pos = self.type_pieces(path, pos, pieces[:k])
        rest = "".join(pieces[k:])
        win = self.window(path, pos)
        text = self.files[path]
        right = text[win.rs : pos] + rest + text[pos : win.re]
        if plan == "accepted":
            rid, t0 = self.predict(path, win, right)
            d = rng.randint(300, 1_800)
            self.clock = t0 + d
            self.accept(path, win, right)
            self.outcome(rid, t0 + d + rng.randint(0, 150), "accepted", True)
            self._close_group()
            return
        wrong = text[win.rs : pos] + self._wrong_rest(rest) + text[pos : win.re]
        if plan == "ttl":
            rid, t0 = self.predict(path, win, right if rng.random() < 0.5 else wrong)
            self._tinker(path, pos, t0 + TTL_MS + rng.randint(5_000, 20_000))
        elif plan == "none":
            self.predict(path, win, wrong)
            self.jump = True  # the user walks away; the region settles by quiescence
        elif plan == "context_lost":
            rid, t0 = self.predict(path, win, wrong)
            d = rng.randint(100, 1_500)
            self.outcome(rid, t0 + d, "ignored", True)
            self.clock = t0 + d + rng.randint(200, 1_500)
            self._paste_over(path, win)
        else:
            output: str | None = wrong
            if plan == "ignored" and rng.random() < 0.3:
                output = right  # right, but the user typed it themselves anyway
            if plan == "discarded" and rng.random() < 0.4:
                output = None  # superseded before the response arrived
            rid, t0 = self.predict(path, win, output)
            d = rng.randint(100, 2_000)
            self.outcome(rid, t0 + d, plan, plan != "discarded")
            if plan == "rejected":
                self.clock = t0 + d + rng.randint(100, 600)  # dismisses it, then types on
            self.type_pieces(path, pos, pieces[k:])
        self._close_group()

    def _wrong_rest(self, rest: str) -> str:
        """Something plausible the model might have predicted instead of `rest`."""
        rng = self.rng
        idents = sorted(
            {m.group() for m in _IDENT.finditer(rest) if len(m.group()) >= 3} - _NOT_RENAMEABLE
        )
        if idents and rng.random() < 0.5:
            name = rng.choice(idents)
            other = _new_name(rng, name)
            out = re.sub(rf"(?<![\w\\]){re.escape(name)}(?![\w])", other, rest, count=1)
            if out != rest:
                return out
        tokens = _TOKEN.findall(rest)
        cut = rng.randint(0, max(0, len(tokens) - 1))
        donor = _TOKEN.findall(" ".join(x.strip() for x in self._donor_block()))
        out = "".join(tokens[:cut]) + "".join(donor[rng.randint(0, max(0, len(donor) - 1)) :])
        return out if out != rest else rest + "  # noqa"

    def _tinker(self, path: str, pos: int, until: int) -> None:
        """Keep editing at one spot with short gaps until `until`, so only the TTL settles it."""
        rng = self.rng
        typed: list[str] = []
        stream = _chunks(rng, " ".join(x.strip() for x in self._donor_block()))
        while self.clock < until:
            self._wait(1_000, 8_000)
            if typed and (rng.random() < 0.4 or sum(map(len, typed)) > 120):
                chunk = typed.pop()
                self.edit(path, pos - len(chunk), pos, "")  # delete the last word again
                pos -= len(chunk)
            else:
                if not stream:
                    stream = _chunks(rng, " " + " ".join(x.strip() for x in self._donor_block()))
                chunk = stream.pop(0)
                self.edit(path, pos, pos, chunk)
                pos += len(chunk)
                typed.append(chunk)

    def _paste_over(self, path: str, win: _Window) -> None:
        """Paste a big block over the region and beyond the excerpt (-> context_lost)."""
        rng = self.rng
        text = self.files[path]
        starts = _line_starts(text)
        nl = len(_lines(text))

        def line_of(i: int) -> int:
            return min(bisect.bisect_right(starts, i) - 1, nl - 1)

        extra = rng.randint(3, 15)
        if win.xe < len(text):
            start = win.rs
            last = min(nl - 1, line_of(win.xe) + extra)
            end = starts[last + 1] if last + 1 < len(starts) else len(text)
        else:  # the excerpt reaches the end of the file: reach before its start instead
            start = starts[max(0, line_of(win.xs) - extra)]
            end = win.re
        n_lines = text.count("\n", start, end)
        donor = _lines(self.initial[rng.choice(self.py_paths)])
        at = rng.randrange(max(1, len(donor) - n_lines))
        block = "".join(line + "\n" for line in donor[at : at + max(1, n_lines)])
        if not text[start:end].endswith("\n"):
            block = block.rstrip("\n")
        self.edit(path, start, end, block)
        self.focus[path] = line_of(start)

    def act_rename(self, path: str, plan: str | None) -> None:
        """Rename an identifier by hand, occurrence by occurrence, in a ~40-line window.

        With a prediction: after the first occurrence the model proposes renaming the others
        inside the editable region.
        """
        rng = self.rng
        text = self.files[path]
        starts = _line_starts(text)
        nl = len(_lines(text))
        lo = max(0, self.focus[path] - 10)
        hi = min(nl, self.focus[path] + 30)
        w0 = starts[lo]
        w1 = starts[hi] if hi < len(starts) else len(text)
        span = text[w0:w1]
        counts: dict[str, int] = {}
        for m in _IDENT.finditer(span):
            name = m.group()
            if len(name) >= 3 and name not in _NOT_RENAMEABLE and not name.startswith("__"):
                counts[name] = counts.get(name, 0) + 1
        names = sorted(n for n, c in counts.items() if c >= 2)
        if not names or is_disabled_path(path):
            self.act_type(path, plan)
            return
        old = rng.choice(names)
        new = _new_name(rng, old)
        pat = re.compile(rf"(?<![\w\\]){re.escape(old)}(?![\w])")
        first = w0 + next(pat.finditer(span)).start()
        self.edit(path, first, first + len(old), new)  # select the word, type the new name
        cursor = first + len(new)
        limit = w1 + len(new) - len(old)  # end of the window in the current text
        if plan is not None:
            win = self.window(path, cursor)
            text = self.files[path]
            inside = [m.start() for m in pat.finditer(text, cursor, win.re)]

            def region_with(name: str) -> str:
                r = text[win.rs : win.re]
                for o in reversed(inside):
                    r = r[: o - win.rs] + name + r[o - win.rs + len(old) :]
                return r

            right = region_with(new)
            if plan == "accepted" and not inside:
                plan = "discarded"  # nothing left to propose in the region
            if plan == "accepted":
                rid, t0 = self.predict(path, win, right)
                d = rng.randint(300, 1_800)
                self.clock = t0 + d
                before = len(self.files[path])
                self.accept(path, win, right)
                limit += len(self.files[path]) - before
                self.outcome(rid, t0 + d + rng.randint(0, 150), "accepted", True)
            else:
                if inside:
                    wrong_name = next(
                        (x for x in (_new_name(rng, old) for _ in range(5)) if x != new),
                        new + "_",
                    )
                    wrong: str | None = region_with(wrong_name)
                else:  # a classic bad prediction: it reverts what the user just did
                    r = text[win.rs : win.re]
                    at = first - win.rs
                    wrong = r[:at] + old + r[at + len(new) :] if 0 <= at < len(r) else r
                if plan == "ignored" and inside and rng.random() < 0.3:
                    wrong = right
                if plan == "discarded" and rng.random() < 0.4:
                    wrong = None
                rid, t0 = self.predict(path, win, wrong)
                d = rng.randint(100, 2_000)
                self.outcome(rid, t0 + d, plan, plan != "discarded")
                if plan == "rejected":
                    self.clock = t0 + d + rng.randint(100, 600)
        # The remaining occurrences in the window, by hand, top to bottom.
        pos = cursor
        while True:
            hit = pat.search(self.files[path], pos)
            if hit is None or hit.end() > limit:
                break
            self._wait(600, 3_000)
            self.edit(path, hit.start(), hit.end(), new)
            pos = hit.start() + len(new)
            limit += len(new) - len(old)
        self._close_group()

    def _can_undo(self) -> bool:
        g = self.closed[-1] if self.closed else None
        return (
            g is not None and self.group is None and not g.is_undo and self.files[g.path] == g.after
        )

    def act_undo(self) -> None:
        """Ctrl-Z right after a burst: one edit reverting the whole last group."""
        g = self.closed[-1]
        s, e, text = _min_edit(g.after, g.before)
        self.edit(g.path, s, e, text)
        assert self.group is not None
        self.group.is_undo = True
        self._close_group()

    def act_delete(self, path: str) -> None:
        """Select 1-3 whole lines near the focus and delete them."""
        text = self.files[path]
        starts = _line_starts(text)
        nl = len(_lines(text))
        if nl < 40:
            return
        j = min(max(self.focus[path], 0), nl - 5)
        n = self.rng.randint(1, 3)
        self.edit(path, starts[j], starts[j + n], "")
        self._close_group()


def _good_code_line(line: str) -> bool:
    """A line that new code can follow, or that can be typed, without looking broken."""
    s = line.strip()
    return (
        bool(s)
        and len(line) <= 90
        and not s.startswith(("#", "@"))
        and '"""' not in s
        and "'''" not in s
        and not s.endswith(("(", "[", "{", ",", "\\"))
    )


_TRIPLE = re.compile(r'"""|\'\'\'')


def _code_mask(lines: list[str]) -> list[bool]:
    """Per line: True when it is outside every triple-quoted string (docstrings mostly).

    A cheap scan rather than tokenize, because it runs on the live text before every typing
    action; lines that open or close such a string count as inside.
    """
    mask: list[bool] = []
    state: str | None = None
    for line in lines:
        inside = state is not None
        for m in _TRIPLE.finditer(line):
            inside = True
            if state is None:
                state = m.group()
            elif m.group() == state:
                state = None
        mask.append(not inside)
    return mask


def _donor_starts(text: str) -> list[int]:
    lines = _lines(text)
    mask = _code_mask(lines)
    return [i for i, line in enumerate(lines) if mask[i] and _good_code_line(line)]


def _pick_source(
    rng: random.Random, candidates: tuple[tuple[str, str], ...], used: set[int]
) -> tuple[str, str] | None:
    """A random candidate (by index into the sorted list), skipping unusable files in order."""
    if not candidates:
        return None
    start = rng.randrange(len(candidates))
    for step in range(len(candidates)):
        k = (start + step) % len(candidates)
        if k in used:
            continue
        text = _load_source(candidates[k][1])
        if text is not None and _donor_starts(text):
            used.add(k)
            return candidates[k][0], text
    return None


def _pick_sessions(rng: random.Random, n: int, frac: float) -> set[int]:
    """round(n * frac) sessions (at least one once n >= 4), so every case is present."""
    k = round(n * frac)
    if k == 0 and n >= 4:
        k = 1
    return set(rng.sample(range(n), min(k, n)))


def _simulate(config: GenerateConfig) -> tuple[list[dict[str, Any]], dict[tuple[str, str], str]]:
    if config.sessions < 0 or config.predictions_per_session < 0 or config.repos < 1:
        raise ValueError(f"invalid config: {config}")
    source_dir = config.source_dir or sysconfig.get_paths()["stdlib"]
    candidates = _candidates(str(Path(source_dir).resolve()))
    if config.sessions and not candidates:
        raise ValueError(f"no usable .py files under {source_dir}")
    master = random.Random(f"editstream-generate:{config.seed}")
    n = config.sessions
    no_collect = _pick_sessions(master, n, 0.05)
    closed_source = _pick_sessions(master, n, 0.10)
    client_settles = _pick_sessions(master, n, 0.10)
    secret = _pick_sessions(master, n, 0.15)
    non_ascii = _pick_sessions(master, n, 0.40)
    ttl = _pick_sessions(master, n, 0.05)
    leaky = {master.choice(sorted(secret))} if secret else set()
    repos = list(range(config.repos))
    master.shuffle(repos)  # every repo gets used once there are enough sessions
    merged: list[tuple[int, int, int, dict[str, Any]]] = []
    initial: dict[tuple[str, str], str] = {}
    for i in range(n):
        traits = _Traits(
            collect=i not in no_collect,
            open_source=i not in closed_source,
            client_settles=i in client_settles,
            secret_path=master.choice(SECRET_PATHS) if i in secret else None,
            leaky_history=i in leaky,
            non_ascii=i in non_ascii,
            ttl=i in ttl,
            repo=repos[i % len(repos)],
            start_ms=config.start_ms + master.randint(0, 15 * 60_000),
        )
        session = _Session(config, i, traits, candidates)
        session.run()
        merged.extend((ts, i, seq, ev) for ts, seq, ev in session.events)
        initial.update({(session.sid, p): t for p, t in session.initial.items()})
    merged.sort(key=lambda x: x[:3])
    return [ev for *_, ev in merged], initial


if __name__ == "__main__":  # regenerate the committed demo sample
    out = sys.argv[1] if len(sys.argv) > 1 else "data/sample-traces.jsonl"
    print(write_jsonl(generate_events(GenerateConfig()), out), "events ->", out)
