"""Compute accounting: the paper's Table 1, ablation-family parameter matching, and the `ablate plan` CLI."""

import json

import pytest

from ablate.cli import main
from harness.accounting import GIB, matches_printed, plan_model
from harness.presets import ARMS, FAMILIES, TABLE1, family_preset_names, get_preset, paper_cells

# The paper's Table 1 at 256K tokens: total, active, KV cache (GB meaning GiB, 16-bit).
TABLE1_EXPECTED = {
    "llama-2-7b": ("6.7B", "6.7B", 128),
    "mistral-7b": ("7.2B", "7.2B", 32),
    "mixtral-8x7b": ("46.7B", "12.9B", 32),
    "jamba-v0.1": ("52B", "12B", 4),
}


@pytest.mark.parametrize("name", TABLE1)
def test_table1_rows(name):
    plan = plan_model(get_preset(name), name, context=262144)
    total, active, kv_gib = TABLE1_EXPECTED[name]
    assert matches_printed(plan.params_total, total, 1e9)
    assert matches_printed(plan.params_active, active, 1e9)
    assert plan.kv_cache_bytes == kv_gib * GIB
    assert paper_cells(name)["params_total"] == total


def test_jamba_exact_counts():
    plan = plan_model(get_preset("jamba-v0.1"), context=262144)
    assert round(plan.params_total / 1e9, 2) == 51.57
    assert round(plan.params_active / 1e9, 2) == 12.11
    assert plan.shorthand == "l=32 a:m=1:7 (offset 4) e=2 (offset 1) n=16 K=2"


def test_matches_printed_is_strict():
    assert matches_printed(51.57e9, "52B", 1e9)
    assert not matches_printed(51.4e9, "52B", 1e9)
    assert not matches_printed(12.88e9, "12.8B", 1e9)


@pytest.mark.parametrize("family", FAMILIES)
def test_family_arms_are_parameter_matched(family):
    target = FAMILIES[family].target_params
    for arm in ARMS:
        cfg = get_preset(f"{family}-{arm}")
        total = plan_model(cfg).params_total
        assert abs(total / target - 1) <= 0.03, (family, arm, total)
        for variant in ("-rope", "-nonorm"):
            name = f"{family}-{arm}{variant}"
            if name in family_preset_names():
                assert abs(plan_model(get_preset(name)).params_total / target - 1) <= 0.03


def test_moe_variant_adds_experts_and_keeps_dense_width():
    dense, moe = get_preset("7b-1to7"), get_preset("7b-1to7-moe")
    assert moe.d_ff == dense.d_ff and moe.expert_d_ff == dense.d_ff
    assert moe.count("E") == 16 and moe.moe.n_experts == 16 and moe.moe.top_k == 2
    plan = plan_model(moe)
    assert plan.params_total > 4 * plan_model(dense).params_total
    assert plan.params_active < plan.params_total


def test_flops_and_gpu_hours():
    plan = plan_model(get_preset("llama-2-7b"), context=4096)
    # 6N over every weight but the embedding lookup and the norms (Llama has no other non-matmul weights),
    # plus attention: 3 (fwd+bwd) x layers x 2 FLOPs x 2 matmuls x context/2 x d_model.
    by = plan.params_by_component
    assert plan.flops_by_component["matmul"] == 6 * (plan.params_total - by["embedding"] - by["norms"])
    assert plan.flops_by_component["attention"] == 3 * 32 * 2 * 2 * 2048 * 4096
    hours = plan.gpu_hours(1e12, mfu=0.5, gpu="h100")
    assert hours == pytest.approx(1e12 * plan.flops_per_token / (989e12 * 0.5) / 3600)


def test_plan_cli_json(capsys):
    assert (
        main(["plan", "--preset", "jamba-v0.1", "--preset", "mixtral-8x7b", "--context", "262144", "--json"])
        == 0
    )
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["jamba-v0.1", "mixtral-8x7b"]
    for row in rows:
        for key in ("params_total", "params_active", "kv_cache_bytes", "flops_per_token", "pattern"):
            assert key in row
    assert rows[0]["kv_cache_bytes"] == 4 * GIB
    assert rows[0]["pattern"] == "M-MEM-ME*-MEM-ME" * 4


def test_plan_cli_text_marks_paper_match(capsys):
    assert main(["plan", "--table1", "--context", "262144"]) == 0
    out = capsys.readouterr().out
    for name in TABLE1:
        line = next(line for line in out.splitlines() if line.startswith(name))
        assert line.rstrip().endswith("matches"), line
    assert "(M-MEM-ME*-MEM-ME)x4" in out and "l=32 a:m=1:7 (offset 4) e=2 (offset 1) n=16 K=2" in out


def test_plan_cli_errors_are_one_line(capsys, tmp_path):
    assert main(["plan", "--preset", "jamba-v1"]) == 2
    err = capsys.readouterr().err
    assert "Did you mean 'jamba-v0.1'" in err and "Traceback" not in err
    bad = tmp_path / "m.yaml"
    bad.write_text("model:\n  vocab_size: 10\n  d_model: 8\n  d_ff: 8\n  pattern: 'M-Q-'\n")
    assert main(["plan", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "unknown symbol 'Q'" in err


def test_plan_cli_from_config_file(capsys, tmp_path):
    good = tmp_path / "m.yaml"
    good.write_text(
        "model:\n  vocab_size: 1000\n  d_model: 64\n  d_ff: 128\n  attention: {n_heads: 4}\n"
        "  layout: {layers: 8, attn_mamba: '1:3', moe_every: 2}\n  moe: {n_experts: 4, top_k: 2}\n"
    )
    assert main(["plan", "--config", str(good), "--json"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert row["pattern"] == "M-ME*-MEM-ME*-ME"
    assert row["shorthand"] == "l=8 a:m=1:3 (offset 2) e=2 (offset 1) n=4 K=2"
