"""The attention-heads notebook's data and figures on synthetic run directories (the suite's on-disk
format, tests/analysis_fixture.py): which runs are shown and why the others are not, a result computed
outside a run, the repeated sequence's maps, the token view's layout and highlights, the pattern panels'
induction guide, the atlas, the top-heads table and the widget picker."""

from __future__ import annotations

import json
import shutil

import analysis_fixture as fx
import numpy as np
import pytest

from analysis import fig_heads
from analysis.attention_maps import load_sequence_maps
from analysis.heads import load_head_study, missing_results, scratch_result, top_heads_table
from analysis.runs import load_runs

HALF = 6
HYBRID = fx.heads_of(
    {8: 4},
    4,
    {
        (8, 2): {"label_attention": 0.8, "label_attention_lift": 6.0},
        (8, 1): {"induction_score": 0.9, "previous_token_score": 0.05},
    },
)


def _add_sequence_maps(evals_dir, block: int, n_heads: int, induction_head: int) -> None:
    """EOS + x + x maps (uniform, except one head that attends like a perfect induction head)."""
    t = 1 + 2 * HALF
    path = evals_dir / "attention_maps.npz"
    with np.load(path) as data:
        arrays = dict(data)
    maps = np.repeat((np.tril(np.ones((t, t))) / np.arange(1, t + 1)[:, None])[None], n_heads, 0)
    for i in range(HALF):
        q = 1 + HALF + i
        maps[induction_head, q] = 0
        maps[induction_head, q, 2 + i] = 1
    arrays["induction_tokens"] = np.asarray([0] + list(range(5, 5 + HALF)) * 2)
    arrays[f"induction_block{block}"] = maps.astype(np.float16)
    np.savez_compressed(path, **arrays)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("heads")
    hybrid = [fx.write_run(root, "heads", "1:7", seed=s, preset="tiny-1to7") for s in (0, 1)]
    for run in hybrid:
        fx.write_eval(run, "attention", fx.attention(run, HYBRID, label_head=(8, 2)))
        _add_sequence_maps(run / "evals", 8, 4, induction_head=1)
    attention = fx.write_run(root, "heads", "attention", preset="tiny-attention")
    (attention / "checkpoints" / "step_00000010").mkdir(parents=True)  # scorable: it has a checkpoint
    fx.write_run(root, "heads", "mamba", preset="tiny-mamba")
    return root, hybrid[0], attention


