"""Prompt formats: golden prompts taken from Zed's sources, exact round trips at UTF-8 byte
offsets, and lenient-but-strict reading of what real models answer."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.formats import (
    CURSOR,
    FIM_END,
    REGION_END,
    REGION_START,
    build_prompt,
    completion_for,
    estimate_tokens,
    format_id,
    parse_answer,
    parse_output,
    parse_prompt,
    prompt_format,
    shown_region,
    split_excerpt,
    teacher_user_message,
)


def example(excerpt: str, start: int, end: int, cursor: int, **extra: Any) -> dict[str, Any]:
    return {"excerpt": excerpt, "editable_range": [start, end], "cursor": cursor,
            "path": "src/m.py", "history": [], "settled_region": "done", **extra}


def test_split_uses_byte_offsets() -> None:
    text = "é = 1\n日本 = 2\nend\n"
    b = text.encode()
    start = b.index("日".encode())
    end = b.index(b"\nend")
    ex = split_excerpt(example(text, start, end, start + 3))  # cursor after 日 (3 bytes)
    assert ex.region == "日本 = 2"
    assert ex.before == "é = 1\n"
    assert ex.region_with_cursor() == "日" + CURSOR + "本 = 2"


def test_formats_are_named_and_versioned() -> None:
    assert format_id("zeta1") == {"name": "zeta1", "version": 1}
    assert format_id("marker") == format_id("zeta1")  # the old name still reads
    assert format_id("zeta2") == {"name": "zeta2", "version": 1}
    assert format_id("fim") == {"name": "fim", "version": 2}
    assert prompt_format("zeta2").stop == (">>>>>>> UPDATED",)
    with pytest.raises(ValueError):
        prompt_format("zeta3")


# ------------------------------------------------------------------------------------------
# Golden prompts. The expected texts are facts from Zed's public sources: the zeta1 excerpt
# from crates/zeta's input_excerpt test, the zeta1 frame from the zeta dataset's prompt
# (as vLLM's next-edit benchmark reproduces it), zeta2 from crates/zeta_prompt's
# V0120GitMergeMarkers writer.

ZED_FILE_LINES = [
    "fn foo() {", "    let x = 42;", '    println!("Hello, world!");', "}", "",
    "fn bar() {", "    let x = 42;", "    let mut sum = 0;", "    for i in 0..x {",
    "        sum += i;", "    }", '    println!("Sum: {}", sum);', "    return sum;", "}", "",
    "fn generate_random_numbers() -> Vec<i32> {", "    let mut rng = rand::thread_rng();",
    "    let mut numbers = Vec::new();",
]

ZED_EXCERPT = (
    "```main.rs\n"
    "    let x = 42;\n"
    '    println!("Hello, world!");\n'
    "<|editable_region_start|>\n"
    "}\n"
    "\n"
    "fn bar() {\n"
    "    let x = 42;\n"
    "    let mut sum = 0;\n"
    "    for i in 0..x {\n"
    "        sum += i;\n"
    "    }\n"
    '    println!("Sum: {}", sum);\n'
    "    r<|user_cursor_is_here|>eturn sum;\n"
    "}\n"
    "\n"
    "fn generate_random_numbers() -> Vec<i32> {\n"
    "<|editable_region_end|>\n"
    "    let mut rng = rand::thread_rng();\n"
    "    let mut numbers = Vec::new();\n"
    "```"
)


def zed_example(region_includes_newline: bool) -> dict[str, Any]:
    """Zed's test excerpt (rows 1-17 of the file, region rows 3-15, cursor at 12:5)."""
    text = "\n".join(ZED_FILE_LINES[1:18])
    start = text.index("}\n\nfn bar")
    end = text.index("fn generate_random_numbers") + len(ZED_FILE_LINES[15])
    end += 1 if region_includes_newline else 0
    cursor = text.index("    return sum;") + 5
    b = lambda i: len(text[:i].encode())  # noqa: E731
    return {"path": "main.rs", "excerpt": text, "excerpt_start": 11, "editable_range":
            [b(start), b(end)], "cursor": b(cursor), "history": []}


@pytest.mark.parametrize("region_includes_newline", [False, True])
def test_zeta1_excerpt_is_zeds(region_includes_newline: bool) -> None:
    prompt = build_prompt(zed_example(region_includes_newline), "zeta1")
    assert ZED_EXCERPT in prompt
    assert prompt.split("### User Excerpt:\n\n", 1)[1] == ZED_EXCERPT + "\n\n### Response:\n\n"


def test_zeta1_frame_is_the_zeta_dataset_prompt() -> None:
    diff = "--- a/main.rs\n+++ b/main.rs\n@@ -13 +13 @@\n-    sum\n+    return sum;\n"
    ex = {**zed_example(False), "history": [{"path": "main.rs", "diff": diff, "ts_ms": 0}]}
    expected = (
        "### Instruction:\n"
        "You are a code completion assistant and your task is to analyze user edits and then "
        "rewrite an excerpt that the user provides, suggesting the appropriate edits within "
        "the excerpt, taking into account the cursor location.\n"
        "\n"
        "### User Edits:\n"
        "\n"
        "User edited main.rs:\n"
        "```diff\n"
        "@@ -13 +13 @@\n"
        "-    sum\n"
        "+    return sum;\n"
        "```\n"
        "\n"
        "### User Excerpt:\n"
        "\n" + ZED_EXCERPT + "\n"
        "\n"
        "### Response:\n"
        "\n"
    )
    assert build_prompt(ex, "zeta1") == expected


