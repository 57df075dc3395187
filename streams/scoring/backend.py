"""Which implementation runs the metrics' hot loops: the compiled extension or pure Python.

``streams/scoring/_native.pyx`` (Cython, compiled in place by ``pip install -e .``) holds the
comparison-unit tokenizer, the LCS keep-masks and the kept rate's counts, and chrF's n-gram
deltas and F-beta. The pure-Python code in ``tokens``, ``lcs``, ``kept_rate`` and ``chrf`` is
the reference implementation: the extension must give the very same values
(tests/streams/test_scoring_native.py compares them on random inputs).

When the extension is not built (no C compiler at install time), scoring falls back to the
pure-Python code, ~4x slower on the score stage's path, and this module logs a warning once,
at import. The test suite asserts the extension is importable, so a broken build fails CI
instead of silently running the slow path.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

_log = logging.getLogger(__name__)

try:
    import streams.scoring._native as native
except ImportError as exc:
    AVAILABLE = False
    _log.warning(
        "streams.scoring._native is not built (%s): the metrics run their pure-Python "
        "reference implementation (same values, slower); reinstall with a C compiler "
        "(`pip install -e .`) to build it",
        exc,
    )
else:
    AVAILABLE = True

__all__ = ["AVAILABLE", "native", "pure_python", "use_native"]

_forced_pure = False


def use_native() -> bool:
    """Whether scorers created now use the extension (built, and not inside ``pure_python``)."""
    return AVAILABLE and not _forced_pure


@contextmanager
def pure_python() -> Iterator[None]:
    """Scorers created inside this block use the pure-Python reference (A/B bench, tests)."""
    global _forced_pure
    before = _forced_pure
    _forced_pure = True
    try:
        yield
    finally:
        _forced_pure = before
