"""``ablate export hf RUN_DIR OUT [--step N]``: a run's checkpoint as a Hugging Face transformers model.

``OUT`` gets what ``AutoModelForCausalLM.from_pretrained(OUT)`` and ``AutoTokenizer.from_pretrained(OUT)``
load, offline:

* ``config.json`` and ``model.safetensors``: transformers' ``JambaForCausalLM`` (harness/hf_interop/), or
  its ``BambaForCausalLM`` for a Mamba-2 hybrid (``S`` layers; harness/hf_interop/bamba.py),
  in the checkpoint's dtype (fp32), with the run's EOS as ``eos_token_id`` and ``bos_token_id`` (documents
  were packed after an EOS; the tokenizer adds no BOS) and the training context as
  ``max_position_embeddings`` (the model has no positional limit, but that is the context it was trained
  at; lm-eval's HF model truncates to it, as our own adapter does);
* ``tokenizer.json``, ``tokenizer_config.json`` (and ``special_tokens_map.json`` where transformers writes
  one): the run's own tokenizer as a ``PreTrainedTokenizerFast`` (the class every transformers version
  loads), EOS ``<|endoftext|>``, which encodes text to the ids the run trained on (an ``<|endoftext|>``
  spelled inside a text is text, as in training);
* ``jamba_ablate.json``: where it came from (run directory, run id, step, checkpoint, config hash,
  pattern, tokenizer hash).

Layouts transformers' Jamba cannot run (pure Mamba, RoPE, Mamba without its inner norms, renormalised
routing, ...) are refused before anything is written, with the feature and the reason. ``OUT`` is written
whole or not at all; an existing non-empty ``OUT`` is replaced only with ``overwrite``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from harness.config_errors import ConfigError

PROVENANCE_FILE = "jamba_ablate.json"


def hf_tokenizer(tokenizer, model_max_length: int):
    """The run's tokenizer as a ``transformers.PreTrainedTokenizerFast`` (no BOS added, EOS set)."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer.backend,
        eos_token=tokenizer.eos_token,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
        # as in training: "<|endoftext|>" spelled inside a text is text; the EOS id comes from packing
        split_special_tokens=True,
    )


def export_hf(run_dir: str | Path, out: str | Path, step: int | None = None, overwrite: bool = False) -> Path:
    """Write the run's checkpoint at ``step`` (default: the latest) to ``out``; see the module docstring."""
    from harness.atomic import atomic_directory
    from harness.hf_interop import jamba_layout, save_hf_checkpoint
    from harness.training.config import load_run_config
    from harness.training.loading import load_run
    from harness.training.rundir import RunDir

    run = RunDir(run_dir)
    out = Path(out)
    if not run.config.exists():
        raise ConfigError(
            f"{run.root} is not a run directory (no config.yaml); pass a directory made by `ablate train` "
            "or `ablate sweep launch`"
        )
    model_cfg = load_run_config(run.config).model
    if "S" in model_cfg.pattern:  # Mamba-2 hybrids are Bamba's, the others Jamba's
        from harness.hf_interop.bamba import bamba_config_dict, save_bamba_checkpoint

        bamba_config_dict(model_cfg)  # refuses what transformers' Bamba cannot run
        save_checkpoint = save_bamba_checkpoint
    else:
        jamba_layout(model_cfg)  # refuses what transformers' Jamba cannot run
        save_checkpoint = save_hf_checkpoint
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ConfigError(f"{out} exists and is not empty; choose another folder or pass --overwrite")
    if out.resolve() == run.root.resolve() or run.root.resolve() in out.resolve().parents:
        raise ConfigError(f"{out} is inside the run directory {run.root}; export elsewhere")
    loaded = load_run(run.root, step=step, device="cpu")
    tok = loaded.tokenizer
    with atomic_directory(out) as tmp:
        save_checkpoint(
            loaded.model,
            tmp,
            eos_token_id=tok.eos_id,
            bos_token_id=tok.eos_id,
            max_position_embeddings=loaded.seq_len,
        )
        hf_tokenizer(tok, loaded.seq_len).save_pretrained(str(tmp))
        tok_config = tmp / "tokenizer_config.json"
        data = json.loads(tok_config.read_text())
        data["tokenizer_class"] = "PreTrainedTokenizerFast"  # transformers 5 writes its own class name
        tok_config.write_text(json.dumps(data, indent=2) + "\n")
        provenance = {
            **loaded.provenance(),
            "run_dir": str(run.root.resolve()),
            "tokenizer": {"kind": tok.kind, "hash": tok.hash, "vocab_size": tok.vocab_size},
            "seq_len": loaded.seq_len,
        }
        (tmp / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
    return out


def cmd_export_hf(args: argparse.Namespace) -> int:
    try:
        out = export_hf(args.run_dir, args.out, step=args.step, overwrite=args.overwrite)
    except ImportError as e:  # transformers missing: the message says what to install
        print(f"ablate: error: {e}", file=sys.stderr)
        return 2
    print(f"{out}: transformers checkpoint and tokenizer (AutoModelForCausalLM, AutoTokenizer)")
    return 0


def add_export_commands(sub) -> None:
    """``ablate export hf`` (called by ablate/cli.py)."""
    export = sub.add_parser("export", help="export a run's checkpoint to other libraries")
    export_sub = export.add_subparsers(dest="export", required=True)
    hf = export_sub.add_parser(
        "hf",
        help="a transformers checkpoint (JambaForCausalLM) with the run's tokenizer",
        description="Write OUT with config.json, model.safetensors and the tokenizer files, which "
        "AutoModelForCausalLM.from_pretrained(OUT) and AutoTokenizer.from_pretrained(OUT) load. Layouts "
        "transformers' Jamba cannot run (pure Mamba, RoPE, no inner Mamba norms, renormalised routing) "
        "are refused with the reason.",
    )
    hf.add_argument("run_dir", metavar="RUN_DIR", help="run directory (config.yaml + checkpoints/)")
    hf.add_argument("out", metavar="OUT", help="folder to write (must not exist, or be empty)")
    hf.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    hf.add_argument("--overwrite", action="store_true", help="replace OUT if it holds files")
    hf.set_defaults(func=cmd_export_hf)
