"""The syntax gate (streams/syntax.py, gate `breaks_syntax` in streams/judge.py).

Why: real users pause mid-line, so a target may keep an unfinished `print(`; a target that
puts a parse error where the request-time region had none must not become training data,
while languages without a grammar pass, counted as unchecked.
"""

from __future__ import annotations

from typing import Any

from streams.judge import GATES, check_target
from streams.settings import Settings
from streams.syntax import check_syntax

EXCERPT = "import os\n\n\ndef f(x):\n    return x + 1\n\n\nprint(f(2))\n"
REGION = "def f(x):\n    return x + 1\n"


def _range(excerpt: str, region: str) -> list[int]:
    start = excerpt.encode().index(region.encode())
    return [start, start + len(region.encode())]


def test_a_complete_edit_is_ok() -> None:
    target = "def f(x, y=1):\n    return x + y\n"
    assert check_syntax("a.py", EXCERPT, _range(EXCERPT, REGION), target) == "ok"


def test_an_unfinished_call_breaks_syntax() -> None:
    target = "def f(x):\n    print(\n    return x + 1\n"
    assert check_syntax("a.py", EXCERPT, _range(EXCERPT, REGION), target) == "breaks_syntax"


def test_a_region_broken_at_request_time_is_not_judged() -> None:
    excerpt = EXCERPT.replace("return x + 1", "return (x + ")
    region = "def f(x):\n    return (x + \n"
    target = "def f(x):\n    return (x + y\n"
    assert check_syntax("a.py", excerpt, _range(excerpt, region), target) == "base_broken"


def test_errors_outside_the_region_do_not_count() -> None:
    # the excerpt is cut mid-call above the region: an error there is not the target's
    excerpt = "    x = call(a,\n\n\ndef g():\n    return 1\n"
    region = "def g():\n    return 1\n"
    assert check_syntax("a.py", excerpt, _range(excerpt, region),
                        "def g():\n    return 2\n") in ("ok", "base_broken")


def test_other_languages_are_unchecked_and_yaml_is_checked() -> None:
    assert check_syntax("notes.md", "# a\n\ntext\n", [0, 4], "# a (\n") == "unchecked"
    assert check_syntax("Thing.unknown", "a\n", [0, 2], "b(\n") == "unchecked"
    yaml = "a: 1\nb:\n  - x\n"
    assert check_syntax("c.yml", yaml, [0, 5], "a: [1, 2]\n") == "ok"
    assert check_syntax("c.yml", yaml, [0, 5], "a: [1, 2\n") == "breaks_syntax"


def _example(region: str, settled: str) -> dict[str, Any]:
    excerpt = EXCERPT
    return {"request_id": "r", "path": "src/a.py", "excerpt": excerpt,
            "editable_range": _range(excerpt, region), "cursor": _range(excerpt, region)[0],
            "base_region": region, "settled_region": settled, "history": []}


def test_the_judge_rejects_breaks_syntax_with_its_own_reason() -> None:
    assert "breaks_syntax" in GATES  # so the worker counts it like every gate
    settled = "def f(x):\n    print(x)\n    return x + 1\n"
    ex = _example(REGION, settled)
    good = check_target(ex, settled, Settings(), student_median=None)  # type: ignore[arg-type]
    assert good["ok"] and good["syntax"] == "ok"
    half = "def f(x):\n    print(\n    return x + 1\n"
    bad = check_target(ex, half, Settings(), student_median=None)  # type: ignore[arg-type]
    assert "breaks_syntax" in bad["reasons"] and bad["syntax"] == "breaks_syntax"
