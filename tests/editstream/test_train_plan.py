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
    inspect_dataset,
    kto_weights,
    loss_dropped,
    model_card,
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
