"""``ablate export hf``: a run's checkpoint and tokenizer as a transformers model directory, loaded back by
``AutoModelForCausalLM`` / ``AutoTokenizer`` with logits equal within fp32 tolerance and the same token ids;
layouts transformers cannot run are refused before anything is written."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from ablate.cli import main
from harness.training.config import resolve_run_config
from harness.training.loading import load_run
from harness.training.record import prepare_run_dir
from harness.training.rundir import RunDir

transformers = pytest.importorskip("transformers")

TEXT = "The quick brown fox jumps over the lazy dog 2024 times; <|endoftext|> is text here.\n"


def test_export_round_trip_through_auto_classes(hybrid_run, tmp_path, capsys):
    out = tmp_path / "hf"
    assert main(["export", "hf", str(hybrid_run), str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names

    ours = load_run(hybrid_run, device="cpu")
    model = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    tok = transformers.AutoTokenizer.from_pretrained(out)
    assert type(model).__name__ == "JambaForCausalLM"

    # The tokenizer gives the run's ids (EOS spelled in text stays text) and decodes them back exactly.
    ids = ours.tokenizer.encode(TEXT)
    assert tok(TEXT)["input_ids"] == ids and tok.decode(ids) == TEXT
    assert tok.eos_token == "<|endoftext|>" and tok.eos_token_id == ours.tokenizer.eos_id
    assert model.config.eos_token_id == ours.tokenizer.eos_id
    assert model.config.max_position_embeddings == ours.seq_len

    x = torch.tensor([ids[: ours.seq_len]])
    with torch.no_grad():
        expected, got = ours.model(x).logits, model(x).logits
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    provenance = json.loads((out / "jamba_ablate.json").read_text())
    assert provenance["step"] == ours.step and provenance["config_hash"] == ours.config_hash

    # An existing export is not overwritten unless asked; --step picks a checkpoint.
    assert main(["export", "hf", str(hybrid_run), str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["export", "hf", str(hybrid_run), str(tmp_path / "hf7"), "--step", "7"]) == 2
    assert "no checkpoint at step 7" in capsys.readouterr().err and not (tmp_path / "hf7").exists()
    assert main(["export", "hf", str(hybrid_run), str(out), "--overwrite", "--step", str(ours.step)]) == 0


@pytest.mark.parametrize(
    "model, fragment",
    [
        ({"preset": "tiny-mamba"}, "pure Mamba"),
        ({"preset": "tiny-1to7-rope"}, "RoPE"),
        ({"preset": "tiny-1to7-nonorm"}, "inner RMSNorms"),
    ],
)
def test_layouts_transformers_cannot_run_are_refused(tmp_path, capsys, model, fragment):
    cfg = resolve_run_config(
        {"name": "x", "model": model, "data": {"train": [{"name": "c4"}]}, "train": {"steps": 1}}
    )
    run = RunDir(tmp_path / "run")
    prepare_run_dir(cfg, run)  # no checkpoint needed: the layout is refused first
    assert yaml.safe_load(run.config.read_text())["name"] == "x"
    assert main(["export", "hf", str(run.root), str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err
    assert "cannot export to transformers' Jamba" in err and fragment in err and "Traceback" not in err
    assert not (tmp_path / "hf").exists()
