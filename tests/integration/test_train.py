"""`editstream train` end to end, small: a real export loads in TRL, a few optimizer steps lower
the training loss, the GGUF is written by llama.cpp's converter, and llama.cpp's server loads
it and answers.

The dataset is `tests/integration/data/train-export/`: an export written by the real pipeline
(`EDITSTREAM_EXPORT_KTO=true editstream demo --max-predictions 24`: Tansu, the worker, the
model simulator, the bundled traces of this repository's history), committed as it was
written (its manifest hash covers the files). Training uses its shortest examples only
(`--max-length`) so that a run stays within a few minutes on 2 shared cores.

Needs the `train` extra (`make test` installs it); skipped, with that reason, without it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import orjson
import pytest

from editstream.cli import main
from editstream.infra.local_model import start_local_model

pytest.importorskip("trl", reason="the `train` extra is not installed (pip install -e "
                                  "'.[train]'; `make test` installs it)")

pytestmark = [pytest.mark.timeout(1500)]

DATA = Path(__file__).parent / "data" / "train-export"
MAX_LENGTH = 480  # tokens: the shortest example only (the export's run from 429 to 1803)
EPOCHS = 4


def test_sft_lowers_the_training_loss_and_llama_cpp_serves_the_result(tmp_path: Path) -> None:
    data = tmp_path / "export"
    shutil.copytree(DATA, data)
    out = tmp_path / "model"
    code = main(["train", str(data), "--out", str(out), "--max-length", str(MAX_LENGTH),
                 "--epochs", str(EPOCHS), "--grad-accum", "1", "--lr", "1e-3",
                 "--seed", "3", "--no-progress"])
    assert code == 0
    summary = json.loads((out / "train_results.json").read_text())
    res = summary["results"]
    rows = res["train_rows"]
    assert 1 <= rows <= 4 and res["steps"] == rows * EPOCHS
    # the same examples seen in the first and the last epoch: the loss on them dropped
    losses = [v for _, v in res["loss_history"]]
    assert len(losses) == res["steps"]
    first, last = sum(losses[:rows]) / rows, sum(losses[-rows:]) / rows
    assert last < first * 0.9, (first, last, losses)

    manifest = orjson.loads((data / "manifest.json").read_bytes())
    card = (out / "README.md").read_text()
    assert manifest["content_sha256"] in card and "SmolLM2-135M-Instruct" in card
    assert "| learning_rate | 0.001 |" in card and "| seed | 3 |" in card
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert (out / "merged" / "model.safetensors").is_file()
    assert (out / "loss.png").stat().st_size > 1000
    gguf = out / "model.gguf"
    assert gguf.read_bytes()[:4] == b"GGUF"

    # llama.cpp loads it and answers a request in the dataset's own prompt format
    row = orjson.loads((data / "sft" / "train.jsonl").read_bytes().splitlines()[0])
    prompt = row["prompt"]
    server = start_local_model(tmp_path / "server.log", model=gguf, slots=1,
                               ctx_per_slot=4096, threads=1)
    try:
        answer = httpx.post(f"{server.url}/v1/completions", json={
            "model": server.model, "prompt": prompt, "max_tokens": 48, "temperature": 0,
            "stop": ["<|editable_region_end|>"]}, timeout=300).raise_for_status().json()
        served = httpx.post(f"{server.url}/tokenize", json={"content": prompt},
                            timeout=60).raise_for_status().json()["tokens"]
    finally:
        server.stop()
    # the sequence trained on starts with the very tokens the server reads the prompt as,
    # and the loss starts right after them (tokenizing prompt + completion as one string
    # merges zeta1's closing blank line with the answer's first newline: the trap it avoids)
    from transformers import AutoTokenizer

    from editstream.train.run import _tokenize
    tok = AutoTokenizer.from_pretrained(out / "merged")
    seq = _tokenize(tok, "sft")(row)
    assert seq["input_ids"][: len(served)] == served
    assert seq["completion_mask"].index(1) == len(served)
    assert tok(prompt + row["completion"])["input_ids"][: len(served)] != served
    choice = answer["choices"][0]
    assert choice["finish_reason"] in ("stop", "length") and choice["text"].strip()
    assert answer["usage"]["prompt_tokens"] > 100


@pytest.mark.parametrize("method", ["dpo", "kto"])
def test_preference_and_outcome_configs_load_in_trl_and_take_a_step(method: str,
                                                                    tmp_path: Path) -> None:
    """The `preference` and `kto` configs as exported go into TRL's DPO and KTO trainers."""
    out = tmp_path / "model"
    code = main(["train", str(DATA), "--out", str(out), "--method", method,
                 "--max-length", "640", "--max-steps", "1", "--grad-accum", "1",
                 "--no-gguf", "--no-progress"])
    assert code == 0
    res = json.loads((out / "train_results.json").read_text())["results"]
    assert res["steps"] == 1 and res["loss_history"]
    assert f"{method.upper()} on the" in (out / "README.md").read_text()


