"""``ablate bench scale`` on CPU processes (gloo): torchrun starts the worker, FSDP2 (or DDP) trains a tiny
model on two processes, rank 0 reports, and the record holds one row per (strategy, processes) with the
efficiency against the smallest count. Bad arguments are one clear error before any process starts."""

from __future__ import annotations

import json

import pytest

from ablate.cli import main
from harness.benchmarks.scaling import run_scaling_benchmark
from harness.config_errors import ConfigError


@pytest.mark.slow
def test_two_cpu_processes_train_with_fsdp2_and_the_record_says_how_it_scaled(tmp_path, capsys):
    path = tmp_path / "scale.json"
    argv = ["bench", "scale", "--preset", "tiny-1to7", "--nproc", "1,2", "--strategy", "fsdp", "--batch", "2"]
    assert main(argv + ["--seq-len", "64", "--steps", "2", "--warmup", "1", "--json", str(path)]) == 0
    record = json.loads(path.read_text())
    assert record["kind"] == "scale" and record["device"] == "cpu"
    rows = record["results"]
    assert [(r["strategy"], r["processes"]) for r in rows] == [("fsdp", 1), ("fsdp", 2)], rows
    assert all("failed" not in r for r in rows), rows
    assert rows[0]["efficiency"] == 1.0 and rows[1]["efficiency"] > 0
    assert rows[1]["tokens_per_s"] == pytest.approx(2 * 2 * 64 / rows[1]["step_s"])
    assert "efficiency" in capsys.readouterr().out


def test_bad_scaling_arguments_fail_before_any_process_starts(tmp_path):
    with pytest.raises(ConfigError, match="strategy"):
        run_scaling_benchmark("tiny-1to7", strategies=["zero3"], json_path=tmp_path / "x.json")
    with pytest.raises(ConfigError, match="process counts"):
        run_scaling_benchmark("tiny-1to7", nprocs=[0], json_path=tmp_path / "x.json")
    with pytest.raises(ConfigError, match="unknown preset"):
        run_scaling_benchmark("tiny-2to9", json_path=tmp_path / "x.json")
    assert main(["bench", "scale", "--nproc", "two"]) == 2
