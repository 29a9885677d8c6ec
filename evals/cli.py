"""``ablate eval ...``: run evaluation suites on run directories (registered by :func:`add_eval_commands`).

ablate eval RUN_DIR [RUN_DIR ...] --suite S [--suite S ...] | --suite all
            [--step N] [--limit N] [--device D] [--scan-backend B] [--threads N]
            [--option SUITE.KEY=VALUE ...] [--overwrite | --out DIR]

Each run is loaded once (at its latest checkpoint, or ``--step``). A suite starts from the options the
run's plan records for it (run.json; the suite's defaults if none) with ``--limit`` and ``--option`` on
top: the same options write the planned result, ``evals/<suite>.json``; others write beside it, in
``evals/adhoc/<suite>-<spec hash>.json``, unless ``--overwrite`` (see evals/runner.py). ``--out DIR``
writes ``DIR/<run dir name>/<suite>.json`` and leaves the run directory untouched. ``--option`` values are
parsed as YAML: ``icl.shots=2``, ``perplexity.corpora=[c4,code]``, ``induction.natural_corpus=null``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.config_errors import ConfigError


def parse_options(items: list[str], suites: list[str]) -> dict[str, dict]:
    """``SUITE.KEY=VALUE`` strings -> {suite: {key: value}}; values are YAML scalars or lists."""
    from evals.suites import get_suite
    from harness.yaml_gate import parse_yaml

    out: dict[str, dict] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        suite, dot, key = name.partition(".")
        if not sep or not dot or not key:
            raise ConfigError(f"--option {item!r}: expected SUITE.KEY=VALUE, e.g. icl.shots=2")
        get_suite(suite)
        if suite not in suites:
            raise ConfigError(
                f"--option {item!r}: suite '{suite}' is not among the suites run ({', '.join(suites)})"
            )
        value = parse_yaml(raw, f"--option {item!r}", mapping=False)  # the YAML gate, as for files
        out.setdefault(suite, {})[key] = value
    return out


def selected_suites(names: list[str]) -> list[str]:
    """The suites asked for, in order, without repeats; ``all`` is every suite."""
    from evals.suites import SUITES, get_suite

    out: list[str] = []
    for name in names:
        for suite in SUITES if name == "all" else [get_suite(name).name]:
            if suite not in out:
                out.append(suite)
    return out


def cmd_eval(args: argparse.Namespace) -> int:
    from evals.plan import plan_from_record
    from evals.runner import run_loaded_suite
    from evals.suites import resolve_options, summarize
    from harness.config_schema import to_dict
    from harness.locks import LockBusy, describe_holder
    from harness.training.loading import load_run
    from harness.training.rundir import RunDir

    suites = selected_suites(args.suite)
    given = parse_options(args.option, suites)
    if args.limit is not None:
        for suite in suites:
            given.setdefault(suite, {})["limit"] = args.limit
    for suite in suites:  # fail on a bad option before any model is loaded
        resolve_options(suite, given.get(suite))
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    for run_dir in args.run_dirs:
        if not args.out and (holder := RunDir(run_dir).holder()):  # before the checkpoint load, not after
            raise LockBusy(
                f"{run_dir} is in use by {describe_holder(holder)}; wait for it, or give --out DIR to "
                "evaluate without writing into the run directory",
                holder,
            )
        plan = plan_from_record(RunDir(run_dir).read_record())
        loaded = load_run(run_dir, step=args.step, device=args.device, scan_backend=args.scan_backend)
        print(
            f"{run_dir}: step {loaded.step} ({loaded.checkpoint}), config {loaded.config_hash}, "
            f"pattern {loaded.model.cfg.pattern}, device {loaded.device}"
        )
        for suite in suites:
            planned = to_dict(plan[suite]) if suite in plan else {}
            options = resolve_options(suite, {**planned, **given.get(suite, {})})
            out = Path(args.out) / Path(run_dir).resolve().name / f"{suite}.json" if args.out else None
            path, record = run_loaded_suite(loaded, suite, options, overwrite=args.overwrite, out=out)
            kind = "planned" if record["planned"] else "ad hoc" if "adhoc" in path.parts else "result"
            print(f"  {suite} ({record['elapsed_s']:.1f} s, {kind}) -> {path}")
            for line in summarize(suite, record):
                print(f"    {line}")
        sys.stdout.flush()
    return 0


def cmd_lm_eval(args) -> int:
    from evals.lm_eval_model import cli_main

    return cli_main(args.passthrough)


def add_eval_commands(subparsers) -> None:
    """Register ``eval`` and ``lm-eval`` on the ``ablate`` subparsers (sets ``func``)."""
    lm = subparsers.add_parser(
        "lm-eval",
        help="lm-eval's own command line with our model registered: --model jamba-ablate --model_args "
        "pretrained=RUN_DIR[,step=N] --tasks ...",
        description="lm-evaluation-harness's command line, its flags and output layout unchanged, with the "
        "jamba-ablate model registered (a bare 'lm_eval --model jamba-ablate' cannot see it: lm-eval 0.4 "
        "has no model plugins). Offline, the local task copies are included unless --include_path is given.",
        add_help=False,
    )
    lm.set_defaults(func=cmd_lm_eval, passthrough=[])  # every argument after `lm-eval` is lm-eval's
    from evals.suites import SUITES

    ev = subparsers.add_parser(
        "eval",
        help="evaluate run directories: perplexity, OLLM/ablation benchmarks, ICL, probes, attention heads",
        description="Run evaluation suites on trained runs; each writes <run_dir>/evals/<suite>.json with "
        "metrics, sample counts, settings, checkpoint step, config hash and library versions.",
    )
    ev.add_argument(
        "run_dirs", nargs="+", metavar="RUN_DIR", help="run directories (config.yaml + checkpoints/)"
    )
    ev.add_argument(
        "--suite",
        action="append",
        required=True,
        metavar="SUITE",
        help=f"suite to run (repeatable): {', '.join(SUITES)}, or all",
    )
    ev.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    ev.add_argument(
        "--limit",
        type=int,
        default=None,
        help="documents / queries / sequences per suite (default: each suite's)",
    )
    ev.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    ev.add_argument(
        "--scan-backend",
        choices=("auto", "reference", "cpu", "cuda", "triton"),  # harness.kernels.selective_scan.BACKENDS
        default=None,
        help="selective-scan implementation (default: auto, the best for --device, whatever the run "
        "trained with; a run pinned to cuda evaluates on a CPU)",
    )
    where = ev.add_mutually_exclusive_group()
    where.add_argument(
        "--overwrite",
        action="store_true",
        help="write evals/<suite>.json even when the options differ from the run's plan",
    )
    where.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="write DIR/<run>/<suite>.json; the run directory is untouched (default: the run's evals/)",
    )
    ev.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ev.add_argument(
        "--option",
        "-o",
        action="append",
        default=[],
        metavar="SUITE.KEY=VALUE",
        help="suite option, value as YAML (repeatable), e.g. icl.shots=2 or perplexity.corpora=[c4]",
    )
    ev.set_defaults(func=cmd_eval)
