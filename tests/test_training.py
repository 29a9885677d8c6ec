"""The trainer on CPU: a tiny run from YAML, metrics, exact resume after SIGKILL (also mid-checkpoint),
refusing to overwrite, a clean stop on a non-finite loss, and DDP with two gloo processes."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from harness.config_errors import ConfigError
from harness.training.checkpoint import list_checkpoints
from harness.training.config import config_hash as run_dir_hash
from harness.training.config import load_run_config
from harness.training.rundir import read_jsonl
from harness.training.trainer import TrainingError, train

REPO = Path(__file__).resolve().parents[1]
WORDS = "the quick brown fox jumps over a lazy dog while seven wizards quietly hex jolly zebras 2024".split()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A small deterministic corpus of pseudo-sentences (learnable structure, a few hundred KB)."""
    root = tmp_path_factory.mktemp("corpus")
    rng = torch.Generator().manual_seed(0)
    for split, n_docs in (("train", 600), ("validation", 60)):
        with open(root / f"{split}.jsonl", "w") as f:
            for _ in range(n_docs):
                idx = torch.randint(
                    0, len(WORDS), (int(torch.randint(20, 120, (1,), generator=rng)),), generator=rng
                )
                f.write(json.dumps({"text": " ".join(WORDS[i] for i in idx.tolist()) + "."}) + "\n")
    return root


def write_config(tmp_path: Path, corpus: Path, **train_overrides) -> Path:
    cfg = {
        "name": "tiny-test",
        "model": {"preset": "tiny-1to7-moe"},
        "data": {
            "train": [{"name": "toy", "data_files": [str(corpus / "train.jsonl")]}],
            "validation": [{"name": "toy", "data_files": [str(corpus / "validation.jsonl")]}],
            "tokenizer": {"kind": "bpe", "vocab_size": 384},
            "data_dir": str(tmp_path / "data"),
        },
        "train": {
            "seq_len": 64,
            "global_batch": 4,
            "micro_batch": 4,
            "steps": 30,
            "seed": 0,
            **train_overrides,
        },
        "optim": {"lr": 3e-3, "weight_decay": 0.1},
        "schedule": {"kind": "cosine", "warmup_steps": 5},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_jsonl(run_dir / "metrics.jsonl") if "loss" in r}


def ablate(*args: str, env: dict | None = None) -> subprocess.Popen:
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "ablate.cli", *args],
        cwd=REPO,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for(predicate, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"process ended early:\n{proc.stdout.read()}")
        if time.time() > deadline:
            proc.kill()
            raise AssertionError("timed out")
        time.sleep(0.02)


def test_tiny_run_trains_and_logs(tmp_path, corpus):
    cfg = load_run_config(write_config(tmp_path, corpus, eval_every=10, checkpoint_every=10))
    run_dir = tmp_path / "run"
    summary = train(cfg, run_dir)
    assert summary["state"] == "done" and summary["step"] == 30
    records = read_jsonl(run_dir / "metrics.jsonl")
    steps = [r for r in records if "loss" in r]
    for key in (
        "step",
        "tokens",
        "loss",
        "ce_loss",
        "aux_loss",
        "lr",
        "grad_norm",
        "tokens_per_s",
        "mfu",
        "peak_mem_gib",
        "expert_load",
    ):
        assert key in steps[0], key
    assert steps[-1]["tokens"] == 30 * 4 * 64
    assert len(steps[0]["expert_load"]) == 4 and len(steps[0]["expert_load"][0]) == 16
    first, last = sum(r["loss"] for r in steps[:3]) / 3, sum(r["loss"] for r in steps[-3:]) / 3
    assert last < first - 1.0, (first, last)
    vals = [r["val_loss"] for r in records if "val_loss" in r]
    assert len(vals) == 3 and vals[-1] < vals[0]
    assert json.loads((run_dir / "status.json").read_text())["state"] == "done"
    assert [p.name for p in list_checkpoints(run_dir / "checkpoints")] == ["step_00000020", "step_00000030"]
    assert (run_dir / "tokenizer" / "tokenizer.json").exists()
    events = [e["event"] for e in read_jsonl(run_dir / "events.jsonl")]
    assert events[0] == "start" and events[-1] == "finish" and events.count("heldout_loss") == 3
    assert read_jsonl(run_dir / "events.jsonl")[0]["kernels"] == "auto (eager)"  # what ran, on this CPU
    record = json.loads((run_dir / "run.json").read_text())
    assert record["created_by"] == "ablate train" and record["sweep"] is None and record["arm"] is None
    assert record["run_id"] == record["config_hash"] == run_dir_hash(cfg) and record["seed"] == 0
    assert record["eval_plan"]["suites"] == {} and record["train"]["steps"] == 30

    # Re-running a finished run does nothing; a different config in the same directory is refused.
    assert train(cfg, run_dir)["skipped"]
    other = load_run_config(write_config(tmp_path, corpus, steps=31))
    with pytest.raises(ConfigError, match=r"different config.*differences: .*train.steps: 30 -> 31"):
        train(other, run_dir)