def test_zeta1_start_of_file_marker() -> None:
    ex = example("a = 1\nb = 2\n", 0, 6, 5, excerpt_start=0)
    assert build_prompt(ex, "zeta1").split("### User Excerpt:\n\n")[1].startswith(
        "```src/m.py\n<|start_of_file|>\n<|editable_region_start|>\na = 1<|user_cursor_is_here|>"
        "\n<|editable_region_end|>\nb = 2\n\n```")


def test_zeta2_is_zeds_git_merge_marker_prompt() -> None:
    # crates/zeta_prompt's tests use excerpt "prefix\neditable\nsuffix", region 7..15,
    # cursor 10, one event on a.rs with diff "-old\n+new\n"
    ex = {"path": "test.rs", "excerpt": "prefix\neditable\nsuffix", "editable_range": [7, 15],
          "cursor": 10, "history": [{"path": "a.rs", "diff": "-old\n+new\n", "ts_ms": 0}]}
    assert build_prompt(ex, "zeta2") == (
        "<|file_sep|>edit history\n"
        "--- a/a.rs\n"
        "+++ b/a.rs\n"
        "-old\n"
        "+new\n"
        "<|file_sep|>test.rs\n"
        "<|fim_prefix|>prefix\n"
        "<|fim_suffix|>\n"
        "suffix\n"
        "<|fim_middle|><<<<<<< CURRENT\n"
        "edi<|user_cursor|>table\n"
        "=======\n"
    )
    # no history: no history section at all; an accepted prediction is marked
    assert build_prompt({**ex, "history": []}, "zeta2").startswith("<|file_sep|>test.rs\n")
    accepted = [{"path": "a.rs", "diff": "-old\n+new\n", "predicted": True, "ts_ms": 0}]
    assert build_prompt({**ex, "history": accepted}, "zeta2").startswith(
        "<|file_sep|>edit history\n// User accepted prediction:\n--- a/a.rs\n")


def test_completions_and_no_edit_answers() -> None:
    assert completion_for("x = 1\n", "zeta1") == f"{REGION_START}\nx = 1\n{REGION_END}"
    assert completion_for("x = 2\n", "zeta2", "x = 1\n") == "x = 2\n>>>>>>> UPDATED\n"
    assert completion_for("x = 1\n", "zeta2", "x = 1\n") == "NO_EDITS\n>>>>>>> UPDATED\n"
    assert completion_for("x = 1\n", "fim") == "x = 1\n" + FIM_END


# ------------------------------------------------------------------------------------------
# Round trips


@given(st.text(min_size=0, max_size=60), st.data())
def test_prompts_and_answers_round_trip(text: str, data: st.DataObject) -> None:
    b = text.encode()
    bounds = [i for i in range(len(b) + 1) if i == len(b) or (b[i] & 0xC0) != 0x80]
    start = data.draw(st.sampled_from(bounds))
    end = data.draw(st.sampled_from([i for i in bounds if i >= start]))
    cursor = data.draw(st.sampled_from([i for i in bounds if start <= i <= end]))
    ex = example(text, start, end, cursor)
    region = b[start:end].decode()
    new = data.draw(st.text(max_size=20))
    special = ("<|", "```", "=======", ">>>>>>>", "<<<<<<<", "NO_EDITS", "--- a/")
    for fmt in ("zeta1", "zeta2", "fim"):
        if not any(s in text or s in new for s in special):
            parts = parse_prompt(build_prompt(ex, fmt))
            assert parts.format == fmt and parts.path == "src/m.py"
            assert parts.region == shown_region(region, fmt)
            at = len(b[start:cursor].decode())  # drawn as lines: never after a final newline
            assert parts.cursor_in_region == (min(at, len(region) - 1)
                                              if region.endswith("\n") and fmt != "fim" else at)
            # the answer reads back exactly, with the request-time region's final newline
            target = new + "\n" if region.endswith("\n") else new.rstrip("\n")
            assert parse_output(completion_for(target, fmt, region), fmt, region) == target
        assert parse_output(completion_for(region, fmt, region), fmt, region) == region


def test_prompt_parses_back_to_history() -> None:
    hist = [{"path": "src/m.py", "diff": f"--- a/src/m.py\n+++ b/src/m.py\n@@ -{i} +{i} @@\n"
             f"-a{i}\n+b{i}\n", "predicted": i == 1, "ts_ms": i} for i in range(3)]
    ex = example("x\ny\n", 0, 2, 1, history=hist)
    for fmt in ("zeta1", "zeta2"):
        got = parse_prompt(build_prompt(ex, fmt)).history
        assert [h["diff"] for h in got] == [h["diff"].split("\n", 2)[2] for h in hist]
    assert [h["predicted"] for h in parse_prompt(build_prompt(ex, "zeta2")).history] == [
        False, True, False]


