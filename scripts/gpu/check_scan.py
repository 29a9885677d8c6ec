"""Check the CUDA selective scan against the reference loop, on the GPU machine.

    PYTHONPATH=. python3 scripts/gpu/check_scan.py            # after bash scripts/gpu/build_kernels.sh

Compares ``harness.kernels.selective_scan.selective_scan(..., backend="cuda")`` (mamba_ssm's fused kernel)
with ``backend="reference"`` (sequential fp32 loop) on identical CUDA inputs: the output, the last state and
the gradients of every differentiable input. Prints max abs error, max |reference| and the norm-wise relative
error (max abs error / max |reference|) per tensor; exits 1 if an fp32 case exceeds --rtol. bf16 cases are
reported for information (the reference computes in fp32 from the same bf16 inputs). Unless --no-bench, it
also times the CUDA scan's forward+backward at a layer-sized shape. --dry-cpu exercises this script on a
machine without a GPU (backend 'cpu' against 'reference'; 'reference' against itself while
harness/kernels/scan_cpu.py does not exist; no bench).
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import time

import torch
import torch.nn.functional as F

from harness.kernels import selective_scan as ss

DEVICE, BACKEND = "cuda", "cuda"  # --dry-cpu: "cpu", "cpu"


def sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def make_inputs(batch, d_inner, d_state, seqlen, dtype, full, seed=0):
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g)

    # S4D-real style A (as Mamba initialises it: -[1..N]) with some jitter; dt in [1e-3, 1e-1].
    A = -torch.exp(
        torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(d_inner, 1)
        + 0.1 * randn(d_inner, d_state)
    )
    dt = torch.exp(torch.rand(d_inner, generator=g) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
    x = {
        "u": randn(batch, d_inner, seqlen),
        "A": A,
        "B": randn(batch, d_state, seqlen),
        "C": randn(batch, d_state, seqlen),
    }
    if full:
        x["delta"] = 0.5 * randn(batch, d_inner, seqlen)  # pre-bias, pre-softplus
        x["D"] = randn(d_inner)
        x["z"] = randn(batch, d_inner, seqlen)
        x["delta_bias"] = dt + torch.log(-torch.expm1(-dt))  # inverse softplus, as in Mamba's dt_proj init
    else:
        bias = dt + torch.log(-torch.expm1(-dt))
        x["delta"] = F.softplus(0.5 * randn(batch, d_inner, seqlen) + bias[:, None])
    grad_out = randn(batch, d_inner, seqlen)
    # Kernel contract: A, D, delta_bias stay fp32; activations take the working dtype.
    for k in ("u", "delta", "B", "C", "z"):
        if k in x:
            x[k] = x[k].to(dtype)
    return {k: v.to(DEVICE) for k, v in x.items()}, grad_out.to(DEVICE)


def run_backend(backend, inputs, grad_out, full):
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in inputs.items()}
    kwargs = dict(delta_softplus=True, return_last_state=True) if full else {}
    out = ss.selective_scan(
        leaves["u"],
        leaves["delta"],
        leaves["A"],
        leaves["B"],
        leaves["C"],
        D=leaves.get("D"),
        z=leaves.get("z"),
        delta_bias=leaves.get("delta_bias"),
        backend=backend,
        **kwargs,
    )
    y, last = out if full else (out, None)
    assert isinstance(y, torch.Tensor) and y.shape == inputs["u"].shape and y.dtype == inputs["u"].dtype, (
        backend,
        type(y),
        getattr(y, "shape", None),
        getattr(y, "dtype", None),
    )
    (y.float() * grad_out).sum().backward()  # the last state's gradient is not part of the kernel's contract
    res = {"out": y.detach().float()}
    if last is not None:
        res["last_state"] = last.detach().float()
    for k, v in leaves.items():
        res[f"d{k}"] = v.grad.float() if v.grad is not None else None
    return res


def compare(name, dtype, shape, full, rtol):
    batch, d_inner, d_state, seqlen = shape
    inputs, grad_out = make_inputs(batch, d_inner, d_state, seqlen, dtype, full)
    sync()
    t0 = time.perf_counter()
    ref = run_backend("reference", inputs, grad_out, full)
    sync()
    t1 = time.perf_counter()
    got = run_backend(BACKEND, inputs, grad_out, full)
    sync()
    t2 = time.perf_counter()
    print(
        f"\n== {name}: {str(dtype).removeprefix('torch.')} batch={batch} d_inner={d_inner} "
        f"d_state={d_state} L={seqlen} {'D,z,delta_bias,softplus,last_state' if full else 'bare'}  "
        f"(reference fwd+bwd {t1 - t0:.2f} s, {BACKEND} {t2 - t1:.3f} s incl. first call)"
    )
    print(f"   {'tensor':<12}{'max_abs_err':>13}{'max_abs_ref':>13}{'rel(norm)':>12}{'rel(elem,p99.9)':>17}")
    worst = 0.0
    for k, r in ref.items():
        c = got.get(k)
        if r is None or c is None:
            print(f"   {k:<12} missing gradient: reference={r is not None} cuda={c is not None}")
            worst = math.inf
            continue
        if r.shape != c.shape:
            print(f"   {k:<12} SHAPE MISMATCH reference {tuple(r.shape)} cuda {tuple(c.shape)}")
            worst = math.inf
            continue
        err = (c - r).abs()
        scale = r.abs().max().item()
        rel = err.max().item() / max(scale, 1e-30)
        elem = (err / (r.abs() + 1e-3 * scale)).flatten()
        elem = elem.kthvalue(max(1, int(0.999 * elem.numel()))).values.item()
        nonfinite = (~torch.isfinite(c)).sum().item()
        print(
            f"   {k:<12}{err.max().item():13.3e}{scale:13.3e}{rel:12.2e}{elem:17.2e}"
            + (f"  NONFINITE x{nonfinite}" if nonfinite else "")
        )
        worst = max(worst, rel if not nonfinite else math.inf)
    ok = worst <= rtol
    print(f"   worst norm-wise rel err {worst:.2e} (tolerance {rtol:.0e}) -> {'PASS' if ok else 'FAIL'}")
    return ok


def bench(batch=8, d_inner=4096, d_state=16, seqlen=2048, dtype=torch.bfloat16, iters=20):
    inputs, grad_out = make_inputs(batch, d_inner, d_state, seqlen, dtype, full=True)
    grad_out = grad_out.to(dtype)
    leaves = {k: v.requires_grad_(True) for k, v in inputs.items()}

    def step():
        y, _ = ss.selective_scan(
            leaves["u"],
            leaves["delta"],
            leaves["A"],
            leaves["B"],
            leaves["C"],
            D=leaves["D"],
            z=leaves["z"],
            delta_bias=leaves["delta_bias"],
            delta_softplus=True,
            return_last_state=True,
            backend="cuda",
        )
        y.backward(grad_out)

    def fwd():
        with torch.no_grad():
            ss.selective_scan(
                leaves["u"],
                leaves["delta"],
                leaves["A"],
                leaves["B"],
                leaves["C"],
                D=leaves["D"],
                z=leaves["z"],
                delta_bias=leaves["delta_bias"],
                delta_softplus=True,
                backend="cuda",
            )

    out = {}
    for label, fn in (("fwd", fwd), ("fwd+bwd", step)):
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        torch.cuda.synchronize()
        out[label] = start.elapsed_time(end) / iters
    print(
        f"\n== bench cuda scan {str(dtype).removeprefix('torch.')} batch={batch} d_inner={d_inner} "
        f"d_state={d_state} L={seqlen}: fwd {out['fwd']:.2f} ms, fwd+bwd {out['fwd+bwd']:.2f} ms"
    )


def check_conv():
    """If causal-conv1d is installed: fused causal_conv1d_fn against F.conv1d, through harness.kernels."""
    try:
        from harness.kernels import causal_conv as cc
    except Exception as e:  # noqa: BLE001 - informational section
        print(f"\n== causal conv: harness.kernels.causal_conv not importable ({type(e).__name__}: {e})")
        return
    if not cc.fused_conv_available():
        print("\n== causal conv: causal-conv1d not installed, skipped")
        return
    g = torch.Generator().manual_seed(1)
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(2, 512, 1024, generator=g).to(DEVICE, dtype)
        w = (0.3 * torch.randn(512, 1, 4, generator=g)).to(DEVICE, dtype)
        b = torch.randn(512, generator=g).to(DEVICE, dtype)
        go = torch.randn(2, 512, 1024, generator=g).to(DEVICE)
        res = {}
        for backend in ("cuda", "torch"):
            leaves = [t.detach().clone().requires_grad_(True) for t in (x, w, b)]
            y = cc.causal_conv1d(*leaves, backend=backend)
            (y.float() * go).sum().backward()
            res[backend] = [y.detach().float()] + [t.grad.float() for t in leaves]
        errs = []
        for name, c, r in zip(("out", "dx", "dweight", "dbias"), res["cuda"], res["torch"], strict=True):
            errs.append(f"{name} {(c - r).abs().max().item() / r.abs().max().item():.1e}")
        print(
            f"\n== causal conv {str(dtype).removeprefix('torch.')} fused vs F.conv1d, "
            f"norm-wise rel: {', '.join(errs)}"
        )


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--rtol", type=float, default=1e-3, help="norm-wise relative tolerance for fp32 cases")
    ap.add_argument("--no-bench", action="store_true")
    ap.add_argument("--dry-cpu", action="store_true", help="no GPU: test this script with backend='cpu'")
    args = ap.parse_args()

    global DEVICE, BACKEND
    if args.dry_cpu:
        has_cpu = importlib.util.find_spec("harness.kernels.scan_cpu") is not None
        DEVICE, BACKEND = "cpu", ("cpu" if has_cpu else "reference")
    elif not torch.cuda.is_available():
        sys.exit("check_scan.py needs a CUDA GPU")
    if args.dry_cpu:
        print(f"torch {torch.__version__}, dry run on CPU: backend {BACKEND!r} against 'reference'")
    else:
        print(f"torch {torch.__version__} cuda {torch.version.cuda} device {torch.cuda.get_device_name()}")
    try:
        import mamba_ssm

        print(f"mamba_ssm {mamba_ssm.__version__} from {mamba_ssm.__file__}")
    except Exception as e:  # noqa: BLE001 - report, then let the checks below fail loudly
        print(f"import mamba_ssm failed: {type(e).__name__}: {e}")
    avail = ss.cuda_kernels_available()
    auto = ss.resolve_backend("auto", torch.device("cuda"))
    print(f"cuda_kernels_available()={avail}  resolve_backend('auto', cuda)={auto!r}")
    if not args.dry_cpu and (not avail or auto != "cuda"):
        sys.exit("FAIL: the cuda backend is not available through harness.kernels.selective_scan")

    L = args.seqlen
    results = [
        compare("fp32 full", torch.float32, (2, 256, 16, L), True, args.rtol),
        compare("fp32 bare", torch.float32, (2, 256, 16, L), False, args.rtol),
        # Longer than the kernel's 2048-token chunk: exercises the state carried between chunks.
        compare("fp32 multi-chunk", torch.float32, (1, 64, 16, 4096 + 37), True, args.rtol),
    ]
    compare("bf16 full (info)", torch.bfloat16, (2, 256, 16, L), True, 5e-2)
    if not args.dry_cpu:
        try:
            check_conv()
        except Exception as e:  # noqa: BLE001 - informational; must not hide the scan results
            print(f"\n== causal conv check raised {type(e).__name__}: {e}")
    if not args.no_bench and not args.dry_cpu:
        bench()
    if not all(results):
        print("\nFAIL: an fp32 case exceeded the tolerance")
        sys.exit(1)
    print("\nALL fp32 CHECKS PASS")


if __name__ == "__main__":
    main()
