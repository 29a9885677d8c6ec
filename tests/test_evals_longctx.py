"""The long-context suites on a tiny trained run (CPU): needle in a haystack, passkey and loss by position.

The needle's placement is checked by hand at depths 0, 0.5 and 1; the suites run end to end through
``ablate eval`` past the run's training length (256 tokens) on the offline packs; the chunked pass through
the inference cache that position_loss relies on equals one forward pass."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from ablate.cli import main
from evals.options import NiahOptions, PositionLossOptions
from evals.position_loss import log_bins, position_nll
from evals.suites import resolve_options
from harness.config_errors import ConfigError
from harness.data.needle import FILLER, TASKS, build_prompt, sentences
from harness.training.loading import load_run


@pytest.fixture(scope="module")
def loaded(hybrid_run):
    return load_run(hybrid_run, device="cpu")


@pytest.mark.parametrize("depth", [0.0, 0.5, 1.0])
def test_the_needle_sits_where_the_depth_says(loaded, depth):
    encode = loaded.tokenizer.encode
    task = TASKS["niah"]
    haystack = sentences(FILLER)
    p = build_prompt(encode, task, haystack, 300, depth, key="calm-river", value="4817263", offset=0)
    prefix = encode(task.intro + "\n")
    needle = encode(" " + task.needle.format(key="calm-river", value="4817263"))
    suffix = encode("\n" + task.question.format(key="calm-river"))
    assert len(p.ids) == 300
    assert p.ids[: len(prefix)] == prefix and p.ids[-len(suffix) :] == suffix
    assert p.ids[p.needle_start : p.needle_start + len(needle)] == needle
    room = 300 - len(prefix) - len(needle) - len(suffix)
    offset = p.needle_start - len(prefix)  # haystack tokens before the needle
    if depth == 0.0:
        assert offset == 0  # right after the instruction
    elif depth == 1.0:
        assert offset == room and p.needle_start + len(needle) == 300 - len(
            suffix
        )  # right before the question
    else:
        longest = max(len(encode(" " + s)) for s in haystack)
        assert abs(offset - room / 2) <= longest / 2 + 1  # the sentence boundary nearest the middle
        before = loaded.tokenizer.decode(p.ids[len(prefix) : p.needle_start])
        assert before.rstrip().endswith((".", "again."))  # whole sentences before it
    text = loaded.tokenizer.decode(p.ids)
    assert text.count("4817263") == 1 and "calm-river" in text


def test_prompts_are_the_same_for_every_arm_and_too_short_lengths_are_refused(loaded):
    from evals.niah import prompts_for

    opts = NiahOptions(lengths=[128], depths=[0.5], limit=3)
    a, b = prompts_for(loaded, TASKS["niah"], opts), prompts_for(loaded, TASKS["niah"], opts)
    assert [p.ids for p in a[(128, 0.5)]] == [p.ids for p in b[(128, 0.5)]]
    assert len({p.value for p in a[(128, 0.5)]}) == 3
    with pytest.raises(ConfigError, match="no room for a haystack"):
        prompts_for(loaded, TASKS["niah"], NiahOptions(lengths=[40]))
    with pytest.raises(ConfigError, match="depths"):
        resolve_options("niah", {"depths": [1.5]})


def test_niah_and_passkey_through_ablate_eval_past_the_training_length(hybrid_run, tmp_path, capsys):
    out = tmp_path / "out"
    common = ["--device", "cpu", "--out", str(out), "--limit", "2"]
    for suite, haystack in (("niah", "text"), ("passkey", "filler")):
        options = [f"{suite}.lengths=[256,512]", f"{suite}.depths=[0,0.5,1]"]
        if suite == "niah":
            options.append(f"niah.haystack={haystack}")
        argv = ["eval", str(hybrid_run), "--suite", suite, *common]
        assert main(argv + [x for o in options for x in ("-o", o)]) == 0
        result = json.loads((out / hybrid_run.name / f"{suite}.json").read_text())
        cells = result["cells"]
        assert [(c["length"], c["depth"]) for c in cells] == [(n, d) for n in (256, 512) for d in (0, 0.5, 1)]
        assert all(0.0 <= c["accuracy"] <= 1.0 and c["samples"] == 2 for c in cells)
        assert [c["beyond_training"] for c in cells] == [False] * 3 + [True] * 3
        assert result["settings"]["haystack"] == haystack and result["examples"]
        assert f"{suite}/accuracy@512" in result["metrics"]
    assert "beyond training" in capsys.readouterr().out


def test_chunked_cache_pass_equals_one_forward_pass(loaded):
    ids = [loaded.tokenizer.eos_id, *loaded.tokenizer.encode(" ".join(["The sky is blue."] * 60))][:201]
    with torch.no_grad():
        logits = loaded.model(torch.tensor([ids[:-1]])).logits[0].float()
    direct = torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]), reduction="none")
    assert torch.allclose(position_nll(loaded, ids, chunk=64), direct, atol=1e-4)


def test_log_bins_cover_every_position_once():
    for max_len, per_octave, trained in ((512, 4, 256), (2048, 2, 300), (100, 3, None)):
        bins = log_bins(max_len, per_octave, trained)
        assert bins[0][0] == 1 and bins[-1][1] == max_len + 1
        assert all(lo < hi for lo, hi in bins) and all(
            a[1] == b[0] for a, b in zip(bins, bins[1:], strict=False)
        )
        assert trained is None or (trained + 1) in [lo for lo, _ in bins]


def test_position_loss_through_ablate_eval(hybrid_run, tmp_path):
    out = tmp_path / "out"
    argv = ["eval", str(hybrid_run), "--suite", "position_loss", "--device", "cpu", "--out", str(out)]
    assert main(argv + ["--limit", "2", "-o", "position_loss.max_len=1024"]) == 0
    result = json.loads((out / hybrid_run.name / "position_loss.json").read_text())
    s, m = result["settings"], result["metrics"]
    assert s["documents"] == 2 and s["max_len"] == 1024 and s["trained_length"] == 256
    assert result["bins"][-1]["to"] == 1024 and result["bins"][-1]["beyond_training"]
    assert m["position_loss/delta"] == pytest.approx(m["position_loss/beyond"] - m["position_loss/within"])
    # Context helps within the training length: the first positions are the hardest.
    assert result["bins"][0]["loss"] > m["position_loss/within"]
    with pytest.raises(ConfigError, match="max_len"):
        resolve_options("position_loss", {"max_len": 1})
    assert PositionLossOptions().corpus == "books"


def test_report_draws_the_heatmap_beside_fig4_and_the_position_curves(hybrid_run, tmp_path):
    import shutil

    from analysis.report import build_report

    run = tmp_path / "runs" / "longctx" / hybrid_run.name
    shutil.copytree(hybrid_run, run)
    options = ["-o", "niah.lengths=[256,512]", "-o", "niah.depths=[0,1]", "-o", "position_loss.max_len=512"]
    argv = ["eval", str(run), "--suite", "niah", "--suite", "position_loss", "--device", "cpu"]
    assert main(argv + ["--limit", "2", *options, "--overwrite"]) == 0
    index = build_report([str(run)], tmp_path / "report", echo=lambda s: None)
    text = (index.parent / "index.md").read_text()
    assert "Fig. 4: needle in a haystack" in text and "256K" in text  # the paper's statement beside ours
    assert "Loss by position" in text
    figures = {p.name for p in (index.parent / "figures").iterdir()}
    assert any(n.endswith("fig4.png") for n in figures) and any("position-loss" in n for n in figures)
    evals = (index.parent / "data" / "evals.csv").read_text()
    assert "L512_D1" in evals and "P257_" in evals
    # The arms x metrics table has retrieval within (256) and past (512) the training length, and the
    # position loss's rise, each the mean of its cells in the run's eval file.
    payload = json.loads((run / "evals" / "niah.json").read_text())
    cells = {c["length"]: [] for c in payload["cells"]}
    for c in payload["cells"]:
        cells[c["length"]].append(c["accuracy"])
    with open(index.parent / "tables" / "longctx-summary.csv", newline="") as f:
        values = {row["metric"]: float(row["ours_mean"]) for row in csv.DictReader(f)}  # in the table's units
    for name, length in (("niah_within", 256), ("niah_beyond", 512)):
        assert values[name] == pytest.approx(100 * sum(cells[length]) / len(cells[length]))
    delta = json.loads((run / "evals" / "position_loss.json").read_text())["metrics"]["position_loss/delta"]
    assert values["position_delta"] == pytest.approx(delta)


def test_retrieval_within_and_beyond_are_the_means_of_their_cells():
    from analysis.results import FLATTENERS

    cells = [
        {"length": 256, "depth": 0.0, "accuracy": 1.0, "samples": 4},
        {"length": 256, "depth": 1.0, "accuracy": 0.5, "samples": 4},
        {"length": 512, "depth": 0.0, "accuracy": 0.25, "samples": 4},
    ]
    payload = {"metrics": {"niah/accuracy": 0.5833}, "settings": {"task": "niah", "trained_length": 256}}
    rows = {(r["task"], r["metric"]): r["value"] for r in FLATTENERS["niah"]({**payload, "cells": cells})}
    assert rows[("retrieval", "accuracy_within")] == 0.75 and rows[("retrieval", "accuracy_beyond")] == 0.25
    assert rows[("L512_D0", "accuracy")] == 0.25
    past_only = {(r["task"], r["metric"]) for r in FLATTENERS["niah"]({**payload, "cells": cells[2:]})}
    assert ("retrieval", "accuracy_beyond") in past_only and ("retrieval", "accuracy_within") not in past_only
