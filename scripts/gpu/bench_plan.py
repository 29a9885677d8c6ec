"""The GPU measurements of the speed issues, as one resumable plan: run what fits in a command, carry on in
the next, pack what came back.

The lent GPU machine gives one command at most 10 minutes and stays warm only ~30 s between commands, so a
list of benchmarks has to be cut into commands that each end in time, and a command that was cut short must
not cost the next one its finished steps. Run THERE, after ``JAMBA_BUILD_KERNELS=conv source
scripts/gpu/setup.sh`` (causal-conv1d too, ~6 minutes beside mamba_ssm, so that every anchor takes its fast
path; ``=1`` builds mamba_ssm alone, ~2.5 minutes, and the records then say causal_conv1d is absent):

    python3 scripts/gpu/bench_plan.py --root /tmp/bench run --seconds 540   # the next steps that fit
    python3 scripts/gpu/bench_plan.py --root /tmp/bench pack $OUT            # records + logs -> one archive
    python3 scripts/gpu/bench_plan.py --root /tmp/bench status               # what is done, what is left
    python3 scripts/gpu/bench_plan.py --root /tmp/side run --only gpu-tests &  # beside memory-only steps

Each step is one ``ablate bench ...`` (or pytest) command writing under ``ROOT/out/``; a step is done when
it exited 0, and is never run again (``--redo NAME`` runs it again). A step starts only if its time limit
fits in what is left of ``--seconds``, so the command ends in time; a step that overruns its own limit is
killed and recorded as failed, and the plan moves on. ``pack`` archives ``ROOT/out`` (the JSON records
for ``results/bench/``, one log per step) and ``ROOT/plan.json`` (exit codes and seconds per step).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TRAIN = "bench train --seq-len 2048 --batch"
PREFILL = "bench prefill --context 8k,32k,64k,128k"
DECODE = "bench decode --batch 1,16"
ALL_ANCHORS = "transformers,mamba_ssm,mamba_ssm+liger,llama,llama+liger"  # issue 29: the strongest stacks too
PROFILE = "--profile 15"  # issue 15 asks for the profiler's top kernels with the throughput
BEFORE_AFTER = f"--kernels fused,eager {PROFILE}"  # the fused kernels and the eager path, both profiled
MOE = f"--moe-backend grouped,loop --kernels fused {PROFILE}"  # grouped first: the anchor's ratio is its
# The GPU suite in four steps (pytest -k selections that split it): the Mamba-2 arms' tests, our Triton
# scan's and conv's, float8's parity, and the rest.
GPU_FILES = "tests/test_gpu.py tests/test_bench_train.py tests/test_bench_inference.py"  # all gpu-marked
MAMBA2_TESTS = "ssd or m2 or mamba2 or mamba_ssm_prefill"
TRITON_TESTS = f"(scans_match or triton) and not ({MAMBA2_TESTS})"
FLOAT8_TESTS = f"float8 and not ({MAMBA2_TESTS} or scans_match or triton)"
OTHER_GPU_TESTS = f"not ({MAMBA2_TESTS} or scans_match or triton or float8)"
QUIET = "-q -p no:cacheprovider"
CONTEXT = "bench context --max-bytes 12884901888"  # 12 GiB: the searches fit one command; 8K chunks

# (name, seconds allowed, what to run: ``ablate`` arguments, or ``pytest ...``), most wanted first: the 1:7
# before/after rows (run again after each new lever), the rest of the issue-15 table with the current kernels,
# the whole GPU suite, compile; then the issue-16 measurements, kept for re-measuring. The context searches
# only measure memory, so the GPU tests can run beside them (``--root`` of their own, ``--skip`` here).
STEPS: tuple[tuple[str, int, str], ...] = (
    ("train-1.3b-1to7", 300, f"{TRAIN} 8 {BEFORE_AFTER} --preset 1.3b-1to7 --against {ALL_ANCHORS}"),
    ("train-1.3b-1to3", 120, f"{TRAIN} 8 --preset 1.3b-1to3 --against transformers,mamba_ssm"),
    # The whole GPU suite no longer fits one 10-minute command (the Mamba-2 tests autotune mamba_ssm's SSD
    # kernels for minutes), so it is four steps: this one, and the three below that it leaves out by the
    # same keywords (Mamba-2, Triton, float8); together they run every `-m gpu` test once (tested).
    ("gpu-tests", 420, f"pytest -m gpu {GPU_FILES} -k '{OTHER_GPU_TESTS}' {QUIET}"),
    ("train-1.3b-mamba", 120, f"{TRAIN} 8 --preset 1.3b-mamba --against mamba_ssm,mamba_ssm+liger"),
    # issue 30: the SSD kernel's parity and the Mamba-2 anchor first (a minute), then the Mamba-2 (SSD) arms
    # against mamba_ssm's own Mamba2 model at the same settings
    # (mamba_ssm's SSD kernels autotune per shape on first use: the first lease's cold run did 12 of its 26
    # tests in 180 s, a warm rerun 25 in 330 s; setup.sh keeps autotuning results on disk between steps)
    ("gpu-tests-mamba2", 480, f"pytest -m gpu {GPU_FILES} -k '{MAMBA2_TESTS}' -s {QUIET}"),
    ("train-1.3b-mamba-m2", 240, f"{TRAIN} 8 --preset 1.3b-mamba-m2 --against mamba_ssm"),
    # issue 29 deliverable 2: our Triton Mamba-1 scan, its parity (the reference, mamba_ssm, every tiny arm)
    # and then its speed beside mamba_ssm's kernel at the 1.3b layer's shape, bf16 and fp32
    ("gpu-tests-triton-scan", 240, f"pytest -m gpu {GPU_FILES} -k '{TRITON_TESTS}' -s {QUIET}"),
    ("scan-1.3b-bf16", 120, "bench scan --device cuda --dtype bf16 --preset 1.3b-1to7 --batch 8 --seq-len 2048 --repeats 10"),  # noqa: E501
    ("scan-1.3b-fp32", 120, "bench scan --device cuda --dtype fp32 --preset 1.3b-1to7 --batch 8 --seq-len 2048 --repeats 10"),  # noqa: E501
    ("train-1.3b-1to7-triton-scan", 180, f"{TRAIN} 8 --scan-backend cuda,triton --preset 1.3b-1to7"),
    ("train-1.3b-mamba-triton-scan", 180, f"{TRAIN} 8 --scan-backend cuda,triton --preset 1.3b-mamba"),
    ("train-1.3b-1to7-m2", 180, f"{TRAIN} 8 --preset 1.3b-1to7-m2 --against mamba_ssm"),
    # issue 30, deliverable 4: prefill of the Mamba-2 arms beside the Mamba-1 ones, each beside mamba_ssm's
    # own model of the same layers (its InferenceParams prefill), on the same device
    ("prefill-1.3b-1to7-m2", 150, f"{PREFILL} --preset 1.3b-1to7-m2 --against mamba_ssm"),
    ("prefill-1.3b-1to7-vs-mamba-ssm", 150, f"{PREFILL} --preset 1.3b-1to7 --against mamba_ssm"),
    ("prefill-1.3b-mamba-m2", 120, f"{PREFILL} --preset 1.3b-mamba-m2 --against mamba_ssm"),
    ("prefill-1.3b-mamba-vs-mamba-ssm", 120, f"{PREFILL} --preset 1.3b-mamba --against mamba_ssm"),
    ("train-1.3b-attention", 120, f"{TRAIN} 8 --preset 1.3b-attention --against transformers,llama,llama+liger"),  # noqa: E501
    ("train-1.3b-1to7-moe-b2", 150, f"{TRAIN} 2 --preset 1.3b-1to7-moe --against transformers {MOE}"),
    ("train-1.3b-1to7-moe-b8", 240, f"{TRAIN} 8 --preset 1.3b-1to7-moe --against transformers {MOE}"),
    ("train-1.3b-1to7-nonorm", 120, f"{TRAIN} 8 {BEFORE_AFTER} --preset 1.3b-1to7-nonorm --against mamba_ssm"),  # noqa: E501
    ("train-1.3b-1to7-compile", 300, f"{TRAIN} 8 --kernels fused,eager --compile on --preset 1.3b-1to7"),
    # issue 29: train.float8 beside bf16, compiled (its casts fuse only under compile), and its loss parity
    ("train-1.3b-1to7-float8", 360, f"{TRAIN} 8 --compile on --float8 off,on --preset 1.3b-1to7"),
    ("train-1.3b-attention-float8", 300, f"{TRAIN} 8 --compile on --float8 off,on --preset 1.3b-attention"),
    ("gpu-test-float8-parity", 240, f"pytest -m gpu {GPU_FILES} -k '{FLOAT8_TESTS}' -s {QUIET}"),
    ("prefill-1.3b-1to7", 150, f"{PREFILL} --preset 1.3b-1to7 --against transformers,llama"),
    ("prefill-1.3b-attention", 150, f"{PREFILL} --preset 1.3b-attention --against transformers,llama"),
    ("prefill-1.3b-mamba", 90, f"{PREFILL} --preset 1.3b-mamba --against llama"),
    ("context-1.3b-attention", 120, f"{CONTEXT} --start 131072 --resolution 8192 --preset 1.3b-attention"),
    # the accounting predicts ~1.67M for 1:7; a probe near it is ~1.5 min of attention FLOPs, one past the
    # budget fails at its cache allocation at once
    ("context-1.3b-1to7", 360, f"{CONTEXT} --start 1048576 --limit 2097152 --resolution 131072 --preset 1.3b-1to7"),  # noqa: E501
    # the evaluations decode without CUDA graphs: this is their speed-up over transformers generate
    ("decode-evals-1.3b-1to7", 90, f"{DECODE} --prompt 1024 --new 16 --no-cuda-graphs --preset 1.3b-1to7"),
    ("decode-1.3b-1to7", 150, f"{DECODE} --prompt 2048 --new 256 --preset 1.3b-1to7"),
    ("decode-1.3b-attention", 150, f"{DECODE} --prompt 2048 --new 256 --preset 1.3b-attention"),
)  # fmt: skip


def _command(name: str, what: str, out: Path) -> list[str]:
    """The step's argv: pytest, or ``ablate`` with the record written to ``out/<name>.json``."""
    if what.startswith("pytest "):
        return [sys.executable, "-m", *shlex.split(what)]
    record = ["--json" if what.startswith("bench train") else "--out", str(out / f"{name}.json")]
    return [sys.executable, "-m", "ablate.cli", *shlex.split(what), *record]


