"""Reversal ratio: how much of a prediction undoes the user's last edit."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rapidfuzz.distance import LCSseq

from streams.scoring.edits import _diff_edits, _split_lines
from streams.scoring.udiff import _reverse_apply


class _ReversalScorer:
    """Reversal ratio of many predictions against one (original → current) history.

    Interpretation: every history edit with new text is an insertion (a replacement is both
    an insertion and a deletion), and a restored deletion is matched against the prediction
    edit's replacement text. The ratio is not clamped: several restored deletions inside
    one prediction edit can in principle push it above 1.
    """

    def __init__(self, original: str, current: str) -> None:
        self.current = current
        self._current_lines = _split_lines(current)
        self._insertions: list[tuple[int, int]] = []  # [start, end) in current
        self._deletions: list[tuple[str, int]] = []  # (deleted text, position in current)
        shift = 0
        for edit in _diff_edits(original, current):
            pos = edit.start + shift
            if edit.new:
                self._insertions.append((pos, pos + len(edit.new)))
            if edit.old:
                self._deletions.append((edit.old, pos))
            shift += len(edit.new) - len(edit.old)

    def score(self, predicted: str) -> float:
        if not self._insertions and not self._deletions:
            return 0.0  # nothing the user did can be undone; skip the diff
        edits = _diff_edits(self.current, predicted, self._current_lines)
        total = sum(len(e.old) + len(e.new) for e in edits)
        if total == 0:
            return 0.0
        reverted = 0
        restored = 0
        for e in edits:
            end = e.end
            for ins_start, ins_end in self._insertions:
                overlap = min(end, ins_end) - max(e.start, ins_start)
                if overlap > 0:
                    reverted += overlap
            if e.new:
                for text, pos in self._deletions:
                    if e.start <= pos < end or pos == e.start:
                        restored += LCSseq.similarity(text, e.new)
        return (reverted + restored) / total


def reversal_ratio(original: str, current: str, predicted: str) -> float:
    """Share of the prediction's edited characters that undo the user's edits.

    ``reversed`` counts predicted-away characters the user had inserted; ``restored`` counts
    (by character LCS) deleted text the prediction puts back at the same place. Divided by
    all old plus new characters of the prediction edits; 0 when the prediction changes
    nothing.
    """
    return _ReversalScorer(original, current).score(predicted)


def _drop_first_component(path: str) -> str | None:
    """``a/b/c`` → ``b/c``; ``None`` when there is only one component."""
    head, sep, rest = path.partition("/")
    return rest if sep and head and rest else None


def _path_matches(entry_path: str, cursor_path: str) -> bool:
    """Whether a history entry is about the cursor's file.

    Interpretation: the spec's "equals it once its first path component is dropped" is
    accepted in both directions (history paths may carry a worktree-root prefix that the
    cursor path lacks, or the other way round).
    """
    if entry_path == cursor_path:
        return True
    return (
        _drop_first_component(entry_path) == cursor_path
        or _drop_first_component(cursor_path) == entry_path
    )


def _history_original(
    current: str, history: Sequence[Mapping[str, Any]], cursor_path: str
) -> str | None:
    """The text before the last user edit of the cursor's file, or ``None`` if not scorable.

    ``None`` when no entry is about this file, when the last such entry was itself an
    accepted prediction (undoing it is not undoing the user), or when its diff is empty.
    """
    entries = [h for h in history if _path_matches(str(h.get("path", "")), cursor_path)]
    if not entries:
        return None
    last = entries[-1]
    diff = last.get("diff") or ""
    if last.get("predicted") or not diff.strip():
        return None
    return _reverse_apply(current, diff)


def reversal_ratio_from_history(
    current: str, history: Sequence[Mapping[str, Any]], predicted: str, cursor_path: str
) -> float:
    """Reversal ratio of ``predicted`` against the user's last edit to ``cursor_path``.

    History entries are ``{path, diff, predicted, ts_ms}``, oldest first. The last entry for
    the file is reverse-applied to ``current`` to get ``original``; see ``reversal_ratio``.
    """
    original = _history_original(current, history, cursor_path)
    if original is None:
        return 0.0
    return reversal_ratio(original, current, predicted)
