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

A user's configuration mistake (:class:`harness.config_errors.ConfigError`) is printed as one clear
message and exit status 2, never as a traceback; so is an interruption (Ctrl-C: exit status 130).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from ablate.help import finish_parser
from ablate.plan import add_plan_commands
from analysis.cli import add_report_commands
from analysis.notebooks import add_notebook_commands
from evals.cli import add_eval_commands
from harness.benchmarks.cli import add_bench_commands
from harness.config_errors import ConfigError
from harness.data.cli import add_data_commands
from harness.diskspace import DiskFull
from harness.export import add_export_commands
from harness.training.cli import add_train_commands
from sweeps.cli import add_sweep_commands

DESCRIPTION = (
    "Ablations of hybrid Transformer-Mamba-MoE language models (the Jamba paper's architecture study): "
    "plan, train, sweep, evaluate, export and report."
)

# Each area of the house registers its own commands, in the order `ablate --help` lists them.
REGISTRARS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    add_plan_commands,  # plan, presets (ablate/plan.py)
    add_train_commands,  # train (harness/training/cli.py)
    add_sweep_commands,  # sweep plan|launch|status|cancel (sweeps/cli.py)
    add_data_commands,  # data prepare|show, tokenizer (harness/data/cli.py)
    add_eval_commands,  # eval (evals/cli.py)
    add_export_commands,  # export hf (harness/export.py)
    add_report_commands,  # report (analysis/cli.py)
    add_notebook_commands,  # notebook (analysis/notebooks.py)
    add_bench_commands,  # bench scan|train|prefill|decode|context (harness/benchmarks/cli.py)
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ablate", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    for register in REGISTRARS:
        register(sub)
    return finish_parser(parser)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if hasattr(args, "passthrough"):  # a command that hands its arguments on (ablate lm-eval ...)
        args.passthrough = rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"ablate: error: {e}", file=sys.stderr)
        return 2
    except DiskFull as e:  # the filesystem's state, not a bug: one line, and what to do
        print(f"ablate: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nablate: interrupted (a training run resumes from its latest checkpoint)", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`ablate plan ... | head`): stop quietly, as a pipe does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at interpreter exit
        return 141


if __name__ == "__main__":
    sys.exit(main())
