"""The source files a session edits: handed in by the caller, chosen and vetted here.

The core never touches the disk: the caller (``editstream.sessions.generate`` reads the standard
library) passes the sorted relative paths and a reader, and the simulator asks for a file's
text only when its seeded pick lands on it, so the same paths and texts give the same events.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from streams.generate.text import _donor_starts

_MIN_SOURCE_LINES = 80
# Chars that str.splitlines() treats as line breaks besides "\n": files containing them would
# make "line" ambiguous for consumers, so we skip such files (and tabs, for simple indents).
_BAD_CHARS = re.compile("[\r\t\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


@dataclass(frozen=True)
class SourceFiles:
    """Candidate .py files: relative posix paths, sorted, and how to read one (None when it
    cannot be read as UTF-8)."""

    paths: tuple[str, ...]
    read: Callable[[str], str | None]


@functools.lru_cache(maxsize=256)
def usable_source(text: str | None) -> str | None:
    """The file's text if it is plain enough to simulate on, else None."""
    if text is None:
        return None
    if _BAD_CHARS.search(text) or text.count("\n") < _MIN_SOURCE_LINES:
        return None
    if len(re.findall(r"^\s*def ", text, re.M)) < 3:
        return None  # mostly data or docs: not what an edit-prediction model sees typed
    return text if text.endswith("\n") else text + "\n"


def pick_source(
    rng: random.Random, sources: SourceFiles, used: set[int]
) -> tuple[str, str] | None:
    """A random candidate (by index into the sorted list), skipping unusable files in order."""
    paths = sources.paths
    if not paths:
        return None
    start = rng.randrange(len(paths))
    for step in range(len(paths)):
        k = (start + step) % len(paths)
        if k in used:
            continue
        text = usable_source(sources.read(paths[k]))
        if text is not None and _donor_starts(text):
            used.add(k)
            return paths[k], text
    return None
