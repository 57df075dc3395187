"""Training records: deterministic ids, repository-level splits, preference pairs."""

from __future__ import annotations

import schemas
from streams.emit import record_id, rejected_record, split_for, training_records
from streams.settings import Settings

S = Settings()


def source(**example_kw: object) -> dict[str, object]:
    ex = {"v": 1, "pipeline_version": "v1", "session_id": "s", "ts_ms": 1,
          "can_collect_data": True, "request_id": "r1", "path": "src/a.py",
          "in_open_source_repo": True, "repo_url": "https://github.com/x/y", "revision": "ab",
          "excerpt": "a = 1\nb = 2\n", "excerpt_start": 0, "cursor": 6,
          "editable_range": [6, 11], "history": [], "model_version": "m", "output": "b = 3",
          "settle_reason": "quiescence", "settled_at_ms": 11, "base_region": "b = 2",
          "settled_region": "b = 22", "touching_edits": 1}
    ex.update(example_kw)
    return {"example": ex, "student": {"model": "student"}, "band": "ideal",
            "summary": {"n": 3, "p50": 0.2}, "request_id": "r1"}


J = {"ok": True, "reasons": [], "parse_ok": True, "distance": 0.0, "reversal_ratio": 0.0}


def test_sft_only_without_a_rejected_candidate() -> None:
    recs = training_records(source(outcome="accepted", output="b = 22"), "b = 22", J, S)
    assert [r["format"] for r in recs] == ["sft"]
    assert recs[0]["completion"] == "<|editable_region_start|>\nb = 22\n<|editable_region_end|>"
    assert recs[0]["preference_dropped"] == "no_rejected_candidate"
    assert recs[0]["prompt_format"] == "zeta1" and recs[0]["prompt_format_version"] == 1
    assert schemas.errors("training-records", recs[0]) == []


def test_user_rejected_output_makes_a_preference_pair() -> None:
    recs = training_records(source(outcome="rejected"), "b = 22", J, S)
    pref = recs[1]
    assert pref["format"] == "preference" and pref["rejected_source"] == "user_rejected_output"
    assert "b = 3" in pref["rejected"] and "b = 22" in pref["chosen"]
    assert schemas.errors("training-records", pref) == []


def test_accepted_then_undone_output_is_a_negative() -> None:
    # the user accepted "b = 3" and then went back to writing something else
    recs = training_records(source(outcome="accepted", output="b = 3 + x"), "b = 22", J, S)
    assert recs[1]["rejected_source"] == "user_undid_output"
    kept = training_records(source(outcome="accepted", output="b = 22"), "b = 22", J, S)
    assert len(kept) == 1  # accepted and kept: no negative from the user


def test_on_policy_negative_is_the_students_farthest_valid_sample() -> None:
    src = source(outcome="ignored") | {"rejected_candidate": "c = 9"}
    recs = training_records(src, "b = 22", J, S, attempts=1)
    assert recs[1]["rejected_source"] == "student_farthest_sample"
    assert "c = 9" in recs[1]["rejected"] and recs[0]["provenance"]["repair_attempts"] == 1
    assert schemas.errors("training-records", recs[1]) == []


def test_too_similar_pair_is_dropped_with_its_reason() -> None:
    src = source(outcome="ignored") | {"rejected_candidate": "b = 22 "}
    recs = training_records(src, "b = 22", J, S.replace(pair_min_distance=0.2))
    assert len(recs) == 1 and recs[0]["preference_dropped"] == "pair_too_similar"


def test_noop_example_gets_the_formats_no_edit_answer() -> None:
    src = source(outcome="ignored", settled_region="b = 2") | {"rejected_candidate": "b = 9"}
    zeta2 = S.replace(record_format="zeta2")
    recs = training_records(src, "b = 2", J, zeta2)
    assert recs[0]["noop"] and recs[0]["completion"] == "NO_EDITS\n>>>>>>> UPDATED\n"
    assert recs[1]["rejected"] == "b = 9\n>>>>>>> UPDATED\n"


def test_ids_are_deterministic_and_distinct() -> None:
    a = training_records(source(outcome="rejected"), "b = 22", J, S)
    b = training_records(source(outcome="rejected"), "b = 22", J, S)
    assert [r["id"] for r in a] == [r["id"] for r in b]
    assert a[0]["id"] != a[1]["id"]
    assert record_id(S, "r1", "sft") != record_id(S.replace(pipeline_version="v2"), "r1", "sft")


def test_split_is_per_repository() -> None:
    repos = [f"https://github.com/o/r{i}" for i in range(200)]
    splits = [split_for({"repo_url": r, "session_id": f"s{i}"}, 0.1)
              for i, r in enumerate(repos)]
    assert 5 <= splits.count("eval") <= 40  # roughly eval_fraction of repositories
    for r, sp in zip(repos, splits, strict=True):  # every session of a repo: same split
        assert all(split_for({"repo_url": r, "session_id": f"x{k}"}, 0.1) == sp
                   for k in range(5))


def test_rejected_record_matches_schema() -> None:
    rec = rejected_record("r1", "score", "band_trivial", S, band="trivial")
    assert schemas.errors("rejected-examples", rec) == []
