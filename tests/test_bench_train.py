"""``ablate bench train --against ...``: every anchor is either timed or skipped with its reason, the JSON
record says where and from what code it came, and the Llama anchor is the preset's size.

No speed is checked here (CPU, tiny presets, one step): the ratios are measured on the GPU
(``pytest -m gpu tests/test_bench_train.py`` runs the mamba_ssm anchor there).
"""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from ablate.cli import main
from harness.benchmarks.train import ANCHORS, run_train_benchmark
from harness.config_errors import ConfigError

TINY = ["--batch", "2", "--seq-len", "16", "--steps", "1", "--warmup", "1"]
NUMBERS = ("params", "tokens_per_s", "step_ms", "flops_per_token", "loss")


@pytest.mark.skipif(
    importlib.util.find_spec("mamba_ssm") is not None, reason="checks the skip without mamba_ssm"
)
def test_every_anchor_timed_or_skipped_with_its_reason(tmp_path, capsys, one_thread):
    path = tmp_path / "bench.json"
    args = [
        "bench",
        "train",
        "--preset",
        "tiny-1to7",
        *TINY,
        "--against",
        ",".join(ANCHORS),
        "--json",
        str(path),
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    record = json.loads(path.read_text())

    assert record["kind"] == "train" and record["device"]
    if not torch.cuda.is_available():
        assert record["device"] == "cpu"
    assert record["versions"]["torch"] == torch.__version__ and record["versions"]["transformers"]
    assert record["versions"]["mamba_ssm"] is None
    assert record["commit"] is None or len(record["commit"]) == 40
    assert record["config"]["preset"] == "tiny-1to7" and record["config"]["against"] == list(ANCHORS)

    by_model = {r["model"]: r for r in record["results"]}
    assert list(by_model) == ["ours", *ANCHORS]
    for name in ("ours", "transformers", "llama"):
        assert all(by_model[name][k] > 0 for k in NUMBERS), by_model[name]
    assert by_model["transformers"]["params"] == by_model["ours"]["params"]  # our weights, exported
    assert by_model["transformers"]["loss"] == pytest.approx(by_model["ours"]["loss"], rel=1e-4)
    for name in ("transformers", "llama"):
        assert by_model[name]["ours_over"] == pytest.approx(
            by_model["ours"]["tokens_per_s"] / by_model[name]["tokens_per_s"]
        )
    assert "mamba_ssm" in by_model["mamba_ssm"]["skipped"] and "tokens_per_s" not in by_model["mamba_ssm"]
    assert "mamba_ssm not timed: the mamba_ssm package cannot be imported" in out
    assert "ours/it" in out and "LlamaForCausalLM" in out


def test_layouts_an_anchor_cannot_run_are_skipped_and_llama_matches_attention(tmp_path, one_thread):
    record = run_train_benchmark(
        "tiny-attention",
        batch=2,
        seq_len=16,
        steps=1,
        warmup=1,
        against=("mamba_ssm", "llama"),
        json_path=tmp_path / "attn.json",
    )
    ours, mamba, llama = record["results"]
    assert "no Mamba layer" in mamba["skipped"]
    assert llama["params"] == pytest.approx(ours["params"], rel=0.03)
    assert json.loads((tmp_path / "attn.json").read_text())["results"] == record["results"]


def test_pure_mamba_skips_transformers_with_hf_interops_reason(tmp_path, one_thread):
    record = run_train_benchmark(
        "tiny-mamba",
        batch=2,
        seq_len=16,
        steps=1,
        warmup=1,
        against=("transformers",),
        json_path=tmp_path / "mamba.json",
    )
    assert record["results"][1]["model"] == "transformers" and record["results"][1]["skipped"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.skipif(importlib.util.find_spec("mamba_ssm") is None, reason="needs mamba-ssm")
@pytest.mark.parametrize("preset, mixer", [("mini-1to7", "Mamba1"), ("mini-1to7-m2", "Mamba2")])
def test_mamba_ssm_anchor_runs_on_cuda(tmp_path, preset, mixer):
    """Mamba-1 and Mamba-2 anchors, with or without causal-conv1d (the first lease's Mamba-2 row failed
    inside mamba_ssm, whose fused path needs it)."""
    record = run_train_benchmark(
        preset,
        batch=2,
        seq_len=256,
        steps=2,
        warmup=1,
        against=("mamba_ssm",),
        json_path=tmp_path / "gpu.json",
    )
    ours, anchor = record["results"]
    assert "skipped" not in anchor, anchor
    assert anchor["settings"]["mixer"] == mixer and anchor["settings"]["attn_layer_idx"] == [4]
    assert anchor["settings"]["fused_path"] is (importlib.util.find_spec("causal_conv1d") is not None)
    assert anchor["params"] == pytest.approx(ours["params"], rel=0.03)
    assert anchor["tokens_per_s"] > 0 and anchor["peak_gib"] > 0 and anchor["ours_over"] > 0
    assert record["versions"]["mamba_ssm"] and record["device"] != "cpu"


def test_moe_backends_give_one_row_each_and_profile_is_recorded(tmp_path, capsys, one_thread):
    path = tmp_path / "moe.json"
    args = ["bench", "train", "--preset", "tiny-1to7-moe", *TINY, "--against", ""]
    assert main([*args, "--moe-backend", "loop,grouped", "--profile", "3", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    record = json.loads(path.read_text())
    assert record["config"]["moe_backends"] == ["loop", "grouped"] and record["config"]["profile"] == 3
    loop, grouped = record["results"]
    assert [loop["settings"]["moe_runs"], grouped["settings"]["moe_runs"]] == ["loop", "grouped"]
    assert loop["loss"] == pytest.approx(grouped["loss"], rel=1e-5)  # same model, same batches
    for row in (loop, grouped):
        kernels = row["profile"]["kernels"]
        assert row["profile"]["by"] == "self CPU time" and row["profile"]["steps"] == 1
        assert 0 < len(kernels) <= 3
        assert all(k["total_ms"] > 0 and 0 < k["share"] <= 1 and k["calls"] >= 1 for k in kernels)
        assert [k["total_ms"] for k in kernels] == sorted((k["total_ms"] for k in kernels), reverse=True)
    assert "ours (HybridLM, eager, MoE loop)" in out and "top 3 by self CPU time over 1 steps" in out
    assert main([*args, "--moe-backend", "fast", "--json", str(path)]) == 2
    assert "unknown MoE backend(s) ['fast']" in capsys.readouterr().err


def test_kernel_settings_give_one_row_each_and_fused_off_cuda_is_refused(tmp_path, capsys, one_thread):
    path = tmp_path / "kernels.json"
    args = ["bench", "train", "--preset", "tiny-1to7", *TINY, "--against", "", "--json", str(path)]
    assert main([*args, "--kernels", "eager,auto"]) == 0
    record = json.loads(path.read_text())
    assert record["config"]["kernels"] == ["eager", "auto"]
    eager, auto = record["results"]
    assert [eager["settings"]["kernels"], auto["settings"]["kernels"]] == ["eager", "auto"]
    assert eager["settings"]["kernels_run"] == auto["settings"]["kernels_run"] == "eager"  # auto, on a CPU
    assert eager["loss"] == pytest.approx(auto["loss"], rel=1e-6)
    capsys.readouterr()
    assert main([*args, "--kernels", "fused"]) == 2
    err = capsys.readouterr().err
    assert "kernels: fused cannot run here: its tensors are not on CUDA" in err and "Traceback" not in err
    assert main([*args, "--kernels", "triton"]) == 2
    assert "unknown kernels setting(s) ['triton']" in capsys.readouterr().err


@pytest.mark.slow
def test_compile_modes_give_one_row_each_with_the_same_losses(tmp_path, capsys, one_thread):
    path = tmp_path / "compile.json"
    args = ["bench", "train", "--preset", "tiny-1to7", *TINY, "--against", "", "--json", str(path)]
    assert main([*args, "--compile", "off,on"]) == 0
    record = json.loads(path.read_text())
    eager, compiled = record["results"]
    assert record["config"]["compile"] == ["off", "on"]
    assert compiled["label"] == "ours (HybridLM, eager, compiled)"
    assert compiled["settings"] == {"kernels": "auto", "kernels_run": "eager", "compile": True}
    assert compiled["loss"] == pytest.approx(eager["loss"], rel=1e-4)  # same model, same batches
    assert main([*args, "--compile", "fast"]) == 2
    assert "unknown compile mode(s) ['fast']" in capsys.readouterr().err


def test_an_anchor_that_breaks_is_a_row_with_its_error_and_the_rest_are_timed(
    tmp_path, monkeypatch, one_thread
):
    """Another library's failure of any kind (here a TypeError, as mamba_ssm's missing causal-conv1d kernel
    gives) costs its own row, not the benchmark's record."""
    from harness.benchmarks import train

    def broken(cfg, device, dtype, seed, seq_len):
        def build():
            raise TypeError("'NoneType' object is not callable")

        return train.Contender("broken", "a broken anchor", build, None, 1.0, {})

    monkeypatch.setitem(train.ANCHOR_BUILDERS, "transformers", broken)
    record = run_train_benchmark(
        "tiny-attention",
        batch=2,
        seq_len=16,
        steps=1,
        warmup=1,
        against=("transformers", "llama"),
        json_path=tmp_path / "b.json",
    )
    ours, failed, llama = record["results"]
    assert failed["skipped"] == "failed during its run: TypeError: 'NoneType' object is not callable"
    assert llama["tokens_per_s"] > 0 and ours["tokens_per_s"] > 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.skipif(importlib.util.find_spec("liger_kernel") is None, reason="needs liger-kernel")
def test_liger_anchors_run_on_cuda_and_leave_llama_unpatched(tmp_path):
    from transformers.models.llama import modeling_llama

    before = modeling_llama.LlamaRMSNorm
    record = run_train_benchmark(
        "mini-attention",
        batch=2,
        seq_len=256,
        steps=2,
        warmup=1,
        against=("llama+liger", "llama"),
        json_path=tmp_path / "liger.json",
    )
    ours, liger, plain = record["results"]
    assert "skipped" not in liger and "skipped" not in plain, (liger, plain)
    assert liger["params"] == plain["params"] and liger["loss"] == pytest.approx(plain["loss"], rel=2e-2)
    assert modeling_llama.LlamaRMSNorm is before
    if importlib.util.find_spec("mamba_ssm") is not None:
        record = run_train_benchmark(
            "mini-1to7",
            batch=2,
            seq_len=256,
            steps=2,
            warmup=1,
            against=("mamba_ssm+liger", "mamba_ssm"),
            json_path=tmp_path / "mamba-liger.json",
        )
        _, fused_head, anchor = record["results"]
        assert "skipped" not in fused_head, fused_head
        assert fused_head["loss"] == pytest.approx(anchor["loss"], rel=2e-2)


def test_float8_gives_a_row_beside_bf16_with_its_converted_linears(tmp_path, capsys, one_thread):
    record = run_train_benchmark(
        "tiny-1to7",
        batch=2,
        seq_len=32,
        steps=1,
        warmup=1,
        float8_modes=("off", "on"),
        json_path=tmp_path / "f8.json",
    )
    plain, f8 = record["results"]
    assert "float8" not in plain["settings"] and f8["settings"]["float8"] is True
    assert f8["settings"]["float8_linears"] > 0 and "float8" in f8["label"]
    assert f8["loss"] == pytest.approx(plain["loss"], rel=0.05)  # the same weights and batches
    assert record["config"]["float8"] == ["off", "on"]
    with pytest.raises(ConfigError, match="float8 mode"):
        run_train_benchmark("tiny-1to7", batch=2, seq_len=32, steps=1, warmup=1, float8_modes=("yes",))


def test_scan_backends_give_one_row_each_and_a_gpu_scan_off_cuda_is_refused(tmp_path, capsys, one_thread):
    path = tmp_path / "scan.json"
    args = ["bench", "train", "--preset", "tiny-1to7", *TINY, "--against", "", "--json", str(path)]
    assert main([*args, "--scan-backend", "auto,reference"]) == 0
    record = json.loads(path.read_text())
    assert record["config"]["scan_backends"] == ["auto", "reference"]
    auto, reference = record["results"]
    assert "scan_backend" not in auto["settings"] and reference["settings"]["scan_backend"] == "reference"
    assert reference["label"] == "ours (HybridLM, eager, reference scan)"
    assert reference["loss"] == pytest.approx(auto["loss"], rel=1e-5)  # the same maths, another scan
    capsys.readouterr()
    assert main([*args, "--scan-backend", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "scan_backend" in err and "needs CUDA tensors" in err and "Traceback" not in err
    assert main([*args, "--scan-backend", "fast"]) == 2
    assert "unknown scan backend(s) ['fast']" in capsys.readouterr().err
