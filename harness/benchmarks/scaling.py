"""``ablate bench scale``: training throughput on 1, 2, 4, 8 ... processes of one node, DDP and FSDP2.

Weak scaling, as data-parallel training is used: every process trains ``batch`` sequences per step, so N
processes train N times the tokens of one. For each (strategy, N) the benchmark starts ``torchrun
--standalone --nproc-per-node N`` on this module's worker, which builds the preset with the trainer's own
set-up (:func:`harness.training.distributed.init_distributed` and :func:`~harness.training.distributed.
wrap_model`: DDP, or FSDP2 sharded per residual block), times ``steps`` AdamW steps after ``warmup`` on
random tokens (a different stream per rank), and reports from rank 0: tokens/s in all and per process, the
step time (the slowest rank's), the peak memory (the largest rank's) and, on CUDA, the share of the GPU's
time in communication kernels (NCCL, from the profiler over two more steps). Scaling efficiency is
per-process throughput at N over per-process throughput at 1, per strategy.

NCCL on GPUs, gloo on CPU processes (the CPU test of this module: two processes of a tiny model); a
configuration that fails (out of memory, not enough GPUs) becomes a row with the reason, never a crash of
the whole run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from harness.benchmarks.record import DEFAULT_DIR, bench_record, device_name, write_bench_json
from harness.config_errors import ConfigError

STRATEGIES = ("ddp", "fsdp")


def default_json_path(preset: str, batch: int, seq_len: int) -> Path:
    return DEFAULT_DIR / f"scale-{preset}-b{batch}x{seq_len}-{device_name().replace(' ', '_')}.json"


def _worker(args: argparse.Namespace) -> None:
    """One rank: build, wrap, time; rank 0 writes ``args.out``."""
    import torch.distributed as dist

    from harness.model import HybridLM
    from harness.presets import get_preset
    from harness.training.distributed import init_distributed, shutdown, wrap_model

    kind = "cuda" if torch.cuda.is_available() else "cpu"
    info = init_distributed(kind)
    device = torch.device(kind, info.local_rank) if kind == "cuda" else torch.device("cpu")
    cfg = get_preset(args.preset)
    torch.manual_seed(0)
    model = HybridLM(cfg).to(device)
    if kind == "cuda":
        model = model.to(torch.bfloat16)
    model = wrap_model(model, args.strategy, info, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=kind == "cuda")
    g = torch.Generator().manual_seed(1000 + info.rank)
    batches = [
        torch.randint(0, cfg.vocab_size, (args.batch, args.seq_len + 1), generator=g).to(device)
        for _ in range(args.warmup + args.steps + 2)
    ]

    def step(ids: torch.Tensor) -> None:
        logits = model(ids[:, :-1]).logits
        loss = F.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def sync() -> None:
        if kind == "cuda":
            torch.cuda.synchronize(device)
        if info.enabled:
            dist.barrier()

    for ids in batches[: args.warmup]:
        step(ids)
    sync()
    if kind == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for ids in batches[args.warmup : args.warmup + args.steps]:
        step(ids)
    sync()
    seconds = (time.perf_counter() - start) / args.steps
    comm_share = _comm_share(step, batches[-2:], device) if kind == "cuda" else None
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if kind == "cuda" else None
    stats = torch.tensor([seconds, peak or 0.0, comm_share or 0.0], dtype=torch.float64, device=device)
    if info.enabled:
        dist.all_reduce(stats, op=dist.ReduceOp.MAX)  # the slowest rank sets the pace
    if info.is_main:
        tokens = args.batch * args.seq_len * info.world_size
        row = {
            "processes": info.world_size,
            "step_s": float(stats[0]),
            "tokens_per_s": tokens / float(stats[0]),
            "tokens_per_s_per_process": tokens / float(stats[0]) / info.world_size,
            "peak_mem_gib": float(stats[1]) if peak is not None else None,
            "comm_share": float(stats[2]) if comm_share is not None else None,
        }
        Path(args.out).write_text(json.dumps(row))
    shutdown(info)


def _comm_share(step, batches: list[torch.Tensor], device: torch.device) -> float:
    """Share of the GPU's kernel time spent in NCCL kernels over ``batches``' steps."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for ids in batches:
            step(ids)
        torch.cuda.synchronize(device)
    events = [e for e in prof.key_averages() if e.self_device_time_total > 0]
    total = sum(e.self_device_time_total for e in events)
    nccl = sum(e.self_device_time_total for e in events if "nccl" in e.key.lower())
    return nccl / total if total else 0.0


