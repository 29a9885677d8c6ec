"""``ablate sweep plan|launch|status|cancel``: a sweep file's runs, their cost, submission and state."""

from __future__ import annotations

import argparse
import sys

SWEEP_OVERRIDES_HELP = (
    "dotted-key overrides of the sweep file: sweep fields (arms.mamba.optim.lr=2e-3, seeds=[0,1], "
    "resources.time=02:00:00) or run-config keys for every run (train.steps=100); status and cancel "
    "take the same ones"
)


def cmd_sweep_plan(args: argparse.Namespace) -> int:
    from sweeps.plan import print_plan

    print_plan(args.file, show_sbatch=not args.no_sbatch, overrides=args.overrides)
    return 0


def cmd_sweep_launch(args: argparse.Namespace) -> int:
    from sweeps.launch import launch, results_summary, wait

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

    from sweeps.config import expand_sweep, load_sweep
    from sweeps.lifecycle import print_status, run_states, stale_run_dirs

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
    from sweeps.launch import cancel

    cancel(args.file, root=args.root, overrides=args.overrides)
    return 0


def add_sweep_commands(sub: argparse._SubParsersAction) -> None:
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
