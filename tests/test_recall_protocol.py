"""What Zoology's MQAR protocol needs from the harness (the calibrated recall study, results/recall/): the
zero filler and a fixed training set of N examples seen every epoch, learned absolute positions and
dropout, early stopping on the in-loop held-out accuracy, and the attention suite's per-head recall score.
Every new field is absent from the resolved form at its default, so earlier runs keep their ids and data."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.accounting import param_breakdown
from harness.config_errors import ConfigError
from harness.config_schema import from_dict, to_dict
from harness.data import DataConfig
from harness.data.mqar import IGNORE, MQARDataset, MQARTask, batch, example, id_pool, run_tasks, sample_rng
from harness.data.packs import write_pack
from harness.model import HybridLM
from harness.model.config import AttentionConfig, MambaConfig, ModelConfig
from harness.training.config import LoopConfig, StopWhen, resolve_run_config
from harness.training.rundir import RunDir, read_jsonl
from harness.training.trainer import train

pytestmark = pytest.mark.usefixtures("one_thread")
WORDS = "the quick brown fox jumps over a lazy dog while seven wizards quietly hex jolly zebras".split()


# ------------------------------------------------------------------------------------------------- data
def test_default_tasks_draw_the_samples_they_drew_before():
    """Digests of batches computed with the generator before ``filler`` and ``num_examples`` existed."""
    for args, digest in (((64, 8, 128, 0), "803210f5dae14b31"), ((256, 16, 1024, 5), "4cde5c9fa7f4fdf2")):
        task = MQARTask(*args)
        assert "filler" not in task.identity()
        inputs, targets = batch(task, 16, seed=3, stream="train")
        got = hashlib.sha256(inputs.numpy().tobytes() + targets.numpy().tobytes()).hexdigest()[:16]
        assert got == digest


def test_zero_filler_is_zoologys_layout():
    """Zoology's Fig. 2 (random_non_queries=False): one filler id everywhere outside the pairs and the
    queries, and never a key."""
    task = MQARTask(64, 8, 128, eos=5, filler="zero")
    filler = id_pool(128, 5)[0]
    for index in range(30):
        inputs, targets = example(task, sample_rng(1, "train", task, index))
        queries = np.flatnonzero(targets != IGNORE)
        keys, values = inputs[0:16:2], inputs[1:16:2]
        assert filler not in keys and len(set(keys)) == 8 and len(set(values)) == 8
        rest = np.setdiff1d(np.arange(16, 64), queries)
        assert (inputs[rest] == filler).all()
        pairs = dict(zip(keys.tolist(), values.tolist(), strict=True))
        assert [pairs[int(inputs[q])] for q in queries] == targets[queries].tolist()
    assert MQARTask(64, 8, 128, 5, filler="zero").key != MQARTask(64, 8, 128, 5).key


def test_a_fixed_training_set_repeats_every_epoch_and_only_in_training():
    data = from_dict(
        DataConfig,
        {
            "train": [
                {"name": "mqar", "mqar": {"num_pairs": 4, "seq_lens": 32, "vocab": 64, "num_examples": 10}}
            ],
            "tokenizer": {"kind": "bpe", "vocab_size": 300, "train_corpus": ["toytext"]},
        },
        path="data",
    )
    tasks = run_tasks(data, seq_len=32, vocab_size=300, eos=0)
    assert tasks[0][0].num_examples == 10 and tasks[0][0] == MQARTask(
        32, 4, 64, 0
    )  # equality: what, not which
    train_set, held = MQARDataset(tasks, 32, seed=0), MQARDataset(tasks, 32, seed=0, stream="validation")
    for k in range(10):
        assert torch.equal(train_set[k][0], train_set[k + 10][0]) and torch.equal(
            train_set[k][0], train_set[k + 30][0]
        )
    assert not torch.equal(train_set[0][0], train_set[1][0])
    assert not torch.equal(held[0][0], held[10][0])  # validation draws a stream of its own
    endless = MQARDataset([(dataclasses.replace(tasks[0][0], num_examples=None), 1.0)], 32, seed=0)
    assert not torch.equal(endless[0][0], endless[10][0])
    assert "num_examples" not in to_dict(
        from_dict(
            DataConfig, {**to_dict(data), "train": [{"name": "mqar", "mqar": {"num_pairs": 4}}]}, path="data"
        )
        .train[0]
        .mqar
    )
    assert endless.fingerprint() != train_set.fingerprint()
    with pytest.raises(ConfigError, match="num_examples must be >= 1"):
        from_dict(
            DataConfig,
            {**to_dict(data), "train": [{"name": "mqar", "mqar": {"num_pairs": 4, "num_examples": 0}}]},
            path="data",
        )


# ------------------------------------------------------------------------------------------------ model
def _model_cfg(**overrides) -> ModelConfig:
    kw = dict(
        vocab_size=96,
        d_model=32,
        d_ff=48,
        pattern="M*",
        require_ffn=False,
        attention=AttentionConfig(n_heads=1, learned_positions=24),
        mamba=MambaConfig(d_state=8, inner_rmsnorm=False),
        tie_embeddings=True,
    )
    kw.update(overrides)
    return ModelConfig(**kw)


@torch.no_grad()
def test_learned_positions_decode_token_for_token_and_bound_the_context():
    cfg = _model_cfg()
    model = HybridLM(cfg).eval()
    assert model.num_parameters() == sum(param_breakdown(cfg).values())  # the table's 24 x 32 counted
    prompt = torch.randint(0, 96, (2, 6))
    ids = prompt
    for _ in range(10):  # uncached greedy
        ids = torch.cat([ids, model(ids).logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(model.generate(prompt, 10), ids[:, 6:])
    shifted = model(prompt).logits
    with torch.no_grad():
        model.embed_positions.weight.add_(1.0)
    assert not torch.allclose(model(prompt).logits, shifted)  # the positions are used
    with pytest.raises(ValueError, match="24 learned positions"):
        model(torch.zeros(1, 25, dtype=torch.long))
    with pytest.raises(ValueError, match="24 learned"):
        model.new_cache(1, 30)
    for build, key in (
        (lambda: AttentionConfig(learned_positions=8, rope=True), "learned_positions"),
        (lambda: AttentionConfig(dropout=-0.1), "dropout"),
        (lambda: _model_cfg(pattern="MM"), "attention.learned_positions"),
        (lambda: _model_cfg(embed_dropout=1.0), "embed_dropout"),
    ):
        with pytest.raises(ConfigError) as e:
            build()
        assert e.value.key == key


def test_dropout_acts_in_training_only_and_defaults_change_no_run():
    cfg = _model_cfg(
        embed_dropout=0.1, attention=AttentionConfig(n_heads=1, learned_positions=24, dropout=0.1)
    )
    plain = dataclasses.replace(
        cfg, embed_dropout=0.0, attention=AttentionConfig(n_heads=1, learned_positions=24)
    )
    torch.manual_seed(0)
    model = HybridLM(cfg)
    reference = HybridLM(plain)
    reference.load_state_dict(model.state_dict())
    ids = torch.randint(0, 96, (2, 12))
    with torch.no_grad():
        assert torch.equal(model.eval()(ids).logits, reference.eval()(ids).logits)
        model.train()
        assert not torch.equal(model(ids).logits, reference(ids).logits)
    # Absent at their defaults: the resolved form (and every run id) of a config without them is unchanged.
    resolved = to_dict(_model_cfg(attention=AttentionConfig(n_heads=1)))
    assert "embed_dropout" not in resolved and "learned_positions" not in resolved["attention"]
    assert "dropout" not in resolved["attention"]


# ----------------------------------------------------------------------------------- training protocol
def test_stop_when_is_checked_and_configured_strictly():
    assert StopWhen("val_accuracy", above=0.99).met(0.995) and not StopWhen("val_accuracy", above=0.99).met(
        0.99
    )
    assert StopWhen("val_loss", below=0.5).met(0.4)
    with pytest.raises(ConfigError, match="exactly one of 'above' and 'below'"):
        StopWhen("val_loss")
    with pytest.raises(ConfigError, match="set eval_every") as e:
        LoopConfig(steps=10, stop_when=StopWhen("val_accuracy", above=0.5))
    assert e.value.key == "stop_when"
    assert "stop_when" not in to_dict(LoopConfig(steps=10))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("recall")
    rng = random.Random(0)
    docs = [" ".join(rng.choice(WORDS) for _ in range(30)) for _ in range(100)]
    write_pack(root / "data", "toytext", {"train": docs, "validation": docs[:5]})
    return root


def _zoology_run(root: Path, steps: int, stop_when: dict | None) -> dict:
    """A two-layer hybrid without MLPs on Zoology's data layout (zero filler, a fixed set of 64 examples)."""
    return {
        "name": "zoology-test",
        "model": {
            "vocab_size": 300,
            "d_model": 32,
            "d_ff": 32,
            "pattern": "M*",
            "require_ffn": False,
            "tie_embeddings": True,
            "attention": {"n_heads": 1, "learned_positions": 32, "dropout": 0.1},
            "embed_dropout": 0.1,
            "mamba": {"d_state": 8, "inner_rmsnorm": False},
        },
        "data": {
            "train": [
                {
                    "name": "mqar",
                    "mqar": {
                        "num_pairs": 4,
                        "seq_lens": [32],
                        "vocab": 64,
                        "filler": "zero",
                        "num_examples": 64,
                    },
                }
            ],
            "validation": [],
            "tokenizer": {"kind": "bpe", "vocab_size": 300, "train_corpus": ["toytext"]},
            "data_dir": str(root / "data"),
        },
        "train": {
            "seq_len": 32,
            "global_batch": 16,
            "micro_batch": 16,
            "steps": steps,
            "eval_every": 4,  # an epoch: 64 examples / 16
            "eval_batches": 2,
            **({"stop_when": stop_when} if stop_when else {}),
        },
        "optim": {"lr": 3e-3, "weight_decay": 0.1, "grad_clip": 0.0},
        "schedule": {"kind": "cosine", "warmup_steps": 0, "min_lr_ratio": 0.0},
    }


