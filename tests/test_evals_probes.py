"""Induction / MQAR probes on both arms (pure Mamba and 1:7), a model that uses its context scoring higher
than one that does not, and per-head attention scores for every attention head of the hybrid."""

import math

import numpy as np
import pytest
import torch
from eval_fixture import train_copying

from evals import attention, probes
from evals.options import AttentionOptions, InductionOptions
from evals.results import ARRAYS_KEY
from harness.training.loading import load_run

# Two cores shared with other test processes: one thread avoids OpenMP spin-waiting (30x slower).
pytestmark = pytest.mark.usefixtures("one_thread")


def test_probe_sequences():
    seqs, controls = probes.repeated_sequences(5, 10, vocab=50, eos=7, seed=0)
    assert seqs.shape == controls.shape == (5, 21)
    assert (seqs[:, 0] == 7).all() and not (seqs[:, 1:] == 7).any()
    assert torch.equal(seqs[:, 1:11], seqs[:, 11:]) and torch.equal(controls[:, 11:], seqs[:, 11:])
    assert not torch.equal(controls[:, 1:11], seqs[:, 1:11])
    assert torch.equal(probes.repeated_sequences(5, 10, 50, 7, seed=0)[0], seqs)  # deterministic by seed

    mq, qpos, values = probes.mqar_sequences(3, 4, vocab=64, eos=0, seed=0)
    assert mq.shape == (3, 17) and (mq[:, 0] == 0).all() and not (mq[:, 1:] == 0).any()
    for row, vals in zip(mq, values, strict=True):
        pairs = dict(zip(row[1:9:2].tolist(), row[2:9:2].tolist(), strict=True))
        assert sorted(pairs.values()) == sorted(vals.tolist())
        for q in qpos.tolist():  # each query is a key whose next token is that key's value
            assert pairs[int(row[q])] == int(row[q + 1])


@pytest.mark.parametrize("arm", ["hybrid", "mamba"])
def test_induction_probe_on_both_arms(arm, hybrid_run, mamba_run):  # noqa: F811
    loaded = load_run(hybrid_run if arm == "hybrid" else mamba_run, device="cpu")
    payload = probes.run(loaded, InductionOptions(limit=6))
    ind, mqar, natural = payload["induction"], payload["mqar"], payload["natural_text"]
    half = (loaded.seq_len - 1) // 2
    assert ind["half_len"] == half and len(ind["loss_curve"]) == 2 * half and ind["sequences"] == 6
    for key in (
        "loss_first_half",
        "loss_second_half",
        "loss_second_half_control",
        "icl_score",
        "context_gain",
    ):
        assert math.isfinite(ind[key])
    assert ind["repeat_gain"] == pytest.approx(ind["loss_first_half"] - ind["loss_second_half"])
    # Olsson's tokens 50 and 500 of 512, scaled to the 255-token sequence; losses averaged over +-4.
    assert ind["positions"] == {"early": 25, "late": 249, "band": 4}
    assert 0 <= mqar["accuracy"] <= 1 and mqar["queries"] == 6 * mqar["num_pairs"] == 6 * 32
    assert natural["status"] == "ok" and natural["windows"] == 6 and math.isfinite(natural["icl_score"])
    assert set(payload["metrics"]) >= {"induction/icl_score", "mqar/accuracy", "natural/icl_score"}


def test_a_model_that_reads_its_context_scores_higher(mamba_run):  # noqa: F811
    """The 60-step checkpoint has no in-context copying yet (the probe says so: no gain); the same model
    trained on repeated sequences predicts the repeat from its context, and the probe shows it against
    both the first copy and the control whose first half differs."""
    loaded = load_run(mamba_run, device="cpu")
    settings = {"n": 32, "seed": 0, "half_len": 3, "batch_size": 32, "band": 1, "token_pool": 32}
    before = probes.induction_probe(loaded, **settings)
    assert abs(before["context_gain"]) < 0.3
    after = probes.induction_probe(train_copying(loaded), **settings)
    assert after["context_gain"] > 1.0 and after["repeat_gain"] > 1.0
    assert after["loss_second_half"] < after["loss_second_half_control"]
    assert after["context_gain"] > before["context_gain"] + 1.0