def test_second_trainer_on_a_live_run_directory_is_refused(tmp_path, corpus):
    """One writer per run directory: a second `ablate train` on a directory that a live trainer holds fails
    at once (exit 2, one line naming the holder's pid and host), and writes nothing there."""
    config = write_config(tmp_path, corpus, steps=100_000)
    run_dir = tmp_path / "run"
    first = ablate("train", str(config), "--run-dir", str(run_dir))
    try:
        wait_for(lambda: len(losses(run_dir)) >= 2, 180, first)
        second = ablate("train", str(config), "--run-dir", str(run_dir))
        out, _ = second.communicate(timeout=120)
        assert second.returncode == 2, out
        assert f"is in use by train (pid {first.pid} on " in out and "Traceback" not in out
        assert first.poll() is None  # the holder trains on
        events = [e["event"] for e in read_jsonl(run_dir / "events.jsonl")]
        assert events.count("start") == 1
    finally:
        first.kill()
        first.wait()


@pytest.fixture(scope="module")
def straight(tmp_path_factory, corpus) -> tuple[Path, Path]:
    """A 40-step run trained without interruption by `ablate train`: (its config, its run directory)."""
    tmp_path = tmp_path_factory.mktemp("straight")
    config = write_config(tmp_path, corpus, steps=40, checkpoint_every=20)
    proc = ablate("train", str(config), "--run-dir", str(tmp_path / "run"))
    assert proc.wait(timeout=300) == 0, proc.stdout.read()
    return config, tmp_path / "run"


def test_exact_resume_after_sigkill(tmp_path, straight):
    config, straight = straight
    resumed = tmp_path / "resumed"
    proc = ablate("train", str(config), "--run-dir", str(resumed))
    wait_for(lambda: (resumed / "checkpoints" / "step_00000020" / "meta.json").exists(), 300, proc)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert json.loads((resumed / "status.json").read_text())["state"] == "running"
    proc = ablate("train", str(config), "--run-dir", str(resumed))
    assert proc.wait(timeout=300) == 0, proc.stdout.read()

    a, b = losses(straight), losses(resumed)
    assert sorted(a) == sorted(b) == list(range(1, 41))
    assert [a[s] for s in sorted(a)] == [b[s] for s in sorted(b)]  # bit-identical
    assert "resume" in [e["event"] for e in read_jsonl(resumed / "events.jsonl")]


def test_sigint_and_sigterm_stop_at_a_step_boundary_and_resume_exactly(tmp_path, straight):
    """Ctrl-C (SIGINT) or SIGTERM: the step ends, a checkpoint of it is written, status "interrupted", one
    line and exit status 128 + signal, no traceback; the same command resumes bit-exactly."""
    config, straight = straight
    run_dir = tmp_path / "run"
    for sig in (signal.SIGINT, signal.SIGTERM):
        proc = ablate("train", str(config), "--run-dir", str(run_dir))
        done = len(losses(run_dir))
        wait_for(lambda done=done: len(losses(run_dir)) >= done + 3, 300, proc)
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 128 + sig, out
        assert "Traceback" not in out and "KeyboardInterrupt" not in out
        status = json.loads((run_dir / "status.json").read_text())
        step = status["step"]
        assert status["state"] == "interrupted" and max(losses(run_dir)) == step < 40
        assert (run_dir / "checkpoints" / f"step_{step:08d}" / "meta.json").exists()
        assert f"interrupted by {sig.name} at step {step} of 40, checkpoint written" in out
        assert [e for e in read_jsonl(run_dir / "events.jsonl") if e["event"] == "interrupted"][-1][
            "step"
        ] == step
    proc = ablate("train", str(config), "--run-dir", str(run_dir))
    assert proc.wait(timeout=300) == 0, proc.stdout.read()
    a, b = losses(straight), losses(run_dir)
    assert sorted(b) == list(range(1, 41)) and [a[s] for s in sorted(a)] == [b[s] for s in sorted(b)]
    assert [e["event"] for e in read_jsonl(run_dir / "events.jsonl")].count("resume") == 2


