"""Corpus specs: strict configs, named corpora, the hub/local resolution rule and its errors; pack helpers."""

import json

import pytest

from harness.config_errors import ConfigError
from harness.config_schema import from_dict
from harness.data import CorpusSpec, DataConfig, formats, resolve_data_dir
from harness.data.packs import Doc, is_heldout, split_documents, write_pack
from harness.data.sources import DataUnavailableError, resolve


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def online(monkeypatch):
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


def test_unknown_corpus_name_suggests_the_nearest():
    with pytest.raises(ConfigError, match=r"exp.yaml.*unknown corpus 'c5'. Did you mean 'c4'\?"):
        from_dict(DataConfig, {"train": [{"name": "c5"}]}, source="exp.yaml")
    with pytest.raises(ConfigError, match="Did you mean 'books'"):
        CorpusSpec(name="bokos")


def test_data_config_is_strict():
    with pytest.raises(ConfigError, match="Did you mean 'weight'"):
        from_dict(DataConfig, {"train": [{"name": "c4", "wieght": 2}]})
    with pytest.raises(ConfigError, match="weight must be > 0"):
        from_dict(DataConfig, {"train": [{"name": "c4", "weight": 0}]})
    with pytest.raises(ConfigError, match="source"):
        from_dict(DataConfig, {"train": [{"name": "c4", "source": "s3"}]})
    with pytest.raises(ConfigError, match="at least one"):
        from_dict(DataConfig, {"train": []})
    cfg = from_dict(
        DataConfig,
        {
            "train": [
                {"name": "c4", "weight": 3},
                {"name": "books"},
                {"name": "mine", "hub_path": "me/corpus"},
            ],
            "tokenizer": {"kind": "gpt2"},
        },
    )
    assert [s.name for s in cfg.corpora("validation")] == ["c4", "books", "mine"]
    assert [s.weight for s in cfg.corpora("validation")] == [3, 1, 1]