def _state(root: Path) -> dict:
    path = root / "plan.json"
    return json.loads(path.read_text()) if path.exists() else {"steps": {}}


def _save(root: Path, state: dict) -> None:
    from harness.atomic import atomic_write_text  # the one atomic write (setup.sh puts harness on the path)

    atomic_write_text(root / "plan.json", json.dumps(state, indent=2) + "\n")


def cmd_run(args: argparse.Namespace) -> None:
    root, deadline = Path(args.root), time.monotonic() + args.seconds
    out = root / "out"
    out.mkdir(parents=True, exist_ok=True)
    state = _state(root)
    names = [name for name, _, _ in STEPS]
    for name in args.only + args.redo + args.skip:
        if name not in names:
            raise SystemExit(f"bench_plan: no step {name!r}; the steps are: {', '.join(names)}")
    wanted = [s for s in STEPS if (not args.only or s[0] in args.only) and s[0] not in args.skip]
    no_time = []
    for name, limit, command in wanted:
        done = state["steps"].get(name, {}).get("rc") == 0
        if done and name not in args.redo:
            continue
        left = deadline - time.monotonic()
        if limit > left:
            print(f"[plan] {name}: needs up to {limit} s, {left:.0f} s left; next command")
            no_time.append(f"{name} ({limit} s)")
            continue
        argv = _command(name, command, out)
        line = shlex.join(argv)
        print(f"[plan] {name}: {line}", flush=True)
        start = time.monotonic()
        with open(out / f"{name}.log", "w") as log:
            try:
                rc = subprocess.run(
                    argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, timeout=limit
                ).returncode
            except subprocess.TimeoutExpired:
                rc = "timeout"
        seconds = round(time.monotonic() - start, 1)
        state["steps"][name] = {"rc": rc, "seconds": seconds, "command": line, "finished": time.time()}
        _save(root, state)
        tail = (out / f"{name}.log").read_text(errors="replace").strip().splitlines()[-6:]
        print(f"[plan] {name}: exit {rc} in {seconds} s", *(f"    {t}" for t in tail), sep="\n", flush=True)
    _print_status(state, [name for name, _, _ in wanted])
    if no_time:
        # A step is started only with its whole limit ahead of it: say so last, where a short tail shows it.
        print(f"[plan] NOT STARTED, --seconds {args.seconds:.0f} too short: {', '.join(no_time)}")


