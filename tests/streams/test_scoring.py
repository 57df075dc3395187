"""Tests of the edit-prediction metrics against hand-derived values from the spec.

Each expected number below is worked out in the comment next to it, so a change of
definition (tie-breaking, byte vs character counting, context width...) makes a test fail.
"""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.scoring import (
    KeptRate,
    SampleScore,
    _diff_edits,
    _Edit,
    _keep_masks,
    _reverse_apply,
    delta_chrf,
    kept_rate,
    normalized_levenshtein,
    reversal_ratio,
    reversal_ratio_from_history,
    score_prediction,
    score_samples,
    tokenize,
)

# ----------------------------------------------------------------------------- tokenizer


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("XMLHttpRequest", ["XML", "Http", "Request"]),
        ("getHTTPResponse2Code", ["get", "HTTP", "Response2", "Code"]),
        ("__init__", ["__", "init", "__"]),
        ("snake_case_name", ["snake", "_", "case", "_", "name"]),
        ("a_B", ["a", "_", "B"]),
        ("ABc", ["A", "Bc"]),
        ("x1Y", ["x1", "Y"]),
        ("naïveÉcole", ["naïve", "École"]),  # non-ASCII path of the splitter
        ("ÀÉÎou", ["ÀÉ", "Îou"]),
        ("日本語", ["日本語"]),
    ],
)
def test_tokenize_identifiers(text: str, tokens: list[str]) -> None:
    assert tokenize(text) == tokens


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("a>>>=b", ["a", ">>>=", "b"]),
        ("a>>>b", ["a", ">>>", "b"]),
        ("a?.b", ["a", "?.", "b"]),
        ("x::y", ["x", "::", "y"]),
        ("a+++b", ["a", "++", "+", "b"]),
        ("x...=y", ["x", "...", "=", "y"]),  # "..." precedes "..=" in the list
        ("a..=b", ["a", "..=", "b"]),
        ("/*c*/", ["/*", "c", "*/"]),
        ("f(a,b);", ["f", "(", "a", ",", "b", ")", ";"]),
        ("x<-y=>z", ["x", "<-", "y", "=>", "z"]),
        ("@#", ["@", "#"]),
    ],
)
def test_tokenize_punctuation_longest_listed_match(text: str, tokens: list[str]) -> None:
    assert tokenize(text) == tokens


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("a\n\r\n\nb", ["a", "\n\r\n\n", "b"]),
        ("a \t b", ["a", " \t ", "b"]),
        ("x  \n  y", ["x", "  ", "\n", "  ", "y"]),
        ("a\u00a0\u3000b", ["a", "\u00a0\u3000", "b"]),  # Unicode White_Space
        ("a\x1cb", ["a", "\x1c", "b"]),  # isspace() but not White_Space: punctuation
    ],
)
def test_tokenize_newline_and_whitespace_runs(text: str, tokens: list[str]) -> None:
    assert tokenize(text) == tokens


@given(st.text())
def test_tokenize_concatenation_is_input(text: str) -> None:
    tokens = tokenize(text)
    assert "".join(tokens) == text
    assert all(tokens)


# ----------------------------------------------------------------------------- LCS masks


def _naive_masks(a: list[str], b: list[str]) -> tuple[list[bool], list[bool]]:
    """The spec's keep-masks spelled out with a full DP table (reference for the fast one)."""
    n, m = len(a), len(b)
    p = 0
    while p < min(n, m) and a[p] == b[p]:
        p += 1
    s = 0
    while s < min(n, m) - p and a[n - 1 - s] == b[m - 1 - s]:
        s += 1
    keep_a = [k < p or k >= n - s for k in range(n)]
    keep_b = [k < p or k >= m - s for k in range(m)]
    mid_a, mid_b = a[p : n - s], b[p : m - s]
    table = [[0] * (len(mid_b) + 1) for _ in range(len(mid_a) + 1)]
    for i in range(1, len(mid_a) + 1):
        for j in range(1, len(mid_b) + 1):
            if mid_a[i - 1] == mid_b[j - 1]:
                table[i][j] = table[i - 1][j - 1] + 1
            else:
                table[i][j] = max(table[i - 1][j], table[i][j - 1])
    for side in ("a", "b"):
        i, j = len(mid_a), len(mid_b)
        while i > 0 and j > 0:
            if mid_a[i - 1] == mid_b[j - 1]:
                if side == "a":
                    keep_a[p + i - 1] = True
                else:
                    keep_b[p + j - 1] = True
                i -= 1
                j -= 1
                continue
            up, left = table[i - 1][j], table[i][j - 1]
            if side == "a":
                i, j = (i - 1, j) if up >= left else (i, j - 1)
            else:
                i, j = (i, j - 1) if left >= up else (i - 1, j)
    return keep_a, keep_b


