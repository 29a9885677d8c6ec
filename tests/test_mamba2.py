"""The Mamba-2 (SSD) mixer on CPU: the chunked scan equals the recurrence (values, final state, gradients,
any chunk size, from a given state), the layer's decode step and chunked prefill equal its forward pass, tiny
Mamba-2 arms are parameter-matched, train and resume exactly, and evaluate; existing run ids are unchanged.
(The model-wide decode and parameter-count tests in test_model.py and test_decode.py cover every tiny -m2
preset too; test_gpu.py compares mamba_ssm's Triton SSD with the reference on a GPU.)"""

from __future__ import annotations

import pytest
import torch

from ablate.cli import main
from harness.accounting import plan_model
from harness.config_errors import ConfigError
from harness.config_schema import from_dict, to_dict
from harness.kernels.ssd import ssd_chunked, ssd_recurrent
from harness.model import HybridLM
from harness.model.config import ModelConfig, describe_pattern
from harness.model.mamba2 import GatedRMSNormFunction
from harness.presets import FAMILIES, get_preset
from harness.training.config import config_hash, resolve_run_config
from harness.training.rundir import read_jsonl
from harness.training.trainer import train


def ssd_inputs(b=2, length=37, h=4, p=8, g=2, n=16, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, length, h, p, generator=gen).to(dtype)
    dt = torch.rand(b, length, h, generator=gen) * 0.5
    A = -torch.rand(h, generator=gen) * 3 - 0.5
    B, C = (torch.randn(b, length, g, n, generator=gen).to(dtype) for _ in "BC")
    D = torch.randn(h, generator=gen)
    return x, dt, A, B, C, D


