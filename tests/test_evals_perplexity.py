"""Per-byte perplexity: the sliding window scores every token once with the context it promises, agrees with
a direct computation, and the suite reports the paper's units on the three held-out packs."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from evals import perplexity
from evals.options import PerplexityOptions
from harness.config_errors import ConfigError
from harness.data.config import CorpusSpec
from harness.data.sources import resolve
from harness.training.loading import load_run

# Two cores shared with other test processes: one thread avoids OpenMP spin-waiting (30x slower).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    "n,window,stride", [(1, 8, 4), (7, 8, 4), (8, 8, 4), (50, 8, 3), (50, 8, 8), (23, 5, 1)]
)
def test_sliding_windows_score_each_target_once(n, window, stride):
    ids = list(range(100, 101 + n))  # BOS + n targets
    windows = perplexity.sliding_windows(ids, window, stride)
    scored = []
    for k, w in enumerate(windows):
        assert len(w.inputs) == len(w.targets) <= window
        begin = ids.index(w.inputs[0])
        assert w.targets == ids[begin + 1 : begin + 1 + len(w.inputs)]
        first = len(w.targets) - w.n_scored
        for j in range(first, len(w.targets)):
            target_position = begin + 1 + j
            scored.append(target_position)
            if k > 0:  # every window after the first gives each scored token >= window - stride context
                assert j + 1 >= window - stride
    assert scored == list(range(1, n + 1))


def test_bad_window_is_a_config_error():
    with pytest.raises(ConfigError, match="stride"):
        perplexity.sliding_windows([0, 1, 2], window=8, stride=9)


def _held_out_text(loaded, min_tokens, max_tokens):
    src = resolve(CorpusSpec(name="c4"), "validation", loaded.config.data)
    for text in itertools.islice(src.iter_texts(), 200):
        n = len(loaded.tokenizer.encode(text))
        if n >= min_tokens:
            return (
                text if n <= max_tokens else perplexity.truncate_utf8(text, int(len(text) * max_tokens / n))
            )
    raise AssertionError("no suitable held-out document")


def test_sliding_window_equals_direct_when_the_document_fits(hybrid_run):  # noqa: F811
    loaded = load_run(hybrid_run, device="cpu")
    text = _held_out_text(loaded, 60, 200)
    ids = [loaded.tokenizer.eos_id, *loaded.tokenizer.encode(text)]
    assert len(ids) <= loaded.seq_len
    with torch.no_grad():
        logits = loaded.model(torch.tensor([ids[:-1]])).logits[0].float()
    direct = -float(F.cross_entropy(logits, torch.tensor(ids[1:]), reduction="sum"))
    scored = perplexity.score_texts(loaded, [text])
    assert scored["windows"] == 1 and scored["tokens"] == len(ids) - 1
    assert scored["logprob"] == pytest.approx(direct, rel=1e-5)
    assert scored["bytes"] == len(text.encode("utf-8"))


def test_sliding_window_on_a_document_longer_than_the_window(hybrid_run):  # noqa: F811
    """Each token's log-prob must equal a separate forward pass over exactly the context the window rule
    gives it: ids[k*stride : j] with k the first window reaching target j."""
    loaded = load_run(hybrid_run, device="cpu")
    window, stride = 24, 10
    text = _held_out_text(loaded, 70, 90)
    ids = [loaded.tokenizer.eos_id, *loaded.tokenizer.encode(text)]
    reference = 0.0
    with torch.no_grad():
        for j in range(1, len(ids)):
            k = max(0, math.ceil((j - window) / stride))
            context = ids[k * stride : j]
            assert window - stride <= len(context) <= window or k == 0
            logits = loaded.model(torch.tensor([context])).logits[0, -1].float()
            reference += float(logits.log_softmax(-1)[ids[j]])
    scored = perplexity.score_texts(loaded, [text], window=window, stride=stride, batch_size=3)
    assert scored["windows"] > 3
    assert scored["logprob"] == pytest.approx(reference, rel=1e-5)
    # The default (half-window) stride gives a different but equally complete scoring.
    full = perplexity.score_texts(loaded, [text], window=window)
    assert full["tokens"] == scored["tokens"] == len(ids) - 1


def test_perplexity_on_the_three_held_out_packs(hybrid_run):  # noqa: F811
    loaded = load_run(hybrid_run, device="cpu")
    payload = perplexity.run(loaded, PerplexityOptions(limit=3, max_doc_bytes=3000))
    assert set(payload["corpora"]) == {"c4", "books", "code"}
    for name, r in payload["corpora"].items():
        assert r["source"].startswith("local pack") and "[validation]" in r["source"]
        assert r["documents"] == 3 and 0 < r["bytes"] <= 9000 and r["tokens"] > 0
        assert -5.0 < r["logprob_per_byte"] < 0  # the paper's sign: log-prob per byte is negative
        assert r["nats_per_byte"] == pytest.approx(-r["logprob_per_byte"])
        assert r["bits_per_byte"] == pytest.approx(r["nats_per_byte"] / math.log(2))
        assert 0.1 < r["tokens_per_byte"] < 1.0
        assert r["nats_per_token"] < math.log(loaded.tokenizer.vocab_size)  # it learned something
        assert payload["metrics"][f"{name}/logprob_per_byte"] == r["logprob_per_byte"]
    settings = payload["settings"]
    assert settings["window"] == loaded.seq_len and settings["stride"] == loaded.seq_len // 2
    assert settings["documents_per_corpus"] == 3


def test_unknown_corpus_and_oversized_window_are_config_errors(hybrid_run):  # noqa: F811
    loaded = load_run(hybrid_run, device="cpu")
    with pytest.raises(ConfigError, match="c4"):
        perplexity.run(loaded, PerplexityOptions(corpora=["c5"], limit=1))
    with pytest.raises(ConfigError, match="training context"):
        perplexity.run(loaded, PerplexityOptions(corpora=["c4"], limit=1, window=loaded.seq_len + 1))