def test_keep_masks_tie_breaking_differs_per_side() -> None:
    # a=[x,y], b=[y,x]: LCS length 1. a's backtrack steps up on the tie and keeps x (a[0]);
    # b's backtrack steps left on the tie and keeps y (b[0]).
    assert _keep_masks(["x", "y"], ["y", "x"]) == ([True, False], [True, False])


@given(
    st.lists(st.sampled_from("abc"), max_size=14),
    st.lists(st.sampled_from("abc"), max_size=14),
)
def test_keep_masks_match_naive_table(a: list[str], b: list[str]) -> None:
    assert _keep_masks(a, b) == _naive_masks(a, b)


# ----------------------------------------------------------------------------- levenshtein


def test_normalized_levenshtein_values() -> None:
    assert normalized_levenshtein("kitten", "sitting") == pytest.approx(3 / 7)
    assert normalized_levenshtein("", "") == 0.0
    assert normalized_levenshtein("", "abc") == 1.0
    assert normalized_levenshtein("日本", "日") == 0.5  # characters, not bytes


@given(st.text(max_size=40), st.text(max_size=40))
def test_normalized_levenshtein_symmetric_in_unit_range(a: str, b: str) -> None:
    d = normalized_levenshtein(a, b)
    assert d == normalized_levenshtein(b, a)
    assert 0.0 <= d <= 1.0
    assert (d == 0.0) == (a == b)


# ----------------------------------------------------------------------------- kept rate


def test_kept_rate_hand_computed() -> None:
    # Units: base  x␣=␣a␣+␣b\n ; cand x␣=␣a␣-␣c\n ; ref x␣=␣a␣-␣dd\n.
    # LCS(cand, base): prefix x␣=␣a␣, suffix \n, middle [-,␣,c] vs [+,␣,b] keeps ␣.
    # candidate_new = "-" + "c" = 2, candidate_deleted = "+" + "b" = 2.
    # reference_new = "-" + "dd" = 3, reference_deleted = 2.
    # kept = LCS([-, c], [-, dd]) keeps "-" = 1; correctly_deleted = "+" + "b" = 2.
    r = kept_rate("x = a + b\n", "x = a - c\n", "x = a - dd\n")
    assert r == KeptRate(
        kept_rate=3 / 4,
        recall_rate=3 / 5,
        candidate_new=2,
        candidate_deleted=2,
        reference_new=3,
        reference_deleted=2,
        kept=1,
        correctly_deleted=2,
    )


def test_kept_rate_partial_recall() -> None:
    # cand adds foo ( ) around the kept "1" (5 bytes, nothing deleted); ref replaces
    # "1" by foo(2): new foo ( 2 ) = 6 bytes, deleted "1". kept = foo ( ) = 5.
    r = kept_rate("x = 1\n", "x = foo(1)\n", "x = foo(2)\n")
    assert (r.candidate_new, r.candidate_deleted) == (5, 0)
    assert (r.reference_new, r.reference_deleted) == (6, 1)
    assert (r.kept, r.correctly_deleted) == (5, 0)
    assert r.kept_rate == 1.0
    assert r.recall_rate == pytest.approx(5 / 7)


def test_kept_rate_identifier_runs_are_single_units() -> None:
    # new_name vs new_nome: one unit each, so nothing of it is kept (not "new", "_").
    r = kept_rate("x\n", "x = new_name\n", "x = new_nome\n")
    # new units: ␣ = ␣ new_name  -> 1+1+1+8 = 11 bytes; kept: ␣ = ␣ = 3.
    assert (r.candidate_new, r.reference_new, r.kept) == (11, 11, 3)
    assert r.kept_rate == pytest.approx(3 / 11)


def test_kept_rate_counts_utf8_bytes() -> None:
    # cand new "日本" = 6 bytes (2 chars), ref new "日本語" = 9 bytes, both delete "1".
    # Different units, so kept = 0; correctly_deleted = 1 byte.
    r = kept_rate("é = 1\n", "é = 日本\n", "é = 日本語\n")
    assert (r.candidate_new, r.candidate_deleted) == (6, 1)
    assert (r.reference_new, r.reference_deleted) == (9, 1)
    assert (r.kept, r.correctly_deleted) == (0, 1)
    assert r.kept_rate == pytest.approx(1 / 7)
    assert r.recall_rate == pytest.approx(1 / 10)


