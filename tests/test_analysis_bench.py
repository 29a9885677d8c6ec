"""``ablate report --bench DIR``: the committed H200 records and a synthetic folder (anchors, an
out-of-memory row, a pure-Mamba context search, the uncached check) render to README.md and figures; a
malformed record is refused naming its file, key and value."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ablate.cli import main
from analysis import fig_bench
from analysis.bench_records import load_records
from analysis.bench_report import build_bench_report
from harness.config_errors import ConfigError

COMMITTED = Path(__file__).resolve().parents[1] / "results" / "bench"
PROVENANCE = {
    "device": "NVIDIA H200",
    "versions": {"torch": "2.11.0", "transformers": "5.17.0"},
    "commit": "0" * 40,
    "dirty": False,
    "time": "2026-11-29T16:00:00+00:00",
}


def prefill_row(implementation: str, context: int, tokens_per_s: float, **extra) -> dict:
    return {
        "implementation": implementation,
        "context": context,
        "batch": 1,
        "weights_bytes": 2**30,
        "kv_cache_bytes": context * 1024,
        "mamba_state_bytes": 2**20,
        "seconds": context / tokens_per_s,
        "tokens_per_s": tokens_per_s,
        "peak_bytes": 2**31 + context * 4096,
        **extra,
    }


def synthetic(folder: Path) -> Path:
    folder.mkdir()
    common = {**PROVENANCE, "dtype": "torch.bfloat16"}
    prefill = {
        "kind": "prefill",
        "preset": "tiny-1to7",
        **common,
        "repeats": 3,
        "against": ["transformers", "llama"],
        "anchors": [
            {"implementation": "transformers", "label": "transformers JambaForCausalLM", "settings": {}},
            {"implementation": "llama", "skipped": "the transformers package cannot be imported"},
        ],
        "rows": [
            prefill_row("ours", 8192, 100_000.0),
            prefill_row("ours", 32768, 90_000.0),
            prefill_row("transformers", 8192, 50_000.0, ours_over=2.0),
            {**prefill_row("transformers", 32768, 1.0), "error": "out of memory"},
        ],
    }
    decode_row = {
        "batch": 2,
        "prompt": 64,
        "new": 8,
        "ms_per_step": 3.0,
        "decode_tokens_per_s": 600.0,
        "end_to_end_tokens_per_s": 500.0,
        "transformers_end_to_end_tokens_per_s": 25.0,
        "speedup_vs_transformers": 20.0,
        "tokens_equal_share": 0.25,
        "first_divergence_transformers": [2, None],
        "tokens_equal_uncached_share": 1.0,
        "first_divergence_uncached": [None, None],
    }
    decode = {
        "kind": "decode",
        "preset": "tiny-1to7",
        **common,
        "cuda_graphs": True,
        "transformers_skipped": None,
        "rows": [decode_row],
    }
    context = {
        "kind": "context",
        "preset": "tiny-mamba",
        **common,
        "budget_bytes": 12 * 2**30,
        "criterion": "the prefill ran without running out of CUDA memory",
        "max_context": 65536,
        "hit_limit": True,
        "predicted_max_context": None,
        "probes": [{"context": 65536, "fits": True, "peak_bytes": 1, "cache_bytes": 1}],
    }
    for name, record in (("prefill", prefill), ("decode", decode), ("context", context)):
        (folder / f"{name}.json").write_text(json.dumps(record))
    return folder


def test_the_committed_records_render(tmp_path):
    records = load_records(COMMITTED)
    assert {r.kind for r in records} == {"prefill", "decode", "context", "train", "scan"}
    implementations = {
        row.get("implementation", "ours") for r in records if r.kind == "prefill" for row in r.rows
    }
    assert implementations == {"ours", "transformers", "llama"}
    readme = build_bench_report(COMMITTED, out=tmp_path / "report")
    text = readme.read_text()
    for heading in ("## Records", "## Prefill", "## Decode", "## Longest context", "## Training throughput"):
        assert heading in text
    assert "| 128K | 1.3b-mamba | ours | 141,277 |" in text
    assert "| 128K | 1.3b-1to7 | llama | 34,784 | 3.44 |" in text
    assert "| 1.3b-1to7 (CUDA graphs) | 16 | 2048 + 256 | 5.46 | 2,930 |" in text
    assert "| 1.3b-1to7 | 8,192-token chunks | 12.00 | 1,441,792 | 1,673,812 |" in text
    assert "| 1.3b-1to7 (batch 8 x 2048) | ours (HybridLM, fused) | 1.299B | 44,463 |" in text
    assert "| 1.3b-1to7 (batch 8 x 2048) | transformers LlamaForCausalLM |" in text
    layer = "1.3b-1to7: 4096 x 16, batch 8 x 2048, bfloat16"
    assert f"| {layer} | triton | 5.36 | 18.95 | 24.36 | 672,620 | 0.38x |" in text
    assert sorted(p.name for p in (readme.parent / "figures").iterdir()) == [
        "context.png",
        "context.svg",
        "prefill.png",
        "prefill.svg",
        "train.png",
        "train.svg",
    ]
    speed = fig_bench.prefill_throughput(records).axes[0]
    lines = {line.get_label(): line for line in speed.get_lines()}
    assert list(lines) == [
        "1.3b-1to7", "1.3b-1to7 transformers", "1.3b-1to7 llama", "1.3b-attention",
        "1.3b-attention transformers", "1.3b-attention llama", "1.3b-mamba", "1.3b-mamba llama",
    ]  # fmt: skip
    # an arm's anchors take its colour and their own line style
    assert (
        lines["1.3b-1to7"].get_color()
        == lines["1.3b-1to7 llama"].get_color()
        != lines["1.3b-mamba"].get_color()
    )
    assert lines["1.3b-1to7"].get_linestyle() != lines["1.3b-1to7 llama"].get_linestyle()
    assert "12.00 GiB" in fig_bench.max_context(records).axes[0].get_title()
    train, memory = fig_bench.train_throughput(records).axes
    rows = [row for r in records if r.kind == "train" for row in r.rows if "skipped" not in row]
    assert len(train.patches) == len(memory.patches) == len(rows)
    texts = [t.get_text() for t in train.texts]
    assert " 29.9K   ours / it 1.49" in texts  # transformers' Jamba beside the 1:7 arm
    assert "1.3b-1to7, batch 8 x 2048, torch.compile" in texts and "1.3b-1to7-moe, batch 2 x 2048" in texts
    labels = [t.get_text() for t in train.get_yticklabels()]
    assert labels.count("ours (fused)") == 6 and "ours (fused, MoE loop)" in labels


def test_a_synthetic_folder_with_anchors_renders_every_row(tmp_path):
    folder = synthetic(tmp_path / "bench")
    readme = build_bench_report(folder)
    assert readme == folder / "report" / "README.md"
    text = readme.read_text()
    assert "| 8K | tiny-1to7 | transformers | 50,000 | 2.00 |" in text
    assert "| 32K | tiny-1to7 | transformers | out of memory |" in text
    assert "- tiny-1to7: llama not timed: the transformers package cannot be imported" in text
    assert "| 25.0% | 2 (1/2 rows) | 100.0% | none |" in text
    assert "| tiny-mamba | one pass | 12.00 | >= 65,536 | unbounded (no KV cache) |" in text
    assert "No `train` records." in text
    records = load_records(folder)  # the report folder inside is not read as a record
    speed = fig_bench.prefill_throughput(records).axes[0]
    assert [line.get_label() for line in speed.get_lines()] == ["tiny-1to7", "tiny-1to7 transformers"]
    assert len(speed.get_lines()[1].get_xdata()) == 1  # the out-of-memory context is not drawn
    before = readme.read_text()
    build_bench_report(folder)  # re-rendering replaces the folder with the same content
    assert readme.read_text() == before


def test_chunked_prefill_records_say_so_beside_one_pass_ones(tmp_path):
    folder = synthetic(tmp_path / "bench")
    for name in ("prefill", "context"):
        record = json.loads((folder / f"{name}.json").read_text())
        (folder / f"{name}-chunked.json").write_text(json.dumps({**record, "prefill_chunk": 8192}))
    text = build_bench_report(folder).read_text()
    assert "| 8K | tiny-1to7 | ours, 8,192-token chunks | 100,000 |" in text
    assert "| 8K | tiny-1to7 | ours | 100,000 |" in text
    assert "| tiny-mamba | 8,192-token chunks | 12.00 |" in text
    assert "| tiny-mamba | one pass | 12.00 |" in text
    records = load_records(folder)
    ticks = [t.get_text() for t in fig_bench.max_context(records).axes[0].get_xticklabels()]
    assert ticks == ["tiny-mamba\n8,192-token chunks", "tiny-mamba\none pass"]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: "{not json", "not a readable JSON benchmark record"),
        (lambda r: {**r, "kind": "speed"}, "key 'kind': unknown benchmark kind \"speed\""),
        (lambda r: {k: v for k, v in r.items() if k != "device"}, "key 'device': missing"),
        (
            lambda r: {**r, "rows": [{**r["rows"][0], "tokens_per_s": "fast"}]},
            "key 'rows[0].tokens_per_s': expected an integer or a number, got \"fast\"",
        ),
        (
            lambda r: {**r, "rows": [{**r["rows"][0], "context": True}]},
            "key 'rows[0].context': expected an integer, got true",
        ),
    ],
)
def test_a_malformed_record_is_refused_naming_its_file(tmp_path, capsys, edit, message):
    folder = tmp_path / "bench"
    folder.mkdir()
    shutil.copy(COMMITTED / "prefill-1.3b-1to7.json", folder)
    bad = edit(json.loads((COMMITTED / "prefill-1.3b-mamba.json").read_text()))
    (folder / "bad.json").write_text(bad if isinstance(bad, str) else json.dumps(bad))
    with pytest.raises(ConfigError, match="bad.json") as e:
        load_records(folder)
    assert message in str(e.value)
    assert main(["report", "--bench", str(folder)]) == 2
    assert "bad.json" in capsys.readouterr().err
    assert not (folder / "report").exists()


def test_report_takes_runs_or_bench_records(tmp_path, capsys):
    assert main(["report", "--bench", str(tmp_path)]) == 2
    assert "no benchmark records" in capsys.readouterr().err
    assert main(["report", "runs/x", "--bench", str(COMMITTED)]) == 2
    assert main(["report"]) == 2
    assert "--bench DIR" in capsys.readouterr().err
