"""Unified diff parser: hunks of a history entry's diff, and undoing them."""

from __future__ import annotations

import re
from dataclasses import dataclass

from streams.scoring.edits import _split_lines

_HUNK_HEADER = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


@dataclass(frozen=True, slots=True)
class _Hunk:
    """One unified-diff hunk: line lists with terminators, and 1-based header starts."""

    old_start: int
    old_lines: list[str]
    new_start: int
    new_lines: list[str]


def _parse_unified_diff(diff: str) -> list[_Hunk]:
    """Hunks of a unified diff; bodies are read by the header's line counts.

    Counting (rather than trusting the first character alone) keeps a removed line that
    starts with ``--`` from being mistaken for a file header. An empty body line is taken as
    an empty context line, and ``\\ No newline at end of file`` strips the previous line's
    terminator.
    """
    lines = diff.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    hunks: list[_Hunk] = []
    k = 0
    while k < len(lines):
        header = _HUNK_HEADER.match(lines[k])
        k += 1
        if header is None:
            continue
        old_left = int(header.group(2)) if header.group(2) is not None else 1
        new_left = int(header.group(4)) if header.group(4) is not None else 1
        old_lines: list[str] = []
        new_lines: list[str] = []
        last: list[list[str]] = []  # the side lists the previous body line went to
        while k < len(lines) and (old_left > 0 or new_left > 0 or lines[k].startswith("\\")):
            line = lines[k]
            k += 1
            tag, text = line[:1], line[1:] + "\n"
            if tag == "\\":
                for side in last:
                    side[-1] = side[-1][:-1]  # "\ No newline at end of file"
                last = []
            elif tag in (" ", "") and old_left > 0 and new_left > 0:
                old_lines.append(text)
                new_lines.append(text)
                old_left -= 1
                new_left -= 1
                last = [old_lines, new_lines]
            elif tag == "-" and old_left > 0:
                old_lines.append(text)
                old_left -= 1
                last = [old_lines]
            elif tag == "+" and new_left > 0:
                new_lines.append(text)
                new_left -= 1
                last = [new_lines]
            else:
                k -= 1  # malformed body: stop this hunk here
                break
        hunks.append(_Hunk(int(header.group(1)), old_lines, int(header.group(3)), new_lines))
    return hunks


def _reverse_apply(current: str, diff: str) -> str:
    """Undo a unified diff on ``current`` (the text after it) to recover the text before.

    Reversing swaps each hunk's sides: its ``+``/context lines must be found verbatim in
    ``current`` and are replaced by its ``-``/context lines. Hunks are applied in order, each
    searched after the previous one and placed at the exact match nearest to the header's
    line number; a hunk whose lines are not found is skipped.
    """
    lines = _split_lines(current)
    out: list[str] = []
    cursor = 0  # index in `lines` of the first line not yet copied to `out`
    for hunk in _parse_unified_diff(diff):
        find, replace = hunk.new_lines, hunk.old_lines
        width = len(find)
        if width == 0:
            # Pure removal with no context: the header's start is the line it follows.
            at = min(max(hunk.new_start, cursor), len(lines))
        else:
            hint = hunk.new_start - 1
            candidates = [
                k
                for k in range(cursor, len(lines) - width + 1)
                if lines[k] == find[0] and lines[k : k + width] == find
            ]
            if not candidates:
                continue
            at = min(candidates, key=lambda k: (abs(k - hint), k))
        out.extend(lines[cursor:at])
        out.extend(replace)
        cursor = at + width
    out.extend(lines[cursor:])
    return "".join(out)
