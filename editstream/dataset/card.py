"""The dataset card (`README.md`) of an export directory, from its manifest alone.

The YAML header is what the Hugging Face Hub and `datasets` read: `configs` name the files
of each config and split, so `load_dataset(DIR, "sft")` and `load_dataset(DIR,
"preference")` need nothing else (a config without rows is left out: `datasets` cannot load
an empty one). The body is for the people deciding whether to train on it: where the data
comes from, how it was filtered and split, and the figures by band, language and repository.
"""

from __future__ import annotations

from typing import Any

import orjson

TASK_TAGS = ("code", "next-edit-prediction", "edit-prediction", "sft", "dpo", "kto",
             "editstream")
MAX_REPOS = 30  # rows of the per-repository table (all of them are in manifest.json)


def _q(value: Any) -> str:
    """A YAML scalar: JSON strings are valid double-quoted YAML."""
    return orjson.dumps(value).decode()


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                        (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if n < limit:
            return name
    return "10M<n<100M"


def yaml_header(manifest: dict[str, Any]) -> str:
    counts = manifest["counts"]
    lines = ["---", f"license: {_q(manifest.get('license') or 'unknown')}",
             f"pretty_name: {_q('editstream next-edit dataset ' + manifest['pipeline_version'])}",
             "task_categories:", "- text-generation", "tags:",
             *[f"- {t}" for t in TASK_TAGS], "size_categories:",
             f"- {_size_category(int(counts.get('records') or 0))}", "configs:"]
    first = True
    for config in ("sft", "preference", "kto", "rejected"):
        splits = manifest["data_files"].get(config)
        if not splits:
            continue
        lines.append(f"- config_name: {config}")
        if first:  # load_dataset(DIR) without a name
            lines.append("  default: true")
            first = False
        lines.append("  data_files:")
        for split, path in splits.items():
            lines += [f"  - split: {split}", f"    path: {_q(path)}"]
    if first:
        lines[-1] = "configs: []"
    lines.append("---")
    return "\n".join(lines) + "\n"


def _table(head: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def _split_table(table: dict[str, dict[str, int]], name: str, limit: int | None = None) -> str:
    cols = ["train", "eval", "eval_unfiltered", "preference_train", "preference_eval"]
    ranked = sorted(table.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))
    rows = [[f"`{k}`", *[v.get(c, 0) for c in cols]] for k, v in ranked[:limit]]
    text = _table([name, "sft train", "sft eval", "eval unfiltered", "pref. train",
                   "pref. eval"], rows)
    if limit is not None and len(ranked) > limit:
        text += f"\n\n({len(ranked) - limit} more in `manifest.json`, `counts.by_repo`.)"
    return text


def _counter(d: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in d.items()) or "none"


def _corpus(fig: dict[str, Any] | None) -> str:
    """The settled examples' edits by kind and language, and the reference predictors."""
    if not fig or not fig.get("examples"):
        return ("Not measured: the export read no settled examples (export with "
                "`eval_unfiltered` to include them).")
    ref = fig["reference"]
    rows = [[k, v] for k, v in fig["by_kind"].items()]
    rows += [["within a line" if k == "within_line" else "multi-line", v]
             for k, v in fig["by_span"].items()]
    rows.append(["a jump from the cursor (2+ lines away)", fig["jumps"]])
    return (f"Over the {fig['examples']} settled examples the pipeline scored (any band, "
            f"before the teacher), the change from the request-time region to the settled "
            f"one:\n\n" + _table(["edit", "examples"], rows)
            + "\n\nBy language: " + _counter(fig["by_language"])
            + ".\n\nTwo reference predictors, for orientation (never thresholds): `noop` "
            f"(the region left as it was) is exact on {ref['noop']['exact']} of the examples, "
            f"mean normalized distance {ref['noop']['distance_mean']}; `oracle` (the settled "
            f"region) is exact on {ref['oracle']['exact']}, distance "
            f"{ref['oracle']['distance_mean']}.")


def _kto(k: dict[str, Any] | None) -> str:
    """The `kto` config: what it is, and its figures."""
    if k is None:
        return ("Not exported (export with `export_kto` to write the `kto` config from the "
                "editor's live outcomes).")
    skipped = _counter(k.get("skipped") or {})
    return f"""Unpaired records for KTO (`load_dataset(DIR, "kto")`; TRL's `prompt`,
`completion`, `label`) from the editor's live outcomes, without a teacher: the prompt is the
student's prompt of the example, the completion what the served model showed the user (in
the same answer layout as `sft`), and `label` the user's verdict: true when they accepted it
and it survived the settle window, false when they rejected it or accepted it and undid it
inside the window (less than half of its edit left in the settled region). Predictions that
were never shown, were discarded or ignored, or proposed no change give no record. The split,
near-duplicate and privacy rules are those of the other configs; `outcome`, `undone`,
`kept_rate` and `served_model_version` are columns.

- records: train {k.get('train', 0)}, eval {k.get('eval', 0)}; desirable (kept)
  {k['desirable']}, undesirable {k['undesirable']} (of which undone {k['undone']})
- settled examples read: {k['settled_examples']}; without a record: {skipped}"""


def dataset_card(m: dict[str, Any]) -> str:
    c, th, nd, ep = m["counts"], m["thresholds"], m["near_duplicates"], m["eval_policy"]
    models = m["models"]
    files = _table(["config", "split", "file", "rows"],
                   [[k, split, f"`{rel}`", m["files"][rel]["rows"]]
                    for k, splits in m["data_files"].items() for split, rel in splits.items()])
    unfiltered = c.get("eval_unfiltered")
    no_preference = ("" if m["data_files"].get("preference") else
                     "\n\nThis export has no preference records (no `preference` config).")
    license_note = ("" if m.get("license") not in (None, "", "unknown") else
                    "\n\nThe license is `unknown`: set `EDITSTREAM_DATASET_LICENSE` (or "
                    "`--dataset-license`) when exporting a dataset you publish.")
    teacher_view = ("what the editor saw and, with hindsight on, what the user wrote later"
                    if th.get("teacher_hindsight") else
                    "what the editor saw (the excerpt and the user's edits so far, no hindsight)")
    body = f"""
# editstream next-edit dataset ({m['pipeline_version']})

Next-edit prediction examples from opt-in editor edit traces, made by the editstream
pipeline: a user's request-time code excerpt and recent
edits (the prompt), and how the editable region should read after their next edit (the
completion). A student model was sampled on each example; examples where it was neither
almost always right (`trivial`) nor hopeless (`noise`) went to a teacher model that saw
{teacher_view}; its answer had to pass the target gates below (checked against what the
user really kept), and answers that failed were repaired with the gates' reasons or dropped.

## Loading

```python
from datasets import load_dataset
sft = load_dataset("path/to/this/directory", "sft")          # prompt, completion
pref = load_dataset("path/to/this/directory", "preference")  # prompt, chosen, rejected
kto = load_dataset("path/to/this/directory", "kto")          # prompt, completion, label
```

{files}

File format: {m['format']}. Prompt format(s): {', '.join(f'`{f}`' for f in m['prompt_formats'])}
(`marker`: the excerpt with `<|editable_region_start|>` / `<|editable_region_end|>` and
`<|user_cursor_is_here|>` in place, after the user's recent edits as unified diffs; `fim`:
prefix/suffix around the region). The completion is the rewritten editable region between
the same markers. Columns after TRL's (`prompt`, `completion` or `prompt`, `chosen`,
`rejected`): `id`, `request_id`, `split`, `repo`, `language`, `band`, `settle_reason`,
`repair_attempts`, `settled_at_ms`, `student_distance_p50`, `student_reversal_mean`, and
`provenance` and `scores` as JSON strings.{no_preference}

## Counts

- records: {c['records']} (sft {_counter(c['sft'])}; preference {_counter(c['preference'])})
- examples: {c['examples']}; by band: {_counter(c['by_band'])}
- settled by: {_counter(c['by_settle_reason'])}; repaired: {c['repaired']}
- unfiltered eval examples: {'not exported' if unfiltered is None else unfiltered}
- rejected examples: {'not exported' if c.get('rejected') is None else c['rejected']}
  ({_counter(c.get('rejected_by_reason') or {})})
- duplicates removed (same record id): {m['duplicates_removed']}

## Models and thresholds

- student: {', '.join(models['student']) or '-'}; teacher: {', '.join(models['teacher']) or '-'};
  judge: {', '.join(models['judge']) or 'deterministic checks only'};
  served (the editor's model): {', '.join(models['served']) or '-'}
- bands on the student's median normalized Levenshtein distance to the settled region:
  `trivial` < {th['band_low']} <= `ideal` <= {th['band_high']} < `noise`
- target gates (each a rejection reason): the answer parses and is not truncated; not a
  no-op where the user changed the region; kept rate of its edit against the user's settled
  edit >= {th['gate_min_kept_rate']}; no farther from the settled region than the example's
  median student sample; reversal ratio <= {th['judge_max_reversal']}; the LLM judge, when
  configured, sees no revert and is confident
- student samples: at least {th['min_valid_samples']} valid (parsing, untruncated) samples per
  example, and only those count in the band median; no-op examples kept at a fraction of
  {th['noop_keep_fraction']}, with the format's explicit no-edit answer

## Splits

The unit of the split is the repository (its normalized URL: host, owner and name, lower
case; `session:<id>` for examples without one), so no repository is in both train and eval.
A repository goes to eval when a stable hash of it is below {ep['eval_fraction']}; eval is
topped up to at least {ep['eval_min_repos']} repositories
({ep['eval_units']} of {ep['units']} here{'' if ep['eval_min_repos_met'] else ', minimum not met'}).
`eval_unfiltered` (in the `sft` config) holds every eval example of any band, without the
teacher: its completion is the settled region, what the user really wrote, for measuring a
student as it is.

Near-duplicates: examples whose request-time and settled regions are near-identical (MinHash
over 5-character shingles, {nd['num_perm']} permutations, estimated Jaccard >= {nd['threshold']})
form a group; a group never straddles the split (repositories it joins travel together:
{ep['components_joined_by_near_duplicates']} such joins), and at most {nd['max_per_group'] or 'all'}
per group are kept. {nd['groups']} groups with {nd['examples_in_groups']} examples;
{nd['dropped_examples']} examples dropped ({_counter(nd['dropped_records'])} records).

## Live outcomes (`kto`)

{_kto(c.get('kto'))}

## By language

{_split_table(c['by_language'], 'language')}

## By repository

{_split_table(c['by_repo'], 'repository', MAX_REPOS)}

## What the corpus looks like

{_corpus(c.get('corpus'))}

## Provenance and privacy

Only events from editors whose users allowed collection, in repositories marked open source
and outside disabled paths (`.env`, keys, certificates, secrets) reached this dataset. Events
carrying a credential of a well-known format (cloud keys, tokens, private keys) were discarded
on every way into the pipeline, with the later events of their predictions; e-mail addresses
and user names in home-directory paths were masked in place (`xxxx@xxxx.xxx`,
`/home/xxxx/`) unless the pipeline ran with `pii_policy=keep`. A repository's URL appears only
as its normalized key, never as written (no credentials).
Pipeline version `{m['pipeline_version']}`; settled between
{m['time_range']['settled_at']['min']} and {m['time_range']['settled_at']['max']}; exported
{m['exported_at']}. Content SHA-256 (every data file, path order): `{m['content_sha256']}`.
`manifest.json` has every figure of this card.

## License

`{m.get('license') or 'unknown'}`.{license_note}
"""
    return yaml_header(m) + body
