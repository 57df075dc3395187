"""WHEN parsing (`editstream.topics.offsets.parse_when`): the forms replay, export and reset-offsets
accept, pinned to a fixed "now" so durations are exact."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from editstream.topics.offsets import When, iso_to_ms, parse_duration_ms, parse_when

NOW = 1_764_000_000_000  # 2025-11-24T16:00:00Z


def ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


@pytest.mark.parametrize(("text", "ago"), [
    ("2h", 7_200_000), ("30m", 1_800_000), ("1d", 86_400_000), ("45s", 45_000),
    ("2w", 14 * 86_400_000), ("250ms", 250), ("1h30m", 5_400_000), ("1d2h", 93_600_000),
    ("0s", 0), (" 2H ", 7_200_000),
])
def test_durations_count_back_from_now(text: str, ago: int) -> None:
    assert parse_when(text, now_ms=NOW) == When("time", NOW - ago, text=text.strip())


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-11-25T20:57:03Z", ms(2026, 11, 25, 20, 57, 3)),
    ("2026-11-25T20:57:03+00:00", ms(2026, 11, 25, 20, 57, 3)),
    ("2026-11-25T22:57:03+02:00", ms(2026, 11, 25, 20, 57, 3)),
    ("2026-11-25T20:57:03", ms(2026, 11, 25, 20, 57, 3)),  # no zone: UTC
    ("2026-11-25 20:57", ms(2026, 11, 25, 20, 57)),
    ("2026-11-25T20:57:03.250Z", ms(2026, 11, 25, 20, 57, 3) + 250),
    ("2026-11-25", ms(2026, 11, 25)),
])
def test_iso_times(text: str, expected: int) -> None:
    assert parse_when(text, now_ms=NOW) == When("time", expected, text=text)
    assert iso_to_ms(text) == expected


def test_offsets_and_partition_ends() -> None:
    assert parse_when("offset:0") == When("offset", 0, text="offset:0")
    assert parse_when("offset:1234") == When("offset", 1234, text="offset:1234")
    assert parse_when("OFFSET: 7").kind == "offset"
    assert parse_when("earliest").kind == "earliest"
    assert parse_when("beginning").kind == "earliest"
    assert parse_when("latest").kind == "latest"
    assert parse_when("end").kind == "latest"
    assert parse_when("now", now_ms=NOW) == When("time", NOW, text="now")


@pytest.mark.parametrize("text", [
    "", "yesterday", "2 h", "h2", "-2h", "2x", "offset:", "offset:-1", "offset:ab",
    "2026-13-01", "2026-11-25T25:00", "1h 30m", "10", "ms",
])
def test_rejects_with_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError, match=r"offset:N|WHEN"):
        parse_when(text, now_ms=NOW)


def test_duration_helper_is_strict() -> None:
    assert parse_duration_ms("1h30m") == 5_400_000
    assert parse_duration_ms("1h30") is None
    assert parse_duration_ms("30m1h") == 5_400_000  # order is not enforced, sum is
    assert parse_duration_ms("") is None


def test_describe_round_trips_times() -> None:
    when = parse_when("2026-11-25T20:57:03.250Z")
    assert when.describe() == "2026-11-25T20:57:03.250Z"
    assert parse_when(when.describe()) == When("time", when.value, text=when.describe())
    assert parse_when("offset:5").describe() == "offset 5"
    assert parse_when("latest").describe() == "latest"