def test_kept_rate_identity_and_zero_denominators() -> None:
    assert kept_rate("same", "same", "same") == KeptRate(1.0, 1.0, 0, 0, 0, 0, 0, 0)
    # Candidate changes nothing but the reference does: 0/0 on the candidate side while
    # the reference side is non-zero -> both rates 0.
    r = kept_rate("a = 1\n", "a = 1\n", "a = 2\n")
    assert (r.kept_rate, r.recall_rate) == (0.0, 0.0)
    # Candidate equals reference (both differ from base): everything kept.
    r = kept_rate("a = 1\n", "a = 2\n", "a = 2\n")
    assert (r.kept_rate, r.recall_rate) == (1.0, 1.0)


def test_kept_rate_size_bail_out_at_512_bytes() -> None:
    base, reference = "a", "a b"  # reference grows by 2 bytes
    # Candidate grows by 2 + 512 = 514: gap | 514 - 2 | = 512, not > 512, so computed:
    # kept = " " + "b" = 2 of 514 new bytes; recall = 2 / 2.
    at_limit = kept_rate(base, "a b" + " c" * 256, reference)
    assert at_limit.kept_rate == pytest.approx(2 / 514)
    assert at_limit.recall_rate == 1.0
    # One more " c": gap 514 > 512 -> both rates 0 without any LCS.
    over = kept_rate(base, "a b" + " c" * 257, reference)
    assert (over.kept_rate, over.recall_rate) == (0.0, 0.0)
    # The gap is in bytes: 171 three-byte chars = 513 bytes (but 171 characters).
    assert kept_rate("", "語" * 171, "").kept_rate == 0.0
    assert kept_rate("", "語" * 171, "").candidate_new == 0  # bailed out, nothing counted


_code_text = st.text(alphabet=st.sampled_from(list("ab_X1 \n(=)é語")), max_size=30)


@given(_code_text, _code_text, _code_text)
def test_kept_rate_rates_in_unit_range(base: str, candidate: str, reference: str) -> None:
    r = kept_rate(base, candidate, reference)
    assert 0.0 <= r.kept_rate <= 1.0
    assert 0.0 <= r.recall_rate <= 1.0
    assert r.kept <= r.candidate_new
    assert r.correctly_deleted <= min(r.candidate_deleted, r.reference_deleted)


# ----------------------------------------------------------------------------- diff


def _apply(old: str, edits: list[_Edit]) -> str:
    out: list[str] = []
    pos = 0
    for e in edits:
        assert e.start >= pos
        out.append(old[pos : e.start])
        out.append(e.new)
        pos = e.end
    out.append(old[pos:])
    return "".join(out)


def test_diff_pure_extension_becomes_insertion() -> None:
    # Line hunk -> token hunk "epr" -> "eprintln!()" -> pure char insertion after "epr".
    assert _diff_edits("    epr\n", "    eprintln!()\n") == [_Edit(7, "", "intln!()")]


def test_histogram_diff_anchors_on_unique_line() -> None:
    # All lines unique; the first new line found in old ("c") is the anchor, so old's
    # a,b are deleted before it and b,a inserted after it.
    assert _diff_edits("a\nb\nc\n", "c\nb\na\n") == [
        _Edit(0, "a\nb\n", ""),
        _Edit(6, "", "b\na\n"),
    ]


def test_token_rediff_limited_to_8_lines() -> None:
    # 8 changed lines per side: token re-diff gives one "1" -> "2" edit per line.
    old = "".join(f"{name} = 1\n" for name in "abcdefgh")
    assert len(_diff_edits(old, old.replace("1", "2"))) == 8
    # 9 lines: the hunk stays one whole edit.
    old = "".join(f"{name} = 1\n" for name in "abcdefghi")
    assert _diff_edits(old, old.replace("1", "2")) == [_Edit(0, old, old.replace("1", "2"))]


@pytest.mark.parametrize(
    ("prefix", "token_level"),
    [
        ("q" * 507, True),  # 507 + len(" = 1\n") = 512 bytes
        ("q" * 508, False),  # 513 bytes
        ("é" * 253, True),  # 506 + 5 = 511 bytes
        ("é" * 254, False),  # 513 bytes although only 259 characters
    ],
)
def test_token_rediff_limited_to_512_bytes(prefix: str, token_level: bool) -> None:
    old, new = prefix + " = 1\n", prefix + " = 2\n"
    expected = [_Edit(len(prefix) + 3, "1", "2")] if token_level else [_Edit(0, old, new)]
    assert _diff_edits(old, new) == expected


