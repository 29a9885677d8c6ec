"""The packing loader: determinism, seeds, rank sharding, exact resume, workers, epochs, mixtures, caches."""

import os
import random

import numpy as np
import pytest
import torch

from harness.config_errors import ConfigError
from harness.config_schema import from_dict
from harness.data import DataConfig, make_batches
from harness.data.loader import MIX_BLOCK, block_counts, build_dataset
from harness.data.packs import write_pack
from harness.data.tokenizer import train_bpe
from harness.data.tokens import tokenize_to_cache

SEQ = 16


def _docs(tag, n, seed):
    rng = random.Random(seed)
    words = [f"{tag}{w}" for w in ("ka", "lo", "mi", "ne", "ru", "so", "ta", "vi")]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(5, 40))) + f" {i}." for i in range(n)]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A data dir with two tiny local packs and a small trained tokenizer."""
    data_dir = tmp_path_factory.mktemp("data")
    alpha = {"train": _docs("a", 300, 1), "validation": _docs("a", 20, 2)}
    beta = {"train": _docs("b", 120, 3), "validation": _docs("b", 10, 4)}
    write_pack(data_dir, "alpha", alpha)
    write_pack(data_dir, "beta", beta)
    tok = train_bpe(alpha["train"] + beta["train"], vocab_size=300)
    return data_dir, tok


def _cfg(data_dir, *corpora, **extra):
    train = [{"name": name, "source": "local", "weight": w} for name, w in corpora]
    return from_dict(DataConfig, {"data_dir": str(data_dir), "train": train, **extra})


def _take(it, n):
    return [next(it) for _ in range(n)]


def _same(batches_a, batches_b):
    return all(
        torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["targets"], b["targets"])
        for a, b in zip(batches_a, batches_b, strict=True)
    )


def test_batches_shapes_and_shift(env):
    data_dir, tok = env
    it = make_batches(_cfg(data_dir, ("alpha", 1)), tok, seq_len=SEQ, batch_size=4)
    b = next(it)
    assert set(b) == {"input_ids", "targets"}
    assert b["input_ids"].shape == b["targets"].shape == (4, SEQ)
    assert b["input_ids"].dtype == b["targets"].dtype == torch.long
    assert torch.equal(b["input_ids"][:, 1:], b["targets"][:, :-1])
    assert int(b["input_ids"].max()) < tok.vocab_size
    assert it.state_dict()["samples_consumed"] == 4


def test_documents_are_separated_by_eos(env):
    data_dir, tok = env
    cfg = _cfg(data_dir, ("alpha", 1))
    ds = build_dataset(cfg, tok, seq_len=SEQ)
    arr = np.memmap(ds.corpora[0].path, dtype=ds.corpora[0].dtype, mode="r")
    assert ds.corpora[0].dtype == "uint16"
    assert int((arr == tok.eos_id).sum()) == 300  # one separator after each train document
    first_doc = _docs("a", 300, 1)[0]
    assert tok.decode(arr[: int(np.argmax(arr == tok.eos_id))].tolist()) == first_doc


def test_deterministic_for_a_seed_and_seeds_differ(env):
    data_dir, tok = env
    cfg = _cfg(data_dir, ("alpha", 1), ("beta", 1))
    a = _take(make_batches(cfg, tok, seq_len=SEQ, batch_size=4, seed=7), 10)
    b = _take(make_batches(cfg, tok, seq_len=SEQ, batch_size=4, seed=7), 10)
    c = _take(make_batches(cfg, tok, seq_len=SEQ, batch_size=4, seed=8), 10)
    assert _same(a, b)
    assert not _same(a, c)


@pytest.mark.parametrize("world_size", [2, 3])
def test_rank_sharding_partitions_the_global_batch(env, world_size):
    data_dir, tok = env
    cfg = _cfg(data_dir, ("alpha", 2), ("beta", 1))
    per_rank = 3
    single = _take(make_batches(cfg, tok, seq_len=SEQ, batch_size=per_rank * world_size, seed=1), 5)
    ranks = [
        _take(
            make_batches(cfg, tok, seq_len=SEQ, batch_size=per_rank, rank=r, world_size=world_size, seed=1), 5
        )
        for r in range(world_size)
    ]
    for step in range(5):
        union = torch.cat([ranks[r][step]["input_ids"] for r in range(world_size)])
        # global sample k goes to rank k % world_size: rank r holds rows r, r + W, ... of the global batch
        for r in range(world_size):
            assert torch.equal(single[step]["input_ids"][r::world_size], ranks[r][step]["input_ids"])
        assert sorted(map(tuple, union.tolist())) == sorted(map(tuple, single[step]["input_ids"].tolist()))
    ds = build_dataset(cfg, tok, seq_len=SEQ, seed=1)
    n = 5 * per_rank * world_size
    taken = [ds.locate(k) for k in range(n)]
    assert len(set(taken)) == n  # no sample is used twice within an epoch


def test_resume_reproduces_the_continuation(env):
    data_dir, tok = env
    cfg = _cfg(data_dir, ("alpha", 1), ("beta", 1))
    for world_size in (1, 2):
        full = [
            _take(make_batches(cfg, tok, seq_len=SEQ, batch_size=4, rank=r, world_size=world_size), 12)
            for r in range(world_size)
        ]
        states = []
        for r in range(world_size):
            it = make_batches(cfg, tok, seq_len=SEQ, batch_size=4, rank=r, world_size=world_size)
            _take(it, 7)
            states.append(it.state_dict())
        assert all(s["samples_consumed"] == 7 * 4 * world_size for s in states)
        for r in range(world_size):
            by_start = make_batches(
                cfg,
                tok,
                seq_len=SEQ,
                batch_size=4,
                rank=r,
                world_size=world_size,
                start_sample=states[r]["samples_consumed"],
            )
            by_state = make_batches(
                cfg, tok, seq_len=SEQ, batch_size=4, rank=r, world_size=world_size, state=states[r]
            )
            assert _same(_take(by_start, 5), full[r][7:])
            assert _same(_take(by_state, 5), full[r][7:])


def test_resume_checks_the_fingerprint(env):
    data_dir, tok = env
    cfg = _cfg(data_dir, ("alpha", 1))
    it = make_batches(cfg, tok, seq_len=SEQ, batch_size=2, seed=0)
    next(it)
    with pytest.raises(ConfigError, match="fingerprint"):
        make_batches(cfg, tok, seq_len=SEQ, batch_size=2, seed=1, state=it.state_dict())


def test_workers_give_the_same_batches(env):
    data_dir, tok = env
    cfg = _cfg(data_dir, ("alpha", 3), ("beta", 1))
    zero = _take(make_batches(cfg, tok, seq_len=SEQ, batch_size=4, start_sample=12, num_workers=0), 8)
    it = make_batches(cfg, tok, seq_len=SEQ, batch_size=4, start_sample=12, num_workers=2)
    two = _take(it, 8)
    assert it.state_dict()["samples_consumed"] == 12 + 8 * 4
    it.close()
    assert _same(zero, two)


def test_epochs_reshuffle(env):
    data_dir, tok = env
    ds = build_dataset(_cfg(data_dir, ("beta", 1)), tok, seq_len=SEQ, seed=3)
    n = ds.n_samples[0]
    first = [ds.locate(k) for k in range(n)]
    second = [ds.locate(k) for k in range(n, 2 * n)]
    assert {e for _, e, _ in first} == {0} and {e for _, e, _ in second} == {1}
    assert sorted(i for _, _, i in first) == sorted(i for _, _, i in second) == list(range(n))
    assert [i for _, _, i in first] != [i for _, _, i in second]


def test_mixture_weights_are_respected(env):
    data_dir, tok = env
    ds = build_dataset(_cfg(data_dir, ("alpha", 3), ("beta", 1)), tok, seq_len=SEQ, seed=0)
    corpus = np.array([ds.locate(k)[0] for k in range(2 * MIX_BLOCK)])
    assert (corpus == 0).mean() == pytest.approx(0.75, abs=1e-3)  # exact per block of 4096
    window = corpus[1000:1500]
    assert (window == 0).mean() == pytest.approx(0.75, abs=0.08)
    assert list(corpus[:50]) != sorted(corpus[:50])  # interleaved, not in runs
    assert list(block_counts([1, 1, 1])) == [1366, 1365, 1365]
    assert block_counts([1e-6, 1]).min() == 1


def test_validation_split_uses_heldout_documents(env):
    data_dir, tok = env
    cfg = _cfg(data_dir, ("alpha", 1), ("beta", 1))
    ds = build_dataset(cfg, tok, split="validation", seq_len=SEQ)
    assert [c.name for c in ds.corpora] == ["alpha", "beta"]
    assert all("[validation]" in c.describe for c in ds.corpora)
    train = build_dataset(cfg, tok, split="train", seq_len=SEQ)
    assert ds.corpora[0].n_tokens < train.corpora[0].n_tokens


def test_token_cap(env):
    data_dir, tok = env
    ds = build_dataset(_cfg(data_dir, ("alpha", 1), max_tokens=500), tok, seq_len=SEQ)
    assert ds.corpora[0].n_tokens == 500
    assert ds.n_samples[0] == (500 - 1) // SEQ


def test_token_cache_is_reused_and_atomic(env, tmp_path, monkeypatch):
    _, tok = env
    write_pack(tmp_path, "gamma", {"train": _docs("g", 50, 5)})
    cfg = _cfg(tmp_path, ("gamma", 1))

    import harness.data.tokens as tokens

    real = tokens._tokenize

    def interrupted(src, tok, out, max_tokens):
        real(src, tok, out, max_tokens)  # writes a complete tokens.bin into the temporary dir ...
        raise KeyboardInterrupt  # ... and dies before the rename

    monkeypatch.setattr(tokens, "_tokenize", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_dataset(cfg, tok, seq_len=SEQ)
    root = tmp_path / "tokenized"
    assert [p for p in os.listdir(root) if not p.endswith(".lock")] == []  # nothing half-written is left

    monkeypatch.setattr(tokens, "_tokenize", real)
    first = build_dataset(cfg, tok, seq_len=SEQ)
    monkeypatch.setattr(tokens, "_tokenize", lambda *a: pytest.fail("re-tokenized"))
    again = build_dataset(cfg, tok, seq_len=SEQ)
    assert again.fingerprint() == first.fingerprint()


def test_cache_key_changes_with_tokenizer_and_cap(env):
    data_dir, tok = env
    from harness.data.config import CorpusSpec
    from harness.data.sources import resolve

    src = resolve(CorpusSpec(name="alpha", source="local"), "train", DataConfig(data_dir=str(data_dir)))
    other = train_bpe(_docs("a", 100, 9), vocab_size=280)
    keys = {
        tokenize_to_cache(src, tok, data_dir).key,
        tokenize_to_cache(src, other, data_dir).key,
        tokenize_to_cache(src, tok, data_dir, max_tokens=100).key,
    }
    assert len(keys) == 3


def test_corpus_too_small_for_seq_len(env):
    data_dir, tok = env
    with pytest.raises(ConfigError, match="too few"):
        build_dataset(_cfg(data_dir, ("alpha", 1), max_tokens=10), tok, seq_len=SEQ)


def test_bad_arguments(env):
    data_dir, tok = env
    cfg = _cfg(data_dir, ("alpha", 1))
    with pytest.raises(ConfigError, match="rank"):
        make_batches(cfg, tok, seq_len=SEQ, rank=2, world_size=2)
    with pytest.raises(ConfigError, match="batch_size"):
        make_batches(cfg, tok, seq_len=SEQ, batch_size=0)


def test_hub_corpus_is_streamed_and_capped(env, tmp_path, monkeypatch):
    """A hub corpus goes through datasets.load_dataset(path, config, split, streaming=True) and only as
    many documents are read as the token cap needs."""
    import datasets

    _, tok = env
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    calls, consumed = [], []

    def fake_load_dataset(path, name=None, split=None, streaming=False, **kwargs):
        calls.append((path, name, split, streaming))

        def rows():
            for i in range(100_000):
                consumed.append(i)
                yield {"text": " ".join(_docs("h", 1, i)), "url": f"u{i}"}

        return rows()

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    cfg = from_dict(DataConfig, {"data_dir": str(tmp_path), "train": [{"name": "c4"}]})
    it = make_batches(cfg, tok, seq_len=SEQ, batch_size=2, num_samples=100)
    assert calls == [("allenai/c4", "en", "train", True)]
    cap = it.dataset.corpora[0].n_tokens
    assert cap == 1 << 16  # what 100 samples need, rounded up to a power of two (at least 2^16)
    assert len(consumed) < 100_000  # stopped streaming once the cap was reached
    assert next(it)["input_ids"].shape == (2, SEQ)

    calls.clear()
    capped = from_dict(DataConfig, {"data_dir": str(tmp_path), "train": [{"name": "c4"}], "max_tokens": 5000})
    ds = build_dataset(capped, tok, split="validation", seq_len=SEQ)
    assert calls == [("allenai/c4", "en", "validation", True)] and ds.corpora[0].n_tokens == 5000
