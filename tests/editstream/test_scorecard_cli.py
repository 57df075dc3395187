"""`editstream scorecard --results FILE`: the command line on files of eval records made by
the real scoring of generated sessions (a corpus the core's tests do not use), through the
real parser and dispatch. The broker side is tests/integration/test_scorecard_topic.py."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import pytest

from editstream import cli
from editstream.evaluation.scorecard import render_scorecard, resolve_names, window_ms
from streams.settings import Settings
from tests.streams.scorecard_records import generated_examples, records_for


@cache
def corpus() -> tuple[dict[str, Any], ...]:
    examples = generated_examples(seed=13, sessions=14)
    assert len(examples) >= 60  # enough for the default scorecard_min_pairs (30)
    return tuple(records_for(examples, ("noop", "served", "oracle", "reverter")))


def write(path: Path, records: Any) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


def run(tmp_path: Path, *args: str, records: Any = None) -> tuple[int, Path]:
    results = write(tmp_path / "eval-results.jsonl", corpus() if records is None else records)
    out = tmp_path / "out"
    code = cli.main(["scorecard", "--results", str(results), "--out", str(out), *args])
    return code, out


def test_the_oracle_ships(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(tmp_path, "--baseline", "noop", "--candidate", "oracle")
    assert code == 0
    printed = capsys.readouterr().out
    assert "## oracle vs noop" in printed and "**Verdict: SHIP** (exit 0)" in printed
    assert printed.startswith((out / "scorecard.md").read_text())
    doc = json.loads((out / "scorecard.json").read_text())
    assert doc["exit_code"] == 0
    [cmp] = doc["comparisons"]
    assert (cmp["candidate"], cmp["baseline"], cmp["verdict"]) == ("oracle", "noop", "ship")
    assert cmp["n_paired"] == doc["models"]["oracle"]["n"] == doc["models"]["noop"]["n"]
    assert cmp["diffs"]["distance"]["ci_high"] < 0
    assert (out / "scorecard.png").read_bytes()[:4] == b"\x89PNG"


def test_the_reverter_does_not_ship(tmp_path: Path) -> None:
    code, out = run(tmp_path, "--baseline", "noop", "--candidate", "reverter")
    assert code == 1
    doc = json.loads((out / "scorecard.json").read_text())
    failed = [c["name"] for c in doc["comparisons"][0]["checks"] if not c["passed"]]
    assert "distance lower" in failed


def test_defaults_served_baseline_every_candidate_worst_exit(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(tmp_path, "--no-plot")
    doc = json.loads((out / "scorecard.json").read_text())
    pairs = [(c["candidate"], c["baseline"], c["exit_code"]) for c in doc["comparisons"]]
    assert pairs == [("oracle", "served", 0), ("reverter", "served", 1)]
    assert code == 1
    assert not (out / "scorecard.png").exists()
    # only the built-ins: served is judged against noop
    code, out = run(tmp_path, "--no-plot",
                    records=[r for r in corpus() if r["candidate"] in ("noop", "served")])
    doc = json.loads((out / "scorecard.json").read_text())
    assert [(c["candidate"], c["baseline"]) for c in doc["comparisons"]] == [("served", "noop")]


def test_few_examples_are_too_little_data(tmp_path: Path) -> None:
    ids = sorted({r["request_id"] for r in corpus()})[:10]
    code, out = run(tmp_path, "--baseline", "noop", "--candidate", "oracle",
                    records=[r for r in corpus() if r["request_id"] in ids])
    assert code == 2
    doc = json.loads((out / "scorecard.json").read_text())
    assert doc["comparisons"][0]["verdict"] == "too little data"
    # the minimum is a setting, here a flag
    code, _ = run(tmp_path, "--baseline", "noop", "--candidate", "oracle",
                  "--scorecard-min-pairs", "5",
                  records=[r for r in corpus() if r["request_id"] in ids])
    assert code == 0


def test_time_window_and_duplicates(tmp_path: Path) -> None:
    recs = list(corpus())
    stamps = sorted({r["ts_ms"] for r in recs})
    cut = stamps[len(stamps) // 2]
    assert run(tmp_path, "--from", f"@{cut}")[0] == 2  # not a WHEN: a one-line error
    from datetime import UTC, datetime

    when = datetime.fromtimestamp(cut / 1000, UTC).isoformat(timespec="milliseconds")
    code, out = run(tmp_path, "--from", when, "--baseline", "noop", "--candidate", "oracle",
                    "--no-plot", records=recs + recs[:25])
    doc = json.loads((out / "scorecard.json").read_text())
    assert doc["duplicates_dropped"] == 25
    assert doc["records"] == sum(r["ts_ms"] >= cut for r in recs)
    assert doc["from_ms"] == cut and doc["to_ms"] is None
    inside = sum(r["ts_ms"] >= cut for r in recs if r["candidate"] == "oracle")
    assert doc["comparisons"][0]["n_paired"] == inside
    assert code == (0 if inside >= 30 else 2)
    # --to: the other half; the two windows partition the records
    _, out2 = run(tmp_path, "--to", when, "--baseline", "noop", "--candidate", "oracle",
                  "--no-plot")
    doc2 = json.loads((out2 / "scorecard.json").read_text())
    assert doc2["records"] + doc["records"] == len(recs)


def test_unknown_names_and_empty_input_are_one_line_errors(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = run(tmp_path, "--candidate", "nosuch")
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert "--candidate nosuch: no records of that model" in err and "oracle" in err
    code, _ = run(tmp_path, "--baseline", "nosuch")
    assert code == 2 and "--baseline nosuch" in capsys.readouterr().err
    code, _ = run(tmp_path, records=[])
    assert code == 2 and "no eval records" in capsys.readouterr().err
    code, _ = run(tmp_path, "--from", "2000-01-01", "--to", "2000-01-02")
    assert code == 2 and "no eval records in the --from/--to window" in \
        capsys.readouterr().err
    assert cli.main(["scorecard", "--results", str(tmp_path / "nosuch.jsonl")]) == 2
    assert "cannot read" in capsys.readouterr().err
    with pytest.raises(ValueError, match="not an offset"):
        window_ms("offset:5", "--from")


def test_unreadable_lines_are_counted_and_skipped(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "r.jsonl", corpus())
    with path.open("ab") as fh:
        fh.write(b"not json\n{\"candidate\": \"oracle\"}\n")
    code = cli.main(["scorecard", "--results", str(path), "--out", str(tmp_path / "o"),
                     "--baseline", "noop", "--candidate", "oracle", "--no-plot"])
    assert code == 0
    assert "skipped 2 record(s)" in capsys.readouterr().err


def test_no_source_is_an_error(capsys: pytest.CaptureFixture[str],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDITSTREAM_BROKER", raising=False)
    assert cli.main(["scorecard"]) == 2
    assert "--results FILE" in capsys.readouterr().err


def test_render_scorecard_for_other_tools(tmp_path: Path) -> None:
    """The demo's entry point: records in, files and (text, exit code) out, defaults as the
    command line's."""
    text, code = render_scorecard(corpus(), None, None, Settings(), tmp_path / "d")
    assert code == 1  # the reverter fails against served
    assert "## oracle vs served" in text and "## reverter vs served" in text
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == [
        "scorecard.json", "scorecard.md", "scorecard.png"]
    assert resolve_names(corpus(), None, ["oracle"]) == ("served", ["oracle"])
    with pytest.raises(ValueError, match="both the baseline and a candidate"):
        resolve_names(corpus(), "noop", ["noop"])
