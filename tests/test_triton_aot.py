"""Our Triton kernels compile for the GPUs we train on, checked on a CPU machine before any GPU lease.

Triton compiles ahead of time without a GPU (its wheel ships ptxas): each kernel is compiled for sm_90
(H100/H200) with every config the selective scan's autotuner may pick (options on, bf16, as training
launches it; options off, fp32, in one config) and must come out as a cubin. A kernel that only the
interpreter accepts (tests/test_scan_triton.py, tests/test_causal_conv_triton.py) fails here, not on a GPU.
Registers and spills are printed (``-s``) for tuning; they depend on the Triton version, so only
compilation is asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton.backends.nvidia", reason="needs triton with its NVIDIA backend (the dev extra)")

COMPILE = r"""
import json, subprocess, sys
from pathlib import Path
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
import harness.kernels.causal_conv_triton as conv
import harness.kernels.scan_triton as scan

FP32 = {"A_ptr", "D_ptr", "bias_ptr", "last_ptr", "states_ptr", "dlast_ptr", "dB_ptr", "dC_ptr", "dA_ptr",
        "dD_ptr", "dbias_ptr", "dw_ptr", "db_ptr"}
CUOBJDUMP = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"

def compile_one(fn, constexprs, warps, dtype):
    signature = {}
    for name in fn.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name.endswith("_ptr"):
            signature[name] = "*fp32" if name in FP32 else f"*{dtype}"
        else:
            signature[name] = "i32"
    src = ASTSource(fn=fn, signature=signature, constexprs=constexprs)
    kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})
    cubin = Path(sys.argv[1]) / "kernel.cubin"
    cubin.write_bytes(kernel.asm["cubin"])
    usage = subprocess.run([str(CUOBJDUMP), "--dump-resource-usage", str(cubin)], capture_output=True,
                           text=True).stdout
    line = next((l for l in usage.splitlines() if "REG:" in l), "")
    return {k: int(v) for k, v in (f.split(":") for f in line.split() if f.split(":")[0] in ("REG", "STACK"))}

out = []
for on in (True, False):
    options = dict(HAS_D=on, HAS_Z=on, HAS_BIAS=on, SOFTPLUS=on, N=16, T=scan.CHUNK)
    dtype = "bf16" if on else "fp32"
    kernels = (("scan fwd", scan._scan_fwd, {}), ("scan bwd", scan._scan_bwd, {"HAS_DLAST": not on}))
    for block_d, warps in scan.CONFIGS if on else scan.CONFIGS[:1]:  # options off: their code paths, once
        for name, fn, extra in kernels:
            usage = compile_one(fn, {**options, **extra, "BLOCK_D": block_d}, warps, dtype)
            out.append({"kernel": name, "config": [block_d, warps], "options": on, **usage})
for name, fn in (("conv fwd", conv._conv_silu_fwd), ("conv bwd", conv._conv_silu_bwd)):
    constexprs = dict(HAS_BIAS=True, WIDTH=4, BLOCK_D=conv.BLOCK_D, BLOCK_L=conv.BLOCK_L)
    out.append({"kernel": name, "config": [conv.BLOCK_D, 4], "options": True,
                **compile_one(fn, constexprs, 4, "bf16")})
print(json.dumps(out))
"""


def test_every_triton_kernel_and_config_compiles_for_sm90(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # compile for real
    env["TRITON_CACHE_DIR"] = str(tmp_path / "cache")
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # triton's default; set to silence its warning
    done = subprocess.run(
        [sys.executable, "-c", COMPILE, str(tmp_path)], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    for r in results:
        print(f"{r['kernel']:<9} config {r['config']} options {'on ' if r['options'] else 'off'}: "
              f"{r.get('REG')} registers, {r.get('STACK')} bytes of stack (spills)")  # fmt: skip
    from harness.kernels.scan_triton import CONFIGS

    assert len(results) == 2 * len(CONFIGS) + 2 + 2
    assert all(r.get("REG", 0) > 0 for r in results), results  # a real cubin, with its resource usage
