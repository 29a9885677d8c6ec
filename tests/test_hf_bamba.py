"""Mamba-2 hybrids to and from transformers' Bamba: the same logits (fp32), the weights back unchanged,
``ablate export hf`` of a trained pure Mamba-2 run loading with AutoModelForCausalLM, and what Bamba
cannot hold refused by name."""

from __future__ import annotations

import pytest
import torch

from ablate.cli import main
from harness.config_errors import ConfigError
from harness.config_schema import from_dict
from harness.hf_interop.bamba import bamba_config_dict, from_bamba_model, to_bamba_model
from harness.model import HybridLM
from harness.model.config import ModelConfig
from harness.presets import get_preset
from harness.training.config import resolve_run_config
from harness.training.trainer import train

transformers = pytest.importorskip("transformers")
ROPE_HYBRID = dict(
    vocab_size=300,
    d_model=64,
    d_ff=96,
    pattern="S-S-*-S-",
    attention=dict(n_heads=4, n_kv_heads=2, rope=True),
    mamba2=dict(head_dim=16, d_state=16, chunk_size=8),
)


@pytest.mark.parametrize("cfg", [get_preset("tiny-mamba-m2"), from_dict(ModelConfig, ROPE_HYBRID)],
                         ids=["pure", "rope-hybrid"])  # fmt: skip
def test_bamba_computes_our_logits_and_gives_our_weights_back(cfg):
    torch.manual_seed(0)
    ours = HybridLM(cfg).eval()
    hf = to_bamba_model(ours).eval()
    ids = torch.randint(0, cfg.vocab_size, (2, 37))
    with torch.no_grad():
        torch.testing.assert_close(hf(ids, use_cache=False).logits, ours(ids).logits, rtol=1e-5, atol=1e-5)
    back = from_bamba_model(hf)
    assert back.cfg.pattern == cfg.pattern
    for (name, a), b in zip(ours.state_dict().items(), back.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_what_bamba_cannot_hold_is_refused_by_name():
    with pytest.raises(ConfigError, match="attention without RoPE"):
        bamba_config_dict(get_preset("tiny-1to7-m2"))  # the paper's NoPE attention
    with pytest.raises(ConfigError, match="Jamba's"):
        bamba_config_dict(get_preset("tiny-1to7"))
    with pytest.raises(ConfigError, match="MoE"):
        bamba_config_dict(get_preset("tiny-1to7-moe-m2"))


def test_ablate_export_hf_writes_a_bamba_that_auto_loads(tmp_path, one_thread):
    cfg = {
        "name": "m2-export",
        "model": {"preset": "tiny-mamba-m2"},
        "data": {"train": [{"name": "c4"}], "tokenizer": {"kind": "bpe", "vocab_size": 512,
                                                          "max_train_bytes": 300_000}},
        "train": {"seq_len": 32, "global_batch": 2, "micro_batch": 2, "steps": 2, "eval_every": 0,
                  "eval_batches": 1},
    }  # fmt: skip
    run = tmp_path / "run"
    train(resolve_run_config(cfg), run)
    assert main(["export", "hf", str(run), str(tmp_path / "hf")]) == 0
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf")).eval()
    assert type(hf).__name__ == "BambaForCausalLM"
    from harness.training.loading import load_run

    ours = load_run(run, device="cpu").model
    ids = torch.randint(0, 512, (1, 20))
    with torch.no_grad():
        torch.testing.assert_close(hf(ids, use_cache=False).logits, ours(ids).logits, rtol=1e-5, atol=1e-5)
