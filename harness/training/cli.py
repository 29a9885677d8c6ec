"""``ablate train``: train (or resume) one run from a YAML run config, stopping cleanly on SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import sys

from harness.config_errors import ConfigError

OVERRIDES_HELP = (
    "dotted-key overrides of the file, validated like the file itself: train.steps=200 optim.lr=6e-4 "
    "tracking.wandb=true (an override that changes the experiment changes the run id, as an edit would)"
)


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


def add_train_commands(sub: argparse._SubParsersAction) -> None:
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
