"""The synthetic passkey corpus: each sample is the passkey suite's own prompt followed by its answer, the
answer's tokens are the only targets, samples are a pure function of (seed, stream, index), and a run trains
on it and is scored by the passkey suite past its training length."""

from __future__ import annotations

import json

import pytest
import torch

from ablate.cli import main
from harness.config_errors import ConfigError
from harness.config_schema import from_dict
from harness.data.config import DataConfig, PasskeyConfig
from harness.data.needle import FILLER, IGNORE, TASKS, PasskeyDataset, build_prompt, sentences
from harness.data.tokenizer import load_tokenizer
from harness.training.config import resolve_run_config
from harness.training.trainer import train


@pytest.fixture(scope="module")
def tok(hybrid_run):
    return load_tokenizer(hybrid_run / "tokenizer")


def test_a_sample_is_the_suite_prompt_then_its_answer_and_only_the_answer_is_scored(tok):
    data = PasskeyDataset(PasskeyConfig(), tok, seq_len=256, seed=3)
    for k in range(20):
        inputs, targets = data[k]
        assert inputs.shape == targets.shape == (256,)
        scored = (targets != IGNORE).nonzero()[:, 0]
        answer = tok.decode(targets[scored].tolist())
        assert answer.strip().isdigit() and len(answer.strip()) == 5
        end = int(scored[-1]) + 1  # prompt + answer: every later token is EOS padding
        assert data.min_len <= end + 1 <= 256 and set(inputs[end + 1 :].tolist()) <= {tok.eos_id}
        text = tok.decode(inputs[: int(scored[0]) + 1].tolist())
        assert text.startswith(TASKS["passkey"].intro) and text.endswith(
            "What is the pass key? The pass key is"
        )
        assert f"The pass key is {answer.strip()}. Remember it." in text
        assert torch.equal(
            inputs[scored + 1], targets[scored]
        )  # the answer is in the input too (teacher forcing)
    again = PasskeyDataset(PasskeyConfig(), tok, seq_len=256, seed=3)
    assert all(torch.equal(data[k][0], again[k][0]) for k in (0, 7, 1000))
    other = PasskeyDataset(PasskeyConfig(), tok, seq_len=256, seed=3, stream="validation")
    assert not torch.equal(data[0][0], other[0][0])
    assert data.fingerprint() != other.fingerprint()


def test_the_eval_prompt_and_the_training_prompt_are_one_function(tok):
    prompt = build_prompt(tok.encode, TASKS["passkey"], sentences(FILLER), 200, 0.5, "", "12345", 2)
    assert len(prompt.ids) == 200 and tok.decode(prompt.ids).count("12345") == 2


def test_bad_passkey_settings_name_the_key():
    with pytest.raises(ConfigError, match="mixes passkey and text"):
        from_dict(DataConfig, {"train": [{"name": "passkey"}, {"name": "c4"}]})
    with pytest.raises(ConfigError, match="belong to a corpus named 'mqar'"):
        from_dict(DataConfig, {"train": [{"name": "passkey", "mqar": {"num_pairs": 4}}]})
    with pytest.raises(ConfigError, match="train_corpus"):
        from_dict(DataConfig, {"train": [{"name": "passkey"}]})
    with pytest.raises(ConfigError, match="min_len"):
        from_dict(DataConfig, {"train": [{"name": "passkey", "passkey": {"min_len": 4}}]})
    with pytest.raises(ConfigError, match="takes no data_files"):
        from_dict(DataConfig, {"train": [{"name": "passkey", "data_files": ["x.txt"]}]})


def test_a_run_trains_on_passkey_and_the_suite_scores_it_past_its_length(hybrid_run, tmp_path):
    cfg = {
        "name": "passkey-tiny",
        "model": {"preset": "tiny-attention", "vocab_size": 4096},
        "data": {
            "train": [{"name": "passkey", "passkey": {"min_len": 96}}],
            "tokenizer": {"kind": "bpe", "path": str(hybrid_run / "tokenizer")},
        },
        "train": {"seq_len": 128, "global_batch": 8, "micro_batch": 8, "steps": 12, "eval_every": 0,
                  "eval_batches": 2, "checkpoint_every": 12},
        "optim": {"lr": 3e-3},
    }  # fmt: skip
    run = tmp_path / "run"
    status = train(resolve_run_config(cfg), run)
    assert status["state"] == "done"
    argv = ["eval", str(run), "--suite", "passkey", "--device", "cpu", "--limit", "2"]
    assert main(argv + ["-o", "passkey.lengths=[128,512]", "-o", "passkey.depths=[0.5]"]) == 0
    result = json.loads((run / "evals" / "passkey.json").read_text())  # a run outside a sweep has no plan
    assert [c["length"] for c in result["cells"]] == [128, 512] and result["settings"][
        "trained_length"
    ] == 128