def test_early_stopping_ends_the_run_done_and_a_relaunch_keeps_it(data_root, tmp_path):
    # val_loss below 100 holds at the first evaluation (step 4): the run stops there, of 40 steps.
    cfg = resolve_run_config(_zoology_run(data_root, 40, {"metric": "val_loss", "below": 100.0}))
    summary = train(cfg, tmp_path / "run")
    assert (
        summary["state"] == "done"
        and summary["step"] == 4
        and summary["stopped_early"]["metric"] == "val_loss"
    )
    run = RunDir(tmp_path / "run")
    status = run.status()
    assert status["state"] == "done" and status["step"] == 4 and status["stopped_early"]["value"] < 100
    events = read_jsonl(run.events)
    stopped = next(e for e in events if e["event"] == "stopped_early")
    assert stopped["step"] == 4 and stopped["condition"] == "val_loss < 100"
    assert [p.name for p in run.checkpoints.iterdir() if p.name.startswith("step_")] == ["step_00000004"]
    again = train(cfg, tmp_path / "run")
    assert again.get("skipped") and len(read_jsonl(run.events)) == len(events)  # nothing trained again
    held = [r for r in read_jsonl(run.metrics) if "val_loss" in r]
    assert 0 <= held[0]["val_accuracy"] <= 1