def test_which_runs_are_shown_and_a_result_from_elsewhere(sweep, tmp_path):
    root, hybrid, attention = sweep
    runs = load_runs([root / "heads"])
    assert [r.path for r in missing_results(runs, tmp_path)] == [attention]
    study = load_head_study(runs, tmp_path)
    assert list(study.arms) == ["1:7"] and study.arms["1:7"].run.path == hybrid
    assert study.skipped["mamba"].startswith("no attention layers (pattern M-")
    assert study.skipped["1:7 seed 1"].startswith("another seed")
    assert study.skipped["attention"].startswith("no attention result")

    # The attention arm scored elsewhere (as `ablate eval --out` / the notebook writes it): read from there.
    scratch = tmp_path / "scratch"
    outside = scratch_result(runs[[r.path for r in runs].index(attention)], scratch)
    outside.parent.mkdir(parents=True)
    shutil.copytree(hybrid / "tokenizer", attention / "tokenizer", dirs_exist_ok=True)
    payload = fx.attention(attention, fx.heads_of({i: i // 2 for i in range(0, 16, 2)}, 4))
    shutil.move(attention / "evals" / "attention_maps.npz", outside.with_name("attention_maps.npz"))
    outside.write_text(json.dumps(payload))
    study = load_head_study(runs, scratch)
    assert list(study.arms) == ["1:7", "attention"]
    arm = study.arms["attention"]
    assert arm.result == outside and arm.prompt is not None and len(arm.heads) == 8 * 4
    assert set(arm.heads["label"]) == {"attention"} and arm.slug == "attention"
    assert list(study.frames.runs["label"]) == ["1:7", "attention"]
    assert not (attention / "evals" / "attention.json").exists()


def test_sequence_maps_and_top_heads(sweep):
    root, hybrid, _ = sweep
    seq = load_sequence_maps(hybrid)
    assert seq.half_len == HALF and seq.repeat_start == 1 + HALF and len(seq.pieces) == 1 + 2 * HALF
    assert seq.maps[8].shape == (4, 1 + 2 * HALF, 1 + 2 * HALF)
    study = load_head_study(load_runs([root / "heads"]))
    arm = study.arms["1:7"]
    assert arm.top(1) == [(8, 4, 2)]  # label attention by default
    assert arm.top(1, by="induction_score") == [(8, 4, 1)]
    assert study.outlined(1) == {"1:7": [(4, 2)]}
    table = top_heads_table(study, k=2)
    assert len(table) == 3 * 2 and set(table["layer"]) == {4}
    first = table[table["ranked by"] == "induction (prefix matching)"].iloc[0]
    assert (first["head"], first["induction_score"]) == (1, pytest.approx(0.9))


def test_token_layout():
    pieces = ["<eos>", "Review", ":", " good", "\n", "Sentiment", ":", " Positive", "\n\n", "Review", ":"]
    placed = fig_heads.layout_tokens(pieces, columns=60)
    rows = [row for row, _, _ in placed]
    assert rows == [0] * 9 + [1, 1]  # one line per demonstration; the single line break stays inline
    assert placed[4][2] == fig_heads.NEWLINE and placed[8][2] == fig_heads.NEWLINE * 2
    assert [col for _, col, _ in placed[:4]] == [0, 5, 11, 12]
    wrapped = fig_heads.layout_tokens(["abcdef"] * 5, columns=14)
    assert [(r, c) for r, c, _ in wrapped] == [(0, 0), (0, 6), (1, 0), (1, 6), (2, 0)]


def test_prompt_tokens_outline_labels_and_shade_by_attention(sweep):
    root, _, _ = sweep
    arm = load_head_study(load_runs([root / "heads"])).arms["1:7"]
    view = arm.prompt
    fig = fig_heads.prompt_tokens(view, arm.heads, arm.top(2), arm.name)
    first = fig.axes[0]
    assert first.get_gid() == "layer4-head2"
    assert "label mass 0.80 (x6.0 uniform)" in first.get_title(loc="left")
    labels = [p for p in first.patches if p.get_gid() == "label-tokens"]
    assert len(labels) == len(view.label_positions) >= 2
    (query,) = [p for p in first.patches if p.get_gid() == "query-token"]
    shaded = [p for p in first.patches if p.get_gid() is None]
    assert len(shaded) == len(view.pieces)
    darkness = [1 - np.mean(p.get_facecolor()[:3]) for p in shaded]
    others = [d for i, d in enumerate(darkness[1:], 1) if i not in view.label_positions]
    assert min(darkness[i] for i in view.label_positions) > max(others)  # 80% of the attention on labels
    assert any("Sentiment" in t.get_text() for t in first.texts)
    empty = fig_heads.prompt_tokens(None, arm.heads, arm.top(2), "Mamba")
    assert "no IMDB prompt maps" in empty.axes[0].texts[0].get_text()


def test_attention_patterns_and_atlas(sweep):
    root, _, _ = sweep
    study = load_head_study(load_runs([root / "heads"]))
    arm = study.arms["1:7"]
    chosen = study.top(2, by="induction_score")
    fig = fig_heads.attention_patterns(study.sequences, study.heads, chosen, study.names)
    first = fig.axes[0]
    assert first.get_gid() == "1:7-layer4-head1" and "induction 0.90" in first.get_title()
    np.testing.assert_allclose(first.images[0].get_array(), arm.sequence.maps[8][1])
    (guide,) = [line for line in first.lines if line.get_gid() == "induction-diagonal"]
    queries = np.asarray(guide.get_ydata())
    np.testing.assert_array_equal(np.asarray(guide.get_xdata()) + 3, queries - HALF + 1)
    fig = fig_heads.attention_patterns(study.prompts, study.heads, study.top(1), study.names)
    ticks = [line for line in fig.axes[0].lines if line.get_gid() == "label-tokens"]
    assert [line.get_xdata()[0] for line in ticks] == arm.prompt.label_positions
    atlas = fig_heads.pattern_atlas(arm.sequence, arm.heads, arm.name)
    assert [ax.get_gid() for ax in atlas.axes] == [f"layer4-head{h}" for h in range(4)]
    assert atlas.axes[1].get_title() == "L4 H1 ind 0.90"


def test_head_picker_redraws_the_chosen_head(sweep):
    pytest.importorskip("ipywidgets")
    root, _, _ = sweep
    study = load_head_study(load_runs([root / "heads"]))
    picker = fig_heads.head_picker(study)
    controls, _ = picker.children
    arm, head = controls.children
    assert arm.value == "1:7" and head.value == (8, 4, 1)  # the best induction head first
    assert [label for label, _ in head.options][1] == "layer 4 head 1 (induction 0.90)"
    head.value = (8, 4, 2)
    fig = fig_heads.head_panel(study.arms["1:7"], (8, 4, 2))
    assert fig.get_suptitle().startswith("1:7: layer 4, head 2 (induction 0.10, previous token 0.10")
    assert [ax.get_title() for ax in fig.axes[:2]] == ["repeated tokens", "IMDB prompt"]