def cmd_status(args: argparse.Namespace) -> None:
    _print_status(_state(Path(args.root)), [name for name, _, _ in STEPS])


def _print_status(state: dict, names: list[str]) -> None:
    steps = state["steps"]
    for name, limit, _ in STEPS:
        if name not in names:
            continue
        s = steps.get(name)
        told = f"exit {s['rc']} in {s['seconds']} s" if s else f"pending (up to {limit} s)"
        print(f"[plan] {name:<30} {told}")


def cmd_pack(args: argparse.Namespace) -> None:
    root, dest = Path(args.root), Path(args.out)
    dest.mkdir(parents=True, exist_ok=True)
    archive = dest / "bench-plan.tar.xz"
    with tarfile.open(archive, "w:xz") as tar:
        if (root / "plan.json").exists():
            tar.add(root / "plan.json", arcname="plan.json")
        if (root / "out").is_dir():
            for path in sorted((root / "out").iterdir()):
                tar.add(path, arcname=f"out/{path.name}")
    print(f"[plan] {archive} ({archive.stat().st_size / 2**10:.0f} KiB)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default="/tmp/bench", help="state, records and logs (default /tmp/bench)")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the pending steps that fit in --seconds")
    run.add_argument("--seconds", type=float, default=540, help="time this command may take in all")
    run.add_argument("--only", action="append", default=[], help="run only this step (repeatable)")
    run.add_argument("--redo", action="append", default=[], help="run this step again even if done")
    run.add_argument("--skip", action="append", default=[], help="leave this step out (repeatable)")
    sub.add_parser("status", help="each step: exit code and seconds, or pending")
    pack = sub.add_parser("pack", help="archive the records and logs into OUT/bench-plan.tar.xz")
    pack.add_argument("out")
    args = parser.parse_args(argv)
    os.chdir(REPO)
    {"run": cmd_run, "status": cmd_status, "pack": cmd_pack}[args.command](args)


if __name__ == "__main__":
    main()