def test_token_rediff_byte_limit_applies_to_each_side() -> None:
    big = "é" * 254 + " = 1\n"  # 513 bytes, 259 characters
    small = "x = 1\n"
    assert _diff_edits(big, small) == [_Edit(0, big, small)]
    assert _diff_edits(small, big) == [_Edit(0, small, big)]
    # Just under the limit the identifier run alone is replaced.
    ok = "é" * 253 + " = 1\n"
    assert _diff_edits(ok, small) == [_Edit(0, "é" * 253, "x")]


def test_histogram_diff_fallback_on_frequent_lines() -> None:
    old = "x\n" * 70 + "a\n"
    new = "x\n" * 65 + "b\n" + "x\n" * 5
    assert _apply(old, _diff_edits(old, new)) == new


_lines = st.lists(st.sampled_from(["a\n", "b\n", "x = 1\n", "foo(bar)\n", "\n", "z"]))


@given(_lines, _lines)
def test_diff_edits_reconstruct_new_text(old: list[str], new: list[str]) -> None:
    a, b = "".join(old), "".join(new)
    edits = _diff_edits(a, b)
    assert _apply(a, edits) == b
    assert all(e.old or e.new for e in edits)


# ----------------------------------------------------------------------------- reversal


def test_reversal_pure_extension_is_not_reversal() -> None:
    # History inserted "epr"; the prediction only appends "intln!()" after it.
    assert reversal_ratio("    \n", "    epr\n", "    eprintln!()\n") == 0.0


def test_reversal_restoring_deleted_line() -> None:
    # History deleted "b = 2\n" (at offset 6 of current). The prediction's token diff:
    # insert "b = 2\n" at 6 (6 chars) and replace "3" by "4" (1 + 1 chars): total 8.
    # restored = LCS("b = 2\n", "b = 2\n") = 6 -> 6 / 8.
    original = "a = 1\nb = 2\nc = 3\n"
    current = "a = 1\nc = 3\n"
    assert reversal_ratio(original, current, "a = 1\nb = 2\nc = 4\n") == 0.75
    assert reversal_ratio(original, current, original) == 1.0


def test_reversal_restoring_partially() -> None:
    # Deleted "old_value = 1\n" (14 chars) at offset 2; prediction inserts "new_value = 1\n"
    # there: restored = LCS = "_value = 1\n" = 11 of total 14.
    assert reversal_ratio("a\nold_value = 1\n", "a\n", "a\nnew_value = 1\n") == 11 / 14


def test_reversal_restored_deletion_position_rule() -> None:
    # History deleted "q\n" at offset 2 of current "x\nz\n".
    original, current = "x\nq\nz\n", "x\nz\n"
    # Prediction edit [1, 2) "\n" -> " q " ends exactly at 2: the deletion is not inside
    # [start, end) nor at the start, so nothing is restored.
    assert reversal_ratio(original, current, "x q z\n") == 0.0
    # Prediction edit [0, 3) "x\nz" -> "w q v" contains 2: restored = LCS("q\n", "w q v")
    # = 1 of total 3 + 5.
    assert reversal_ratio(original, current, "w q v\n") == 1 / 8


def test_reversal_reverting_insertion() -> None:
    # History inserted "y = 2\n" at [6, 12). Prediction replaces "y = 2" by "z":
    # reversed = 5 overlapping chars, total = 5 + 1.
    assert reversal_ratio("x = 1\n", "x = 1\ny = 2\n", "x = 1\nz\n") == 5 / 6
    assert reversal_ratio("x = 1\n", "x = 1\ny = 2\n", "x = 1\n") == 1.0


def test_reversal_partial_deletion_of_inserted_word() -> None:
    # History inserted "alpha" at [2, 7); prediction shortens it to "al": a pure deletion
    # of "pha" at [4, 7) -> reversed 3 of total 3.
    assert reversal_ratio("f()\n", "f(alpha)\n", "f(al)\n") == 1.0


def test_reversal_no_change_is_zero() -> None:
    assert reversal_ratio("a\n", "b\n", "b\n") == 0.0  # prediction changes nothing
    assert reversal_ratio("a\n", "a\n", "c\n") == 0.0  # user changed nothing


