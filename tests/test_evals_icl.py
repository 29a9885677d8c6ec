"""IMDB in-context learning: prompts fit the context and are balanced and reproducible, the three scores are
reported, an untrained model's log-likelihood accuracy is at chance, and the hub-only tasks say why they are
unavailable offline."""

import collections
import dataclasses

import pytest
import torch

from evals import icl
from evals.options import IMDB_TEMPLATE, IclOptions, ImdbPromptOptions
from harness.config_errors import ConfigError
from harness.model.lm import HybridLM
from harness.training.loading import load_run

# Two cores shared with other test processes: one thread avoids OpenMP spin-waiting (30x slower).
pytestmark = pytest.mark.usefixtures("one_thread")


def test_parse_answer():
    labels = ("Negative", "Positive")
    assert icl.parse_answer(" Positive\n\nReview", labels) == (1, "Positive")
    assert icl.parse_answer(" Negative.", labels) == (0, "Negative.")
    assert icl.parse_answer(" Positively great", labels) == (None, "Positively great")
    assert icl.parse_answer(" Very Good\n", labels) == (None, "Very Good")
    assert icl.parse_answer("\n\n", labels) == (None, "\\n\\n")


def test_token_f1():
    assert icl.token_f1("The cat sat.", ["a cat sat"]) == 1.0
    assert icl.token_f1("dog", ["a cat sat", "the dog"]) == 1.0
    assert icl.token_f1("cat on mat", ["cat sat"]) == pytest.approx(0.4)
    assert icl.token_f1("", ["cat"]) == 0.0


def test_prompts_fit_are_balanced_and_reproducible(hybrid_run):  # noqa: F811
    loaded = load_run(hybrid_run, device="cpu")
    fmt = ImdbPromptOptions()
    builder, prompts = icl.imdb_prompts(loaded, 20, fmt, seed=3)
    assert builder.shots >= 2 and builder.max_review_tokens > 10
    assert collections.Counter(p.label for p in prompts) == {0: 10, 1: 10}
    for p in prompts:
        assert len(p.ids) + builder.answer_budget <= loaded.seq_len
        assert p.ids[0] == loaded.tokenizer.eos_id and p.text.endswith("Sentiment:")
        assert p.shots == builder.shots == len(p.label_spans)
        words = collections.Counter(p.text[a:b] for a, b in p.label_spans)
        assert set(words) <= {"Negative", "Positive"} and abs(words["Negative"] - words["Positive"]) <= 1
    again = icl.imdb_prompts(loaded, 20, fmt, seed=3)[1]
    assert [p.text for p in again] == [p.text for p in prompts]
    other = icl.imdb_prompts(loaded, 20, fmt, seed=4)[1]
    assert [p.text for p in other] != [p.text for p in prompts]


def test_too_many_shots_is_a_config_error(hybrid_run):  # noqa: F811
    loaded = load_run(hybrid_run, device="cpu")
    with pytest.raises(ConfigError, match="lower shots or max_review_tokens"):
        icl.run(loaded, IclOptions(limit=2, tasks=["imdb"], shots=20, max_review_tokens=40))
    with pytest.raises(ConfigError, match="unknown task"):
        IclOptions(limit=2, tasks=["imbd"])


def test_imdb_three_scores_and_offline_qa(hybrid_run):  # noqa: F811
    loaded = load_run(hybrid_run, device="cpu")
    payload = icl.run(loaded, IclOptions(limit=24, max_new_tokens=4))
    imdb = payload["tasks"]["imdb"]
    for key in ("loglik_accuracy", "format_adherence", "generation_accuracy"):
        assert 0.0 <= imdb["metrics"][key] <= 1.0
        assert payload["metrics"][f"imdb/{key}"] == imdb["metrics"][key]
    assert imdb["metrics"]["generation_accuracy"] <= imdb["metrics"]["format_adherence"]
    assert imdb["queries"] == payload["queries"] == 24 and imdb["shots"] == payload["shots"] >= 1
    off = imdb["off_format_answers"]
    assert len(off) <= 10 and all(isinstance(a, str) and c >= 1 for a, c in off)
    assert imdb["off_format_count"] == round(24 * (1 - imdb["metrics"]["format_adherence"]))
    settings = imdb["settings"]
    assert settings["template"] == IMDB_TEMPLATE and settings["labels"] == {
        "0": "Negative",
        "1": "Positive",
    }
    assert settings["seed"] == 0 and imdb["max_review_tokens"] > 0
    for task in ("quac", "narrativeqa"):  # the test session sets HF_DATASETS_OFFLINE
        result = payload["tasks"][task]
        assert result["status"] == "unavailable offline"
        assert "load_dataset" in result["loader"] and "ships a copy" in result["reason"]


def test_untrained_model_loglik_accuracy_is_at_chance(hybrid_run):  # noqa: F811
    loaded = load_run(hybrid_run, device="cpu")
    torch.manual_seed(1)
    untrained = dataclasses.replace(loaded, model=HybridLM(loaded.config.model).eval())
    payload = icl.run(untrained, IclOptions(limit=100, tasks=["imdb"], max_new_tokens=1, examples=0))
    imdb = payload["tasks"]["imdb"]
    assert imdb["queries"] == 100
    assert 0.35 <= imdb["metrics"]["loglik_accuracy"] <= 0.65
    assert imdb["metrics"]["format_adherence"] < 0.2  # random weights do not answer "Positive"/"Negative"
