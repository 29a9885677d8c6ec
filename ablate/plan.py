"""``ablate plan`` and ``ablate presets``: what a model costs (parameters, caches, FLOPs, GPU-hours) before
anything is launched, and the presets to choose from (harness/presets.py, harness/accounting.py)."""

from __future__ import annotations

import argparse
import json

from harness.config_errors import ConfigError

FAMILY_NAMES = ("tiny", "mini", "1.3b", "7b")  # harness/presets.py FAMILIES (checked by the tests)


def _model_from_args(args: argparse.Namespace) -> list[tuple[str, object, dict]]:
    from harness.config_schema import from_dict
    from harness.model.config import ModelConfig
    from harness.presets import TABLE1, get_preset, paper_cells
    from harness.yaml_gate import load_yaml

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

    if args.context is None:
        args.context = 262144 if args.table1 else 4096
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


def add_plan_commands(sub: argparse._SubParsersAction) -> None:
    plan = sub.add_parser(
        "plan", help="parameters, cache sizes, FLOPs and GPU-hours of models, before launch"
    )
    plan.add_argument("--preset", action="append", help="preset name (repeatable); see: ablate presets")
    plan.add_argument("--config", action="append", help="YAML file with a model config (or a model: section)")
    plan.add_argument("--table1", action="store_true", help="the four models of the paper's Table 1")
    plan.add_argument(
        "--context",
        type=int,
        default=None,
        help="tokens of context for KV cache and FLOPs (default: 262144, the paper's Table 1, with --table1; "
        "else 4096)",
    )
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