# Zed's reference cases (crates/edit_prediction_cli, reversal_tracking tests): (original,
# current, predicted, characters reversing the user's edits, characters in the prediction).
ZED_REVERSAL_CASES = [
    ("a\nb\nc", "a\nnew line\nb\nc", "a\nb\nc", 9, 9),
    ("a\ndeleted\nb", "a\nb", "a\ndeleted\nb", 8, 8),
    ("hello beautiful world", "hello world", "hello beautiful world", 10, 10),
    ("foo", "", "bar", 0, 3),
    ("line1\nline2\nline3", "LINE1\nline2\nline3", "LINE1\nline2\nLINE3", 0, 10),
    ("same", "same", "different", 0, 13),
    ("keep\ndelete_me\nkeep2", "keep\nadded\nkeep2", "keep\ndelete_me\nkeep2", 14, 14),
    ("the quick brown fox", "the slow brown fox", "the fast brown fox", 4, 8),
    ("", "epr", "eprintln!()", 0, 8),
    ("", "my_function()", "test_my_function()", 0, 5),
    ("", "test_my_function", "a_test_for_my_special_function_plz", 0, 18),
    ("", "a_b_c", "_a__b__c__", 0, 5),
    ("", "abc", "xyz", 3, 6),
    ("", "abc", "cba", 3, 6),
    ("", "abcd", "axbx", 4, 8),
    ("", "vec.pu", "vec.push(item)", 0, 8),
    ("", "use std::col", "use std::collections::HashMap", 0, 17),
    ("", "name: St", "name: String", 0, 4),
    ("", "hello", "world", 5, 10),
    ("", "mistake", "", 7, 7),
    ("", "<dv", "<div>", 0, 2),
    ("from my_project import Foo\n", "ifrom my_project import Foo\n",
     "import\nfrom my_project import Foo\n", 0, 6),
    ("from", "ifrom", "from", 1, 1),
    ('print("Hello, World!")', 'sys.("Hello, World!")',
     'sys.stdout.write("Hello, World!\\n")', 0, 14),
]


@pytest.mark.parametrize(("original", "current", "predicted", "reversing", "total"),
                         ZED_REVERSAL_CASES)
def test_reversal_matches_zed_reference(original: str, current: str, predicted: str,
                                        reversing: int, total: int) -> None:
    assert reversal_ratio(original, current, predicted) == pytest.approx(reversing / total)


def test_reversal_interleaved_insertions_are_not_reversal() -> None:
    # Issue 12, item 7: "a_b_c" is a subsequence of the prediction, so every predicted
    # character is an insertion around what the user typed: 0 of 5, ratio 0.0.
    assert reversal_ratio("", "a_b_c", "_a__b__c__") == 0.0
    edits = _diff_edits("a_b_c", "_a__b__c__")
    assert all(e.old == "" for e in edits)
    assert sum(len(e.new) for e in edits) == 5


@given(_lines, _lines, _lines)
@settings(max_examples=60)
def test_reversal_ratio_non_negative(o: list[str], c: list[str], p: list[str]) -> None:
    assert reversal_ratio("".join(o), "".join(c), "".join(p)) >= 0.0


# ----------------------------------------------------------------------------- history

_INSERT_B = "--- a/src/a.py\n+++ b/src/a.py\n@@ -1,2 +1,3 @@\n a\n+b\n c\n"


def _entry(path: str, diff: str, predicted: bool = False) -> dict[str, object]:
    return {"path": path, "diff": diff, "predicted": predicted, "ts_ms": 0}


def test_reverse_apply_recovers_original() -> None:
    assert _reverse_apply("a\nb\nc\n", _INSERT_B) == "a\nc\n"


def test_reverse_apply_skips_hunk_with_missing_context() -> None:
    diff = (
        "--- a/f\n+++ b/f\n"
        "@@ -1,2 +1,3 @@\n a\n+b\n c\n"
        "@@ -10,2 +11,2 @@\n nowhere\n-old\n+new\n"  # "nowhere"/"new" not in current
    )
    assert _reverse_apply("a\nb\nc\nd\n", diff) == "a\nc\nd\n"


def test_reverse_apply_zero_context_and_no_newline_marker() -> None:
    # Forward diff deleted line 2 without context: reversing inserts it after line 1.
    assert _reverse_apply("a\nc\n", "@@ -2,1 +1,0 @@\n-b\n") == "a\nb\nc\n"
    # Forward diff changed a last line without newline.
    diff = "@@ -1,1 +1,1 @@\n-x\n\\ No newline at end of file\n+y\n\\ No newline at end of file\n"
    assert _reverse_apply("y", diff) == "x"