def test_data_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("ABLATE_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_dir(None) == tmp_path / "env"
    assert resolve_data_dir(str(tmp_path / "explicit")) == tmp_path / "explicit"
    monkeypatch.delenv("ABLATE_DATA_DIR")
    assert str(resolve_data_dir(None)).endswith(".cache/jamba-ablate/data")


def test_named_corpus_offline_without_pack_says_run_prepare(offline, tmp_path):
    cfg = DataConfig(data_dir=str(tmp_path))
    for name in ("c4", "web", "books", "pg19", "code"):
        with pytest.raises(DataUnavailableError, match="ablate data prepare"):
            resolve(CorpusSpec(name=name), "train", cfg)
    custom = CorpusSpec(name="mine", hub_path="someone/corpus", text_field="body")
    with pytest.raises(DataUnavailableError, match="ablate data prepare"):
        resolve(custom, "train", cfg)
    with pytest.raises(DataUnavailableError, match=r"ablate data prepare --packs web"):
        resolve(CorpusSpec(name="c4", source="local"), "train", cfg)


def test_hub_specs_when_online(online, tmp_path):
    cfg = DataConfig(data_dir=str(tmp_path))
    c4 = resolve(CorpusSpec(name="c4"), "train", cfg)
    assert (c4.kind, c4.path, c4.config, c4.split, c4.text_field, c4.streaming) == (
        "hub",
        "allenai/c4",
        "en",
        "train",
        "text",
        True,
    )
    assert resolve(CorpusSpec(name="c4"), "validation", cfg).split == "validation"
    books = resolve(CorpusSpec(name="pg19"), "validation", cfg)
    assert (books.path, books.split, books.text_field) == ("emozilla/pg19", "validation", "text")
    code = resolve(CorpusSpec(name="code"), "validation", cfg)
    assert (code.path, code.split, code.text_field) == (
        "codeparrot/codeparrot-clean-valid",
        "train",
        "content",
    )
    custom = resolve(CorpusSpec(name="mine", hub_path="me/x", hub_config="v2", split="dev"), "train", cfg)
    assert (custom.path, custom.config, custom.split, custom.text_field) == ("me/x", "v2", "dev", "text")


def test_local_pack_wins_when_present(offline, tmp_path):
    write_pack(tmp_path, "web", {"train": ["some web text"] * 2, "validation": ["held out"]})
    cfg = DataConfig(data_dir=str(tmp_path))
    src = resolve(CorpusSpec(name="c4"), "train", cfg)
    assert src.kind == "local" and src.split == "train" and src.path.endswith("packs/web")
    assert list(src.iter_texts()) == ["some web text"] * 2
    assert list(resolve(CorpusSpec(name="web"), "validation", cfg).iter_texts()) == ["held out"]
    # source: hub overrides the pack
    hub = resolve(CorpusSpec(name="c4", source="hub"), "train", cfg)
    assert hub.kind == "hub" and hub.path == "allenai/c4"
    with pytest.raises(ConfigError, match="no split 'test'"):
        resolve(CorpusSpec(name="c4", split="test"), "train", cfg)


def test_local_pack_wins_online_too(online, tmp_path):
    write_pack(tmp_path, "books", {"train": ["a book"], "validation": ["another"]})
    assert resolve(CorpusSpec(name="books"), "train", DataConfig(data_dir=str(tmp_path))).kind == "local"


def test_hub_failure_is_a_clear_error(offline, tmp_path):
    src = resolve(CorpusSpec(name="c4", source="hub"), "train", DataConfig(data_dir=str(tmp_path)))
    with pytest.raises(DataUnavailableError, match="ablate data prepare"):
        next(src.iter_texts())


def test_data_files(tmp_path):
    (tmp_path / "a.jsonl").write_text(
        json.dumps({"body": "first doc"}) + "\n" + json.dumps({"body": "second"}) + "\n"
    )
    (tmp_path / "b.txt").write_text("a whole\n\ntext file")
    cfg = DataConfig(data_dir=str(tmp_path))
    src = resolve(
        CorpusSpec(name="mine", data_files=[str(tmp_path / "a.jsonl")], text_field="body"), "train", cfg
    )
    assert src.kind == "files" and list(src.iter_texts()) == ["first doc", "second"]
    txt = resolve(CorpusSpec(name="t", data_files=[str(tmp_path / "*.txt")]), "train", cfg)
    assert list(txt.iter_texts()) == ["a whole\n\ntext file"]
    with pytest.raises(ConfigError, match="no file matches"):
        resolve(CorpusSpec(name="t", data_files=[str(tmp_path / "*.csv")]), "train", cfg)
    with pytest.raises(ConfigError, match="no field 'text'"):
        next(resolve(CorpusSpec(name="m", data_files=[str(tmp_path / "a.jsonl")]), "train", cfg).iter_texts())


def test_heldout_split_is_by_document_and_stable():
    docs = [Doc(f"d/{i}", f"document number {i} " * 3) for i in range(2000)]
    parts = split_documents(docs, 0.05)
    train = {d.text for d in parts["train"]}
    val = {d.text for d in parts["validation"]}
    assert not train & val and len(train) + len(val) == 2000
    assert 40 < len(val) < 170
    assert all(is_heldout(t, 0.05) for t in val) and not any(is_heldout(t, 0.05) for t in train)
    assert {d.text for d in split_documents(list(reversed(docs)), 0.05)["validation"]} == val
    tiny = split_documents([Doc("a", "x"), Doc("b", "y")], 0.05)
    assert len(tiny["train"]) == len(tiny["validation"]) == 1


def test_text_extraction_helpers():
    raw = (
        b"From: a@b.c\nSubject: hi\nContent-Type: text/html; charset=utf-8\n\n"
        b"<html><head><title>x</title><style>p{}</style></head><body><p>Hello &amp; welcome</p>"
        b"<p>second<br>line</p></body></html>"
    )
    assert formats.email_body(raw) == "Hello & welcome\n\nsecond\nline"
    plain = b"From: a@b.c\nSubject: hi\n\nMy reply.\n> quoted text\n>> more\n\nBye"
    assert formats.email_body(plain) == "My reply.\n\nBye"
    osis = '<div sID="1" type="x-p"/> First <hi type="italic">para</hi>. <div eID="1" type="x-p"/> Second.'
    assert formats.osis_to_text(osis) == "First para.\n\nSecond."
    assert formats.normalize_whitespace("a  b \n\n\n\n c\t") == "a b\n\nc"


def block_datasets_import(monkeypatch) -> None:
    """Make `import datasets` fail, as on the GPU image, which lacks the package."""
    import builtins

    real_import = builtins.__import__

    def no_datasets(name, *args, **kwargs):
        if name == "datasets" or name.startswith("datasets."):
            raise ImportError("no datasets here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_datasets)


def test_local_pack_without_datasets_installed(offline, tmp_path, monkeypatch):
    write_pack(tmp_path, "web", {"train": [f"doc {i}" for i in range(600)], "validation": ["v"]})
    src = resolve(CorpusSpec(name="c4"), "train", DataConfig(data_dir=str(tmp_path)))
    with_datasets = list(src.iter_texts())
    block_datasets_import(monkeypatch)
    assert list(src.iter_texts()) == with_datasets == [f"doc {i}" for i in range(600)]
    hub = resolve(CorpusSpec(name="c4", source="hub"), "train", DataConfig(data_dir=str(tmp_path)))
    with pytest.raises(ConfigError, match="pip install datasets"):
        next(hub.iter_texts())


def test_jsonl_data_files_without_datasets_installed(tmp_path, monkeypatch):
    rows = [{"text": f"doc {i}", "extra": i} for i in range(50)]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    src = resolve(CorpusSpec(name="mine", data_files=[str(tmp_path / "a.jsonl")]), "train", DataConfig())
    with_datasets = list(src.iter_texts())
    block_datasets_import(monkeypatch)
    assert list(src.iter_texts()) == with_datasets == [r["text"] for r in rows]
