"""Selective-scan speed: the compiled ``cpu`` backend against the sequential ``reference`` (CPU), and
mamba_ssm's kernel against our Triton one (GPU: :func:`run_layer_scan_benchmark`), fwd+bwd.

Both backends are timed in the same process, on the same inputs, interleaved repeat by repeat. The table
times the scan itself (``scan_reference`` against ``scan_cpu``: what ``backend=`` chooses); one more line
times the whole dispatcher call a Mamba layer makes (``selective_scan`` with D, z, delta_bias,
delta_softplus and the last state), whose extra elementwise torch ops are the same for both backends.
Timings are the best of ``repeats`` after a warm-up call per backend; the cpu backend's first call (numba
compile, or loading the compiled kernels from the cache) is timed and reported separately. Correctness
rides along: the largest absolute difference between the two backends in the outputs and every gradient.

    ablate bench scan --preset tiny-1to7 --batch 8 --seq-len 256
    ablate bench scan --device cuda --preset 1.3b-1to7 --batch 8 --seq-len 2048   # cuda vs triton, bf16
"""

from __future__ import annotations

import math
import os
import time

import torch
import torch.nn.functional as F
from torch import Tensor

from harness.config_errors import ConfigError
from harness.kernels.scan_cpu import scan_cpu
from harness.kernels.selective_scan import scan_reference, selective_scan

BACKENDS = ("reference", "cpu")
SCAN_FNS = {"reference": scan_reference, "cpu": scan_cpu}
SCAN_INPUTS = ("u", "delta", "A", "B", "C")
LAYER_INPUTS = (*SCAN_INPUTS, "D", "z", "delta_bias")


