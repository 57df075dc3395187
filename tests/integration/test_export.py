"""`editstream export` and `editstream report` on Apache Kafka.

Each test exports from its own namespace, filled with the live run's real training records,
rejections and scored examples plus what a real sink topic accumulates: repeats
(at-least-once), records of an older pipeline version, an unparsable value, and records
written hours ago (`--since`). The dataset tests add forks (near-duplicates in another
repository) and load the directory with `datasets` by config name, through its card.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from editstream.dataset import export, report
from editstream.dataset.export import STATE_DIR
from editstream.infra.broker import BrokerHandle, acreate_topics
from editstream.topics.offsets import parse_when
from streams.dataset import arrange
from streams.languages import language_of
from streams.repo import record_unit, repo_key
from streams.settings import Settings

if TYPE_CHECKING:
    from tests.integration.kafka_fixtures import LiveRun

pytest_plugins = ("tests.integration.kafka_fixtures",)
pytestmark = [pytest.mark.broker, pytest.mark.kafka]

HOURS_AGO = 3


@dataclass
class Source:
    settings: Settings
    records: dict[str, dict[str, Any]]  # unique current-version training records by id
    rejected: dict[str, dict[str, Any]]  # by request id
    recent_ids: set[str]  # records written "now" (the rest: HOURS_AGO ago)
    scored: dict[str, dict[str, Any]]  # scored examples by request id
    repeats: int  # extra copies written


async def make_source(live: LiveRun, kafka: BrokerHandle) -> Source:
    s = live.settings.replace(topic_prefix=f"exp{uuid.uuid4().hex[:8]}-")
    records = {r["id"]: r for r in live.outputs["training-records"]}
    rejected = {r["request_id"]: r for r in live.outputs["rejected-examples"]}
    assert len(records) >= 3 and rejected, "the live run should yield records and rejections"
    await acreate_topics(kafka.bootstrap, [s.topic("training-records"),
                                           s.topic("rejected-examples"),
                                           s.topic("scored-examples"),
                                           s.topic("settled-examples")], partitions=4)
    now = int(time.time() * 1000)
    old = now - HOURS_AGO * 3_600_000
    ordered = sorted(records)
    recent = set(ordered[len(ordered) // 2:])
    prod = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    await prod.start()
    try:
        async def put(name: str, key: str, value: bytes, ts: int,
                      partition: int | None = None) -> int:
            meta = await prod.send_and_wait(s.topic(name), value, key=key.encode(),
                                            timestamp_ms=ts, partition=partition)
            return int(meta.partition)

        for rid in ordered:
            p = await put("training-records", rid, orjson.dumps(records[rid]),
                          now if rid in recent else old)
        repeats = ordered[:2] + ordered[-1:]  # at-least-once: the same record again
        for rid in repeats:
            # old repeats land after a recent record (partition p), as a late redelivery would
            await put("training-records", rid, orjson.dumps(records[rid]),
                      now if rid in recent else old, partition=p)
        stale = {**records[ordered[0]], "pipeline_version": "v0", "id": "v0-" + ordered[0]}
        await put("training-records", stale["id"], orjson.dumps(stale), now)
        await put("training-records", "garbage", b"{not json", now)
        for rid, rec in sorted(rejected.items()):
            await put("rejected-examples", rid, orjson.dumps(rec), now)
        first_rejected = sorted(rejected)[0]
        await put("rejected-examples", first_rejected, orjson.dumps(rejected[first_rejected]),
                  now)
        for sc in live.outputs["scored-examples"]:
            await put("scored-examples", sc["request_id"], orjson.dumps(sc), now)
            # the settled example as the settle stage wrote it (outcomes for `kto`), twice:
            # at-least-once delivery
            for _ in range(2):
                await put("settled-examples", sc["request_id"], orjson.dumps(sc["example"]),
                          now)
    finally:
        await prod.stop()
    scored = {sc["request_id"]: sc for sc in live.outputs["scored-examples"]}
    return Source(s, records, rejected, recent, scored, len(repeats) + 1)


@pytest.fixture
def source(live_run: LiveRun, kafka_broker: BrokerHandle) -> Source:
    return asyncio.run(make_source(live_run, kafka_broker))


def run(src: Source, out: Path, *extra: str) -> int:
    parser = argparse.ArgumentParser()
    export.add_arguments(parser)
    ns = parser.parse_args(["--out", str(out), "--broker", src.settings.broker,
                            "--topic-prefix", src.settings.topic_prefix, "--no-progress",
                            *extra])
    return export.main_export(ns)


def manifest(out: Path) -> dict[str, Any]:
    return orjson.loads((out / "manifest.json").read_bytes())


def rows(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def comparable(m: dict[str, Any]) -> dict[str, Any]:
    """A manifest without what differs between runs of the same export."""
    return {k: v for k, v in m.items() if k not in ("exported_at", "runs")}


def test_export_dedupes_filters_and_writes_manifest(source: Source, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    assert run(source, out, "--rejected") == 0
    m = manifest(out)
    recs = source.records
    assert m["counts"]["records"] == len(recs)
    assert m["duplicates_removed"] == source.repeats  # 3 training records + 1 rejection
    assert m["skipped"] == {"other_pipeline_version": 1, "unparsable": 1, "before_since": 0}
    assert m["records_read"] == len(recs) + 3 + 2 + len(source.rejected) + 1
    assert m["pipeline_version"] == "v1" and m["format"] == "jsonl"
    assert m["models"]["student"] == ["student"] and m["models"]["teacher"] == ["teacher"]
    assert m["thresholds"]["band_low"] == source.settings.band_low
    assert m["counts"]["rejected"] == len(source.rejected)

    # the split is the export's (streams/dataset.py, tested on its own); here: its wiring
    plan = arrange(list(recs.values()), None, source.settings)
    assert not plan.plan.dropped  # the live run has no near-duplicates beyond the limit
    split_of = {r["id"]: r["split"] for r in plan.records}
    seen: dict[str, dict[str, Any]] = {}
    for kind in ("sft", "preference"):
        for split in ("train", "eval"):
            rel = f"{kind}/{split}.jsonl"
            expected = sorted(r["id"] for r in recs.values()
                              if r["format"] == kind and split_of[r["id"]] == split)
            assert m["counts"][kind][split] == len(expected)
            if not expected:
                assert not (out / rel).exists() and rel not in m["files"]
                continue
            got = rows(out / rel)
            assert [r["id"] for r in got] == expected  # unique, sorted by id
            for row in got:
                rec = recs[row["id"]]
                assert row["prompt"] == rec["prompt"]
                if kind == "sft":
                    assert row["completion"] == rec["completion"]
                else:
                    assert (row["chosen"], row["rejected"]) == (rec["chosen"], rec["rejected"])
                assert orjson.loads(row["provenance"]) == rec["provenance"]
                assert orjson.loads(row["scores"]) == rec["scores"]
                assert row["split"] == split and row["repo"] == rec["provenance"]["repo"]
                assert row["language"] == language_of(rec["provenance"]["path"])
                seen[row["id"]] = row
            blob = (out / rel).read_bytes()
            assert m["files"][rel] == {"rows": len(expected),
                                       "sha256": hashlib.sha256(blob).hexdigest()}
    assert seen.keys() == recs.keys()
    # no repository in both splits
    splits_of_repo: dict[str, set[str]] = {}
    for row in seen.values():
        splits_of_repo.setdefault(row["repo"], set()).add(row["split"])
    assert all(len(v) == 1 for v in splits_of_repo.values()), splits_of_repo
    assert m["eval_policy"]["units"] == len({record_unit(r) for r in recs.values()})
    assert (out / "README.md").read_text().startswith("---\n")
    rejected = rows(out / "rejected" / "rejected.jsonl")
    assert [r["request_id"] for r in rejected] == sorted(source.rejected)

    digest = hashlib.sha256()
    for rel in sorted(m["files"]):
        digest.update(rel.encode() + b"\0" + (out / rel).read_bytes())
    assert m["content_sha256"] == digest.hexdigest()
    settled = [r["provenance"]["settled_at_ms"] for r in recs.values()]
    assert m["time_range"]["settled_at"]["min"].startswith(
        time.strftime("%Y-%m-%dT%H:%M", time.gmtime(min(settled) / 1000)))


def test_export_resumes_to_the_one_shot_result(source: Source, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    one_shot, resumed = tmp_path / "one-shot", tmp_path / "resumed"
    assert run(source, one_shot, "--rejected") == 0

    assert run(source, resumed, "--rejected", "--max-records", "2") == 0
    assert "stopped after 2 records" in capsys.readouterr().out
    assert not (resumed / "manifest.json").exists()
    # a crash after the checkpoint: half a record appended that no checkpoint covers
    with (resumed / STATE_DIR / "records.jsonl").open("ab") as fh:
        fh.write(b'{"id": "torn-wri')
    assert run(source, resumed, "--rejected", "--max-records", "3") == 0
    assert run(source, resumed, "--rejected") == 0

    a, b = manifest(one_shot), manifest(resumed)
    assert comparable(a) == comparable(b)
    assert (a["runs"], b["runs"]) == (1, 3)
    for rel in a["files"]:
        assert (one_shot / rel).read_bytes() == (resumed / rel).read_bytes(), rel

    # other options on the same directory: refused, not mixed
    assert run(source, resumed) == 2
    assert "other options" in capsys.readouterr().err

    # run again later: only what arrived since is read (an incremental export)
    capsys.readouterr()
    extra = {**next(iter(source.records.values()))}
    extra["id"] = "later-" + extra["id"]
    asyncio.run(_produce(source.settings, "training-records", extra["id"], orjson.dumps(extra)))
    assert run(source, resumed, "--rejected") == 0
    assert "read 1 this run" in capsys.readouterr().out
    assert manifest(resumed)["counts"]["records"] == len(source.records) + 1


async def _produce(s: Settings, name: str, key: str, value: bytes) -> None:
    prod = AIOKafkaProducer(bootstrap_servers=s.broker, acks="all")
    await prod.start()
    try:
        await prod.send_and_wait(s.topic(name), value, key=key.encode())
    finally:
        await prod.stop()


def test_export_since_reads_only_recent_records(source: Source, tmp_path: Path) -> None:
    out = tmp_path / "recent"
    assert run(source, out, "--since", f"{HOURS_AGO - 1}h") == 0
    m = manifest(out)
    assert m["counts"]["records"] == len(source.recent_ids)
    exported = {r["id"] for rel in m["files"] for r in rows(out / rel)}
    assert exported == source.recent_ids
    # the old repeats written after the first recent record are read, but not exported
    assert m["skipped"]["before_since"] >= 1
    assert m["since"]["text"] == f"{HOURS_AGO - 1}h"
    assert parse_when(m["since"]["at"]).value <= int(time.time() * 1000)


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_export_loads_with_hugging_face_datasets(source: Source, tmp_path: Path,
                                                 fmt: str) -> None:
    from datasets import load_dataset

    out = tmp_path / fmt
    assert run(source, out, "--format", fmt, "--rejected") == 0
    m = manifest(out)
    loader = "json" if fmt == "jsonl" else "parquet"
    cache = tmp_path / "hf-cache"
    columns = {"sft": ["prompt", "completion"],
               "preference": ["prompt", "chosen", "rejected"],
               "rejected": ["request_id", "stage", "reason"]}
    loaded = 0
    for kind, head in columns.items():
        files = export.data_files(out, kind)
        if not files:
            continue
        ds = load_dataset(loader, data_files=files, cache_dir=str(cache))
        for split, d in ds.items():
            assert d.num_rows == m["files"][m["data_files"][kind][split]]["rows"]
            assert d.column_names[:len(head)] == head  # TRL's columns come first
            for col in head:
                assert d.features[col].dtype == "string"
            if kind != "rejected":
                assert d.features["student_distance_p50"].dtype == "float64"
                assert d.features["repair_attempts"].dtype == "int64"
                assert orjson.loads(d[0]["provenance"])["band"] == d[0]["band"]
            loaded += d.num_rows
    assert loaded == m["counts"]["records"] + m["counts"]["rejected"]
    shutil.rmtree(cache, ignore_errors=True)


def test_report_summarises_and_plots(source: Source, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ds"
    assert run(source, out, "--rejected") == 0
    capsys.readouterr()
    parser = argparse.ArgumentParser()
    report.add_arguments(parser)
    assert report.main_report(parser.parse_args([str(out)])) == 0
    text = capsys.readouterr().out
    m = manifest(out)
    assert f"records: {m['counts']['records']}" in text
    for needle in ("by band", "by split", "rejected by reason", "distance", "reversal",
                   "repair", "target gates failed", "truncated", "unparsable",
                   "no-op share of SFT", "preference rejected side"):
        assert needle in text, needle
    for png in report.PLOTS:
        path = out / png
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        assert png in text


def fork_of(rec: dict[str, Any], n: int) -> dict[str, Any]:
    """The same example in a fork: same regions and answer, another repository, settled
    later, another request id (so another record id)."""
    name = str(rec["provenance"]["repo"]).rsplit("/", 1)[-1]
    prov = {**rec["provenance"], "repo": f"github.com/fork{n}/{name}",
            "settled_at_ms": rec["provenance"]["settled_at_ms"] + 60_000,
            "session_id": f"fork-session-{n}"}
    return {**rec, "id": f"fork{n}-{rec['id']}", "request_id": f"fork{n}-{rec['request_id']}",
            "provenance": prov}


def add_forks(src: Source) -> list[dict[str, Any]]:
    """Two forks of each of the first three examples (SFT and preference records)."""
    first = sorted({r["request_id"] for r in src.records.values()})[:3]
    forks = [fork_of(r, n) for n in (1, 2) for r in src.records.values()
             if r["request_id"] in first]
    for f in forks:
        asyncio.run(_produce(src.settings, "training-records", f["id"], orjson.dumps(f)))
    return forks


def exported_rows(out: Path, kind: str) -> list[dict[str, Any]]:
    m = manifest(out)
    return [r for rel in m["data_files"].get(kind, {}).values() for r in rows(out / rel)]


def test_near_duplicates_share_a_split_and_extra_copies_are_dropped(source: Source,
                                                                    tmp_path: Path) -> None:
    forks = add_forks(source)
    originals = {f["request_id"].split("-", 1)[1] for f in forks}
    # no limit: every copy is kept, and a fork is always in its original's split
    keep_all = tmp_path / "keep-all"
    # eval_fraction 0.5: a fork landing in its original's split by chance is unlikely
    assert run(source, keep_all, "--dedup-max-per-group", "0", "--eval-fraction", "0.5") == 0
    m = manifest(keep_all)
    split = {r["request_id"]: r["split"] for r in exported_rows(keep_all, "sft")}
    for f in forks:
        assert split[f["request_id"]] == split[f["request_id"].split("-", 1)[1]]
    assert m["near_duplicates"]["groups"] >= 3
    assert m["near_duplicates"]["examples_in_groups"] >= 9
    assert m["near_duplicates"]["groups_across_units"] >= 3
    assert m["near_duplicates"]["dropped_examples"] == 0
    assert m["counts"]["records"] == len(source.records) + len(forks)

    # at most one per group: the originals (settled first) stay, the forks go, with a reason
    one = tmp_path / "one"
    assert run(source, one, "--dedup-max-per-group", "1", "--rejected") == 0
    m = manifest(one)
    kept = {r["request_id"] for r in exported_rows(one, "sft")}
    assert originals <= kept
    assert not kept & {f["request_id"] for f in forks}
    assert m["near_duplicates"]["dropped_examples"] >= 6
    assert m["near_duplicates"]["dropped_records"]["sft"] >= 6
    assert m["counts"]["records"] == len(source.records) + len(forks) - sum(
        m["near_duplicates"]["dropped_records"].values())
    dropped = [r for r in rows(one / "rejected" / "rejected.jsonl")
               if (r["stage"], r["reason"]) == ("export", "near_duplicate")]
    assert {r["request_id"] for r in forks} <= {r["request_id"] for r in dropped}
    assert m["counts"]["rejected_by_reason"]["export:near_duplicate"] == len(dropped)
    # the same input, the same dataset
    again = tmp_path / "again"
    assert run(source, again, "--dedup-max-per-group", "1", "--rejected") == 0
    assert manifest(again)["content_sha256"] == m["content_sha256"]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_dataset_card_loads_by_config_name(source: Source, tmp_path: Path, fmt: str,
                                           monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    import yaml
    from datasets import load_dataset

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    if not any(r["format"] == "preference" for r in source.records.values()):
        # a live run without a rejected suggestion: one preference record of a real example
        sft = next(iter(source.records.values()))
        pref = {k: v for k, v in sft.items() if k != "completion"} | {
            "id": "pref-" + sft["id"], "format": "preference", "chosen": sft["completion"],
            "rejected": sft["prompt"][-40:], "rejected_source": "user_rejected_output"}
        asyncio.run(_produce(source.settings, "training-records", pref["id"],
                             orjson.dumps(pref)))
    out = tmp_path / fmt
    assert run(source, out, "--format", fmt, "--rejected", "--eval-unfiltered", "true",
               "--eval-min-repos", "1", "--dataset-license", "cc-by-4.0",
               "--export-kto", "true") == 0
    m = manifest(out)
    card = (out / "README.md").read_text()
    _, header, body = card.split("---\n", 2)
    meta = yaml.safe_load(header)
    assert meta["license"] == "cc-by-4.0"
    assert "text-generation" in meta["task_categories"]
    configs = {c["config_name"]: {d["split"]: d["path"] for d in c["data_files"]}
               for c in meta["configs"]}
    assert configs == m["data_files"]

    cache = str(tmp_path / "hf-cache")
    sft = load_dataset(str(out), "sft", cache_dir=cache)
    pref = load_dataset(str(out), "preference", cache_dir=cache)
    assert {k: d.num_rows for k, d in sft.items()} == {
        split: m["files"][rel]["rows"] for split, rel in m["data_files"]["sft"].items()}
    assert sum(d.num_rows for d in pref.values()) == sum(m["counts"]["preference"].values())
    assert sft["train"].column_names[:2] == ["prompt", "completion"]
    assert pref[next(iter(pref))].column_names[:3] == ["prompt", "chosen", "rejected"]

    # the unfiltered eval set: every eval example of any band, the settled region as reference
    assert "eval" in sft, "eval_min_repos 1: there is an eval split"
    unfiltered = sft["eval_unfiltered"]
    assert m["counts"]["eval_unfiltered"] == unfiltered.num_rows
    assert set(sft["eval"]["request_id"]) <= set(unfiltered["request_id"])
    train_repos = set(sft["train"]["repo"])
    assert not set(unfiltered["repo"]) & train_repos
    for row in unfiltered:
        settled = source.scored[row["request_id"]]["example"]["settled_region"]
        assert row["completion"].count(settled) == 1 and row["split"] == "eval_unfiltered"
    # all bands: every scored example of an eval repository is there, whatever its band
    eval_repos = set(sft["eval"]["repo"])
    expected = {rid for rid, sc in source.scored.items()
                if repo_key(sc["example"].get("repo_url")) in eval_repos}
    assert expected <= set(unfiltered["request_id"])
    assert m["eval_policy"]["eval_unfiltered"] is True

    # kto: one record per shown output with a verdict, the user's verdict as its label
    from streams.kto import outcome_label

    labels = {rid: outcome_label(sc["example"]) for rid, sc in source.scored.items()}
    labelled = {rid: v for rid, v in labels.items() if isinstance(v, bool)}
    assert labelled, "the live run's traces carry accepted and rejected outputs"
    kto = load_dataset(str(out), "kto", cache_dir=cache)
    kto_rows = [r for d in kto.values() for r in d]
    assert kto[next(iter(kto))].column_names[:3] == ["prompt", "completion", "label"]
    assert {r["request_id"] for r in kto_rows} <= set(labelled)
    # all of them but those dropped as near-duplicates
    assert len(kto_rows) == len(labelled) - m["near_duplicates"]["dropped_records"]["kto"]
    assert all(r["label"] is labelled[r["request_id"]] for r in kto_rows)
    assert m["counts"]["kto"]["settled_examples"] == len(source.scored)  # deduplicated
    for r in kto_rows:  # the split of its repository, as the sft records have it
        assert r["repo"] not in train_repos or r["split"] == "train"
    assert "Live outcomes (`kto`)" in body and "config_name: kto" in header

    # per-language and per-repository figures, counted here from the loaded rows
    for lang in set(sft["train"]["language"]):
        n = sum(1 for x in sft["train"]["language"] if x == lang)
        assert m["counts"]["by_language"][lang]["train"] == n
        assert f"| `{lang}` | {n} |" in body
    for repo in set(sft["train"]["repo"]):
        n = sum(1 for x in sft["train"]["repo"] if x == repo)
        assert f"| `{repo}` | {n} |" in body
    assert f"`{m['content_sha256']}`" in body

    capsys.readouterr()
    parser = argparse.ArgumentParser()
    report.add_arguments(parser)
    assert report.main_report(parser.parse_args([str(out), "--no-plots"])) == 0
    text = capsys.readouterr().out
    assert "by language" in text
    for lang in set(sft["train"]["language"]):
        assert f"      {lang}" in text
