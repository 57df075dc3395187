"""The dataset card's YAML header: valid YAML, configs exactly the non-empty data files."""

from __future__ import annotations

from typing import Any

import yaml

from editstream.dataset.card import dataset_card


def manifest(data_files: dict[str, dict[str, str]], license_: str = "unknown") -> dict[str, Any]:
    files = {rel: {"rows": 3, "sha256": "0" * 64} for s in data_files.values()
             for rel in s.values()}
    return {
        "pipeline_version": "v1", "format": "jsonl", "license": license_, "files": files,
        "data_files": data_files, "prompt_formats": ["marker"], "duplicates_removed": 0,
        "counts": {"records": 1200, "examples": 1000, "sft": {"train": 3, "eval": 0},
                   "preference": {"train": 0, "eval": 0}, "by_band": {"ideal": 3},
                   "by_settle_reason": {"quiescence": 3}, "repaired": 0, "rejected": None,
                   "rejected_by_reason": {}, "eval_unfiltered": None,
                   "by_language": {"python": {"train": 3}},
                   "by_repo": {f"github.com/o/r{i}": {"train": 1} for i in range(40)}},
        "models": {"student": ["s"], "teacher": ["t"], "judge": [], "served": []},
        "thresholds": {"band_low": 0.05, "band_high": 0.6,
                       "gate_min_kept_rate": 1.0, "min_valid_samples": 5,
                       "noop_keep_fraction": 0.1,
                       "judge_max_reversal": 0.2, "eval_fraction": 0.15},
        "near_duplicates": {"threshold": 0.85, "num_perm": 128, "max_per_group": 2,
                            "groups": 0, "examples_in_groups": 0, "dropped_examples": 0,
                            "dropped_records": {"sft": 0, "preference": 0}},
        "eval_policy": {"eval_fraction": 0.15, "eval_min_repos": 2, "units": 40,
                        "eval_units": 0, "eval_min_repos_met": False,
                        "components_joined_by_near_duplicates": 0},
        "time_range": {"settled_at": {"min": None, "max": None}},
        "exported_at": "2026-01-01T00:00:00.000Z", "content_sha256": "ab" * 32,
    }


def header(card: str) -> dict[str, Any]:
    assert card.startswith("---\n")
    meta: dict[str, Any] = yaml.safe_load(card.split("---\n", 2)[1])
    return meta


def test_a_config_without_rows_is_left_out_and_said_so() -> None:
    card = dataset_card(manifest({"sft": {"train": "sft/train.jsonl"}}, "apache-2.0"))
    meta = header(card)
    assert meta["license"] == "apache-2.0" and meta["size_categories"] == ["1K<n<10K"]
    assert meta["configs"] == [{"config_name": "sft", "default": True, "data_files": [
        {"split": "train", "path": "sft/train.jsonl"}]}]
    assert "no preference records" in card
    assert "minimum not met" in card
    assert "10 more in `manifest.json`" in card  # 40 repositories, 30 in the table
    assert "set `EDITSTREAM_DATASET_LICENSE`" not in card


def test_unknown_license_asks_for_one() -> None:
    card = dataset_card(manifest({"sft": {"train": "sft/train.jsonl"},
                                  "preference": {"eval": "preference/eval.jsonl"}}))
    meta = header(card)
    assert meta["license"] == "unknown"
    assert [c["config_name"] for c in meta["configs"]] == ["sft", "preference"]
    assert "set `EDITSTREAM_DATASET_LICENSE`" in card


def test_the_corpus_section_shows_edit_kinds_and_reference_predictors() -> None:
    from streams.corpus import corpus_figures

    m = manifest({"sft": {"train": "sft/train.jsonl"}})
    assert "Not measured" in dataset_card(m)  # no settled examples read
    ex = {"path": "a.py", "excerpt": "x = 1\n", "editable_range": [0, 6], "cursor": 0,
          "base_region": "x = 1\n", "settled_region": "x = 2\n"}
    m["counts"]["corpus"] = corpus_figures([ex, {**ex, "settled_region": "x = 1\n"}])
    card = dataset_card(m)
    assert "## What the corpus looks like" in card
    assert "| replace | 1 |" in card and "| none | 1 |" in card
    assert "`noop` (the region left as it was) is exact on 0.5" in card
    assert "By language: python 2" in card