def _inputs(d_inner: int, d_state: int, batch: int, seq_len: int, seed: int) -> dict[str, torch.Tensor]:
    """Inputs shaped and scaled like a freshly initialised Mamba-1 layer (S4D-real A, dt in [1e-3, 0.1]).

    ``delta_raw`` and ``delta_bias`` feed the full layer call (softplus inside); ``delta`` is the positive
    step size they produce, which the scan alone consumes.
    """
    g = torch.Generator().manual_seed(seed)
    dt = torch.exp(torch.rand(d_inner, generator=g) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
    delta_bias = dt + torch.log(-torch.expm1(-dt))  # inverse softplus of dt
    delta_raw = torch.randn(batch, d_inner, seq_len, generator=g) * 0.5
    return {
        "u": torch.randn(batch, d_inner, seq_len, generator=g),
        "delta": F.softplus(delta_raw + delta_bias[None, :, None]),
        "delta_raw": delta_raw,
        "A": -torch.arange(1, d_state + 1, dtype=torch.float32).repeat(d_inner, 1),
        "B": torch.randn(batch, d_state, seq_len, generator=g),
        "C": torch.randn(batch, d_state, seq_len, generator=g),
        "D": torch.ones(d_inner),
        "z": torch.randn(batch, d_inner, seq_len, generator=g),
        "delta_bias": delta_bias,
    }


def _fwd_bwd(
    backend: str, inputs: dict[str, torch.Tensor], dy: torch.Tensor, dlast: torch.Tensor, layer: bool
):
    """One timed forward and backward; returns (fwd_s, bwd_s, y, last_state, grads).

    ``layer=False`` times the scan alone (inputs u, delta, A, B, C, with delta used as given);
    ``layer=True`` times the full ``selective_scan`` call with D, z, delta_bias and softplus.
    """
    names = LAYER_INPUTS if layer else SCAN_INPUTS
    leaves = {k: inputs[k].detach().clone().requires_grad_() for k in names}
    if layer:
        leaves["delta"] = inputs["delta_raw"].detach().clone().requires_grad_()
    t0 = time.perf_counter()
    if layer:
        y, last = selective_scan(
            *(leaves[k] for k in SCAN_INPUTS),
            D=leaves["D"],
            z=leaves["z"],
            delta_bias=leaves["delta_bias"],
            delta_softplus=True,
            return_last_state=True,
            backend=backend,
        )
    else:
        y, last = SCAN_FNS[backend](*(leaves[k] for k in SCAN_INPUTS))
    t1 = time.perf_counter()
    torch.autograd.backward((y, last), (dy, dlast))
    t2 = time.perf_counter()
    grads = {k: leaves[k].grad for k in names}
    return t1 - t0, t2 - t1, y.detach(), last.detach(), grads


def _summarise(times: list[tuple[float, float]], tokens: int) -> dict:
    fwd_s = min(t[0] for t in times)
    bwd_s = min(t[1] for t in times)
    total_s = min(t[0] + t[1] for t in times)
    return {
        "fwd_ms": fwd_s * 1e3,
        "bwd_ms": bwd_s * 1e3,
        "total_ms": total_s * 1e3,
        "tokens_per_s": tokens / total_s,
    }


def format_scan_benchmark(result: dict) -> str:
    """The result of :func:`run_scan_benchmark` as a small text table."""
    cfg = result["config"]
    lines = [
        f"selective scan fwd+bwd: batch {cfg['batch']}, seq_len {cfg['seq_len']}, d_inner {cfg['d_inner']}, "
        f"d_state {cfg['d_state']}, fp32, {result['threads']} thread(s), best of {cfg['repeats']}",
        f"{'backend':<10} {'fwd ms':>9} {'bwd ms':>9} {'fwd+bwd ms':>11} {'tokens/s':>11} {'speedup':>8}",
    ]
    for row in result["rows"]:
        lines.append(
            f"{row['backend']:<10} {row['fwd_ms']:>9.2f} {row['bwd_ms']:>9.2f} {row['total_ms']:>11.2f} "
            f"{row['tokens_per_s']:>11,.0f} {row['speedup']:>7.1f}x"
        )
    layer = result["layer_rows"]
    lines.append(
        "full selective_scan call (+ D, z, delta_bias, softplus), fwd+bwd ms: "
        + ", ".join(f"{r['backend']} {r['total_ms']:.2f}" for r in layer)
        + f" -> {result['layer_speedup']:.1f}x"
    )
    lines.append(f"cpu backend first call (numba compile or cache load): {result['cpu_first_call_s']:.2f} s")
    diffs = ", ".join(f"{k} {v:.1e}" for k, v in result["max_abs_diff"].items())
    lines.append(f"max |cpu - reference| (full call): {diffs}")
    if result.get("loadavg") is not None:
        lines.append(f"load average (1 min): {result['loadavg']:.2f} (other processes skew timings)")
    return "\n".join(lines)


def run_scan_benchmark(
    d_inner: int = 128,
    d_state: int = 16,
    batch: int = 8,
    seq_len: int = 256,
    repeats: int = 3,
    threads: int | None = None,
    seed: int = 0,
    verbose: bool = True,
) -> dict:
    """Time fwd+bwd of the ``reference`` and ``cpu`` scan backends side by side; print and return a table.

    ``threads`` sets ``torch.set_num_threads`` for the run (both backends use it: the cpu backend splits its
    work over that many threads); None keeps the current setting. Returns a dict with ``config``,
    ``threads``, ``rows`` (per backend: fwd_ms, bwd_ms, total_ms, tokens_per_s, speedup vs reference; the
    scan alone), ``speedup`` (cpu over reference, fwd+bwd), ``layer_rows`` and ``layer_speedup`` (the same
    for the full dispatcher call), ``cpu_first_call_s``, ``max_abs_diff`` (outputs and all grads of the full
    call) and ``loadavg`` (1-minute load average, where the OS reports one).
    """
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        inputs = _inputs(d_inner, d_state, batch, seq_len, seed)
        g = torch.Generator().manual_seed(seed + 1)
        dy = torch.randn(batch, d_inner, seq_len, generator=g)
        dlast = torch.randn(batch, d_inner, d_state, generator=g)

        t0 = time.perf_counter()
        _fwd_bwd("cpu", inputs, dy, dlast, layer=False)  # compiles the numba kernels, or loads the cache
        first_call_s = time.perf_counter() - t0
        for layer in (False, True):  # warm-up
            for backend in BACKENDS:
                _fwd_bwd(backend, inputs, dy, dlast, layer=layer)

        times: dict[tuple[str, bool], list[tuple[float, float]]] = {}
        results = {}
        for _ in range(repeats):
            for layer in (False, True):
                for backend in BACKENDS:
                    fwd_s, bwd_s, y, last, grads = _fwd_bwd(backend, inputs, dy, dlast, layer=layer)
                    times.setdefault((backend, layer), []).append((fwd_s, bwd_s))
                    if layer:
                        results[backend] = (y, last, grads)

        tokens = batch * seq_len
        rows, layer_rows = [], []
        for backend in BACKENDS:
            rows.append({"backend": backend, **_summarise(times[(backend, False)], tokens)})
            layer_rows.append({"backend": backend, **_summarise(times[(backend, True)], tokens)})
        for table in (rows, layer_rows):
            for row in table:
                row["speedup"] = table[0]["total_ms"] / row["total_ms"]

        (y_r, last_r, g_r), (y_c, last_c, g_c) = results["reference"], results["cpu"]
        max_abs_diff = {
            "y": (y_c - y_r).abs().max().item(),
            "last_state": (last_c - last_r).abs().max().item(),
        }
        for k in LAYER_INPUTS:
            max_abs_diff[f"d{k}"] = (g_c[k] - g_r[k]).abs().max().item()

        result = {
            "config": {
                "d_inner": d_inner,
                "d_state": d_state,
                "batch": batch,
                "seq_len": seq_len,
                "repeats": repeats,
            },
            "threads": torch.get_num_threads(),
            "rows": rows,
            "speedup": rows[1]["speedup"],
            "layer_rows": layer_rows,
            "layer_speedup": layer_rows[1]["speedup"],
            "cpu_first_call_s": first_call_s,
            "max_abs_diff": max_abs_diff,
            "loadavg": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        }
    finally:
        torch.set_num_threads(old_threads)
    if verbose:
        print(format_scan_benchmark(result))
    return result


GPU_BACKENDS = ("cuda", "triton")


def run_layer_scan_benchmark(
    d_inner: int,
    d_state: int,
    batch: int = 8,
    seq_len: int = 2048,
    repeats: int = 10,
    dtype: torch.dtype = torch.bfloat16,
    backends: tuple[str, ...] = GPU_BACKENDS,
    device: str = "cuda",
    seed: int = 0,
    verbose: bool = True,
) -> dict:
    """Time the full Mamba-layer scan call (``selective_scan`` with D, z, delta_bias and softplus), fwd and
    bwd, for each backend side by side: on a GPU mamba_ssm's kernel (``cuda``) first, ours against it.

    Inputs as a Mamba layer of width ``d_inner`` makes them (u, delta and z in ``dtype``, channel-major
    views of (batch, L, d_inner) memory as in harness/model/mamba.py). Each repeat runs every backend once,
    interleaved, timed by CUDA events (by the wall clock on a CPU); the best repeat is reported. Per
    backend: fwd / bwd / total ms, tokens/s, speed-up over the first backend, the first call's seconds
    (Triton compiles then), the peak CUDA memory above the inputs, and the largest difference from the
    first backend in the output and every gradient (relative to that tensor's largest magnitude). On a CPU
    (``reference`` against ``triton`` under Triton's interpreter) it is a test of this code, not a timing.
    """
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("no CUDA device here; leave --device out to time the CPU scans", key="device")
    cuda = dev.type == "cuda"
    inputs = {k: v.to(dev) for k, v in _inputs(d_inner, d_state, batch, seq_len, seed).items()}
    for name in ("u", "delta_raw", "z"):  # (batch, L, d_inner) memory seen channel-major
        inputs[name] = inputs[name].transpose(1, 2).contiguous().transpose(1, 2).to(dtype)
    for name in ("B", "C"):
        inputs[name] = inputs[name].to(dtype)
    gen = torch.Generator(dev).manual_seed(seed + 1)
    dy = torch.randn(batch, d_inner, seq_len, device=dev, generator=gen).to(dtype)

    def call(backend: str) -> tuple[float, float, Tensor, dict[str, Tensor]]:
        leaves = {k: inputs["delta_raw" if k == "delta" else k].detach().clone().requires_grad_()
                  for k in LAYER_INPUTS}  # fmt: skip
        marks = [_Mark(cuda) for _ in range(3)]
        marks[0].record()
        y = selective_scan(
            *(leaves[k] for k in SCAN_INPUTS), D=leaves["D"], z=leaves["z"],
            delta_bias=leaves["delta_bias"], delta_softplus=True, backend=backend,
        )  # fmt: skip
        marks[1].record()
        y.backward(dy)
        marks[2].record()
        grads = {k: v.grad for k, v in leaves.items()}
        return marks[0].ms_to(marks[1]), marks[1].ms_to(marks[2]), y.detach(), grads

    first_s, peak_gib, results = {}, {}, {}
    for backend in backends:
        if cuda:
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        _, _, y, grads = call(backend)
        first_s[backend] = time.perf_counter() - t0
        peak_gib[backend] = (torch.cuda.max_memory_allocated() - base) / 2**30 if cuda else None
        results[backend] = (y, grads)
    times: dict[str, list[tuple[float, float]]] = {b: [] for b in backends}
    for _ in range(repeats):
        for backend in backends:
            fwd_ms, bwd_ms, _, _ = call(backend)
            times[backend].append((fwd_ms / 1e3, bwd_ms / 1e3))

    tokens = batch * seq_len
    y0, g0 = results[backends[0]]
    rows = []
    for backend in backends:
        row = {"backend": backend, **_summarise(times[backend], tokens), "first_call_s": first_s[backend]}
        y, grads = results[backend]
        diffs = {"y": y, **{f"d{k}": grads[k] for k in LAYER_INPUTS}}
        refs = {"y": y0, **{f"d{k}": g0[k] for k in LAYER_INPUTS}}
        row["max_rel_diff"] = {k: _relative_difference(v, refs[k]) for k, v in diffs.items()}
        row["peak_gib"] = peak_gib[backend]
        rows.append(row)
    for row in rows:
        row["speedup"] = rows[0]["total_ms"] / row["total_ms"]
    result = {
        "config": {
            "d_inner": d_inner,
            "d_state": d_state,
            "batch": batch,
            "seq_len": seq_len,
            "repeats": repeats,
            "dtype": str(dtype).removeprefix("torch."),
        },  # fmt: skip
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "rows": rows,
    }
    if verbose:
        print(format_layer_scan_benchmark(result))
    return result


class _Mark:
    """A point in time on the GPU's stream (a CUDA event) or, on a CPU, on the wall clock."""

    def __init__(self, cuda: bool):
        self.event = torch.cuda.Event(enable_timing=True) if cuda else None
        self.t = 0.0

    def record(self) -> None:
        if self.event is not None:
            self.event.record()
        else:
            self.t = time.perf_counter()

    def ms_to(self, later: _Mark) -> float:
        if self.event is not None:
            later.event.synchronize()
            return self.event.elapsed_time(later.event)
        return (later.t - self.t) * 1e3


def _relative_difference(a: Tensor, b: Tensor) -> float:
    """max |a - b| over max |b|."""
    return ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp(min=1e-12)).item()


