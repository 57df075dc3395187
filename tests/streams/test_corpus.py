"""Corpus figures (streams/corpus.py): edits by kind, span, jump and language, and the
noop/oracle reference predictors that `editstream report` and the dataset card show."""

from __future__ import annotations

from typing import Any

from streams.corpus import corpus_figures, corpus_lines, edit_kind

BASE = "def f(x):\n    y = x\n    return y\n"


def test_edit_kinds() -> None:
    assert edit_kind(BASE, BASE) == ("none", "none", False)
    assert edit_kind(BASE, BASE.replace("y = x", "y = x + 1"))[:2] == ("insert", "within_line")
    assert edit_kind(BASE, BASE.replace("    y = x\n", ""))[:2] == ("delete", "multi_line")
    assert edit_kind(BASE, BASE.replace("y = x", "z = 2 * x"))[:2] == ("replace", "within_line")
    assert edit_kind(BASE, BASE.replace("    return y\n", "    print(y)\n    return y\n"))[:2] \
        == ("insert", "multi_line")


def test_a_jump_is_a_change_two_lines_or_more_from_the_cursor() -> None:
    after = BASE.replace("return y", "return y * 2")
    assert edit_kind(BASE, after, cursor=3)[2] is True  # cursor in line 1, change in line 3
    assert edit_kind(BASE, after, cursor=BASE.index("return"))[2] is False
    assert edit_kind(BASE, BASE.replace("y = x", "y = -x"), cursor=3)[2] is False


def _example(base: str, settled: str, path: str) -> dict[str, Any]:
    raw = base.encode()
    return {"path": path, "excerpt": base, "editable_range": [0, len(raw)], "cursor": 0,
            "base_region": base, "settled_region": settled}


def test_figures_and_reference_predictors() -> None:
    examples = [_example(BASE, BASE, "a.py"),
                _example(BASE, BASE.replace("y = x", "y = x + 1"), "a.py"),
                _example("a: 1\n", "a: 2\n", "c.yml"),
                _example(BASE, BASE.replace("    y = x\n", ""), "b.py")]
    fig = corpus_figures(examples)
    assert fig["examples"] == 4
    assert fig["by_kind"] == {"insert": 1, "delete": 1, "replace": 1, "none": 1}
    assert fig["by_span"] == {"within_line": 2, "multi_line": 1}
    assert fig["by_language"] == {"python": 3, "yaml": 1}
    assert fig["reference"]["noop"]["exact"] == 0.25
    assert 0 < fig["reference"]["noop"]["distance_mean"] < 1
    assert fig["reference"]["oracle"] == {"exact": 1.0, "distance_mean": 0.0}
    text = "\n".join(corpus_lines(fig))
    assert "insert 1 (25%)" in text and "noop exact 0.25" in text
    assert "no settled examples" in corpus_lines(corpus_figures([]))[0]