def test_history_path_with_first_component_dropped() -> None:
    # Reversing gives original "a\nc\n"; predicting it back removes the user's "b\n".
    history = [_entry("repo/src/a.py", _INSERT_B)]
    assert reversal_ratio_from_history("a\nb\nc\n", history, "a\nc\n", "src/a.py") == 1.0
    # Either side may carry the extra leading component.
    history = [_entry("src/a.py", _INSERT_B)]
    assert reversal_ratio_from_history("a\nb\nc\n", history, "a\nc\n", "repo/src/a.py") == 1.0
    # A different file does not count.
    history = [_entry("repo/other.py", _INSERT_B)]
    assert reversal_ratio_from_history("a\nb\nc\n", history, "a\nc\n", "src/a.py") == 0.0


def test_history_uses_last_entry_for_file_only() -> None:
    current = "a\nb\nc\n"
    real = _entry("src/a.py", _INSERT_B)
    other = _entry("src/b.py", "@@ -1 +1 @@\n-q\n+r\n")
    # Last entry for this file is an accepted prediction -> 0 even though an earlier one
    # would make the ratio 1.
    hist = [real, other, _entry("src/a.py", _INSERT_B, predicted=True)]
    assert reversal_ratio_from_history(current, hist, "a\nc\n", "src/a.py") == 0.0
    # Last entry for this file has an empty diff -> 0.
    hist = [real, _entry("src/a.py", "")]
    assert reversal_ratio_from_history(current, hist, "a\nc\n", "src/a.py") == 0.0
    # Entries for other files after the real one do not hide it.
    assert reversal_ratio_from_history(current, [real, other], "a\nc\n", "src/a.py") == 1.0
    assert reversal_ratio_from_history(current, [], "a\nc\n", "src/a.py") == 0.0
    # Extending instead of reverting: not a reversal.
    assert reversal_ratio_from_history(current, [real], "a\nb\nc\nd\n", "src/a.py") == 0.0


def test_history_missing_context_hunk_skipped() -> None:
    # The second hunk cannot be found, so only "b\n" is known as the user's insertion.
    diff = _INSERT_B + "@@ -20,2 +21,2 @@\n zz\n-q\n+r\n"
    hist = [_entry("src/a.py", diff)]
    assert reversal_ratio_from_history("a\nb\nc\n", hist, "a\nc\n", "src/a.py") == 1.0


# ----------------------------------------------------------------------------- delta chrF


def test_delta_chrf_identities() -> None:
    assert delta_chrf("same", "same", "same") == 100.0
    original = "def f():\n    return 1\n"
    expected = "def f():\n    return 2\n"
    assert delta_chrf(original, expected, expected) == 100.0
    # Doing nothing: every actual delta is a zero count, TP = 0 for all n -> 0.
    assert delta_chrf(original, expected, original) == 0.0


def test_delta_chrf_collapses_whitespace() -> None:
    original = "def f():\n    return 1\n"
    expected = "def f():\n    return 2\n"
    # Same edit with other whitespace runs: identical after collapsing.
    assert delta_chrf(original, expected, "def f():\n\n\n  return 2\r\n") == 100.0


def test_delta_chrf_hand_computed() -> None:
    # before "ab"; expected after "abc"; actual after "abcd".
    # n=1: exp {a:0,b:0,c:1}, act {a:0,b:0,c:1,d:1}: P=1/2, R=1
    # n=2: exp {ab:0,bc:1}, act {ab:0,bc:1,cd:1}: P=1/2, R=1
    # n=3: exp {abc:1}, act {abc:1,bcd:1}: P=1/2, R=1
    # n=4: exp {}, act {abcd:1}: P=0, R=0 (0/0); n=5,6: both empty -> 1, 1
    # P = 3.5/6, R = 5/6.
    p, r = 3.5 / 6, 5 / 6
    assert delta_chrf("ab", "abc", "abcd") == pytest.approx(100 * 1.25 * p * r / (0.25 * p + r))
    assert delta_chrf("ab", "abc", "abcd", beta=1.0) == pytest.approx(200 * p * r / (p + r))


def test_delta_chrf_short_texts_and_zero_deltas() -> None:
    # n=1..3 score 0 (exp has {¬c, d} etc., act only zero counts), n=4..6 have no n-grams
    # on either side -> 1: P = R = 1/2 -> 50.
    assert delta_chrf("abc", "abd", "abc") == 50.0
    # An anagram edit: n=1 deltas are all zero-count keys -> P_1 = R_1 = 0; n=2 exact;
    # n>=3 empty -> P = R = 5/6, even though actual == expected.
    assert delta_chrf("ab", "ba", "ba") == pytest.approx(100 * 5 / 6)