def format_layer_scan_benchmark(result: dict) -> str:
    """The result of :func:`run_gpu_scan_benchmark` as a small text table."""
    cfg = result["config"]
    lines = [
        f"selective scan, full layer call fwd+bwd on {result['device']}: batch {cfg['batch']}, seq_len "
        f"{cfg['seq_len']}, d_inner {cfg['d_inner']}, d_state {cfg['d_state']}, {cfg['dtype']}, best of "
        f"{cfg['repeats']}",
        f"{'backend':<8} {'fwd ms':>8} {'bwd ms':>8} {'total ms':>9} {'tokens/s':>12} {'vs first':>8} "
        f"{'1st call s':>10} {'peak GiB':>8}  largest relative difference from the first",
    ]
    for row in result["rows"]:
        worst = max(row["max_rel_diff"].items(), key=lambda kv: kv[1])
        peak = "-" if row["peak_gib"] is None else f"{row['peak_gib']:.2f}"
        lines.append(
            f"{row['backend']:<8} {row['fwd_ms']:>8.2f} {row['bwd_ms']:>8.2f} {row['total_ms']:>9.2f} "
            f"{row['tokens_per_s']:>12,.0f} {row['speedup']:>7.2f}x {row['first_call_s']:>10.2f} "
            f"{peak:>8}  {worst[0]} {worst[1]:.1e}"
        )
    return "\n".join(lines)