def test_head_score_arithmetic():
    """Attention that goes exactly where an induction head (or a previous-token head) looks scores 1."""
    half, t = 5, 11
    induction = torch.zeros(1, 2, t, t)
    induction[0, :, :, 0] = 1.0  # default: attend to BOS
    for i in range(half):
        q = 1 + half + i
        induction[0, :, q, 0] = 0.0
        induction[0, :, q, 2 + i] = 1.0  # the token after x_i's first occurrence
    previous = torch.zeros(1, 2, t, t)
    previous[0, :, 0, 0] = 1.0
    previous[0, :, torch.arange(1, t), torch.arange(t - 1)] = 1.0
    ind, prev = attention.head_scores(induction, half)
    assert ind.tolist() == pytest.approx([1.0, 1.0]) and prev.tolist() == pytest.approx(
        [0.1, 0.1]
    )  # q=1 -> 0
    ind, prev = attention.head_scores(previous, half)
    assert ind.tolist() == pytest.approx([0.0, 0.0]) and prev.tolist() == pytest.approx([1.0, 1.0])
    ind, prev = attention.head_scores(torch.cat([induction, previous]), half)  # averaged over the batch
    assert ind.tolist() == pytest.approx([0.5, 0.5]) and prev.tolist() == pytest.approx([0.55, 0.55])
    assert attention.attention_blocks("M-M-M-M-*-M-M-M-") == [(8, 4)]
    assert attention.attention_blocks("*-M-*-") == [(0, 0), (4, 2)]


def test_attention_scores_for_every_head_of_the_hybrid(hybrid_run, tmp_path):  # noqa: F811
    loaded = load_run(hybrid_run, device="cpu")
    payload = attention.run(loaded, AttentionOptions(limit=4))
    n_heads = loaded.model.cfg.attention.n_heads
    assert payload["status"] == "ok" and payload["attention_layers"] == [4]
    assert payload["n_heads"] == n_heads == len(payload["heads"])
    assert sorted(h["head"] for h in payload["heads"]) == list(range(n_heads))
    for h in payload["heads"]:
        assert h["block"] == 8 and h["layer"] == 4
        for key in ("induction_score", "previous_token_score", "label_attention"):
            assert 0.0 <= h[key] <= 1.0
        assert h["label_attention_lift"] > 0
    imdb = payload["settings"]["imdb"]
    assert imdb["shots"] >= 1 and imdb["final_token"] == ":" and imdb["prompts"] == 4
    maps = payload[ARRAYS_KEY]  # evals.runner saves them beside the result (tested in test_evals_cli)
    # The saved examples are short whatever the context: a 64-token repeat and 4 shots of 24-token reviews.
    example = payload["settings"]["example_maps"]
    assert example == {
        "induction_half_len": 64,
        "imdb_shots": min(4, imdb["shots"]),
        "imdb_review_tokens": 24,
    }
    t = 1 + 2 * 64
    assert maps["induction_block8"].shape == (n_heads, t, t) and len(maps["induction_tokens"]) == t
    n = len(maps["imdb_tokens"])
    assert maps["imdb_block8"].shape == (n_heads, n, n) and n < loaded.seq_len
    np.testing.assert_allclose(maps["induction_block8"].astype(np.float32).sum(-1), 1.0, atol=1e-2)


def test_attention_on_pure_mamba_is_an_explicit_empty_result(mamba_run):  # noqa: F811
    payload = attention.run(load_run(mamba_run, device="cpu"), AttentionOptions(limit=2))
    assert payload["status"] == "no attention layers" and payload["heads"] == []
    assert "pure Mamba" in payload["reason"]