def test_budget_drops_oldest_history_never_the_excerpt() -> None:
    hist = [{"path": "src/m.py", "diff": f"@@ -1 +1 @@\n-{'o' * 90}{i}\n+{'n' * 90}{i}\n",
             "ts_ms": i} for i in range(5)]
    ex = example("x = 1\n" * 40, 0, 6, 3, history=hist)
    for fmt in ("zeta1", "zeta2", "fim"):
        full = build_prompt(ex, fmt)
        budget = estimate_tokens(full) - 10
        trimmed = build_prompt(ex, fmt, budget)
        assert estimate_tokens(trimmed) <= budget
        kept = parse_prompt(trimmed).history
        assert 0 < len(kept) < 5 and kept[-1]["diff"].endswith("n4\n")  # newest stays
        tiny = build_prompt(ex, fmt, 1)  # too small even for the excerpt: it stays whole
        assert parse_prompt(tiny).history == [] and "x = 1" in tiny


# ------------------------------------------------------------------------------------------
# Reading what real models answer


BASE = "    total = 0\n    for item in items:\n"
NEW = "    total = 0\n    for item in items:\n        total += item.price\n"


@pytest.mark.parametrize("answer", [
    f"{REGION_START}\n{NEW.rstrip(chr(10))}\n{REGION_END}",  # exact
    f"The user sums prices.\n\n`````\n{REGION_START}\n{NEW.rstrip(chr(10))}\n{REGION_END}\n`````",
    f"```python\n{REGION_START}\n{NEW.rstrip(chr(10))}\n{REGION_END}\n```",  # a fence
    f"{REGION_START}\n{NEW.rstrip(chr(10))}\n",  # the end marker was the stop sequence
    f"{REGION_START}\n{NEW.rstrip(chr(10))}{CURSOR}\n{REGION_END}",  # a stray cursor
])
def test_zeta1_lenient_reads(answer: str) -> None:
    assert parse_output(answer, "zeta1", BASE) == NEW


def test_zeta1_newline_after_marker_is_optional() -> None:
    # an inline region (no newline after the start marker) is read as written
    assert parse_output(f"{REGION_START}    x = 1\n{REGION_END}", "zeta1", "a\n") == "    x = 1\n"


@pytest.mark.parametrize(("answer", "finish", "error"), [
    ("I think the user wants to sum prices.", "stop", "no_region"),
    (f"{REGION_START}\na\n{REGION_END}\n{REGION_START}\nb\n{REGION_END}", "stop",
     "multiple_regions"),
    (f"{REGION_START}\n{NEW}", "length", "truncated"),
    (f"{REGION_START}\n{NEW}{REGION_END}", "length", "truncated"),  # cut is never taken
    (f"{REGION_END} backwards {REGION_START}", "stop", "no_region"),
])
def test_zeta1_strict_on_one_region(answer: str, finish: str, error: str) -> None:
    parsed = parse_answer(answer, "zeta1", BASE, finish)
    assert parsed.region is None and parsed.error == error


@pytest.mark.parametrize(("answer", "expected"), [
    (NEW + ">>>>>>> UPDATED\n", NEW),
    (NEW, NEW),  # terminator cut off as the stop sequence
    ("NO_EDITS\n>>>>>>> UPDATED\n", BASE),
    ("NO_EDITS", BASE),
    ("```\n" + NEW + ">>>>>>> UPDATED\n```", NEW),
    ("<<<<<<< CURRENT\n" + BASE + "=======\n" + NEW + ">>>>>>> UPDATED\n", NEW),
])
def test_zeta2_reads(answer: str, expected: str) -> None:
    assert parse_output(answer, "zeta2", BASE) == expected


def test_zeta2_and_fim_strictness() -> None:
    assert parse_answer(NEW, "zeta2", BASE, "length").error == "truncated"
    two = NEW + ">>>>>>> UPDATED\n" + NEW + ">>>>>>> UPDATED\n"
    assert parse_answer(two, "zeta2", BASE).error == "multiple_regions"
    assert parse_output(NEW + FIM_END + "junk", "fim", BASE) == NEW
    assert parse_answer(NEW, "fim", BASE, "length").error == "truncated"
    assert parse_answer(NEW + "<|file_sep|>other.py\n", "fim", BASE).error == "no_region"


def test_teacher_sees_what_the_editor_saw() -> None:
    ex = example("abc\n", 0, 4, 1, settled_region="abXc\n")
    plain = teacher_user_message(ex)
    assert "abXc" not in plain and parse_prompt(plain).settled_hint is None
    parts = parse_prompt(plain)
    assert parts.format == "teacher" and parts.region == "abc" and parts.cursor_in_region == 1
    hind = parse_prompt(teacher_user_message(ex, hindsight=True))
    assert hind.settled_hint == "abXc\n"
    repair = parse_prompt(teacher_user_message(ex, "too far", "old"))
    assert repair.has_feedback and repair.region == "abc"
