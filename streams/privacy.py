"""What may leave ingest: consent, disabled paths and (optionally) closed-source repositories.

Both the gateway and the worker's ingest call `privacy_verdict` before anything else looks at
an event, so a discarded event's content is never validated, logged, or written anywhere.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cache, lru_cache
from typing import Any


def _glob_to_regex(glob: str) -> str:
    """`**/` matches any number of directories (also none), `*` and `?` stay inside one."""
    out, i = [], 0
    while i < len(glob):
        if glob.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif glob[i] == "*":
            out.append("[^/]*")
            i += 1
        elif glob[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(glob[i]))
            i += 1
    return "".join(out)


@cache
def _compiled(globs: tuple[str, ...]) -> re.Pattern[str]:
    # Case-insensitive: `SECRET.txt` and `Server.PEM` are as private as their lower-case kin.
    return re.compile("|".join(f"(?:{_glob_to_regex(g)})" for g in globs) or "(?!)", re.I)


def path_disabled(path: str, globs: Iterable[str]) -> bool:
    return _path_disabled(path, tuple(globs))


@lru_cache(maxsize=8192)
def _path_disabled(path: str, globs: tuple[str, ...]) -> bool:
    # memoised: a session edits a few files many times, and this runs per event at ingest
    normalized = path.replace("\\", "/").lstrip("/")
    return _compiled(globs).fullmatch(normalized) is not None


def privacy_verdict(
    event: Any, globs: Iterable[str], *, require_open_source: bool
) -> str | None:
    """The reason to discard `event`, or None when it may be forwarded.

    Anything short of an explicit `can_collect_data: true` counts as no consent, so a
    malformed event never carries content past ingest by accident.
    """
    if not isinstance(event, dict) or event.get("can_collect_data") is not True:
        return "no_consent"
    path = event.get("path")
    if isinstance(path, str) and path_disabled(path, globs):
        return "disabled_path"
    history = event.get("history")
    if isinstance(history, list):
        for entry in history:
            hp = entry.get("path") if isinstance(entry, dict) else None
            if isinstance(hp, str) and path_disabled(hp, globs):
                return "disabled_path"
    if require_open_source and event.get("type") == "prediction" and (
        event.get("in_open_source_repo") is not True
    ):
        return "not_open_source"
    return None