def test_kill_during_checkpoint_write_keeps_previous(tmp_path, corpus):
    config = write_config(tmp_path, corpus, steps=20, checkpoint_every=5, keep_last=5)
    run_dir, marker = tmp_path / "run", tmp_path / "saving"
    env = {"ABLATE_TEST_SAVE_DELAY": "10:60", "ABLATE_TEST_SAVE_MARKER": str(marker)}
    proc = ablate("train", str(config), "--run-dir", str(run_dir), env=env)
    wait_for(marker.exists, 300, proc)  # the step-10 save is half written
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert [p.name for p in list_checkpoints(run_dir / "checkpoints")] == ["step_00000005"]
    proc = ablate("train", str(config), "--run-dir", str(run_dir))
    assert proc.wait(timeout=300) == 0, proc.stdout.read()
    assert max(losses(run_dir)) == 20
    names = [p.name for p in (run_dir / "checkpoints").iterdir()]
    assert names and all(n.startswith("step_") for n in names), names  # the torn temporary is gone
    resumes = [e for e in read_jsonl(run_dir / "events.jsonl") if e["event"] == "resume"]
    assert resumes[0]["step"] == 5


def test_nonfinite_loss_stops_cleanly(tmp_path, corpus, monkeypatch):
    from harness.model import lm

    real_forward = lm.HybridLM.forward
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):
        out = real_forward(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 4 and out.loss is not None:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(lm.HybridLM, "forward", poisoned)
    cfg = load_run_config(write_config(tmp_path, corpus, steps=10, checkpoint_every=2))
    with pytest.raises(TrainingError, match=r"loss became nan \(grad norm nan\) at step 4"):
        train(cfg, tmp_path / "run")
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["state"] == "failed" and status["step"] == 3
    assert [e for e in read_jsonl(tmp_path / "run" / "events.jsonl") if e["event"] == "nonfinite"]


def test_config_errors_name_the_key(tmp_path, corpus):
    path = write_config(tmp_path, corpus)
    data = yaml.safe_load(path.read_text())
    data["train"]["micro_batch"] = 3
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="global_batch=4 must be a multiple of micro_batch=3"):
        load_run_config(path)
    data["train"]["micro_batch"] = 4
    data["optim"]["learning_rate"] = 1.0
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"optim.learning_rate.*Valid keys"):
        load_run_config(path)
    # fused kernels asked for where they cannot run: refused before the first step, naming the key
    del data["optim"]["learning_rate"]
    data["model"]["kernels"] = "fused"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"model.kernels.*kernels: fused cannot run here"):
        train(load_run_config(path), tmp_path / "fused-run")


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_match_one(tmp_path, corpus, strategy):
    """2 ranks x micro-batch 4 give the same losses as 1 process x 2 accumulated micro-batches of 4.

    Runs on CPU with gloo; on a machine with 2 GPUs the same test runs NCCL on both (fp32 either way)."""
    config = write_config(
        tmp_path, corpus, steps=6, global_batch=8, micro_batch=4, precision="fp32", distributed=strategy
    )
    single, multi = tmp_path / "single", tmp_path / strategy
    proc = ablate("train", str(config), "--run-dir", str(single))
    assert proc.wait(timeout=300) == 0, proc.stdout.read()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
        "-m", "ablate.cli", "train", str(config), "--run-dir", str(multi),
    ]  # fmt: skip
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    a, b = losses(single), losses(multi)
    assert sorted(a) == sorted(b) == list(range(1, 7))
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-4, abs=1e-4), step
    events = read_jsonl(multi / "events.jsonl")
    assert events[0]["world_size"] == 2