def test_delta_chrf_context_is_five_chars() -> None:
    # before "56789x", expected after "56789y", actual after "56789z": for every n = 1..6
    # the change is covered, TP = 1 (the removed n-gram ending in x), FP = FN = 1 -> 1/2.
    # With only 4 context chars n = 6 would have no n-grams (P6 = R6 = 1).
    assert delta_chrf("0123456789x", "0123456789y", "0123456789z") == 50.0
    # A far-away common prefix is cut to 5 chars of context, so a long shared prefix
    # cannot dilute the score: the same edit after 5 or 500 common chars scores the same.
    short = delta_chrf("01234x", "01234y", "01234z")
    long = delta_chrf("q" * 495 + "01234x", "q" * 495 + "01234y", "q" * 495 + "01234z")
    assert short == long
    assert 0.0 < short < 100.0


def _naive_delta_chrf(original: str, expected: str, actual: str, beta: float = 0.5) -> float:
    """The spec's delta chrF spelled out literally (per-n Counters, ¬ keys, zero keys)."""
    if original == expected == actual:
        return 100.0

    def collapse(t: str) -> str:
        ws = "[\t\x0b\x0c \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+"
        return re.sub(ws, " ", re.sub("[\r\n]+", "\n", t))

    def deltas(before_full: str, after_full: str) -> list[dict[str, int]]:
        p = 0
        while p < min(len(before_full), len(after_full)) and before_full[p] == after_full[p]:
            p += 1
        s = 0
        limit = min(len(before_full), len(after_full)) - p
        while s < limit and before_full[-1 - s] == after_full[-1 - s]:
            s += 1
        lo, cut = max(0, p - 5), max(0, s - 5)
        before = before_full[lo : len(before_full) - cut]
        after = after_full[lo : len(after_full) - cut]
        out = []
        for n in range(1, 7):
            ca = Counter(after[i : i + n] for i in range(len(after) - n + 1))
            cb = Counter(before[i : i + n] for i in range(len(before) - n + 1))
            delta = {}
            for gram in set(ca) | set(cb):
                d = ca[gram] - cb[gram]
                delta[("¬" + gram) if d < 0 else gram] = abs(d)
            out.append(delta)
        return out

    o = collapse(original)
    exp_d, act_d = deltas(o, collapse(expected)), deltas(o, collapse(actual))
    ps, rs = [], []
    for e, a in zip(exp_d, act_d, strict=True):
        if not e and not a:
            ps.append(1.0)
            rs.append(1.0)
            continue
        keys = set(e) | set(a)
        tp = sum(min(e.get(k, 0), a.get(k, 0)) for k in keys)
        fp = sum(max(0, a.get(k, 0) - e.get(k, 0)) for k in keys)
        fn = sum(max(0, e.get(k, 0) - a.get(k, 0)) for k in keys)
        ps.append(tp / (tp + fp) if tp + fp else 0.0)
        rs.append(tp / (tp + fn) if tp + fn else 0.0)
    p, r = sum(ps) / 6, sum(rs) / 6
    if p + r == 0:
        return 0.0
    b2 = beta * beta
    return 100 * (1 + b2) * p * r / (b2 * p + r)


_chrf_text = st.text(alphabet=st.sampled_from(list("aab¬c \n\t(")), max_size=40)


@given(_chrf_text, _chrf_text, _chrf_text, st.sampled_from([0.5, 1.0, 2.0]))
@settings(max_examples=300)
def test_delta_chrf_matches_literal_definition(
    original: str, expected: str, actual: str, beta: float
) -> None:
    # The implementation skips n-grams that cancel inside matched blocks; it must agree
    # with the literal definition everywhere.
    got = delta_chrf(original, expected, actual, beta)
    assert got == pytest.approx(_naive_delta_chrf(original, expected, actual, beta))


@given(_code_text, _code_text, _code_text)
def test_delta_chrf_in_range(original: str, expected: str, actual: str) -> None:
    assert 0.0 <= delta_chrf(original, expected, actual) <= 100.0


# ----------------------------------------------------------------------------- pipeline


