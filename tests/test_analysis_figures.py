"""Figures inspected as matplotlib objects: a series per arm with its name, axis labels, held-out points,
loss spikes at their events' tokens, the label tokens and top heads highlighted in the Fig. 7 views, the
IMDB bars and off-format answers, expert load per layer and the induction curve."""

from __future__ import annotations

import json

import analysis_fixture as fx
import numpy as np
import pytest
from matplotlib.container import BarContainer

from analysis import fig_icl, fig_training
from analysis.attention_maps import load_prompt_maps
from analysis.frames import load_frames
from analysis.measure import measure
from analysis.paper import load_paper
from analysis.runs import load_runs

HYBRID_HEADS = fx.heads_of(
    {8: 4}, 4, {(8, 2): {"label_attention": 0.8, "label_attention_lift": 6.0, "induction_score": 0.7}}
)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("figs")
    for seed in (0, 1):
        fx.write_run(
            root,
            "figs",
            "attention",
            seed=seed,
            preset="tiny-attention",
            val_losses={5: 4.8, 10: 4.4},
            evals={
                "icl": fx.icl(0.55, 0.2, 0.1, off_format=[("Funny", 5), ("3/10", 2)]),
                "induction": fx.induction([6.0] * 8 + [3.0] * 8, 1.5),
            },
        )
    hybrid = fx.write_run(
        root,
        "figs",
        "1:7",
        preset="tiny-1to7",
        spikes=[4, 7],
        val_losses={10: 4.0},
        evals={"icl": fx.icl(0.8, 0.9, 0.7), "induction": fx.induction([6.0] * 16, 0.1)},
    )
    fx.write_eval(hybrid, "attention", fx.attention(hybrid, HYBRID_HEADS, label_head=(8, 2)))
    fx.write_run(root, "figs", "mamba", preset="tiny-mamba")
    fx.write_run(root, "figs", "1:7+moe", preset="tiny-1to7-moe", expert_load=[[0.5, 0.25, 0.25, 0.0]] * 2)
    frames = load_frames(load_runs([root / "figs"]))
    return root, hybrid, frames


NAMES = {"attention": "Attention", "1:7": "Jamba 1:7", "mamba": "Mamba"}


def test_loss_curves(sweep):
    _, _, frames = sweep
    fig = fig_training.loss_curves(frames.steps, frames.events, NAMES)
    (ax,) = fig.axes
    labels = [line.get_label() for line in ax.lines]
    assert [lab for lab in labels if not lab.startswith("_")] == [
        "Attention",
        "Attention, held-out",
        "Jamba 1:7",
        "Jamba 1:7, held-out",
        "Mamba",
    ]
    assert (
        labels.count("_Attention raw") == 2 and labels.count("_Attention") == 1
    )  # two seeds, one legend entry
    held = next(line for line in ax.lines if line.get_label() == "Attention, held-out")
    assert list(held.get_xdata()) == [5 * fx.TOKENS_PER_STEP, 10 * fx.TOKENS_PER_STEP]
    assert list(held.get_ydata()) == [4.8, 4.4]
    (spikes,) = [c for c in ax.collections if c.get_label().startswith("loss spike")]
    tokens = [4 * fx.TOKENS_PER_STEP, 7 * fx.TOKENS_PER_STEP]
    assert spikes.get_offsets()[:, 0].tolist() == tokens and spikes.get_label() == "loss spike (2)"
    assert ax.get_xlabel() == "training tokens" and ax.get_ylabel() == "loss (nats/token)"
    smooth = next(line for line in ax.lines if line.get_label() == "Jamba 1:7")
    assert (
        smooth.get_linestyle()
        != next(line for line in ax.lines if line.get_label() == "Attention").get_linestyle()
    )


