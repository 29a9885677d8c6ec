"""train.float8 on CPU, through torchao's real Float8Linear (its CPU emulation of the float8 matmul): which
layers convert, that a float8 run trains like the same run without it, resumes exactly, loads for
evaluation as a plain model, and has its own run id while every run without it keeps its id. Speed and the
loss parity of a mini run are GPU measurements (``ablate bench train --float8 off,on``)."""

from __future__ import annotations

import sys

import pytest
import torch
from test_training import corpus, losses, write_config  # noqa: F401 - the tiny corpus fixture
from torchao.float8.float8_linear import Float8Linear

from harness.config_errors import ConfigError
from harness.model import HybridLM
from harness.presets import get_preset
from harness.training.config import config_hash, config_identity, load_run_config
from harness.training.float8 import convert_to_float8, float8_problem
from harness.training.loading import load_run
from harness.training.rundir import read_jsonl
from harness.training.trainer import train

CPU = torch.device("cpu")


def test_the_large_projections_convert_and_the_sensitive_layers_stay():
    model = HybridLM(get_preset("tiny-1to7-moe"))
    names = convert_to_float8(model, CPU)
    kinds = {n.rpartition(".")[2] for n in names}
    # tiny's MLP is 152 wide, not a multiple of 16: float8 matmuls cannot take it; mini's converts
    assert get_preset("tiny-1to7-moe").d_ff == 152
    assert kinds == {"in_proj", "out_proj", "q_proj", "k_proj", "v_proj", "o_proj"}
    mini = {n.rpartition(".")[2] for n in convert_to_float8(HybridLM(get_preset("mini-1to7")), CPU)}
    assert mini == kinds | {"gate_proj", "up_proj", "down_proj"}
    for name, module in model.named_modules():
        last = name.rpartition(".")[2]
        if last in ("router", "x_proj", "dt_proj", "lm_head"):
            assert not isinstance(module, Float8Linear), name
        if name in names:
            assert isinstance(module, Float8Linear), name
    plain = HybridLM(get_preset("tiny-1to7-moe"))
    assert model.state_dict().keys() == plain.state_dict().keys()  # checkpoints are the same shape


def test_without_torchao_it_is_a_config_error_naming_the_key(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchao.float8", None)  # import fails as if not installed
    assert "torchao" in float8_problem(CPU)
    with pytest.raises(ConfigError, match="torchao") as e:
        convert_to_float8(HybridLM(get_preset("tiny-attention")), CPU)
    assert e.value.key == "train.float8"


def test_a_float8_run_trains_like_bf16_resumes_exactly_and_evaluates_plain(tmp_path, corpus):  # noqa: F811
    for sub in "abc":
        (tmp_path / sub).mkdir()
    plain_cfg = load_run_config(write_config(tmp_path / "a", corpus, steps=24, eval_every=24))
    plain_id = config_hash(plain_cfg)
    cfg = load_run_config(write_config(tmp_path / "b", corpus, steps=24, eval_every=24, float8=True))
    assert config_hash(cfg) != plain_id  # a float8 run is another experiment
    assert "float8" not in config_identity(plain_cfg)["train"]  # without it, every run id is unchanged

    train(plain_cfg, tmp_path / "plain")
    # float8: stopped after 12 steps (a checkpoint), then resumed to 24
    cfg_half = load_run_config(write_config(tmp_path / "c", corpus, steps=24, eval_every=24, float8=True))
    train(cfg, tmp_path / "straight")
    polls = iter(range(1, 100))
    assert (
        train(cfg_half, tmp_path / "resumed", should_stop=lambda: next(polls) >= 12)["state"] == "interrupted"
    )
    assert train(cfg_half, tmp_path / "resumed")["state"] == "done"
    start = read_jsonl(tmp_path / "straight" / "events.jsonl")[0]
    assert start["float8_linears"] > 0
    f8, ref = losses(tmp_path / "straight"), losses(tmp_path / "plain")
    assert losses(tmp_path / "resumed") == f8  # exact resume
    assert f8[24] < f8[1] - 1.0  # it learns
    for step in (1, 12, 24):  # and like the run without float8, within float8's rounding
        assert f8[step] == pytest.approx(ref[step], rel=0.05), (step, f8[step], ref[step])
    loaded = load_run(tmp_path / "straight", device="cpu")
    assert not any(isinstance(m, Float8Linear) for m in loaded.model.modules())
