"""``ablate bench prefill|decode|context`` at tiny scale on CPU: each runs in seconds and writes its JSON with
provenance (device, versions, commit) and the fields the GPU figures will be drawn from."""

import json

import pytest

from harness.benchmarks.inference import CONTEXT_PREFILL_CHUNK, parse_sizes
from harness.cli import main
from harness.config_loader import ConfigError

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
        for row in record["rows"]:
            assert row["tokens_per_s"] > 0 and row["peak_bytes"] is None  # no allocator statistics on CPU
            assert row["cache_bytes_allocated"] == row["kv_cache_bytes"] + row["mamba_state_bytes"]


def test_bench_decode_matches_transformers_tokens_and_records_skips(tmp_path, one_thread):
    args = ["decode", "--preset", "tiny-1to7", "--batch", "1,2", "--prompt", "8", "--new", "5"]
    record = bench(tmp_path, *args)
    assert record["cuda_graphs"] is False and record["transformers_skipped"] is None
    for row, batch in zip(record["rows"], (1, 2), strict=True):
        assert row["batch"] == batch and row["decode_tokens_per_s"] > 0 and row["ms_per_step"] > 0
        assert row["tokens_equal_share"] == 1.0  # transformers' generate, same weights, same greedy tokens
        assert row["speedup_vs_transformers"] > 0
    record = bench(
        tmp_path, "decode", "--preset", "tiny-mamba", "--batch", "1", "--prompt", "8", "--new", "2"
    )
    assert record["transformers_skipped"]  # no attention layer: transformers' Jamba cannot hold it
    assert "speedup_vs_transformers" not in record["rows"][0]


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
