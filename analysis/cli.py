"""``ablate report ...``: the report folder of a sweep's runs (registered by :func:`add_report_commands`).

ablate report SWEEP.yaml [SWEEP.yaml ...] | SWEEP_FOLDER | RUN_DIR ... [--out DIR] [--root DIR]
              [--format md --format csv --format tex]
ablate report --bench DIR [--out DIR]

Prints every table and the verdict of every paper claim, then where ``index.html`` is. With ``--bench``
it renders the ``ablate bench`` records of DIR instead (:mod:`analysis.bench_report`, default out
``DIR/report``) and prints where its README.md is.
"""

from __future__ import annotations

import argparse


def cmd_report(args: argparse.Namespace) -> int:
    from analysis.report import FORMATS, build_report
    from harness.config_errors import ConfigError

    if args.bench is not None:
        from analysis.bench_report import build_bench_report

        if args.sources:
            raise ConfigError("give sweep files / run directories or --bench DIR, not both")
        print(f"report: {build_bench_report(args.bench, out=args.out).resolve()}")
        return 0
    if not args.sources:
        raise ConfigError("give sweep files, sweep folders or run directories to report on (or --bench DIR)")

    formats = tuple(args.format or FORMATS)
    index = build_report(args.sources, out=args.out, root=args.root, formats=formats)
    print(f"report: {index.parent.resolve()}")
    print(f"open {index.resolve()}")
    return 0


def add_report_commands(subparsers) -> None:
    """Register ``report`` on the ``ablate`` subparsers (sets ``func``)."""
    rep = subparsers.add_parser(
        "report",
        help="the paper's tables and figures from a sweep's runs, beside the paper's numbers",
        description="Write a report folder (index.md, self-contained index.html, tables/, figures/, data/) "
        "with every table and figure the runs support, the paper's values beside ours and the paper's "
        "claims checked. Re-running replaces the folder; run directories are only read.",
    )
    rep.add_argument(
        "sources",
        nargs="*",
        metavar="SWEEP.yaml|RUN_DIR",
        help="sweep files, sweep folders (runs/<sweep>) or run directories",
    )
    rep.add_argument(
        "--bench",
        default=None,
        metavar="DIR",
        help="instead of runs, render the ablate bench records (*.json) in DIR: Markdown tables and the "
        "Figs 2-3 style figures (default --out: DIR/report)",
    )
    rep.add_argument("--out", default=None, help="report folder (default: reports/<sweep>)")
    rep.add_argument(
        "--root",
        default="runs",
        help="folder holding <sweep>/<arm>-<run id>/ (for sweep files; default: runs)",
    )
    rep.add_argument(
        "--format",
        action="append",
        choices=("md", "csv", "tex"),
        help="table formats to write (repeatable; default: all of md, csv, tex)",
    )
    rep.set_defaults(func=cmd_report)
