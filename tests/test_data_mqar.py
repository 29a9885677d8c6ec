"""The synthetic MQAR corpus: the generator's instances, the loader contract (seed, rank shards, exact
resume, workers, mixtures, held-out stream), strict config errors, training on it end to end (loss falls,
held-out loss, bit-exact resume after an interruption) and evals/mqar.py on the trained run."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from harness.config_errors import ConfigError
from harness.config_schema import from_dict, to_dict
from harness.data import DataConfig, make_batches
from harness.data.config import CorpusSpec
from harness.data.mqar import IGNORE, MQARTask, batch, example, sample_rng
from harness.data.packs import write_pack
from harness.training.config import load_run_config, resolve_run_config
from harness.training.rundir import read_jsonl
from harness.training.trainer import train

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parents[1]
WORDS = "the quick brown fox jumps over a lazy dog while seven wizards quietly hex jolly zebras".split()


class Tok:
    """Just what the loader asks of a tokenizer."""

    def __init__(self, vocab_size: int, eos_id: int):
        self.vocab_size, self.eos_id = vocab_size, eos_id


def _data(*corpora: dict, **extra) -> DataConfig:
    tokenizer = {"kind": "bpe", "vocab_size": 300, "train_corpus": ["toytext"]}
    return from_dict(DataConfig, {"train": list(corpora), "tokenizer": tokenizer, **extra}, path="data")


def _mqar(**settings) -> dict:
    return {"name": "mqar", "mqar": settings}


def _check_instance(task: MQARTask, inputs: np.ndarray, targets: np.ndarray) -> None:
    n = task.num_pairs
    keys, values = inputs[0 : 2 * n : 2], inputs[1 : 2 * n : 2]
    pairs = dict(zip(keys.tolist(), values.tolist(), strict=True))
    assert len(set(keys.tolist())) == n and len(set(values.tolist())) == n  # distinct keys and values
    queries = np.flatnonzero(targets != IGNORE)
    assert len(queries) == n and all(q >= 2 * n and (q - 2 * n) % 2 == 0 for q in queries)
    assert sorted(inputs[queries].tolist()) == sorted(keys.tolist())  # every key queried once
    for q in queries:  # the answer at a query position is the value paired with the queried key
        assert targets[q] == pairs[int(inputs[q])]
        if task.answers_in_input:
            assert inputs[q + 1] == targets[q]
    assert (targets[task.seq_len :] == IGNORE).all()
    assert inputs.min() >= 0 and inputs.max() < task.vocab and not (inputs == task.eos).any()
    half = (task.vocab - (1 if task.eos < task.vocab else 0)) // 2
    pool = np.array([i for i in range(task.vocab) if i != task.eos])
    assert set(keys.tolist()) <= set(pool[:half].tolist()) and set(values.tolist()) <= set(
        pool[half:].tolist()
    )


@pytest.mark.parametrize(
    "task",
    [
        MQARTask(32, 4, 64, eos=10),
        MQARTask(64, 16, 200, eos=0, power_a=1.0),
        MQARTask(16, 4, 50, eos=300, answers_in_input=True),  # EOS outside the task's ids
        MQARTask(40, 3, 9, eos=8),  # a vocabulary barely large enough: keys {0..3}, values {4..7}
    ],
)
def test_instances_answer_the_queried_keys(task):
    for index in range(50):
        inputs, targets = example(task, sample_rng(7, "train", task, index), row_len=task.seq_len + 8)
        assert inputs.shape == targets.shape == (task.seq_len + 8,)
        _check_instance(task, inputs, targets)


def test_deterministic_by_seed_stream_and_index():
    task = MQARTask(64, 8, 128, eos=0)
    a, _ = batch(task, 6, seed=3, stream="train")
    assert torch.equal(a, batch(task, 6, seed=3, stream="train")[0])
    assert torch.equal(a[2:], batch(task, 4, seed=3, stream="train", start=2)[0])  # sample i is sample i
    for other in (batch(task, 6, seed=4, stream="train")[0], batch(task, 6, seed=3, stream="validation")[0]):
        assert not any(torch.equal(x, y) for x in a for y in other)
    # A reseeded generator gives the same stream as a fresh one (the dataset reuses one per worker).
    fresh = sample_rng(3, "test", task, 5).randint(0, 1 << 30, size=8)
    reused = sample_rng(3, "test", task, 5, np.random.RandomState(0)).randint(0, 1 << 30, size=8)
    assert (fresh == reused).all()


def test_query_gaps_follow_the_power_law():
    early, late = MQARTask(256, 4, 512, eos=0), MQARTask(256, 4, 512, eos=0, power_a=1.0)
    first = {}
    for task in (early, late):
        _, targets = batch(task, 200, seed=0, stream="train")
        slots = ((targets != IGNORE).nonzero()[:, 1] - 8) // 2  # 124 slots
        first[task.power_a] = float((slots < 12).float().mean())
    assert first[0.01] > 0.4 and abs(first[1.0] - 12 / 124) < 0.05


def _take(it, n):
    return [next(it) for _ in range(n)]


def _same(xs, ys) -> bool:
    return all(
        torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["targets"], b["targets"])
        for a, b in zip(xs, ys, strict=True)
    )


def test_loader_batches_shards_resume_and_mixture():
    tok = Tok(300, eos_id=0)
    cfg = _data(_mqar(num_pairs=[2, 4], seq_lens=[16, 32], vocab=64))
    it = make_batches(cfg, tok, seq_len=32, batch_size=8, seed=1)
    b = next(it)
    assert b["input_ids"].shape == b["targets"].shape == (8, 32) and b["input_ids"].dtype == torch.long
    answers = (b["targets"] != IGNORE).sum(1)
    assert set(answers.tolist()) <= {2, 4} and (b["targets"][b["targets"] != IGNORE] >= 32).all()
    assert b["input_ids"].max() < 64 and not (b["input_ids"] == 0).any()

    # Seeds; ranks: step s of rank r is every W-th sample of the single-process global batch.
    single = _take(make_batches(cfg, tok, seq_len=32, batch_size=8, seed=1), 3)
    assert _same(single, _take(make_batches(cfg, tok, seq_len=32, batch_size=8, seed=1), 3))
    assert not torch.equal(
        single[0]["input_ids"], next(make_batches(cfg, tok, seq_len=32, batch_size=8))["input_ids"]
    )
    ranks = [
        _take(make_batches(cfg, tok, seq_len=32, batch_size=4, rank=r, world_size=2, seed=1), 3)
        for r in (0, 1)
    ]
    for step in range(3):
        for r in (0, 1):
            assert torch.equal(ranks[r][step]["input_ids"], single[step]["input_ids"][r::2])
            assert torch.equal(ranks[r][step]["targets"], single[step]["targets"][r::2])
        assert not set(map(tuple, ranks[0][step]["input_ids"].tolist())) & set(
            map(tuple, ranks[1][step]["input_ids"].tolist())
        )

    # Exact resume from state_dict(); a changed config refuses the state.
    it = make_batches(cfg, tok, seq_len=32, batch_size=8, seed=1)
    _take(it, 2)
    state = it.state_dict()
    assert state["samples_consumed"] == 16
    assert _same(_take(make_batches(cfg, tok, seq_len=32, batch_size=8, seed=1, state=state), 1), single[2:])
    other = _data(_mqar(num_pairs=[2, 4], seq_lens=[16, 32], vocab=65))
    with pytest.raises(ConfigError, match="fingerprint"):
        make_batches(other, tok, seq_len=32, batch_size=8, seed=1, state=state)

    # Two corpora weighted 3:1: the mixture counts per 4096-sample block are exact.
    mix = _data({**_mqar(num_pairs=2), "weight": 3.0}, _mqar(num_pairs=8))
    ds = make_batches(mix, tok, seq_len=32, batch_size=8).dataset
    tasks = [ds.tasks[ds.locate(k)[0]].num_pairs for k in range(4096)]
    assert tasks.count(2) == 3072 and tasks.count(8) == 1024

    # The held-out stream: the same tasks, other sequences.
    val = _take(make_batches(cfg, tok, split="validation", seq_len=32, batch_size=8, seed=1), 3)
    train_rows = {tuple(r) for s in single for r in s["input_ids"].tolist()}
    assert not train_rows & {tuple(r) for s in val for r in s["input_ids"].tolist()}


def test_workers_give_the_same_batches():
    tok, cfg = Tok(300, eos_id=5), _data(_mqar(num_pairs=[2, 3], vocab=40))
    a = _take(make_batches(cfg, tok, seq_len=24, batch_size=4), 3)
    it = make_batches(cfg, tok, seq_len=24, batch_size=4, num_workers=1)
    assert _same(a, _take(it, 3))
    it.close()


@pytest.mark.parametrize(
    "corpus, extra, key, message",
    [
        (_mqar(num_pair=[4]), {}, "data.train[0].mqar.num_pair", "Did you mean 'num_pairs'"),
        ({"name": "mqar"}, {}, "data.train[0].mqar", "needs its settings"),
        (_mqar(num_pairs=[4], seq_lens=[12]), {}, "data.train[0].mqar.num_pairs", "do not fit"),
        (_mqar(num_pairs=0), {}, "data.train[0].mqar.num_pairs", ">= 1"),
        (_mqar(num_pairs=2, power_a=0), {}, "data.train[0].mqar.power_a", "> 0"),
        ({**_mqar(num_pairs=2), "data_files": ["x.txt"]}, {}, "data.train[0].data_files", "takes no"),
        ({"name": "web", "mqar": {"num_pairs": 2}}, {}, "data.train[0].mqar", "belong to a corpus named"),
        ({"name": "mqr"}, {}, "data.train[0].name", "Did you mean 'mqar'"),
    ],
)
def test_config_errors_name_the_key(corpus, extra, key, message):
    with pytest.raises(ConfigError, match=message) as e:
        _data(corpus, **extra)
    assert e.value.key == key


def test_config_errors_of_the_run():
    with pytest.raises(ConfigError, match="mixes") as e:
        _data(_mqar(num_pairs=2), {"name": "web"})
    assert e.value.key == "data.train"
    with pytest.raises(ConfigError, match="still builds a text tokenizer") as e:
        from_dict(DataConfig, {"train": [_mqar(num_pairs=2)]}, path="data")
    assert e.value.key == "data.tokenizer.train_corpus"
    tok = Tok(300, eos_id=0)
    with pytest.raises(ConfigError, match="exceeds the tokenizer's vocab_size") as e:
        make_batches(_data(_mqar(num_pairs=2, vocab=512)), tok, seq_len=32)
    assert e.value.key == "data.train[0].mqar.vocab"
    with pytest.raises(ConfigError, match="exceeds the run's train.seq_len") as e:
        make_batches(_data(_mqar(num_pairs=2, seq_lens=[64])), tok, seq_len=32)
    assert e.value.key == "data.train[0].mqar.seq_lens"
    with pytest.raises(ConfigError, match="do not fit") as e:  # null seq_lens: the run's seq_len
        make_batches(_data(_mqar(num_pairs=16)), tok, seq_len=32)
    assert e.value.key == "data.train[0].mqar.num_pairs"
    with pytest.raises(ConfigError, match="listed twice"):
        make_batches(_data(_mqar(num_pairs=2), _mqar(num_pairs=[2, 4])), tok, seq_len=32)


def test_text_configs_resolve_and_hash_as_before():
    """The mqar field is left out of a text corpus's resolved form: run ids and run directories of text
    runs are unchanged (the hash below was computed before the field existed)."""
    assert "mqar" not in to_dict(CorpusSpec(name="web"))
    assert to_dict(from_dict(CorpusSpec, _mqar(num_pairs=4)))["mqar"]["num_pairs"] == [4]
    from harness.training.config import config_hash

    assert config_hash(load_run_config(REPO / "sweeps" / "runs" / "tiny-1to7-web.yaml")) == "38d50d8c078b"
    example_cfg = load_run_config(REPO / "sweeps" / "runs" / "tiny-mqar.yaml")
    assert example_cfg.data.train[0].is_mqar and example_cfg.data.tokenizer.train_corpus == ["c4"]


# ------------------------------------------------------------------------------------- training end to end


def _run_config(root: Path, steps: int, **train_extra) -> dict:
    return {
        "name": "mqar-test",
        "model": {"preset": "tiny-attention", "pattern": "*-*-", "attention": {"rope": True}},
        "data": {
            "train": [_mqar(num_pairs=[2, 4], seq_lens=[16, 32], vocab=64)],
            "validation": [],
            "tokenizer": {"kind": "bpe", "vocab_size": 300, "train_corpus": ["toytext"]},
            "data_dir": str(root / "data"),
        },
        "train": {
            "seq_len": 32,
            "global_batch": 16,
            "micro_batch": 8,
            "steps": steps,
            "seed": 0,
            "eval_batches": 2,
            "log_every": 1,
            **train_extra,
        },
        "optim": {"lr": 1e-2, "weight_decay": 0.0},
        "schedule": {"kind": "constant", "warmup_steps": 2},
    }


@pytest.fixture(scope="module")
def mqar_root(tmp_path_factory) -> Path:
    """A data dir holding a small text pack (the tokenizer's train_corpus) and a 40-step MQAR run."""
    root = tmp_path_factory.mktemp("mqar")
    rng = random.Random(0)
    docs = [" ".join(rng.choice(WORDS) for _ in range(30)) for _ in range(100)]
    write_pack(root / "data", "toytext", {"train": docs, "validation": docs[:5]})
    threads = torch.get_num_threads()  # module fixtures run before the function-scoped one_thread
    torch.set_num_threads(1)
    try:
        cfg = resolve_run_config(_run_config(root, 40, eval_every=20, checkpoint_every=40))
        summary = train(cfg, root / "run")
    finally:
        torch.set_num_threads(threads)
    assert summary["state"] == "done"
    return root


def test_training_on_mqar_lowers_the_answer_loss(mqar_root):
    records = read_jsonl(mqar_root / "run" / "metrics.jsonl")
    loss = [r["loss"] for r in records if "loss" in r]
    val = [r["val_loss"] for r in records if "val_loss" in r]
    assert len(loss) == 40 and len(val) == 2
    assert sum(loss[-5:]) / 5 < sum(loss[:5]) / 5 - 1.0  # from ~log(300) to ~log(#values) and below
    assert val[-1] < np.log(64)
    tokenizer = json.loads((mqar_root / "run" / "tokenizer" / "tokenizer.json").read_text())
    assert tokenizer["model"]["type"] == "BPE"  # the text tokenizer, trained on the toytext pack
    stored = yaml.safe_load((mqar_root / "run" / "config.yaml").read_text())
    assert stored["data"]["train"][0]["mqar"]["num_pairs"] == [2, 4]


def test_interrupted_mqar_run_resumes_bit_exact(mqar_root, tmp_path):
    cfg = resolve_run_config(_run_config(mqar_root, 12))
    straight = train(cfg, tmp_path / "straight")
    calls = iter(range(100))
    first = train(cfg, tmp_path / "resumed", should_stop=lambda: next(calls) == 5)  # stop after step 6
    assert straight["state"] == "done" and first["state"] == "interrupted" and first["step"] == 6
    assert train(cfg, tmp_path / "resumed")["state"] == "done"

    def losses(d):
        return {r["step"]: r["loss"] for r in read_jsonl(d / "metrics.jsonl") if "loss" in r}

    assert losses(tmp_path / "straight") == losses(tmp_path / "resumed")  # bit-identical, steps 1..12


def test_mqar_eval_on_the_trained_run(mqar_root):
    from evals import mqar as mqar_eval
    from evals.options import MqarOptions
    from harness.training.loading import load_run

    loaded = load_run(mqar_root / "run", device="cpu")
    payload = mqar_eval.run(loaded, MqarOptions(limit=12, batch_size=8))
    json.dumps(payload)
    assert [(t["seq_len"], t["num_pairs"]) for t in payload["tasks"]] == [(16, 2), (16, 4), (32, 2), (32, 4)]
    for t in payload["tasks"]:
        assert t["trained"] and t["sequences"] == 12 and t["queries"] == 12 * t["num_pairs"]
        assert 0 <= t["accuracy"] <= t["accuracy_among_values"] + 1e-9 <= 1 + 1e-9
        assert t["chance_among_values"] == 1 / t["num_pairs"] and np.isfinite(t["answer_loss"])
    m = payload["metrics"]
    assert set(m) == {
        "mqar_recall/accuracy",
        "mqar_recall/min_accuracy",
        *(f"mqar_recall/L{L}_N{N}" for L in (16, 32) for N in (2, 4)),
    }
    assert m["mqar_recall/accuracy"] == pytest.approx(np.mean([t["accuracy"] for t in payload["tasks"]]))
    assert payload["settings"]["stream"].startswith("test") and payload["settings"]["vocab"] == 64
    assert len(mqar_eval.summarize(payload)) == 5
    # The same sequences whatever the batching.
    rebatched = mqar_eval.run(loaded, MqarOptions(limit=12, batch_size=5))
    assert [t["accuracy"] for t in rebatched["tasks"]] == [t["accuracy"] for t in payload["tasks"]]
    assert [t["answer_loss"] for t in rebatched["tasks"]] == pytest.approx(
        [t["answer_loss"] for t in payload["tasks"]]
    )

    grid = mqar_eval.run(loaded, MqarOptions(limit=4, num_pairs=[4, 8], seq_lens=[32]))  # 8: never trained
    assert [(t["num_pairs"], t["trained"]) for t in grid["tasks"]] == [(4, True), (8, False)]
    with pytest.raises(ConfigError, match="do not fit"):
        mqar_eval.run(loaded, MqarOptions(limit=4, num_pairs=[16], seq_lens=[32]))
    with pytest.raises(ConfigError, match="exceeds the run's train.seq_len"):
        mqar_eval.run(loaded, MqarOptions(limit=4, num_pairs=[2], seq_lens=[64]))
    text_run = dataclasses.replace(
        loaded, config=load_run_config(REPO / "sweeps" / "runs" / "tiny-1to7-web.yaml")
    )
    with pytest.raises(ConfigError, match="did not train on mqar"):
        mqar_eval.run(text_run, MqarOptions(limit=4))


@pytest.mark.slow
def test_a_small_attention_model_learns_mqar(mqar_root, tmp_path):
    """The task is learnable through the whole stack (generator, loader, answer-only loss, trainer, eval):
    a 2-layer attention model with RoPE (d_model 128) trained 400 steps of 32 sequences on 4 pairs in 32
    tokens recalls well above chance. Measured on two shared CPU cores: ~30 s, accuracy ~0.99 (chance:
    1/4 among the sequence's values, 1/63 over the task's ids); the same model at d_model 64 or lr 1e-2
    was still at chance after 600 steps."""
    from evals import mqar as mqar_eval
    from evals.options import MqarOptions
    from harness.training.loading import load_run

    cfg = _run_config(mqar_root, 500)
    cfg["model"] = {
        "preset": "tiny-attention",
        "pattern": "*-*-",
        "vocab_size": 320,
        "d_model": 128,
        "attention": {"rope": True, "n_heads": 4, "n_kv_heads": 4},
    }
    cfg["data"]["train"] = [_mqar(num_pairs=4, vocab=64)]
    cfg["train"].update(global_batch=32, micro_batch=32, log_every=50, checkpoint_every=500)
    cfg["optim"] = {"lr": 1e-3, "weight_decay": 0.0, "grad_clip": 1.0}
    cfg["schedule"] = {"kind": "constant", "warmup_steps": 20}
    train(resolve_run_config(cfg), tmp_path / "run")
    payload = mqar_eval.run(load_run(tmp_path / "run", device="cpu"), MqarOptions(limit=128))
    (task,) = payload["tasks"]
    assert task["accuracy"] > 0.9, payload["tasks"]