def test_attention_to_labels_highlights_label_tokens_of_the_top_heads(sweep):
    _, hybrid, frames = sweep
    settings = json.loads((hybrid / "evals" / "attention.json").read_text())["settings"]["imdb"]
    view = load_prompt_maps(hybrid, settings)
    from harness.data.tokenizer import load_tokenizer

    tok = load_tokenizer(hybrid / "tokenizer")
    expected = fx.label_token_positions(tok, [tok.eos_id, *tok.encode(fx.PROMPT)])
    assert view.label_positions == expected and len(expected) >= 2
    assert view.pieces[view.final].endswith(":")

    fig = fig_icl.attention_to_labels({"1:7": view}, frames.heads, {"1:7": "Jamba 1:7"}, k=2)
    first = fig.axes[0]
    assert first.get_gid() == "layer4-head2"  # the head with the most label attention comes first
    assert first.get_title() == "layer 4, head 2\nlabel mass 0.80 (x6.0)"
    highlighted = [p for p in first.patches if p.get_gid() == "label-tokens"]
    assert [round(p.get_x() + p.get_width() / 2) for p in highlighted] == expected
    assert sum(p.get_height() for p in highlighted) == pytest.approx(0.8, abs=1e-2)
    assert first.get_xlabel() == "prompt position (tokens)" and "Jamba 1:7" in first.get_ylabel()


def test_head_heatmaps_outline_top_heads_and_explain_missing_panels(sweep):
    _, _, frames = sweep
    names = {"attention": "Attention", "mamba": "Mamba", "1:7": "Jamba 1:7"}
    fig = fig_icl.head_heatmaps(frames.heads, frames.runs, names, {"1:7": [(4, 2)]})
    axes = np.array(fig.axes).reshape(3, 3)
    assert "no attention result" in axes[0, 0].texts[0].get_text()  # attention arm ran no attention suite
    assert axes[1, 1].texts[0].get_text() == "no attention layers"  # pure Mamba
    for ax in axes[:, 2]:
        (box,) = [p for p in ax.patches if p.get_gid() == "top-head"]
        assert box.get_xy() == (2 - 0.5, 0 - 0.5)
    assert axes[0, 2].images[0].get_array()[0, 2] == pytest.approx(0.7)
    assert [t.get_text() for t in axes[0, 2].get_yticklabels()] == ["layer 4"]


def test_imdb_companion(sweep):
    _, _, frames = sweep
    measures = measure(frames, load_paper())
    fig = fig_icl.imdb_companion(measures, frames.off_format, {"attention": "Attention", "1:7": "Jamba 1:7"})
    ax, notes = fig.axes
    bars = {
        c.get_label(): [round(p.get_height(), 6) for p in c]
        for c in ax.containers
        if isinstance(c, BarContainer)
    }
    assert bars["format adherence"] == [20.0, 90.0] and bars["generation accuracy"] == [10.0, 70.0]
    assert ax.get_ylabel() == "% of IMDB queries"
    text = notes.texts[0].get_text()
    assert "Attention: 'Funny' x10, '3/10' x4" in text and "Jamba 1:7: none" in text  # summed over seeds


def test_expert_load_and_induction_curve(sweep):
    _, _, frames = sweep
    fig = fig_training.expert_load(frames.expert_load, {"1:7+moe": "Jamba + MoE", "1:7": "Jamba 1:7"})
    image_axes = [ax for ax in fig.axes if ax.images]
    assert len(image_axes) == 2  # two MoE layers of the one MoE arm
    assert image_axes[0].images[0].get_array()[:, 0].tolist() == [0.5, 0.25, 0.25, 0.0]
    assert image_axes[-1].get_xlabel() == "training tokens"

    fig = fig_icl.induction_curve(frames.induction_curve, NAMES)
    (ax,) = fig.axes
    series = {line.get_label(): line for line in ax.lines}
    assert series["Attention"].get_ydata().tolist() == [6.0] * 8 + [3.0] * 8
    assert "Mamba" not in series  # no induction result
    assert ax.get_xlabel() == "position in the sequence (tokens)"
    repeat = [line for line in ax.lines if line.get_label().startswith("_") and line.get_xdata()[0] == 8.5]
    assert repeat, "the start of the repeat is marked"