def test_an_unmet_stop_condition_trains_every_step(data_root, tmp_path):
    cfg = resolve_run_config(_zoology_run(data_root, 8, {"metric": "val_accuracy", "above": 1.5}))
    summary = train(cfg, tmp_path / "run")
    assert summary["state"] == "done" and summary["step"] == 8 and "stopped_early" not in summary
    accuracy = [
        r["val_accuracy"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if "val_accuracy" in r
    ]
    assert len(accuracy) == 2 and all(0 <= a <= 1 for a in accuracy)


def test_mqar_suite_scores_listed_tasks_past_the_trained_length(data_root, tmp_path):
    """Based's Fig. 2 diagonal: (seq_len, num_pairs) tasks as listed, longer than training where the model
    has no learned positions; refused, naming the field, where it has."""
    from evals.runner import run_suite

    learned = resolve_run_config(_zoology_run(data_root, 4, None))
    train(learned, tmp_path / "learned")
    with pytest.raises(ConfigError, match="learned positions") as e:
        run_suite(
            tmp_path / "learned", "mqar", options={"limit": 2, "tasks": [[64, 8]]}, out=tmp_path / "x.json"
        )
    assert e.value.key == "mqar.tasks"
    raw = _zoology_run(data_root, 4, None)
    raw["model"]["attention"]["learned_positions"] = 0
    train(resolve_run_config(raw), tmp_path / "nope")
    path = run_suite(tmp_path / "nope", "mqar", options={"limit": 2, "tasks": [[32, 4], [64, 16]]})
    result = json.loads(Path(path).read_text())
    assert [(t["task"], t["trained"]) for t in result["tasks"]] == [("L32_N4", True), ("L64_N16", False)]
    assert result["tasks"][1]["queries"] == 2 * 16
    with pytest.raises(ConfigError, match="not both"):
        run_suite(tmp_path / "nope", "mqar", options={"tasks": [[32, 4]], "num_pairs": [4]})
