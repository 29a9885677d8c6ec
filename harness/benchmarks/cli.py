"""``ablate bench scan|train|scale|prefill|decode|context``: speed and memory, ours beside the anchors."""

from __future__ import annotations

import argparse

from harness.config_errors import ConfigError


def cmd_bench_scan(args: argparse.Namespace) -> int:
    import torch

    from harness.benchmarks.scan import run_layer_scan_benchmark, run_scan_benchmark
    from harness.presets import get_preset

    cfg = get_preset(args.preset)
    if args.device == "cuda":
        from harness.benchmarks.record import provenance, write_bench_json

        dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
        result = run_layer_scan_benchmark(
            cfg.d_inner, cfg.mamba.d_state, batch=args.batch, seq_len=args.seq_len, repeats=args.repeats,
            dtype=dtype,
        )  # fmt: skip
        if args.out:
            record = {"kind": "scan", "preset": args.preset, **provenance(torch.device("cuda")), **result}
            print(f"wrote {write_bench_json(record, args.out)}")
        return 0
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
        float8_modes=_names(args.float8),
        scan_backends=_names(args.scan_backend),
    )
    return 0


def cmd_bench_scale(args: argparse.Namespace) -> int:
    from harness.benchmarks.scaling import run_scaling_benchmark

    try:
        nprocs = [int(n) for n in _names(args.nproc)]
    except ValueError:
        raise ConfigError(
            f"--nproc takes comma-separated process counts, e.g. 1,2,4,8; got {args.nproc!r}"
        ) from None
    run_scaling_benchmark(
        args.preset,
        nprocs=nprocs,
        strategies=_names(args.strategy),
        batch=args.batch,
        seq_len=args.seq_len,
        steps=args.steps,
        warmup=args.warmup,
        json_path=args.json,
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


def add_bench_commands(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="speed benchmarks, measured side by side in one run")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    _add_scan(bench_sub)
    _add_train(bench_sub)
    _add_scale(bench_sub)
    _add_inference(bench_sub)


def _add_scan(bench_sub: argparse._SubParsersAction) -> None:
    scan = bench_sub.add_parser(
        "scan",
        help="selective scan fwd+bwd: the cpu backend vs the sequential reference; with --device cuda, "
        "our Triton scan vs mamba_ssm's kernel (the full layer call)",
    )
    scan.add_argument("--preset", default="tiny-1to7", help="model whose Mamba width and state size to use")
    scan.add_argument("--batch", type=int, default=8, help="sequences per call")
    scan.add_argument("--seq-len", type=int, default=256, help="tokens per sequence")
    scan.add_argument("--repeats", type=int, default=3, help="timed repetitions (the best is reported)")
    scan.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    scan.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="cpu: cpu vs reference; cuda: triton vs mamba_ssm's cuda (default: cpu)",
    )
    scan.add_argument(
        "--dtype",
        choices=("bf16", "fp32"),
        default="bf16",
        help="with --device cuda: the dtype of u, delta, z, B and C, as autocast gives them (default: bf16)",
    )
    scan.add_argument("--out", default=None, help="with --device cuda: also write the record (JSON) here")
    scan.set_defaults(func=cmd_bench_scan)


def _add_train(bench_sub: argparse._SubParsersAction) -> None:
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
    bench_train.add_argument(
        "--float8",
        default="off",
        help="comma-separated: off, on (train.float8's float8 linears through torchao; needs float8 tensor "
        "cores on CUDA, fast under --compile on), e.g. off,on for one row each",
    )
    bench_train.add_argument(
        "--scan-backend",
        default="auto",
        help="comma-separated Mamba-1 selective scans: auto, cuda (mamba_ssm's kernel), triton (ours), "
        "reference, cpu; e.g. cuda,triton for one row each",
    )
    bench_train.set_defaults(func=cmd_bench_train)


def _add_scale(bench_sub: argparse._SubParsersAction) -> None:
    scale = bench_sub.add_parser(
        "scale",
        help="training tokens/s on 1, 2, 4, 8 ... processes of this node (torchrun), DDP and FSDP2: "
        "per-process throughput, scaling efficiency, peak memory, communication share",
    )
    scale.add_argument("--preset", default="1.3b-1to7", help="model preset to train")
    scale.add_argument("--nproc", default="1,2,4,8", help="comma-separated process counts (one GPU each)")
    scale.add_argument("--strategy", default="ddp,fsdp", help="comma-separated: ddp, fsdp (FSDP2)")
    scale.add_argument("--batch", type=int, default=8, help="sequences per step and process (weak scaling)")
    scale.add_argument("--seq-len", type=int, default=2048, help="tokens per sequence")
    scale.add_argument("--steps", type=int, default=10, help="timed steps")
    scale.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    scale.add_argument(
        "--json", default=None, help="record path (default results/bench/scale-PRESET-bBATCHxSEQ-DEVICE.json)"
    )
    scale.set_defaults(func=cmd_bench_scale)


def _add_inference(bench_sub: argparse._SubParsersAction) -> None:
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
                "Jamba, our weights), llama (transformers' Llama, SDPA, parameter-matched), mamba_ssm (its "
                "model of the same Mamba-1 or Mamba-2 layers); an anchor that cannot run here is skipped "
                "with the reason",
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
