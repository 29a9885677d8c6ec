"""``ablate bench prefill|decode|context`` at tiny scale on CPU: each runs in seconds and writes its JSON with
provenance (device, versions, commit) and the fields the GPU figures will be drawn from."""

import importlib.util
import json

import pytest
import torch

from ablate.cli import main
from harness.benchmarks.inference import (
    CONTEXT_PREFILL_CHUNK,
    build_model,
    first_divergence,
    parse_sizes,
    uncached_agreement,
)
from harness.config_errors import ConfigError
from harness.model.decode import Decoder

PROVENANCE = {"kind", "preset", "time", "device", "host", "versions", "commit", "dirty", "dtype"}


def bench(tmp_path, *args: str) -> dict:
    out = tmp_path / "bench.json"
    assert main(["bench", *args, "--device", "cpu", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert PROVENANCE <= set(record)
    assert record["device"] == "cpu" and record["versions"]["torch"]
    return record


def test_sizes_parse_with_suffixes():
    assert parse_sizes("8k, 2048,1m") == [8192, 2048, 1024 * 1024]
    with pytest.raises(ConfigError, match="not a size"):
        parse_sizes("8x")


def test_bench_prefill_writes_rows_beside_the_accounting(tmp_path, one_thread):
    args = ["prefill", "--preset", "tiny-1to7", "--context", "64,128", "--batch", "2"]
    for chunk in (None, 48):  # one pass, then 48-token chunks (which divide neither context)
        record = bench(tmp_path, *args, *(["--prefill-chunk", str(chunk)] if chunk else []))
        assert record["prefill_chunk"] == chunk
        assert [r["context"] for r in record["rows"]] == [64, 128]
        assert record["against"] == [] and record["anchors"] == []
        for row in record["rows"]:
            assert row["implementation"] == "ours"
            assert row["tokens_per_s"] > 0 and row["peak_bytes"] is None  # no allocator statistics on CPU
            assert row["cache_bytes_allocated"] == row["kv_cache_bytes"] + row["mamba_state_bytes"]


def test_bench_prefill_times_the_anchors_beside_ours_or_says_why_not(tmp_path, one_thread):
    args = ["prefill", "--preset", "tiny-1to7", "--context", "32,64", "--repeats", "1"]
    record = bench(tmp_path, *args, "--against", "transformers,llama")
    assert record["against"] == ["transformers", "llama"]
    assert [a["implementation"] for a in record["anchors"]] == ["transformers", "llama"]
    assert all("skipped" not in a for a in record["anchors"]), record["anchors"]
    rows = {(r["implementation"], r["context"]): r for r in record["rows"]}
    assert set(rows) == {(i, c) for i in ("ours", "transformers", "llama") for c in (32, 64)}
    for (implementation, context), row in rows.items():
        assert row["tokens_per_s"] > 0 and row["peak_bytes"] is None
        if implementation != "ours":
            ours = rows["ours", context]["tokens_per_s"]
            assert row["ours_over"] == pytest.approx(ours / row["tokens_per_s"])
    # transformers' Jamba holds our weights and sizes its cache like ours; the Llama has only attention
    assert rows["transformers", 64]["weights_bytes"] == rows["ours", 64]["weights_bytes"]
    assert rows["transformers", 64]["kv_cache_bytes"] == rows["ours", 64]["kv_cache_bytes"]
    assert rows["llama", 64]["mamba_state_bytes"] == 0 < rows["llama", 64]["kv_cache_bytes"]

    record = bench(
        tmp_path, "prefill", "--preset", "tiny-mamba", "--context", "32", "--against", "transformers"
    )
    (skip,) = record["anchors"]
    assert skip["implementation"] == "transformers" and skip["skipped"]  # no attention: not a Jamba
    assert [r["implementation"] for r in record["rows"]] == ["ours"]
    args = ["--preset", "tiny-mamba-m2", "--context", "32", "--against", "mamba_ssm"]
    record = bench(tmp_path, "prefill", *args)
    (skip,) = record["anchors"]  # a CUDA-only anchor: on the CPU, skipped with its reason
    assert skip["implementation"] == "mamba_ssm" and "mamba_ssm" in skip["skipped"], skip
    assert [r["implementation"] for r in record["rows"]] == ["ours"]
    assert main(["bench", "prefill", "--preset", "tiny-1to7", "--against", "mamba"]) == 2


def test_bench_decode_matches_transformers_tokens_and_records_skips(tmp_path, one_thread):
    args = ["decode", "--preset", "tiny-1to7", "--batch", "1,2", "--prompt", "8", "--new", "5"]
    record = bench(tmp_path, *args)
    assert record["cuda_graphs"] is False and record["transformers_skipped"] is None
    for row, batch in zip(record["rows"], (1, 2), strict=True):
        assert row["batch"] == batch and row["decode_tokens_per_s"] > 0 and row["ms_per_step"] > 0
        assert row["tokens_equal_share"] == 1.0  # transformers' generate, same weights, same greedy tokens
        assert row["first_divergence_transformers"] == [None] * batch
        assert row["speedup_vs_transformers"] > 0
        # fp32: every cached step is the argmax of the uncached forward pass on the same prefix
        assert row["tokens_equal_uncached_share"] == 1.0
        assert row["first_divergence_uncached"] == [None] * batch
        assert row["uncached_flip_margin_max"] == 0.0 and row["uncached_flips_beyond_near_tie"] == 0
    record = bench(
        tmp_path, "decode", "--preset", "tiny-mamba", "--batch", "1", "--prompt", "8", "--new", "2"
    )
    assert record["transformers_skipped"]  # no attention layer: transformers' Jamba cannot hold it
    assert "speedup_vs_transformers" not in record["rows"][0]
    assert record["rows"][0]["tokens_equal_uncached_share"] == 1.0  # pure Mamba: state carried exactly


def test_uncached_agreement_finds_the_first_wrong_token(one_thread):
    model = build_model("tiny-1to7", torch.device("cpu"))
    ids = torch.randint(0, model.cfg.vocab_size, (2, 8))
    tokens = Decoder(model, 2, 14).generate(ids, 6)
    # the last token replaced by one the model would not have chosen (an earlier one would change the
    # prefix of every later step as well)
    tokens[1, 5] = (tokens[1, 5] + 1) % model.cfg.vocab_size
    found = uncached_agreement(model, ids, tokens)
    assert found["first_divergence_uncached"] == [None, 5]
    assert found["tokens_equal_uncached_share"] == pytest.approx(11 / 12)
    assert found["uncached_flip_margin_max"] > 0 and found["uncached_flips_beyond_near_tie"] == 1
    assert first_divergence(torch.tensor([[False, True, True], [False] * 3])) == [1, None]


def test_bench_context_refuses_cpu_without_budget_and_agrees_with_accounting(tmp_path, one_thread, capsys):
    assert main(["bench", "context", "--preset", "tiny-1to7", "--device", "cpu"]) == 2
    assert "give --max-bytes" in capsys.readouterr().err
    budget = 4_200_000  # tiny-1to7's fp32 weights are 4.0 MB: room for ~500 tokens of KV cache
    args = ["context", "--preset", "tiny-1to7", "--max-bytes", str(budget), "--start", "256"]
    record = bench(tmp_path, *args, "--resolution", "64")
    assert record["budget_bytes"] == budget and not record["hit_limit"]
    assert record["prefill_chunk"] == CONTEXT_PREFILL_CHUNK  # chunked by default: the caches bound it
    assert 0 <= record["predicted_max_context"] - record["max_context"] <= 64
    assert any(not p["fits"] for p in record["probes"])
    for chunk, recorded in (("100", 100), ("0", None)):  # small chunks, then one pass: the same search
        again = bench(tmp_path, *args, "--resolution", "64", "--prefill-chunk", chunk)
        assert again["prefill_chunk"] == recorded and again["max_context"] == record["max_context"]
    assert main(["bench", *args, "--device", "cpu", "--prefill-chunk", "-1"]) == 2
    assert "--prefill-chunk" in capsys.readouterr().err


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.skipif(importlib.util.find_spec("mamba_ssm") is None, reason="needs mamba-ssm")
@pytest.mark.parametrize("preset", ["mini-1to7", "mini-1to7-m2", "mini-mamba-m2"])
def test_mamba_ssm_prefill_anchor_runs_on_cuda(preset):
    """mamba_ssm's model prefills through its own InferenceParams (KV cache and conv/SSM states allocated
    on first use), Mamba-1 and Mamba-2 layers, beside ours at the same contexts."""
    from harness.benchmarks.inference import run_prefill

    record = run_prefill(preset, [256, 1024], 1, torch.device("cuda"), repeats=1, against=["mamba_ssm"])
    assert all("skipped" not in a for a in record["anchors"]), record["anchors"]
    rows = [r for r in record["rows"] if r["implementation"] == "mamba_ssm"]
    assert [r["context"] for r in rows] == [256, 1024]
    assert all(r["tokens_per_s"] > 0 and r["ours_over"] > 0 and r["peak_bytes"] > 0 for r in rows)
