"""The ``ablate`` command line.

Subcommands:
  ablate plan --preset NAME [--preset NAME ...] [--config FILE] [--context N] [--json]
  ablate presets [--family F]
  ablate bench scan [--preset NAME] [--batch B] [--seq-len L]
  ablate bench train [--preset NAME] [--batch B] [--seq-len L] [--steps N] [--against A,B] [--json PATH]
                     [--moe-backend loop,grouped] [--kernels fused,eager] [--compile off,on] [--profile N]
  ablate bench prefill --preset NAME [--context 8k,32k] [--batch N] [--against A,B] [--prefill-chunk N]
                       [--out FILE.json]
  ablate bench decode --preset NAME [--batch 1,16] [--prompt 2048] [--new 256] [--no-cuda-graphs]
                      [--no-uncached]
  ablate bench context --preset NAME [--max-bytes N] [--prefill-chunk N]
  ablate data prepare | ablate data show | ablate tokenizer train
  ablate train CONFIG.yaml [KEY=VALUE ...] [--run-dir DIR] [--dry-run]
  ablate sweep plan FILE [KEY=VALUE ...]
  ablate sweep launch FILE [KEY=VALUE ...] [--executor auto|slurm|local|debug] [--wait]
  ablate sweep status FILE [KEY=VALUE ...]
  ablate sweep cancel FILE [KEY=VALUE ...]
  ablate eval RUN_DIR [RUN_DIR ...] --suite S [--suite S ...] | --suite all [--step N] [--limit N]
              [--device D] [--threads N] [--option SUITE.KEY=VALUE]
  ablate export hf RUN_DIR OUT [--step N] [--overwrite]
  ablate report SWEEP.yaml [...] | RUN_DIR [...] [--out DIR] [--format md|csv|tex]
  ablate report --bench DIR [--out DIR]
  ablate notebook NAME --runs SWEEP.yaml|RUN_DIR [...] [--out DIR] [-p KEY=VALUE]

A user's configuration mistake (:class:`harness.config_loader.ConfigError`) is printed as one clear
message and exit status 2, never as a traceback; so is an interruption (Ctrl-C: exit status 130).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from harness.config_loader import ConfigError

DESCRIPTION = (
    "Ablations of hybrid Transformer-Mamba-MoE language models (the Jamba paper's architecture study): "
    "plan, train, sweep, evaluate, export and report."
)
FAMILY_NAMES = ("tiny", "mini", "1.3b", "7b")  # harness/presets.py FAMILIES (checked by the tests)

OVERRIDES_HELP = (
    "dotted-key overrides of the file, validated like the file itself: train.steps=200 optim.lr=6e-4 "
    "tracking.wandb=true (an override that changes the experiment changes the run id, as an edit would)"
)

SWEEP_OVERRIDES_HELP = (
    "dotted-key overrides of the sweep file: sweep fields (arms.mamba.optim.lr=2e-3, seeds=[0,1], "
    "resources.time=02:00:00) or run-config keys for every run (train.steps=100); status and cancel "
    "take the same ones"
)


def _model_from_args(args: argparse.Namespace) -> list[tuple[str, object, dict]]:
    from harness.config_loader import from_dict, load_yaml
    from harness.model.config import ModelConfig
    from harness.presets import TABLE1, get_preset, paper_cells

    names = list(args.preset or [])
    if args.table1:
        names = list(TABLE1) + names
    models = [(name, get_preset(name), paper_cells(name)) for name in names]
    for path in args.config or []:
        data = load_yaml(path)
        section = data.get("model", data)
        models.append(
            (
                str(path),
                from_dict(ModelConfig, section, source=path, path="model" if "model" in data else ""),
                {},
            )
        )
    if not models:
        raise ConfigError(
            "nothing to plan: give --preset NAME (see `ablate presets`), --table1 or --config FILE"
        )
    return models


def cmd_plan(args: argparse.Namespace) -> int:
    from harness.accounting import (
        GIB,
        format_bytes,
        format_params,
        matches_printed,
        plan_model,
    )

    plans = [plan_model(cfg, name, args.context, paper) for name, cfg, paper in _model_from_args(args)]
    if args.json:
        rows = []
        for p in plans:
            row = p.to_json()
            row["gpu_hours"] = {
                "tokens": args.tokens,
                "mfu": args.mfu,
                "gpu": args.gpu,
                "hours": p.gpu_hours(args.tokens, args.mfu, args.gpu),
            }
            rows.append(row)
        print(json.dumps(rows, indent=2))
        return 0
    header = (
        f"{'model':<22} {'total':>9} {'active':>9} {'KV cache':>11} {'Mamba state':>12} {'TFLOPs/tok':>10}  "
        "paper (total / active / KV)"
    )
    print(f"context {args.context:,} tokens, 16-bit cache, batch 1; FLOPs are forward+backward per token\n")
    print(header)
    print("-" * len(header))
    for p in plans:
        cells = ""
        if p.paper:
            ok = (
                matches_printed(p.params_total, p.paper["params_total"], 1e9)
                and matches_printed(p.params_active, p.paper["params_active"], 1e9)
                and (
                    args.context != 262144 or matches_printed(p.kv_cache_bytes, p.paper["kv_cache_256k"], GIB)
                )
            )
            kv_note = p.paper["kv_cache_256k"] + ("" if args.context == 262144 else " @256K")
            cells = f"{p.paper['params_total']} / {p.paper['params_active']} / {kv_note}  " + (
                "matches" if ok else "DIFFERS"
            )
        print(
            f"{p.name:<22} {format_params(p.params_total):>9} {format_params(p.params_active):>9} "
            f"{format_bytes(p.kv_cache_bytes):>11} {format_bytes(p.mamba_state_bytes):>12} "
            f"{p.flops_per_token / 1e12:>10.4f}  {cells}"
        )
    print()
    for p in plans:
        print(f"{p.name}")
        print(f"  pattern    {p.pattern_compact}")
        if p.pattern_compact != p.pattern and len(p.pattern) <= 96:
            print(f"             {p.pattern}")
        print(f"  shorthand  {p.shorthand}")
        comps = ", ".join(f"{k} {format_params(v)}" for k, v in p.params_by_component.items() if v)
        print(f"  params     {comps}")
        flops = ", ".join(f"{k} {v / p.flops_per_token:.1%}" for k, v in p.flops_by_component.items())
        print(f"  FLOPs      {flops}")
        hours = p.gpu_hours(args.tokens, args.mfu, args.gpu)
        print(
            f"  cost       {hours:,.0f} {args.gpu.upper()}-hours for {args.tokens:.3g} tokens "
            f"at MFU {args.mfu:.0%}"
        )
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from harness.accounting import format_params, plan_model
    from harness.presets import FAMILIES, PAPER_MODELS, family_preset_names, get_preset

    groups = [("paper", "the paper's reference models (Table 1)", list(PAPER_MODELS))]
    for family in FAMILIES.values():
        names = [n for n in family_preset_names() if n.startswith(family.name + "-")]
        about = f"{family.purpose}; every arm within 3% of {format_params(family.target_params)} parameters"
        groups.append((family.name, about, names))
    for i, (name, about, names) in enumerate(g for g in groups if args.family in (None, g[0])):
        print(("\n" if i else "") + f"{name}: {about}")
        print(f"  {'preset':<24} {'params':>8} {'active':>8}  pattern")
        for preset in names:
            plan = plan_model(get_preset(preset), preset)
            print(
                f"  {preset:<24} {format_params(plan.params_total):>8} "
                f"{format_params(plan.params_active):>8}  {plan.pattern_compact}"
            )
    return 0


def cmd_bench_scan(args: argparse.Namespace) -> int:
    from harness.benchmarks.scan import run_scan_benchmark
    from harness.presets import get_preset

    cfg = get_preset(args.preset)
    run_scan_benchmark(
        d_inner=cfg.d_inner,
        d_state=cfg.mamba.d_state,
        batch=args.batch,
        seq_len=args.seq_len,
        repeats=args.repeats,
        threads=args.threads,
    )
    return 0


def _names(text: str) -> list[str]:
    """A comma-separated option (``--against transformers,llama``) as its names; empty parts dropped."""
    return [name for name in text.split(",") if name]


def cmd_bench_train(args: argparse.Namespace) -> int:
    from harness.benchmarks.train import run_train_benchmark

    run_train_benchmark(
        args.preset,
        batch=args.batch,
        seq_len=args.seq_len,
        steps=args.steps,
        warmup=args.warmup,
        against=_names(args.against),
        json_path=args.json,
        moe_backends=_names(args.moe_backend),
        profile=args.profile,
        compile_modes=_names(args.compile),
        kernel_modes=_names(args.kernels),
    )
    return 0


def cmd_bench_inference(args: argparse.Namespace) -> int:
    from harness.benchmarks import inference
    from harness.benchmarks.record import DEFAULT_DIR, provenance, write_bench_json
    from harness.devices import resolve_device

    device = resolve_device(args.device)
    if (getattr(args, "prefill_chunk", None) or 0) < 0:
        raise ConfigError("--prefill-chunk takes tokens per pass, or 0 for one pass")
    if args.bench == "prefill":
        payload = inference.run_prefill(
            args.preset,
            inference.parse_sizes(args.context),
            args.batch,
            device,
            repeats=args.repeats,
            against=_names(args.against),
            chunk=args.prefill_chunk or None,
        )
    elif args.bench == "decode":
        payload = inference.run_decode(
            args.preset,
            inference.parse_sizes(args.batch),
            args.prompt,
            args.new,
            device,
            cuda_graphs=args.cuda_graphs,
            compare_transformers=args.transformers,
            check_uncached=args.uncached,
        )
    else:
        payload = inference.run_context(
            args.preset,
            device,
            max_bytes=args.max_bytes,
            start=args.start,
            limit=args.limit,
            resolution=args.resolution,
            # no --prefill-chunk: the bench's own default (CONTEXT_PREFILL_CHUNK); 0: one pass
            **({} if args.prefill_chunk is None else {"chunk": args.prefill_chunk or None}),
        )
    record = {"kind": args.bench, "preset": args.preset, **provenance(device), **payload}
    stamp = record["time"].replace(":", "").replace("-", "")[:15]
    path = write_bench_json(record, args.out or DEFAULT_DIR / f"{args.bench}-{args.preset}-{stamp}.json")
    print(f"wrote {path}")
    return 0


def cmd_sweep_plan(args: argparse.Namespace) -> int:
    from harness.sweeps.plan import print_plan

    print_plan(args.file, show_sbatch=not args.no_sbatch, overrides=args.overrides)
    return 0


def cmd_sweep_launch(args: argparse.Namespace) -> int:
    from harness.sweeps.launch import launch, results_summary, wait

    report = launch(
        args.file,
        executor=args.executor,
        root=args.root,
        retry_failed=args.retry_failed,
        dry_run=args.dry_run,
        overrides=args.overrides,
    )
    follow = " ".join(
        ["ablate sweep status", args.file, *args.overrides]
        + (["--root", args.root] if args.root != "runs" else [])
    )
    if report.job_ids:
        print(f"submitted {len(report.job_ids)} run(s) with the {report.executor} executor")
    if args.wait and not args.dry_run:
        try:
            states = wait(args.file, root=args.root, poll_s=args.poll, overrides=args.overrides)
        except KeyboardInterrupt:
            print(f"\nablate: stopped waiting; the runs go on (follow with: {follow})", file=sys.stderr)
            return 130
        print()
        for line in results_summary(report.sweep, args.root):
            print(line)
        return 0 if all(s.state == "done" for s in states) else 1
    if report.job_ids:
        print(f"follow with: {follow}")
    return 0


def cmd_sweep_status(args: argparse.Namespace) -> int:
    import json

    from harness.sweeps.config import expand_sweep, load_sweep
    from harness.sweeps.lifecycle import print_status, run_states, stale_run_dirs

    sweep = load_sweep(args.file, args.overrides)
    runs = expand_sweep(sweep, source=args.file)
    states = run_states(sweep, runs, args.root)
    if args.json:
        print(json.dumps([s.as_dict() for s in states], indent=2))
        return 0
    print_status(sweep, states, args.root)
    stale = stale_run_dirs(sweep, runs, args.root)
    if stale:
        print(f"{len(stale)} older run directories (their configs are no longer in the file) are kept:")
        for path in stale:
            print(f"  {path}")
    return 0


def cmd_sweep_cancel(args: argparse.Namespace) -> int:
    from harness.sweeps.launch import cancel

    cancel(args.file, root=args.root, overrides=args.overrides)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from harness.training.config import config_hash, load_run_config
    from harness.training.interrupt import stop_on_signals
    from harness.training.trainer import TrainingError, train

    cfg = load_run_config(args.config, args.overrides)
    run_dir = args.run_dir or f"runs/{cfg.name}-{config_hash(cfg)}"
    try:
        if args.dry_run:
            return _train_dry_run(cfg, run_dir)
        with stop_on_signals() as stop:  # SIGINT/SIGTERM: stop at the next step boundary, with a checkpoint
            summary = train(cfg, run_dir, should_stop=stop)
    except TrainingError as e:
        print(f"ablate: training stopped: {e}", file=sys.stderr)
        return 1
    except ConfigError as e:
        if e.source is None and e.key:  # a check of the config as a whole: it is still the file's key
            raise ConfigError(e.message, source=args.config, key=e.key) from None
        raise
    if summary.get("state") == "interrupted":
        print(
            f"ablate: {run_dir}: interrupted by {stop.name or 'a stop request'} at step {summary['step']} of "
            f"{cfg.train.total_steps}, checkpoint written; the same command resumes it",
            file=sys.stderr,
        )
        return stop.exit_status if stop.signum else 1
    if summary.get("skipped"):
        print(f"{run_dir}: already finished at step {summary.get('step')}; nothing to do")
    else:
        print(f"{run_dir}: done, {summary['step']} steps, {summary['tokens']:,} tokens")
    return 0


def _train_dry_run(cfg, run_dir: str) -> int:
    """``ablate train --dry-run``: every check ``ablate train`` makes before writing, and what it would do;
    writes nothing."""
    from pathlib import Path

    from harness.training.config import config_hash
    from harness.training.preflight import check_before_writing
    from harness.training.record import prepare_run_dir
    from harness.training.rundir import RunDir
    from harness.training.trainer import resume_point

    check_before_writing(cfg)
    run = RunDir(run_dir)
    if not Path(run_dir).exists():
        print(f"would start {cfg.name} (run id {config_hash(cfg)}) in {run_dir}")
        return 0
    prepare_run_dir(cfg, run, write=False)  # the directory holds this experiment, or ConfigError
    resume = resume_point(cfg, run)
    where = f"resume from {resume[1].name}" if resume else "start from step 0"
    print(f"would {where} of {cfg.name} (run id {config_hash(cfg)}) in {run_dir}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from harness.cli_help import finish_parser

    parser = argparse.ArgumentParser(prog="ablate", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)

    plan = sub.add_parser(
        "plan", help="parameters, cache sizes, FLOPs and GPU-hours of models, before launch"
    )
    plan.add_argument("--preset", action="append", help="preset name (repeatable); see: ablate presets")
    plan.add_argument("--config", action="append", help="YAML file with a model config (or a model: section)")
    plan.add_argument("--table1", action="store_true", help="the four models of the paper's Table 1")
    plan.add_argument("--context", type=int, default=4096, help="tokens of context for KV cache and FLOPs")
    plan.add_argument("--tokens", type=float, default=250e9, help="training tokens for the GPU-hour estimate")
    plan.add_argument("--mfu", type=float, default=0.4, help="assumed model-FLOPs utilisation")
    plan.add_argument(
        "--gpu",
        default="h100",
        choices=["a100", "h100", "h200"],
        help="GPU whose peak FLOP/s prices the hours",
    )
    plan.add_argument("--json", action="store_true", help="machine-readable output")
    plan.set_defaults(func=cmd_plan)

    presets = sub.add_parser("presets", help="list model presets with their parameters and layer pattern")
    presets.add_argument(
        "--family",
        choices=["paper", *FAMILY_NAMES],
        help="only the paper's models or one ablation family (default: all)",
    )
    presets.set_defaults(func=cmd_presets)

    train = sub.add_parser(
        "train",
        help="train (or resume) one run from a YAML run config",
        description="Train one run, or resume it from its latest checkpoint. A progress line goes to "
        "stdout every tracking.print_every steps. Ctrl-C (SIGINT) or SIGTERM stops at the end of the "
        "current step with a checkpoint and status 'interrupted' (exit status 130 / 143); the same "
        "command resumes it.",
    )
    train.add_argument("config", help="run config YAML (see harness/training/config.py)")
    train.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=OVERRIDES_HELP)
    train.add_argument("--run-dir", help="run directory (default: runs/<name>-<run id>)")
    train.add_argument(
        "--dry-run", action="store_true", help="check the config and the run directory; write nothing"
    )
    train.set_defaults(func=cmd_train)

    sweep = sub.add_parser("sweep", help="declarative sweeps (YAML files in sweeps/)")
    sweep_sub = sweep.add_subparsers(dest="sweep", required=True)
    sweep_plan = sweep_sub.add_parser(
        "plan", help="list every run with its cost and preview the sbatch script"
    )
    sweep_plan.add_argument("file", help="sweep YAML file")
    sweep_plan.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=SWEEP_OVERRIDES_HELP)
    sweep_plan.add_argument("--no-sbatch", action="store_true", help="skip the sbatch preview")
    sweep_plan.set_defaults(func=cmd_sweep_plan)
    root_help = "folder holding <sweep name>/<arm>-<run id>/ run directories (default: runs)"
    launch_p = sweep_sub.add_parser(
        "launch", help="submit the runs that still need work (finished runs are skipped, others resume)"
    )
    launch_p.add_argument("file", help="sweep YAML file")
    launch_p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=SWEEP_OVERRIDES_HELP)
    launch_p.add_argument(
        "--executor",
        default="auto",
        choices=["auto", "slurm", "local", "debug"],
        help="auto: SLURM when sbatch exists, else local processes; debug runs in this process",
    )
    launch_p.add_argument("--root", default="runs", help=root_help)
    launch_p.add_argument("--wait", action="store_true", help="block until every run is done or failed")
    launch_p.add_argument("--poll", type=float, default=10.0, help="seconds between checks with --wait")
    launch_p.add_argument(
        "--dry-run", action="store_true", help="say what would be submitted, submit nothing"
    )
    launch_p.add_argument(
        "--retry-failed", action="store_true", help="also resubmit runs whose training failed (e.g. NaN)"
    )
    launch_p.set_defaults(func=cmd_sweep_launch)
    status_p = sweep_sub.add_parser("status", help="state, job, step, loss and ETA of every run")
    status_p.add_argument("file", help="sweep YAML file")
    status_p.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="the overrides it was launched with"
    )
    status_p.add_argument("--root", default="runs", help=root_help)
    status_p.add_argument("--json", action="store_true", help="machine-readable output")
    status_p.set_defaults(func=cmd_sweep_status)
    cancel_p = sweep_sub.add_parser("cancel", help="cancel queued and running jobs (checkpoints are kept)")
    cancel_p.add_argument("file", help="sweep YAML file")
    cancel_p.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="the overrides it was launched with"
    )
    cancel_p.add_argument("--root", default="runs", help=root_help)
    cancel_p.set_defaults(func=cmd_sweep_cancel)

    from harness.data.cli import add_data_commands

    add_data_commands(sub)

    from evals.cli import add_eval_commands

    add_eval_commands(sub)

    from harness.export import add_export_commands

    add_export_commands(sub)

    from analysis.cli import add_report_commands

    add_report_commands(sub)

    from analysis.notebooks import add_notebook_commands

    add_notebook_commands(sub)

    bench = sub.add_parser("bench", help="speed benchmarks, measured side by side in one run")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    scan = bench_sub.add_parser(
        "scan", help="selective scan: cpu backend vs the sequential reference, fwd+bwd"
    )
    scan.add_argument("--preset", default="tiny-1to7", help="model whose Mamba width and state size to use")
    scan.add_argument("--batch", type=int, default=8, help="sequences per call")
    scan.add_argument("--seq-len", type=int, default=256, help="tokens per sequence")
    scan.add_argument("--repeats", type=int, default=3, help="timed repetitions (the best is reported)")
    scan.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    scan.set_defaults(func=cmd_bench_scan)
    bench_train = bench_sub.add_parser(
        "train", help="training tokens/s, MFU and memory: our model vs the anchors, same config and batches"
    )
    bench_train.add_argument("--preset", default="mini-1to7", help="model preset to train")
    bench_train.add_argument("--batch", type=int, default=16, help="sequences per step")
    bench_train.add_argument("--seq-len", type=int, default=1024, help="tokens per sequence")
    bench_train.add_argument("--steps", type=int, default=10, help="timed steps")
    bench_train.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    bench_train.add_argument(
        "--against",
        default="transformers",
        help="comma-separated anchors timed in the same run: transformers (its Jamba, our weights), "
        "mamba_ssm (its hybrid or pure Mamba), llama (transformers' Llama, SDPA, parameter-matched); "
        "an anchor that cannot run here is skipped with the reason",
    )
    bench_train.add_argument(
        "--json",
        default=None,
        metavar="PATH",
        help="where to write the record (device, versions, commit, results) "
        "(default: results/bench/train-PRESET-bBATCHxSEQ-DEVICE.json)",
    )
    bench_train.add_argument(
        "--moe-backend",
        default="auto",
        help="comma-separated MoE backends, one row of ours each: auto (grouped where it runs without a host "
        "sync), loop, grouped; e.g. loop,grouped to measure both in one run",
    )
    bench_train.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="after timing, profile our model over the timed batches again and record its top N kernels "
        "(by self CUDA time; self CPU time on CPU) in the table and the JSON record",
    )
    bench_train.add_argument(
        "--kernels",
        default="auto",
        help="comma-separated kernel settings of our model (model.kernels), one row each: auto (fused on "
        "CUDA when liger-kernel is installed), eager (plain PyTorch), fused (Triton norms, conv and fused "
        "linear + cross-entropy); e.g. fused,eager to measure both in one run",
    )
    bench_train.add_argument(
        "--compile",
        default="off",
        help="comma-separated: off, on (torch.compile our model, as train.compile does; compilation happens "
        "in the warm-up steps), e.g. off,on for one row each",
    )
    bench_train.set_defaults(func=cmd_bench_train)
    inference_help = {
        "prefill": "prefill tokens/s per context, peak memory beside the accounting's cache bytes",
        "decode": "batched greedy decoding with the static cache (CUDA graphs), vs transformers' generate",
        "context": "the longest batch-1 prefill that fits in memory, beside the accounting's prediction",
    }
    for name, about in inference_help.items():
        p = bench_sub.add_parser(name, help=about)
        p.add_argument("--preset", required=True, help="model preset (randomly initialised)")
        p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
        p.add_argument(
            "--out", default=None, help="JSON path (default results/bench/<kind>-<preset>-<time>.json)"
        )
        p.set_defaults(func=cmd_bench_inference)
        if name == "prefill":
            p.add_argument("--context", default="8k,32k,64k,128k", help="comma-separated contexts (k = 1024)")
            p.add_argument("--batch", type=int, default=1, help="sequences per prefill")
            p.add_argument("--repeats", type=int, default=3, help="timed repetitions (the best is reported)")
            p.add_argument(
                "--against",
                default="",
                help="comma-separated anchors timed at the same contexts after ours: transformers (its "
                "Jamba, our weights), llama (transformers' Llama, SDPA, parameter-matched); an anchor that "
                "cannot run here is skipped with the reason",
            )
            p.add_argument(
                "--prefill-chunk", type=int, default=0, help="tokens per prefill pass (default 0: one pass)"
            )
        elif name == "decode":
            p.add_argument("--batch", default="1,16", help="comma-separated batch sizes")
            p.add_argument("--prompt", type=int, default=2048, help="prompt tokens per row")
            p.add_argument("--new", type=int, default=256, help="new tokens per row")
            p.add_argument(
                "--cuda-graphs",
                action=argparse.BooleanOptionalAction,
                default=True,
                help="replay the decode step as a CUDA graph (CUDA only)",
            )
            p.add_argument(
                "--transformers",
                action=argparse.BooleanOptionalAction,
                default=True,
                help="also time transformers' generate on the same weights",
            )
            p.add_argument(
                "--uncached",
                action=argparse.BooleanOptionalAction,
                default=True,
                help="check every decoded token against our uncached forward pass on the same prefix",
            )
        else:
            p.add_argument(
                "--max-bytes", type=int, default=None, help="memory budget (required on CPU; caps the GPU's)"
            )
            p.add_argument("--start", type=int, default=1024, help="first context tried (then doubled)")
            p.add_argument("--limit", type=int, default=4 * 1024 * 1024, help="longest context tried")
            p.add_argument("--resolution", type=int, default=1024, help="bisection stops this close")
            p.add_argument(
                "--prefill-chunk",
                type=int,
                default=None,
                help="tokens per prefill pass (default 8192, so that the caches, not one pass's activations, "
                "bound the context; 0: one pass)",
            )
    return finish_parser(parser)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"ablate: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nablate: interrupted (a training run resumes from its latest checkpoint)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
