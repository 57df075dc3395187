"""Prompt formats round-trip exactly, at UTF-8 byte offsets."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.formats import (
    CURSOR,
    REGION_END,
    REGION_START,
    build_prompt,
    completion_for,
    parse_output,
    parse_prompt,
    split_excerpt,
    teacher_user_message,
)


def example(excerpt: str, start: int, end: int, cursor: int) -> dict[str, object]:
    return {"excerpt": excerpt, "editable_range": [start, end], "cursor": cursor,
            "path": "src/m.py", "history": [], "settled_region": "done"}


def test_split_uses_byte_offsets() -> None:
    text = "é = 1\n日本 = 2\nend\n"
    b = text.encode()
    start = b.index("日".encode())
    end = b.index(b"\nend")
    ex = split_excerpt(example(text, start, end, start + 3))  # cursor after 日 (3 bytes)
    assert ex.region == "日本 = 2"
    assert ex.before == "é = 1\n"
    assert ex.region_with_cursor() == "日" + CURSOR + "本 = 2"


def test_marker_prompt_shape() -> None:
    p = build_prompt(example("a\nbc\nd", 2, 4, 3))
    assert f"a\n{REGION_START}b{CURSOR}c{REGION_END}\nd" in p
    assert p.endswith("### Response:\n")


@given(st.text(min_size=0, max_size=60), st.data())
def test_prompts_parse_back_to_the_region(text: str, data: st.DataObject) -> None:
    b = text.encode()
    bounds = [i for i in range(len(b) + 1) if i == len(b) or (b[i] & 0xC0) != 0x80]
    start = data.draw(st.sampled_from(bounds))
    end = data.draw(st.sampled_from([i for i in bounds if i >= start]))
    cursor = data.draw(st.sampled_from([i for i in bounds if start <= i <= end]))
    ex = example(text, start, end, cursor)
    region = b[start:end].decode()
    for fmt in ("marker", "fim"):
        if CURSOR not in text and REGION_END not in text and "<|file_sep|>" not in text:
            assert parse_prompt(build_prompt(ex, fmt)).region == region
        assert parse_output(completion_for(region, fmt), fmt) == region


def test_parse_output_needs_both_markers() -> None:
    assert parse_output("no markers here") is None
    assert parse_output(REGION_START + "half") is None
    assert parse_output("noise " + REGION_START + "x" + CURSOR + "y" + REGION_END + " tail") == "xy"


def test_teacher_message_carries_hindsight_and_feedback() -> None:
    ex = example("abc", 0, 3, 1)
    parts = parse_prompt(teacher_user_message(ex))
    assert parts.settled_hint == "done" and not parts.has_feedback
    parts = parse_prompt(teacher_user_message(ex, "too far", "old"))
    assert parts.has_feedback and parts.region == "abc"