def run_scaling_benchmark(
    preset: str,
    nprocs: Sequence[int] = (1, 2),
    strategies: Sequence[str] = ("ddp",),
    batch: int = 8,
    seq_len: int = 2048,
    steps: int = 10,
    warmup: int = 3,
    json_path: str | Path | None = None,
    timeout_s: float = 1800,
) -> dict:
    """Time every (strategy, processes) pair (see the module docstring); prints the table, writes the record
    and returns it."""
    from harness.presets import get_preset

    get_preset(preset)  # an unknown name fails here, before any process starts
    bad = [s for s in strategies if s not in STRATEGIES]
    if bad or not strategies:
        raise ConfigError(f"unknown strategy {bad}; choose from {', '.join(STRATEGIES)}", key="strategy")
    if not nprocs or min(nprocs) < 1:
        raise ConfigError(f"process counts must be >= 1, got {list(nprocs)}", key="nproc")
    if torch.cuda.is_available() and max(nprocs) > torch.cuda.device_count():
        raise ConfigError(
            f"{max(nprocs)} processes asked for, {torch.cuda.device_count()} GPUs here", key="nproc"
        )
    results = []
    for strategy in strategies:
        base = None
        for n in sorted(set(nprocs)):
            measured = _launch(preset, strategy, n, batch, seq_len, steps, warmup, timeout_s)
            row = {"strategy": strategy, **measured}
            if "tokens_per_s_per_process" in row:
                base = base or (row["tokens_per_s_per_process"] if n == min(nprocs) else None)
                row["efficiency"] = row["tokens_per_s_per_process"] / base if base else None
            results.append(row)
            _print_row(row)
    config = {"preset": preset, "batch_per_process": batch, "seq_len": seq_len, "steps": steps,
              "warmup": warmup, "nprocs": sorted(set(nprocs)), "strategies": list(strategies)}  # fmt: skip
    record = bench_record("scale", config, results)
    path = write_bench_json(record, json_path or default_json_path(preset, batch, seq_len))
    print(f"record: {path}")
    return record


def _launch(
    preset: str, strategy: str, n: int, batch: int, seq_len: int, steps: int, warmup: int, timeout_s: float
) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "row.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}"]
        cmd += ["-m", "harness.benchmarks.scaling", "--preset", preset, "--strategy", strategy]
        cmd += ["--batch", str(batch), "--seq-len", str(seq_len), "--steps", str(steps)]
        cmd += ["--warmup", str(warmup), "--out", str(out)]
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
        except subprocess.TimeoutExpired:
            return {"processes": n, "error": f"timed out after {timeout_s:.0f} s"}
        if done.returncode != 0 or not out.exists():
            tail = [line for line in done.stderr.splitlines() if line.strip()][-3:]
            return {"processes": n, "error": f"exit {done.returncode}: {' | '.join(tail)[-400:]}"}
        return json.loads(out.read_text())


def _print_row(row: dict) -> None:
    if "error" in row:
        print(f"{row['strategy']:<5} x{row['processes']:<2} failed: {row['error']}", flush=True)
        return
    mem = f"{row['peak_mem_gib']:.1f} GiB" if row["peak_mem_gib"] is not None else "-"
    comm = f"{100 * row['comm_share']:.0f}%" if row["comm_share"] is not None else "-"
    eff = f"{100 * row['efficiency']:.0f}%" if row.get("efficiency") is not None else "-"
    print(
        f"{row['strategy']:<5} x{row['processes']:<2} {row['tokens_per_s']:>12,.0f} tok/s  "
        f"{row['tokens_per_s_per_process']:>10,.0f} per process  efficiency {eff:>5}  step "
        f"{row['step_s'] * 1000:8.1f} ms  peak {mem}  communication {comm}",
        flush=True,
    )


def main(argv: Sequence[str] | None = None) -> None:
    """The worker's entry point (``python -m harness.benchmarks.scaling`` under torchrun)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", required=True)
    parser.add_argument("--strategy", choices=STRATEGIES, required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--seq-len", type=int, required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--warmup", type=int, required=True)
    parser.add_argument("--out", required=True)
    _worker(parser.parse_args(argv))


if __name__ == "__main__":
    main()