def test_dpo_and_kto_train_on_the_prompt_as_llama_server_tokenizes_it(tmp_path: Path) -> None:
    """What TRL's DPO and KTO trainers put through the model (their collators' `input_ids`
    and `completion_mask`) starts with the very tokens llama-server reads the prompt as, and
    the loss covers exactly the answer's own tokens and EOS, right after. TRL's own
    tokenization of prompt + answer as one string would merge zeta1's closing blank line
    into the answer; the test checks this data has that trap, so that it can fail."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from editstream.train.plan import Hyper, inspect_dataset
    from editstream.train.run import _trainer, base_checkpoint, prepare

    base_dir, _ = base_checkpoint(None)
    tok = AutoTokenizer.from_pretrained(base_dir)
    eos = tok.eos_token_id
    # the base GGUF the tokenizer above was dequantized from (the candidate's GGUF carries the
    # same vocabulary: the SFT test above checks the server of a fine-tune)
    server = start_local_model(tmp_path / "server.log", slots=1, ctx_per_slot=2048, threads=1)
    try:
        def served(text: str) -> list[int]:
            tokens: list[int] = httpx.post(
                f"{server.url}/tokenize", json={"content": text}, timeout=60
            ).raise_for_status().json()["tokens"]
            return tokens

        for method, answers in (("dpo", ("chosen", "rejected")), ("kto", ("completion",))):
            info = inspect_dataset(DATA, method)
            raw = [orjson.loads(line) for line in
                   Path(info.files["train"]).read_bytes().splitlines()]
            by_prompt = {tuple(served(r["prompt"])): r for r in raw}
            assert len(by_prompt) == len({r["prompt"] for r in raw})
            hyper = Hyper(method=method, max_length=900, max_steps=1, grad_accum=1).resolved()
            ds, too_long = prepare(info, hyper, tok)
            assert len(ds["train"]) >= 2 and too_long["train"] >= 1
            model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
            trainer = _trainer(info, hyper, model, tok, ds, tmp_path / method, "cpu")
            rows = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
            batch = trainer.data_collator(rows)  # what the model is given
            n = len(rows)
            assert batch["input_ids"].shape[0] == n * len(answers)
            merged = 0
            for i in range(batch["input_ids"].shape[0]):
                keep = batch["attention_mask"][i].bool()
                ids = batch["input_ids"][i][keep].tolist()
                mask = batch["completion_mask"][i][keep].tolist()
                start = mask.index(1)
                assert mask == [0] * start + [1] * (len(ids) - start)
                row = by_prompt[tuple(ids[:start])]  # exactly a prompt as the server reads it
                assert tok.decode(ids[:start]) == row["prompt"]
                answer = row[answers[i // n]]  # dpo: chosen rows first, then rejected
                if method == "kto":
                    assert bool(batch["label"][i]) == row["label"]
                assert ids[start:] == tok(answer, add_special_tokens=False)["input_ids"] + [eos]
                assert tok.decode(ids[start:]) == answer + tok.eos_token
                merged += tok(row["prompt"] + answer)["input_ids"][:start] != ids[:start]
            assert merged == batch["input_ids"].shape[0]  # the trap TRL's own path falls in
            if method == "kto":  # the KL estimate: each prompt with the answer of the row
                b = hyper.batch_size or 0  # before it in its batch (the first: the last's)
                assert b >= 2
                for i in range(n):
                    keep = batch["KL_attention_mask"][i].bool()
                    ids = batch["KL_input_ids"][i][keep].tolist()
                    start = batch["KL_completion_mask"][i][keep].tolist().index(1)
                    lo = i - i % b
                    other = lo + (i - lo - 1) % len(rows[lo:lo + b])
                    assert ids[:start] == rows[i]["prompt_ids"]
                    assert other != i or len(rows[lo:lo + b]) == 1
                    assert ids[start:] == rows[other]["completion_ids"]
    finally:
        server.stop()
