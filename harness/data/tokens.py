"""Tokenize a corpus once into a flat on-disk token array (Megatron/nanoGPT style).

``<data_dir>/tokenized/<name>-<split>-<key>/`` holds ``tokens.bin`` (a raw little-endian ``uint16`` array
when the vocabulary fits in 16 bits, else ``uint32``; read with :func:`numpy.memmap`) and ``index.json``
(token and document counts, dtype, EOS id, the source's identity and the tokenizer hash). Documents are
concatenated as ``doc EOS doc EOS ...``. The key hashes (cache format, source identity, tokenizer hash,
token cap), so a changed pack, tokenizer or cap gets a new cache and an old one is never reused wrongly.

Writes are atomic: the array is written into a temporary directory next to the final one and renamed into
place only when complete, so an interrupted tokenization never leaves a corrupt cache; a file lock makes
concurrent builders (data-parallel ranks) build it once and the others wait and reuse it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.atomic import atomic_directory
from harness.config_errors import ConfigError
from harness.locks import file_lock

log = logging.getLogger("harness.data")

CACHE_FORMAT = 1
BATCH_DOCS = 256
BATCH_BYTES = 8 << 20


@dataclass(frozen=True)
class TokenArray:
    """A tokenized corpus on disk."""

    path: str  # the cache directory
    n_tokens: int
    dtype: str
    key: str
    index: dict

    @property
    def bin_path(self) -> str:
        return os.path.join(self.path, "tokens.bin")

    def open(self) -> np.ndarray:
        return np.memmap(self.bin_path, dtype=np.dtype(self.dtype), mode="r", shape=(self.n_tokens,))


def token_dtype(vocab_size: int) -> str:
    return "uint16" if vocab_size <= 1 << 16 else "uint32"


def cache_key(src, tok, max_tokens: int | None) -> str:
    ident = {
        "format": CACHE_FORMAT,
        "source": src.identity(),
        "tokenizer": tok.hash,
        "max_tokens": max_tokens,
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def _load(final: Path, key: str) -> TokenArray:
    index = json.loads((final / "index.json").read_text())
    expected = index["n_tokens"] * np.dtype(index["dtype"]).itemsize
    actual = (final / "tokens.bin").stat().st_size
    if actual != expected:
        raise ConfigError(f"token cache {final} is corrupt ({actual} bytes, expected {expected}); delete it")
    return TokenArray(str(final), index["n_tokens"], index["dtype"], key, index)


def tokenize_to_cache(src, tok, data_dir, max_tokens: int | None = None) -> TokenArray:
    """The token array of resolved source ``src`` under tokenizer ``tok`` (built on first use)."""
    from harness.data.config import resolve_data_dir

    root = resolve_data_dir(data_dir) / "tokenized"
    root.mkdir(parents=True, exist_ok=True)
    key = cache_key(src, tok, max_tokens)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{src.name}-{src.split}")
    final = root / f"{safe}-{key}"
    if (final / "index.json").is_file():
        return _load(final, key)
    with file_lock(root / f".{final.name}.lock"):
        if (final / "index.json").is_file():
            return _load(final, key)
        with atomic_directory(final) as tmp:
            index = _tokenize(src, tok, tmp / "tokens.bin", max_tokens)
            index["key"] = key
            (tmp / "index.json").write_text(json.dumps(index, indent=2) + "\n")
    return _load(final, key)


def _tokenize(src, tok, out: Path, max_tokens: int | None) -> dict:
    dtype = np.dtype(token_dtype(tok.vocab_size))
    eos = tok.eos_id
    t0 = last_log = time.time()
    n_tokens = n_docs = n_bytes = 0
    truncated = False
    batch: list[str] = []
    batch_bytes = 0

    def flush(f) -> bool:
        nonlocal n_tokens, n_docs, truncated
        for ids in tok.encode_batch(batch):
            ids.append(eos)
            if max_tokens is not None and n_tokens + len(ids) >= max_tokens:
                ids = ids[: max_tokens - n_tokens]
                truncated = True
            f.write(np.asarray(ids, dtype=dtype).tobytes())
            n_tokens += len(ids)
            n_docs += 1
            if truncated:
                return True
        batch.clear()
        return False

    with open(out, "wb") as f:
        for text in src.iter_texts():
            batch.append(text)
            batch_bytes += len(text)
            n_bytes += len(text)
            if len(batch) >= BATCH_DOCS or batch_bytes >= BATCH_BYTES:
                batch_bytes = 0
                if flush(f):
                    break
                if time.time() - last_log > 10:
                    last_log = time.time()
                    log.info(
                        "tokenizing %s: %d docs, %.1fM tokens, %.1f MB/s",
                        src.describe(),
                        n_docs,
                        n_tokens / 1e6,
                        n_bytes / 1e6 / (last_log - t0),
                    )
        else:
            if batch:
                flush(f)
        f.flush()
        os.fsync(f.fileno())
    if n_tokens < 2:
        raise ConfigError(f"corpus '{src.name}' ({src.describe()}) has no text to tokenize")
    seconds = time.time() - t0
    log.info("tokenized %s: %d docs, %d tokens in %.1f s", src.describe(), n_docs, n_tokens, seconds)
    return {
        "format": CACHE_FORMAT,
        "n_tokens": n_tokens,
        "n_docs": n_docs,
        "chars": n_bytes,
        "dtype": dtype.name,
        "eos_id": eos,
        "tokenizer_hash": tok.hash,
        "tokenizer_kind": tok.kind,
        "vocab_size": tok.vocab_size,
        "source": src.identity(),
        "describe": src.describe(),
        "max_tokens": max_tokens,
        "truncated": truncated,
        "seconds": round(seconds, 2),
    }