@pytest.mark.parametrize("chunk", [1, 5, 16, 64])
def test_chunked_ssd_equals_the_recurrence(chunk):
    x, dt, A, B, C, D = ssd_inputs()
    start = torch.randn(2, 4, 8, 16)
    for initial in (None, start):
        y0, s0 = ssd_recurrent(x, dt, A, B, C, D, initial)
        y1, s1 = ssd_chunked(x, dt, A, B, C, D, chunk, initial)
        torch.testing.assert_close(y1, y0, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(s1, s0, rtol=1e-5, atol=1e-5)


def test_chunked_ssd_gradients_equal_the_recurrences_and_a_split_sequence_continues():
    leaves = [t.clone().requires_grad_() for t in ssd_inputs(length=20)]
    grads = []
    for scan in (lambda *a: ssd_recurrent(*a), lambda *a: ssd_chunked(*a, 8)):
        y, s = scan(*leaves)
        grads.append(torch.autograd.grad((y * y.detach().cos()).sum() + s.sum(), leaves))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    x, dt, A, B, C, D = ssd_inputs()
    y, s = ssd_chunked(x, dt, A, B, C, D, 8)
    ya, sa = ssd_chunked(x[:, :20], dt[:, :20], A, B[:, :20], C[:, :20], D, 8)
    yb, sb = ssd_chunked(x[:, 20:], dt[:, 20:], A, B[:, 20:], C[:, 20:], D, 8, sa)
    torch.testing.assert_close(torch.cat([ya, yb], 1), y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sb, s, rtol=1e-5, atol=1e-5)


def test_bf16_inputs_are_scanned_in_fp32():
    x, dt, A, B, C, D = ssd_inputs(dtype=torch.bfloat16)
    y, s = ssd_chunked(x, dt, A, B, C, D, 16)
    y32, s32 = ssd_recurrent(x.float(), dt, A, B.float(), C.float(), D)
    assert y.dtype == torch.bfloat16 and s.dtype == torch.float32
    torch.testing.assert_close(y.float(), y32, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(s, s32, rtol=1e-4, atol=1e-4)


def _gated_norm_as_pytorch_ops(y, z, weight, group, eps):
    """The gated norm as plain PyTorch ops in fp32 (what autograd differentiates on its own)."""
    gated = (y.float() * torch.nn.functional.silu(z.float())).unflatten(-1, (-1, group))
    normed = gated * torch.rsqrt(gated.pow(2).mean(-1, keepdim=True) + eps)
    return (normed.flatten(-2) * weight.float()).to(y.dtype)


def test_gated_norm_backward_is_exact_and_keeps_only_its_inputs():
    """The gated norm's hand-written backward: gradcheck in fp64; in bf16 the same values and gradients as
    autograd through the plain ops (computed in fp32 both ways), while saving for the backward only y and z
    in bf16, the weight and one fp32 scale per group: no fp32 copy of the activation."""
    gen = torch.Generator().manual_seed(0)
    y, z = (torch.randn(2, 5, 12, generator=gen, dtype=torch.float64).requires_grad_() for _ in "yz")
    w = torch.randn(12, generator=gen, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b, c: GatedRMSNormFunction.apply(a, b, c, 4, 1e-5), (y, z, w))

    tokens, width, group = 64, 256, 64
    y, z = (torch.randn(tokens, width, generator=gen).bfloat16().requires_grad_() for _ in "yz")
    w = (1 + 0.1 * torch.randn(width, generator=gen)).requires_grad_()
    out = torch.randn(tokens, width, generator=gen).bfloat16()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        ours = GatedRMSNormFunction.apply(y, z, w, group, 1e-5)
    assert sum(t.numel() * t.element_size() for t in saved) == (
        2 * tokens * width * 2 + width * 4 + tokens * (width // group) * 4
    )
    grads = torch.autograd.grad((ours.float() * out.float()).sum(), (y, z, w))
    plain = _gated_norm_as_pytorch_ops(y, z, w, group, 1e-5)
    want = torch.autograd.grad((plain.float() * out.float()).sum(), (y, z, w))
    assert torch.equal(ours, plain)
    for got, expected in zip(grads, want, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-2, atol=1e-2)


def test_mamba2_config_variants_count_parameters_and_decode_like_the_forward_pass():
    base = dict(vocab_size=50, d_model=32, d_ff=48, pattern="*-S-S-", attention=dict(n_heads=4))
    for mamba2 in (
        dict(head_dim=16, d_state=8, n_groups=2, chunk_size=4),
        dict(head_dim=8, d_state=4, proj_bias=True, conv_bias=False, expand=1, d_conv=3, chunk_size=5),
    ):
        torch.manual_seed(0)
        model = HybridLM(from_dict(ModelConfig, {**base, "mamba2": mamba2})).eval()
        assert plan_model(model.cfg).params_total == model.num_parameters()
        ids = torch.randint(0, 50, (2, 13))
        with torch.no_grad():
            full = model(ids).logits
            cache = model.new_cache(2, 13)
            parts = [model(ids[:, :6], cache=cache).logits]  # prefill, then token by token
            parts += [model(ids[:, t : t + 1], cache=cache).logits for t in range(6, 13)]
        torch.testing.assert_close(torch.cat(parts, 1), full, rtol=1e-4, atol=1e-4)


def test_bad_mamba2_settings_name_the_key():
    base = dict(vocab_size=50, d_model=32, d_ff=48, pattern="S-")
    with pytest.raises(ConfigError, match="head_dim"):
        from_dict(ModelConfig, {**base, "mamba2": {"head_dim": 48}})
    with pytest.raises(ConfigError, match="n_groups"):
        from_dict(ModelConfig, {**base, "mamba2": {"head_dim": 16, "n_groups": 3}})
    with pytest.raises(ConfigError, match="A_init_range"):
        from_dict(ModelConfig, {**base, "mamba2": {"head_dim": 16, "A_init_range": [0, 4]}})


def test_presets_are_matched_and_described_and_old_run_ids_do_not_move():
    for family in FAMILIES:
        target = FAMILIES[family].target_params
        for arm in ("mamba", "1to3", "1to7"):
            cfg = get_preset(f"{family}-{arm}-m2")
            assert "M" not in cfg.pattern and cfg.count("S") > 0
            assert abs(plan_model(cfg).params_total / target - 1) <= 0.03
    assert describe_pattern(get_preset("tiny-1to7-m2").pattern).endswith("a:m=1:7 (offset 4) Mamba-2")
    assert "mamba2" not in to_dict(get_preset("tiny-1to7"))  # absent: every Mamba-1 run id stays
    assert to_dict(get_preset("tiny-1to7-m2"))["mamba2"]["d_state"] == 16
    assert plan_model(get_preset("mini-1to7-m2")).mamba_state_bytes > 0


def test_a_tiny_mamba2_hybrid_trains_resumes_exactly_and_evaluates(tmp_path, one_thread):
    cfg = {
        "name": "m2",
        "model": {"preset": "tiny-1to7-m2"},
        "data": {"train": [{"name": "c4"}], "tokenizer": {"kind": "bpe", "vocab_size": 512,
                                                          "max_train_bytes": 300_000}},
        "train": {"seq_len": 64, "global_batch": 4, "micro_batch": 4, "steps": 8, "checkpoint_every": 4,
                  "eval_every": 0, "eval_batches": 1},
        "optim": {"lr": 3e-3},
    }  # fmt: skip
    run_cfg = resolve_run_config(cfg)
    assert config_hash(run_cfg) != config_hash(resolve_run_config({**cfg, "model": {"preset": "tiny-1to7"}}))
    reference = tmp_path / "reference"
    train(run_cfg, reference)
    stops = iter(range(100))
    run = tmp_path / "run"
    train(
        run_cfg, run, should_stop=lambda: next(stops) == 4
    )  # stops at step 5's boundary (checkpoint 4 or 5)
    assert train(run_cfg, run)["state"] == "done"

    def losses(d):
        return [(r["step"], r["loss"]) for r in read_jsonl(d / "metrics.jsonl") if "loss" in r]

    assert losses(run) == losses(reference) and len(losses(run)) == 8
    assert main(["eval", str(run), "--suite", "induction", "--device", "cpu", "--limit", "4"]) == 0


def test_export_to_transformers_jamba_refuses_mamba2_by_name():
    from harness.hf_interop.config import hf_config_dict

    with pytest.raises(ConfigError, match="Mamba-2 layers"):
        hf_config_dict(get_preset("tiny-1to7-m2"))
