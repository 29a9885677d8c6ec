"""``ablate bench scale`` on CPU processes (gloo): torchrun starts the worker, FSDP2 trains a tiny model on
two processes, rank 0 reports the slowest rank's step, and the record holds the row; the report draws a
record of several counts with their efficiencies. Bad arguments are one clear error before any process
starts."""

from __future__ import annotations

import json

import pytest

from ablate.cli import main
from harness.benchmarks.scaling import run_scaling_benchmark
from harness.config_errors import ConfigError


@pytest.mark.slow
def test_two_cpu_processes_train_with_fsdp2_and_the_record_says_how_it_scaled(tmp_path, capsys):
    path = tmp_path / "scale.json"
    argv = ["bench", "scale", "--preset", "tiny-1to7", "--nproc", "2", "--strategy", "fsdp", "--batch", "2"]
    assert main(argv + ["--seq-len", "64", "--steps", "2", "--warmup", "1", "--json", str(path)]) == 0
    record = json.loads(path.read_text())
    assert record["kind"] == "scale" and record["device"] == "cpu"
    (row,) = record["results"]
    assert "error" not in row, row
    assert (row["strategy"], row["processes"], row["efficiency"]) == ("fsdp", 2, 1.0)  # its own baseline
    assert row["tokens_per_s"] == pytest.approx(2 * 2 * 64 / row["step_s"])
    assert row["tokens_per_s_per_process"] == pytest.approx(row["tokens_per_s"] / 2)
    assert "efficiency" in capsys.readouterr().out


def test_bad_scaling_arguments_fail_before_any_process_starts(tmp_path):
    with pytest.raises(ConfigError, match="strategy"):
        run_scaling_benchmark("tiny-1to7", strategies=["zero3"], json_path=tmp_path / "x.json")
    with pytest.raises(ConfigError, match="process counts"):
        run_scaling_benchmark("tiny-1to7", nprocs=[0], json_path=tmp_path / "x.json")
    with pytest.raises(ConfigError, match="unknown preset"):
        run_scaling_benchmark("tiny-2to9", json_path=tmp_path / "x.json")
    assert main(["bench", "scale", "--nproc", "two"]) == 2


def test_the_bench_report_draws_a_scale_record(tmp_path):
    """A scale record (as the run above writes it) is read strictly and gets its table and figure."""
    from analysis.bench_report import build_bench_report
    from harness.benchmarks.record import bench_record, write_bench_json

    def row(n: int) -> dict:
        step = 0.1 * (1 + n / 20)  # a little slower per step as processes are added
        per_process = 8192 / step
        return {"strategy": "ddp", "processes": n, "step_s": step, "tokens_per_s": n * per_process,
                "tokens_per_s_per_process": per_process, "peak_mem_gib": 20.0, "comm_share": 0.05 * n,
                "efficiency": 1.05 / (1 + n / 20)}  # fmt: skip

    failed = {"strategy": "fsdp", "processes": 8, "error": "exit 1: CUDA OOM"}
    rows = [row(n) for n in (1, 2, 4, 8)] + [failed]
    config = {"preset": "1.3b-1to7", "batch_per_process": 4, "seq_len": 2048, "nprocs": [1, 2, 4, 8]}
    write_bench_json(bench_record("scale", config, rows), tmp_path / "bench" / "scale.json")
    page = (build_bench_report(tmp_path / "bench", tmp_path / "report").parent / "README.md").read_text()
    assert "Scaling over the GPUs of one node" in page and "fsdp x8 failed: exit 1: CUDA OOM" in page
    assert "| 1.3b-1to7 (batch 4 x 2048 per process) | ddp | 8 |" in page
    assert any(p.name.startswith("scale") for p in (tmp_path / "report").rglob("*.png"))