@pytest.mark.slow
def test_compiled_training_matches_eager(tmp_path, corpus):
    """``train.compile: true`` (torch.compile of the model; the numba CPU scan and the MoE's loop over experts
    run eagerly between the compiled graphs) trains the hybrid MoE arm to the same losses as the eager
    model, without running into dynamo's recompile limit, which is made an error here (the loop's per-expert
    counts once made every step recompile until that limit, and the MoE then ran eagerly)."""
    import torch._dynamo

    eager = tmp_path / "eager"
    train(load_run_config(write_config(tmp_path, corpus, steps=4, log_every=1)), eager)
    compiled = tmp_path / "compiled"
    torch._dynamo.reset()
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
        train(load_run_config(write_config(tmp_path, corpus, steps=4, log_every=1, compile=True)), compiled)
    want, got = losses(eager), losses(compiled)
    assert sorted(got) == sorted(want) == [1, 2, 3, 4]
    assert got == pytest.approx(want, rel=1e-4)


def _unstack_experts(checkpoint: Path) -> None:
    """Rewrite a checkpoint as the trainer wrote it before the MoE experts were stacked (c090509): one
    weight and one set of AdamW moments per expert, in expert order, with meta.json's checksums updated."""
    from safetensors.torch import load_file, save_file

    from harness.hf_interop import unfuse_experts

    weights = unfuse_experts(load_file(str(checkpoint / "model.safetensors")))
    save_file({k: v.contiguous().clone() for k, v in weights.items()}, str(checkpoint / "model.safetensors"))
    state = torch.load(checkpoint / "state.pt", weights_only=False)
    optim = state["optimizer"]
    per_expert, names = {}, {}
    for name, moments in optim["state"].items():
        if not name.endswith(".experts.gate_up_proj") and not name.endswith(".experts.down_proj"):
            per_expert[name] = moments
            continue
        prefix = name.rsplit(".", 1)[0]
        if name.endswith("down_proj"):
            continue  # unstacked with its gate_up_proj, expert by expert
        gate_up, down = moments, optim["state"][prefix + ".down_proj"]
        n, d_ff = down["exp_avg"].shape[0], down["exp_avg"].shape[2]
        names[prefix] = []
        for e in range(n):
            for kind, rows in (("gate_proj", slice(0, d_ff)), ("up_proj", slice(d_ff, None))):
                key = f"{prefix}.{e}.{kind}.weight"
                per_expert[key] = {k: (v[e, rows] if v.dim() else v).clone() for k, v in gate_up.items()}
                names[prefix].append(key)
            key = f"{prefix}.{e}.down_proj.weight"
            per_expert[key] = {k: (v[e] if v.dim() else v).clone() for k, v in down.items()}
            names[prefix].append(key)
    optim["state"] = per_expert
    for group in optim["param_groups"]:
        params = []
        for name in group["params"]:
            prefix = name.rsplit(".", 1)[0]
            params += names[prefix] if name.endswith(".experts.gate_up_proj") else []
            params += [] if prefix in names else [name]
        group["params"] = params
    torch.save(state, checkpoint / "state.pt")
    meta = json.loads((checkpoint / "meta.json").read_text())
    for file in meta["files"]:
        data = (checkpoint / file).read_bytes()
        meta["files"][file] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (checkpoint / "meta.json").write_text(json.dumps(meta))


def test_a_run_checkpointed_with_per_expert_moe_weights_resumes_exactly(tmp_path, straight):
    """A run interrupted before the MoE experts were stacked resumes from its checkpoint (one weight and one
    set of AdamW moments per expert: the loader stacks them as the model holds them) and continues
    bit-identically to the run that was never interrupted."""
    config, straight = straight
    run_dir = tmp_path / "run"
    shutil.copytree(straight, run_dir)
    shutil.rmtree(run_dir / "checkpoints" / "step_00000040")
    _unstack_experts(run_dir / "checkpoints" / "step_00000020")
    assert (
        "blocks.3.layer.experts.3.up_proj.weight"
        in torch.load(run_dir / "checkpoints" / "step_00000020" / "state.pt", weights_only=False)[
            "optimizer"
        ]["state"]
    )
    proc = ablate("train", str(config), "--run-dir", str(run_dir))
    assert proc.wait(timeout=300) == 0, proc.stdout.read()
    a, b = losses(straight), losses(run_dir)
    assert [b[s] for s in range(21, 41)] == [a[s] for s in range(21, 41)]
    assert [e["step"] for e in read_jsonl(run_dir / "events.jsonl") if e["event"] == "resume"] == [20]
