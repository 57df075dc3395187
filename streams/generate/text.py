"""Text helpers of the generator: wire edits, unified diffs, typing bursts and code lines.

Pure functions on strings; the simulator (`session.py`) and its tests use them.
"""

from __future__ import annotations

import builtins
import difflib
import fnmatch
import keyword
import random
import re

from streams.generate.config import DISABLED_GLOBS
from streams.scoring.edits import _split_lines as _split_keepends  # one "\n"-only splitter

_TOKEN = re.compile(r"\w+|\s+|[^\w\s]")  # covers every char, so "".join(tokens) == line
# An identifier; not right after a backslash, so the "n" of a "\n" escape is not a name.
_IDENT = re.compile(r"(?<![\w\\])[A-Za-z_][A-Za-z0-9_]*(?![\w])")
_NOT_RENAMEABLE = frozenset({*keyword.kwlist, *keyword.softkwlist, *dir(builtins), "self", "cls"})


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