def test_score_prediction_values_and_dict() -> None:
    history = [_entry("src/a.py", _INSERT_B)]
    base = "a\nb\nc\n"
    score = score_prediction(base, "a\nb\nc\nd\n", "a\nc\n", history=history, path="src/a.py")
    # Prediction deletes the user's "b\n" (reversal 1) while the user went on to add "d\n".
    assert score.exact is False
    assert score.reversal_ratio == 1.0
    assert score.distance == pytest.approx(4 / 8)  # "a\nc\n" -> "a\nb\nc\nd\n": 4 inserts
    assert (score.kept_rate, score.recall_rate) == (0.0, 0.0)
    d = score.to_dict()
    assert list(d) == [
        "distance",
        "exact",
        "kept_rate",
        "recall_rate",
        "reversal_ratio",
        "delta_chrf",
    ]
    assert json.loads(json.dumps(d)) == d
    assert d["distance"] == 0.5


def test_to_dict_rounds_to_six_decimals() -> None:
    s = SampleScore(1 / 3, True, 2 / 3, 1.0, 0.0, 100 / 7)
    assert s.to_dict() == {
        "distance": 0.333333,
        "exact": True,
        "kept_rate": 0.666667,
        "recall_rate": 1.0,
        "reversal_ratio": 0.0,
        "delta_chrf": 14.285714,
    }


def test_score_samples_dedupes() -> None:
    scores = score_samples(
        "x = 1\n", "x = 2\n", ["x = 2\n", "x = 3\n", "x = 2\n"], history=[], path="p"
    )
    assert scores[0] is scores[2]
    assert scores[0].exact and scores[0].delta_chrf == 100.0
    assert not scores[1].exact


_small_text = st.text(alphabet=st.sampled_from(list("ab_X1 \n(=)é")), max_size=24)


@given(
    st.one_of(_small_text, _small_text.map(lambda t: "a\nb\n" + t)),  # history applies
    _small_text,
    st.lists(_small_text, max_size=5),
)
@settings(max_examples=80)
def test_score_samples_equals_score_prediction(base: str, settled: str, samples: list[str]) -> None:
    samples = samples + samples[:2]  # repeats exercise the dedupe cache
    diff = "--- a/f\n+++ b/f\n@@ -1,1 +1,2 @@\n" + "".join(
        f"{tag}{line}" for tag, line in zip(" +", ["a\n", "b\n"], strict=True)
    )
    history = [_entry("repo/f", diff)]
    batch = score_samples(base, settled, samples, history=history, path="f")
    single = [score_prediction(base, settled, s, history=history, path="f") for s in samples]
    assert batch == single


@given(_small_text, _small_text, st.lists(_small_text, max_size=6), st.sets(st.integers(0, 7)))
@settings(max_examples=60)
def test_score_samples_metrics_on_a_subset(
    base: str, settled: str, samples: list[str], chosen: set[int]
) -> None:
    samples = samples + samples[:2]  # a repeat may fall in and out of the subset
    batch = score_samples(base, settled, samples, history=[], path="f", metrics=chosen)
    for i, (got, s) in enumerate(zip(batch, samples, strict=True)):
        full = score_prediction(base, settled, s, history=[], path="f")
        if i in chosen:
            assert got == full
        else:  # distance only: the same distance, the other metrics absent from the record
            assert (got.distance, got.exact) == (full.distance, full.exact)
            assert set(got.to_dict()) == {"distance", "exact"}


def test_summary_means_are_over_the_first_valid_samples() -> None:
    from streams.score import metric_indices, score_texts, summarise

    assert metric_indices([False, True, True, False, True], 2) == [1, 2]
    assert metric_indices([True, False], None) == [0]
    example = {"base_region": "x = 1\n", "settled_region": "x = 2\n", "history": [],
               "path": "p"}
    texts = ["x = 2\n", "x = 3\n", "x = 2\n", "y = 9\n"]
    scores = score_texts(example, texts, "fim", None, metrics_samples=2)
    assert ["kept_rate" in s for s in scores] == [True, True, False, False]
    summary = summarise(scores)
    assert summary["n_metrics"] == 2 and summary["n"] == 4
    first_two = [score_prediction("x = 1\n", "x = 2\n", t, history=[], path="p") for t in texts[:2]]
    assert summary["kept_rate_mean"] == round(sum(s.kept_rate or 0 for s in first_two) / 2, 6)
    assert summary["delta_chrf_mean"] == round(sum(s.delta_chrf or 0 for s in first_two) / 2, 6)
    # distance statistics stay over every valid sample
    assert summary["mean"] == round(sum(s["distance"] for s in scores) / 4, 6)
