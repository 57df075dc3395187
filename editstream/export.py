"""`editstream export`: the sink topic → dataset files a trainer loads unchanged.

Records are deduplicated by id (at-least-once delivery can repeat a record; its id is
deterministic, so a repeat is the same record). SFT and preference records go to separate
files per split, in TRL's column conventions; a manifest describes the export.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from editstream.kafka_io import read_to_end
from streams.settings import Settings


def write_records(records: list[dict[str, Any]], out: Path, settings: Settings,
                  rejected: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    unique: dict[str, dict[str, Any]] = {}
    for rec in records:
        if rec.get("pipeline_version") == settings.pipeline_version:
            unique.setdefault(rec["id"], rec)
    files: dict[str, int] = {}
    digest = hashlib.sha256()
    for kind in ("sft", "preference"):
        for split in ("train", "eval"):
            rows = sorted((r for r in unique.values()
                           if r["format"] == kind and r["split"] == split),
                          key=lambda r: r["id"])
            name = f"{kind}-{split}.jsonl"
            blob = b"".join(orjson.dumps(r) + b"\n" for r in rows)
            (out / name).write_bytes(blob)
            digest.update(name.encode() + b"\0" + blob)
            files[name] = len(rows)
    if rejected is not None:
        by_id = {r["request_id"]: r for r in rejected
                 if r.get("pipeline_version") == settings.pipeline_version}
        blob = b"".join(orjson.dumps(by_id[k]) + b"\n" for k in sorted(by_id))
        (out / "rejected.jsonl").write_bytes(blob)
        files["rejected.jsonl"] = len(by_id)
    manifest = {
        "pipeline_version": settings.pipeline_version,
        "files": files,
        "duplicates_removed": len(records) - len(unique),
        "counts": {"by_format": Counter(r["format"] for r in unique.values()),
                   "by_split": Counter(r["split"] for r in unique.values())},
        "models": sorted({(r["provenance"]["student_model"], r["provenance"]["teacher_model"])
                          for r in unique.values()}),
        "thresholds": {"band_low": settings.band_low, "band_high": settings.band_high,
                       "judge_max_distance": settings.judge_max_distance,
                       "judge_max_reversal": settings.judge_max_reversal},
        "settled_at_ms": {"min": min((r["provenance"]["settled_at_ms"] for r in unique.values()),
                                     default=None),
                          "max": max((r["provenance"]["settled_at_ms"] for r in unique.values()),
                                     default=None)},
        "content_sha256": digest.hexdigest(),
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (out / "manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    return manifest


def run_export(settings: Settings, out: Path, *, include_rejected: bool = False) -> int:
    async def go() -> dict[str, Any]:
        records = [orjson.loads(r.value) async for r in
                   read_to_end(settings.broker, settings.topic("training-records"))]
        rejected = None
        if include_rejected:
            rejected = [orjson.loads(r.value) async for r in
                        read_to_end(settings.broker, settings.topic("rejected-examples"))]
        return write_records(records, out, settings, rejected)

    manifest = asyncio.run(go())
    print(orjson.dumps(manifest["files"]).decode(),
          f"duplicates removed: {manifest['duplicates_removed']}")
    return 0
