"""editstream.train.plan (pure: no torch) and the CLI's one-line refusals."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest

from editstream.cli import main
from editstream.train.gguf import LLAMA_VERSION
from editstream.train.plan import (
    DatasetError,
    Hyper,
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

ROOT = Path(__file__).resolve().parents[2]


def export_dir(tmp: Path, data_files: dict[str, dict[str, str]]) -> Path:
    files = {}
    for splits in data_files.values():
        for rel in splits.values():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_text('{"prompt": "p", "completion": "c"}\n')
            files[rel] = {"rows": 1, "sha256": "x"}
    manifest = {"editstream_export": 1, "format": "jsonl", "pipeline_version": "v9",
                "data_files": data_files, "files": files, "content_sha256": "ab" * 32,
                "counts": {"sft": {"train": 1}, "preference": {"train": 0, "eval": 0}},
                "prompt_formats": [{"name": "zeta1", "version": 1}]}
    (tmp / "manifest.json").write_bytes(orjson.dumps(manifest))
    return tmp


def test_inspect_reads_the_method_config(tmp_path: Path) -> None:
    root = export_dir(tmp_path, {"sft": {"train": "sft/train.jsonl", "eval": "sft/eval.jsonl"}})
    info = inspect_dataset(root, "sft")
    assert info.config == "sft" and set(info.files) == {"train", "eval"}
    assert info.content_sha256 == "ab" * 32 and info.prompt_formats == ["zeta1.v1"]
    with pytest.raises(DatasetError, match=r"no `preference` train split for --method dpo"):
        inspect_dataset(root, "dpo")
    with pytest.raises(DatasetError, match=r"no `kto` train split .* not exported"):
        inspect_dataset(root, "kto")


@pytest.mark.parametrize("setup,message", [
    ("missing", "no such directory"),
    ("empty", "is empty: not an editstream export"),
    ("foreign", "has no manifest.json"),
    ("other_manifest", "not an editstream export manifest"),
    ("file_gone", "lists sft/train.jsonl, which is missing"),
])
def test_a_foreign_or_empty_directory_is_one_line_and_exit_2(
        tmp_path: Path, setup: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "d"
    if setup != "missing":
        root.mkdir()
    if setup == "foreign":
        (root / "train.csv").write_text("a,b\n")
    if setup == "other_manifest":
        (root / "manifest.json").write_text('{"name": "something else"}')
    if setup == "file_gone":
        export_dir(root, {"sft": {"train": "sft/train.jsonl"}})
        (root / "sft" / "train.jsonl").unlink()
    with pytest.raises(DatasetError, match=message):
        inspect_dataset(root, "sft")
    assert main(["train", str(root), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("editstream train: ") and err.count("\n") == 1
    assert message.split()[0] in err
    assert not (tmp_path / "m").exists()


def test_hyperparameters_per_method() -> None:
    sft = Hyper().resolved()
    assert (sft.learning_rate, sft.batch_size, sft.grad_accum) == (2e-4, 1, 8)
    assert Hyper(lora=False).resolved().learning_rate == 2e-5
    kto = Hyper(method="kto").resolved()
    assert (kto.batch_size, kto.grad_accum) == (2, 4)  # KTO's KL term needs 2 per batch
    with pytest.raises(ValueError, match="kto needs --batch-size >= 2"):
        Hyper(method="kto", batch_size=1).resolved()
    assert Hyper(learning_rate=1e-3).resolved().learning_rate == 1e-3
    assert "beta" not in sft.as_dict() and "lora_r" not in Hyper(lora=False).resolved().as_dict()
    assert steps_for(17, Hyper(grad_accum=4)) == 5
    assert steps_for(17, Hyper(max_steps=3)) == 3


def test_kto_weights_balance_the_labels() -> None:
    assert kto_weights(30, 10) == (1.0, 3.0)
    assert kto_weights(10, 40) == (4.0, 1.0)
    assert kto_weights(5, 0) == (1.0, 1.0)
    good, bad = 30, 10
    w_good, w_bad = kto_weights(good, bad)
    assert 1 <= (good * w_good) / (bad * w_bad) <= 4 / 3  # the KTO paper's eq. 8


# token ids as SmolLM2 gives them: zeta1's prompt ends in "### Response:\n\n", whose "\n\n"
# is one token (1116) alone; the answers start with "<|" (the region marker is plain text)
PROMPT = [198, 3757, 14212, 42, 1116]
CHOSEN, REJECTED, EOS = [44, 108, 300, 301], [44, 108, 302], 2


def test_sft_sequence_is_the_prompt_alone_then_the_completion_and_eos() -> None:
    seq = sft_sequence(PROMPT, CHOSEN, EOS)
    assert seq["input_ids"] == PROMPT + CHOSEN + [EOS]
    assert seq["completion_mask"] == [0] * 5 + [1] * 5
    assert sft_sequence(PROMPT, CHOSEN, None)["input_ids"] == PROMPT + CHOSEN


def test_dpo_sequences_keep_the_prompt_whole_and_end_each_answer_with_eos() -> None:
    row = dpo_sequences(PROMPT, CHOSEN, REJECTED, EOS)
    # the columns TRL's preference collator joins: prompt_ids + chosen_ids, prompt_ids +
    # rejected_ids, the loss on the second part
    assert row == {"prompt_ids": PROMPT, "chosen_ids": [*CHOSEN, EOS],
                   "rejected_ids": [*REJECTED, EOS]}
    assert row["prompt_ids"][-1] == 1116  # the server's last prompt token is trained on
    # the same prompt and answer as an SFT row
    sft = sft_sequence(PROMPT, CHOSEN, EOS)
    assert row["prompt_ids"] + row["chosen_ids"] == sft["input_ids"]
    assert longest_sequence(row) == 5 + 5
    assert dpo_sequences(PROMPT, CHOSEN, REJECTED, None)["rejected_ids"] == REJECTED
    # any sequence of ints in (datasets hands lists), lists out
    assert dpo_sequences((7, 8), (9,), (), EOS) == {"prompt_ids": [7, 8], "chosen_ids": [9, EOS],
                                                    "rejected_ids": [EOS]}


def test_kto_sequence_keeps_the_prompt_whole_and_ends_the_completion_with_eos() -> None:
    row = kto_sequence(PROMPT, REJECTED, EOS)
    assert row == {"prompt_ids": PROMPT, "completion_ids": [*REJECTED, EOS]}
    assert longest_sequence(row) == 5 + 4
    assert longest_sequence(sft_sequence(PROMPT, CHOSEN, EOS)) == 10
    assert longest_sequence({"prompt_ids": [1], "chosen_ids": [2], "rejected_ids": [3, 4, 5]}) == 4


def test_kl_completions_pair_each_prompt_with_the_previous_rows_completion() -> None:
    assert kl_completions([[1], [2, 2], [3]]) == [[3], [1], [2, 2]]
    assert kl_completions([[1, 1]]) == [[1, 1]]
    assert kl_completions([]) == []


def test_loss_dropped_compares_first_and_last_logged_losses() -> None:
    first, last = loss_dropped([(1, 2.0), (2, 1.8), (3, 1.0), (4, 0.9)], window=2)
    assert (first, last) == (1.9, 0.95)


def test_model_card_names_hash_base_method_and_hyperparameters(tmp_path: Path) -> None:
    root = export_dir(tmp_path, {"sft": {"train": "sft/train.jsonl"}})
    card = model_card(info=inspect_dataset(root, "sft"), hyper=Hyper(seed=7).resolved(),
                      base="SmolLM2", device="cpu", results={"eval_loss": 1.25},
                      files=["adapter/", "model.gguf"])
    assert "ab" * 32 in card and "base_model: \"SmolLM2\"" in card
    assert "| learning_rate | 0.0002 |" in card and "| seed | 7 |" in card
    assert "loss on the completion only" in card and "| eval_loss | 1.25 |" in card


def test_converter_version_is_the_makefiles() -> None:
    make = (ROOT / "Makefile").read_text()
    assert re.search(r"^LLAMA_VERSION\s*:=\s*(\S+)", make, re.M).group(1) == LLAMA_VERSION  # type: ignore[union-attr]
