"""The compiled scoring loops (streams/scoring/_native.pyx) against the pure-Python reference.

Equality is exact (floats included): the extension is only allowed to be faster. The rest of
the metric tests (tests/streams/test_scoring.py) run with the extension active, since
``backend.use_native()`` is true in the test environment (asserted below).
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.scoring import backend, delta_chrf, kept_rate, score_samples
from streams.scoring.chrf import _collapse_whitespace, _DeltaChrfScorer
from streams.scoring.kept_rate import _KeptRateScorer
from streams.scoring.lcs import _b_mask
from streams.scoring.tokens import _OPERATORS, _units


def test_extension_is_built_and_used() -> None:
    # A missing compiler or a broken build must fail here, not fall back silently.
    from streams.scoring import _native

    assert backend.AVAILABLE
    assert backend.use_native()
    assert _KeptRateScorer("a", "b")._use_native
    assert _DeltaChrfScorer("a", "b", 0.5)._native
    assert _native.units("x") == ["x"]


def test_pure_python_switch_reaches_the_scorers() -> None:
    with backend.pure_python():
        assert not backend.use_native()
        assert not _KeptRateScorer("a", "b")._use_native
        assert not _DeltaChrfScorer("a", "b", 0.5)._native
    assert backend.use_native()


# Pieces that exercise every branch of the unit grammar: newline and whitespace runs (with
# non-ASCII White_Space and the U+001C..U+001F separators that are not in it), identifier
# runs (non-ASCII letters, digits, combining marks), every listed operator and their prefixes.
_PIECES = [
    "a", "b", "foo", "Bar", "x1", "_", "é", "日本", "\u0301", "٣",
    " ", "  ", "\t", "\n", "\r\n", "\n\n", "\xa0", "\u2003", "\u3000", "\x85", "\x1c",
    "(", ")", ",", ";", "=", ".", ":", "<", ">", "-", "*", "/", "?", "!", "&", "|", "#",
    *_OPERATORS,
]  # fmt: skip

code_text = st.lists(st.sampled_from(_PIECES), max_size=60).map("".join)


def _edit(text: str, rng: random.Random, edits: int) -> str:
    """``text`` with a few random splices of pieces, as a prediction or a user edit."""
    for _ in range(edits):
        i = rng.randint(0, len(text))
        j = min(len(text), i + rng.randint(0, 6))
        insert = "".join(rng.choice(_PIECES) for _ in range(rng.randint(0, 4)))
        text = text[:i] + insert + text[j:]
    return text


@st.composite
def edit_triples(draw: st.DrawFn) -> tuple[str, str, str]:
    """(base, reference, candidate): two edits of one base, so they share most units."""
    base = draw(st.lists(st.sampled_from(_PIECES), max_size=150).map("".join))
    rng = random.Random(draw(st.integers(0, 2**32)))
    return base, _edit(base, rng, rng.randint(0, 4)), _edit(base, rng, rng.randint(0, 4))


@settings(max_examples=400, deadline=None)
@given(st.one_of(code_text, st.text(max_size=40)))
def test_units_match_the_regex(text: str) -> None:
    assert backend.native.units(text) == _units(text)


@settings(max_examples=300, deadline=None)
@given(st.one_of(code_text, st.text(max_size=40)))
def test_collapse_whitespace_matches(text: str) -> None:
    assert backend.native.collapse_whitespace(text) == _collapse_whitespace(text)


# Lists longer than 64 items give multi-word table rows; 3 letters give many ties.
token_lists = st.lists(st.sampled_from("abc"), max_size=200)


@settings(max_examples=400, deadline=None)
@given(token_lists, token_lists)
def test_b_mask_matches_the_reference(a: list[str], b: list[str]) -> None:
    assert backend.native.b_mask(a, b) == _b_mask(a, b)


def test_b_mask_long_lists_seeded() -> None:
    rng = random.Random(15)
    for _ in range(40):
        a = [rng.choice("abcdefgh") for _ in range(rng.randint(100, 700))]
        b = [rng.choice("abcdefgh") if rng.random() < 0.3 else x for x in a]
        b = b[rng.randint(0, 30) :] + [rng.choice("ab") for _ in range(rng.randint(0, 90))]
        assert backend.native.b_mask(a, b) == _b_mask(a, b)
        assert backend.native.b_mask(b, a) == _b_mask(b, a)


@settings(max_examples=400, deadline=None)
@given(edit_triples())
def test_kept_rate_matches_the_reference(triple: tuple[str, str, str]) -> None:
    base, reference, candidate = triple
    native = kept_rate(base, candidate, reference)
    with backend.pure_python():
        pure = kept_rate(base, candidate, reference)
    assert native == pure


@settings(max_examples=400, deadline=None)
@given(edit_triples(), st.sampled_from([0.5, 1.0, 2.0]))
def test_delta_chrf_matches_the_reference(triple: tuple[str, str, str], beta: float) -> None:
    original, expected, actual = triple
    native = delta_chrf(original, expected, actual, beta)
    with backend.pure_python():
        pure = delta_chrf(original, expected, actual, beta)
    assert native == pure  # the same float, not an approximation


def test_score_samples_match_on_a_realistic_region() -> None:
    # The scoring bench's inputs: ~1 KiB of Python, 50 samples, history with one edit.
    from bench.bench_scoring import PATH, build_inputs

    base, settled, samples, history = build_inputs()
    native = score_samples(base, settled, samples, history=history, path=PATH)
    with backend.pure_python():
        pure = score_samples(base, settled, samples, history=history, path=PATH)
    assert native == pure
    assert any(s.kept_rate not in (0.0, 1.0) for s in native)
